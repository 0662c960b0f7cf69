//! Errors handled in bulk: two hundred records rejected for two causes
//! (their answers varying in numbers, ids and quoted values) form two
//! groups; once the target is fixed, retrying one group delivers exactly
//! its records, in sequence order, and ignoring the other leaves none in
//! Error; each action is audited once with its count, a viewer is refused
//! and an unknown group is not found.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

const RECORDS: usize = 200;

/// Record `i` (its sequence number too) is rejected for the first cause
/// (a customer unknown: 120 of them) or the second (an amount over a
/// tier's limit: 80), each answer with numbers, a UUID or a quoted value of
/// its own.
fn record(i: usize) -> Value {
    let answer = if i % 5 < 3 {
        format!(
            "{{\"error\": \"order o{i}: customer {} unknown\", \"request\": \
             \"{:08x}-7b4d-4e2a-9f1c-{:012x}\"}}",
            1000 + i * 7,
            i * 7919,
            i
        )
    } else {
        format!(
            "amount {i}.{:02} exceeds the limit of '{}' accounts",
            i % 100,
            ["gold", "silver", "bronze"][i % 3]
        )
    };
    json!({"id": format!("o{i}"), "n": i, "reject": answer})
}

fn is_customer(seq: usize) -> bool {
    seq % 5 < 3
}

async fn groups(daemon: &Daemon) -> Vec<Value> {
    let (status, v) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/errors")
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_two_causes_form_two_groups_retried_and_ignored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = webhook_site(&target, 1).replace(
        "[sites.LIVE.integrations.orders]\n",
        "[sites.LIVE.integrations.orders]\non_error = \"skip\"\n",
    );
    let mut daemon = Daemon::start(dir.path(), &toml).await;

    let records: Vec<Value> = (1..=RECORDS).map(record).collect();
    let (status, _) = daemon
        .hook("LIVE", "orders", "web", Value::Array(records))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(60, "every record failed for good", || async {
        groups(&daemon)
            .await
            .iter()
            .map(|g| g["count"].as_i64().unwrap())
            .sum::<i64>()
            == RECORDS as i64
    })
    .await;
    assert_eq!(target.count(), 0);

    // Two causes, two groups: the larger first, with their ranges, times
    // and latest answers.
    let found = groups(&daemon).await;
    assert_eq!(found.len(), 2, "{found:#?}");
    let (customers, amounts) = (&found[0], &found[1]);
    assert_eq!(customers["count"], 120, "{customers}");
    assert_eq!(
        (
            customers["first_seq"].as_i64(),
            customers["last_seq"].as_i64()
        ),
        (Some(1), Some(200))
    );
    assert_eq!(amounts["count"], 80, "{amounts}");
    assert_eq!(
        (amounts["first_seq"].as_i64(), amounts["last_seq"].as_i64()),
        (Some(3), Some(199))
    );
    for g in &found {
        assert_eq!(g["endpoint"], "crm");
        assert_eq!(g["status"], 422);
        assert_eq!(g["actions"], json!(["retry", "ignore"]));
        let id = g["group"].as_str().unwrap();
        assert!(
            id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(g[k].as_str().unwrap()).unwrap();
        assert!(at("first_at") <= at("last_at"), "{g}");
    }
    // The sample is the latest answer in full; the cause has what varies
    // masked.
    let sample = customers["sample"].as_str().unwrap();
    assert!(
        sample.contains("422") && sample.contains("order o200: customer 2400 unknown"),
        "{sample}"
    );
    assert!(
        customers["cause"]
            .as_str()
            .unwrap()
            .ends_with(r#"# {"error": "order o#: customer # unknown", "request": "…"}"#),
        "{customers}"
    );
    assert!(
        amounts["sample"]
            .as_str()
            .unwrap()
            .ends_with("amount 199.99 exceeds the limit of 'silver' accounts"),
        "{amounts}"
    );
    assert!(
        amounts["cause"]
            .as_str()
            .unwrap()
            .ends_with("amount #.# exceeds the limit of '…' accounts"),
        "{amounts}"
    );
    let customers_id = customers["group"].as_str().unwrap().to_string();
    let amounts_id = amounts["group"].as_str().unwrap().to_string();

    // The CLI lists the same groups.
    let table = stdout(&daemon.cli(&["tx", "errors", "LIVE", "orders"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("GROUP"), "{table}");
    assert!(
        lines[1].starts_with(&format!("{customers_id}  120    1-200  crm")),
        "{table}"
    );
    assert!(
        lines[2].starts_with(&format!("{amounts_id}  80     3-199  crm")),
        "{table}"
    );
    let as_json: Value = serde_json::from_str(&stdout(
        &daemon.cli(&["--json", "tx", "errors", "LIVE", "orders"]),
    ))
    .unwrap();
    assert_eq!(as_json.as_array().map(Vec::len), Some(2));

    // Ids do not change with a restart.
    daemon.restart().await;
    let again: Vec<Value> = groups(&daemon).await;
    assert_eq!(again[0]["group"], customers_id.as_str());
    assert_eq!(again[1]["group"], amounts_id.as_str());

    // Unknown groups and actions: 404 with a JSON error, nothing changed.
    for path in [
        "errors/000000000000/retry",
        "errors/not-a-group/ignore",
        &format!("errors/{customers_id}/replay"),
    ] {
        let (status, v) = daemon
            .post(
                &format!("/api/v1/sites/LIVE/integrations/orders/{path}"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (status, _) = daemon
        .get("/api/v1/sites/LIVE/integrations/nobody/errors")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The target is fixed: retrying the customers' group delivers exactly
    // those records, in sequence order.
    target.accept_all();
    let out = stdout(&daemon.cli(&["tx", "retry", "--group", &customers_id, "LIVE", "orders"]));
    assert_eq!(
        out.trim(),
        format!("Error group {customers_id} of orders: 120 transactions retried")
    );
    let wanted: Vec<String> = (1..=RECORDS)
        .filter(|&seq| is_customer(seq))
        .map(|seq| format!("LIVE:orders:{seq}"))
        .collect();
    eventually(60, "the customers' group delivered", || async {
        target.count() >= wanted.len() && daemon.integration("LIVE", "orders").await["queued"] == 0
    })
    .await;
    let keys: Vec<String> = target.received().into_iter().map(|r| r.key).collect();
    assert_eq!(keys, wanted);
    // The other group is still in Error, whole; the retried one is gone.
    let left = groups(&daemon).await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["group"], amounts_id.as_str());
    assert_eq!(left[0]["count"], 80);
    let (status, _) = daemon
        .post(
            &format!("/api/v1/sites/LIVE/integrations/orders/errors/{customers_id}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "none of it in Error any more"
    );

    // Roles: a viewer may list the groups but not act on them; an operator
    // ignores the other group.
    let viewer = daemon.create_token("viewer", "vic");
    let operator = daemon.create_token("operator", "olga");
    let call = |method: reqwest::Method, path: &str, token: &str| {
        daemon
            .http()
            .request(method, daemon.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let errors_path = "/api/v1/sites/LIVE/integrations/orders/errors";
    let ignore = format!("{errors_path}/{amounts_id}/ignore");
    let r = call(reqwest::Method::GET, errors_path, &viewer)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Vec<Value> = r.json().await.unwrap();
    assert_eq!(
        listed[0]["actions"],
        json!([]),
        "a viewer is offered nothing"
    );
    let r = call(reqwest::Method::POST, &ignore, &viewer).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = call(reqwest::Method::POST, &ignore, &operator)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let acted: Value = r.json().await.unwrap();
    assert_eq!(
        acted,
        json!({"group": amounts_id, "action": "ignore", "count": 80, "done": 80, "skipped": 0})
    );
    let r = call(
        reqwest::Method::GET,
        "/api/v1/sites/LIVE/integrations/orders/transactions?state=ignored&limit=1000",
        &operator,
    )
    .await
    .unwrap();
    let ignored: Vec<Value> = r.json().await.unwrap();
    let mut seqs: Vec<i64> = ignored.iter().map(|t| t["seq"].as_i64().unwrap()).collect();
    seqs.sort();
    let amounts_seqs: Vec<i64> = (1..=RECORDS as i64)
        .filter(|&seq| !is_customer(seq as usize))
        .collect();
    assert_eq!(seqs, amounts_seqs);
    let r = call(reqwest::Method::GET, errors_path, &operator)
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    assert_eq!(target.count(), wanted.len(), "nothing ignored was sent");

    // Audited once each, with the count; the viewer's refusal too.
    let r = call(
        reqwest::Method::GET,
        "/api/v1/sites/LIVE/audit?limit=1000",
        &operator,
    )
    .await
    .unwrap();
    let audit: Vec<Value> = r.json().await.unwrap();
    let entries =
        |action: &str| -> Vec<&Value> { audit.iter().filter(|a| a["action"] == action).collect() };
    let retried = entries("errors.retry");
    assert_eq!(retried.len(), 1, "{retried:#?}");
    assert_eq!(
        retried[0]["subject"],
        format!("integration/orders/errors/{customers_id}")
    );
    assert_eq!(retried[0]["outcome"], "ok: 120 retried");
    let ignored = entries("errors.ignore");
    let outcomes: Vec<&str> = ignored
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(ignored.len(), 2, "{ignored:#?}");
    assert_eq!(outcomes[0], "ok: 80 ignored");
    assert_eq!(ignored[0]["actor"], "olga");
    assert!(
        outcomes[1].starts_with("refused: forbidden"),
        "{outcomes:?}"
    );
    assert!(
        entries("tx.retry").is_empty() && entries("tx.ignore").is_empty(),
        "one entry for a group, not one per transaction"
    );
    // And one log line each.
    let r = call(reqwest::Method::GET, "/api/v1/sites/LIVE/log", &operator)
        .await
        .unwrap();
    let log = r.text().await.unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("transactions of orders retried by"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "80 transactions of orders ignored by olga (error group {amounts_id})"
        )),
        "{log}"
    );
}
