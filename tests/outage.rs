//! Seed 003: endpoints that fail and come back. The target is a real HTTP
//! server the test takes down and brings back on the same port.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// How many probes of `endpoint` on site LIVE failed so far, by `/metrics`.
async fn failed_probes(daemon: &Daemon, endpoint: &str) -> f64 {
    let text = daemon.get_text("/metrics").await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_endpoint_probes_total"
                && s.labels.get("site") == Some("LIVE")
                && s.labels.get("endpoint") == Some(endpoint)
                && s.labels.get("result") == Some("failed")
        })
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outage_holds_the_integration_and_it_resumes_by_itself_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    for n in 0..20 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(10, "20 delivered", || async { target.count() >= 20 }).await;

    target.stop().await;
    for n in 20..50 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "capture goes on during the outage"
        );
    }
    eventually(10, "the endpoint-offline hold", || async {
        hold_kinds(&daemon.integration("LIVE", "orders").await) == ["endpoint-offline"]
    })
    .await;
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    assert_eq!(crm["state"], "offline", "{crm}");
    assert!(
        crm["last_error"].as_str().unwrap().contains("refused"),
        "{crm}"
    );
    let integration = daemon.integration("LIVE", "orders").await;
    assert_eq!(
        integration["state"], "active",
        "the state a person set is unchanged"
    );
    assert_eq!(integration["holds"][0]["by"], "sluice");
    assert!(daemon.log("LIVE").await.contains("Endpoint crm is offline"));

    // The outage lasts until probes have found the target down three times
    // (250 ms after it went, then at most 500 ms apart); a probe, not a
    // delivery, is what sees it back.
    eventually(10, "three probes found it down", || async {
        failed_probes(&daemon, "crm").await >= 3.0
    })
    .await;
    target.restart().await;
    eventually(
        15,
        "all 50 delivered after the target came back",
        || async { target.deduplicated().len() >= 50 },
    )
    .await;
    let ns: Vec<Value> = target
        .deduplicated()
        .into_iter()
        .map(|r| r.record["n"].clone())
        .collect();
    assert_eq!(
        ns,
        (0..50).map(|n| json!(n)).collect::<Vec<_>>(),
        "in order"
    );
    let integration = daemon.integration("LIVE", "orders").await;
    assert!(hold_kinds(&integration).is_empty(), "{integration}");
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    assert_eq!(crm["state"], "online");
    assert!(daemon
        .log("LIVE")
        .await
        .contains("Connection to crm established; sending again for orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_pause_outlives_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let marker = Target::start().await;
    let toml = webhook_site(&target, 1) + &marker_integration(&marker);
    let daemon = Daemon::start(dir.path(), &toml).await;
    daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "planned maintenance"}),
        )
        .await;
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    target.stop().await;
    // The endpoint's test finds it down: the system's hold joins the person's.
    let (_, test) = daemon
        .post("/api/v1/sites/LIVE/endpoints/crm/test", json!({}))
        .await;
    assert_eq!(test["ok"], false, "{test}");
    let kinds = hold_kinds(&daemon.integration("LIVE", "orders").await);
    assert!(
        kinds.contains(&"operator".to_string()) && kinds.contains(&"endpoint-offline".to_string()),
        "{kinds:?}"
    );

    target.restart().await;
    eventually(15, "the system's hold lifted", || async {
        hold_kinds(&daemon.integration("LIVE", "orders").await) == ["operator"]
    })
    .await;
    // Had lifting the system's hold let the sender go, it would have sent
    // at once, before this other record was posted.
    daemon.marker_delivered(&marker).await;
    let integration = daemon.integration("LIVE", "orders").await;
    assert_eq!(integration["state"], "paused", "{integration}");
    assert_eq!(
        target.count(),
        0,
        "nothing sent while the person's pause stands"
    );
    assert_eq!(
        target.requests.load(Ordering::SeqCst),
        0,
        "nothing sent while the person's pause stands"
    );

    daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    eventually(10, "delivered after the person resumed", || async {
        target.count() >= 1
    })
    .await;
}

/// A 401 that answers a request sent before the new credentials came is not
/// the endpoint's state: the request goes again with them, and nothing is
/// held (it was left Unauthorized with the right credentials in hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_credentials_replaced_while_it_was_on_its_way_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    daemon
        .await_log("LIVE", "Connection to crm established", 10)
        .await;
    // Now it wants a token, and holds its refusal until told.
    target.require_token("sesame");
    target.hold_refusals();
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "the record on its way", || async {
        target.requests.load(Ordering::SeqCst) >= 1
    })
    .await;
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/LIVE/endpoints/crm/reauthorize",
            json!({"token": "sesame"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(target.count(), 0, "the first request is still refused");
    target.release_refusals();
    eventually(10, "delivered with the new token", || async {
        target.count() >= 1
    })
    .await;
    let log = daemon.log("LIVE").await;
    assert!(
        log.contains("Endpoint crm refused the credentials replaced while transactions 1-1"),
        "{log}"
    );
    assert!(!log.contains("Endpoint crm is unauthorized"), "{log}");
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    assert_eq!(crm["state"], "online", "{crm}");
    assert!(hold_kinds(&daemon.integration("LIVE", "orders").await).is_empty());
    let (_, sent) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions?state=sent")
        .await;
    assert_eq!(
        sent[0]["attempts"], 0,
        "the refusal is not the record's: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_are_retried_without_a_hold_and_refused_credentials_hold_until_reauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let marker = Target::start().await;
    let toml = webhook_site(&target, 1) + &marker_integration(&marker);
    let daemon = Daemon::start(dir.path(), &toml).await;

    // 503 and 429 with Retry-After, then 200: retried, delivered once, in order.
    target.script(&[(503, Some(1)), (429, Some(1)), (503, None)]);
    for n in 0..5 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    let mut held = false;
    for _ in 0..400 {
        held |= !hold_kinds(&daemon.integration("LIVE", "orders").await).is_empty();
        if target.count() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!held, "no hold for an endpoint that answers");
    // Nor one placed and lifted between two looks: each is said in the log.
    let log = daemon.log("LIVE").await;
    assert!(!log.contains("Endpoint crm is"), "{log}");
    assert_eq!(
        target.field("n"),
        (0..5).map(|n| json!(n)).collect::<Vec<_>>()
    );
    assert_eq!(target.count(), 5, "each delivered once");
    let (_, sent) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions?state=sent")
        .await;
    let first = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["seq"] == 1)
        .unwrap()
        .clone();
    assert_eq!(first["attempts"], 3, "{first}");

    // 401: Unauthorized, held, and no storm of requests.
    target.require_token("good");
    let before = target.requests.load(Ordering::SeqCst);
    for n in 5..8 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(10, "the unauthorized hold", || async {
        hold_kinds(&daemon.integration("LIVE", "orders").await) == ["unauthorized"]
    })
    .await;
    // Two seconds of the daemon's own retry clock (another integration's
    // record, answered 503 with Retry-After: 2, is retried and delivered):
    // a sender backing off from 100 ms would have tried four times more.
    daemon.marker_delivered_after_retry(&marker, 2).await;
    let tried = target.requests.load(Ordering::SeqCst) - before;
    assert!(tried <= 2, "{tried} requests after a 401");
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    assert_eq!(crm["state"], "unauthorized");

    // A wrong token is refused and not echoed; the right one brings it back.
    let out = std::process::Command::new(BIN)
        .args([
            "--server",
            &daemon.server(),
            "endpoint",
            "reauthorize",
            "LIVE",
            "crm",
            "--secret-env",
            "T",
        ])
        .env("T", "sesame-wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("401") && !said.contains("sesame"), "{said}");
    let out = std::process::Command::new(BIN)
        .args([
            "--server",
            &daemon.server(),
            "endpoint",
            "reauthorize",
            "LIVE",
            "crm",
            "--stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"good\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, "delivered after reauthorization", || async {
        target.count() >= 8
    })
    .await;
    assert_eq!(
        target.field("n"),
        (0..8).map(|n| json!(n)).collect::<Vec<_>>()
    );
    assert!(hold_kinds(&daemon.integration("LIVE", "orders").await).is_empty());
    let log = daemon.log("LIVE").await;
    assert!(
        !log.contains("sesame") && !log.contains("good\n"),
        "no credential in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_blocks_the_queue_under_on_error_block() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let marker = Target::start().await;
    let toml = webhook_site(&target, 1) + &marker_integration(&marker);
    let daemon = Daemon::start(dir.path(), &toml).await;
    for body in [
        json!({"id": "a", "n": 1}),
        json!({"id": "b", "n": 2, "reject": true}),
        json!({"id": "c", "n": 3}),
    ] {
        daemon.hook("LIVE", "orders", "web", body).await;
    }
    eventually(10, "the rejection recorded", || async {
        let (_, t) = daemon
            .get("/api/v1/sites/LIVE/integrations/orders/transactions/2")
            .await;
        t["last_error"].as_str().is_some_and(|e| e.contains("422"))
    })
    .await;
    // The sender settles the record, then blocks behind it: wait for both.
    eventually(10, "the queue blocked", || async {
        daemon.integration("LIVE", "orders").await["blocked"]["seq"] == 2
    })
    .await;
    // A sender that went past the rejected record would have sent the next
    // one at once, before this other record was posted.
    daemon.marker_delivered(&marker).await;
    assert_eq!(
        target.field("n"),
        [json!(1)],
        "the queue waits behind the rejected record"
    );
    let integration = daemon.integration("LIVE", "orders").await;
    assert_eq!(integration["queued"], 1);
    assert_eq!(integration["blocked"]["seq"], 2, "{integration}");
    assert!(integration["blocked"]["error"]
        .as_str()
        .unwrap()
        .contains("no such customer"));
    // It waits for a person, even once the target would take it.
    target.accept_all();
    // A second of the daemon's own retry clock goes by (see
    // `marker_delivered_after_retry`): nothing tries the record again.
    daemon.marker_delivered_after_retry(&marker, 1).await;
    assert_eq!(target.count(), 1);
    assert_eq!(
        target.requests.load(Ordering::SeqCst),
        2,
        "1, and 2 refused"
    );
    let out = daemon.cli(&["tx", "retry", "LIVE", "orders", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, "the rest delivered after the retry", || async {
        target.count() >= 3
    })
    .await;
    assert_eq!(target.field("n"), [json!(1), json!(2), json!(3)]);
    assert!(daemon.integration("LIVE", "orders").await["blocked"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resolve_and_retry_limits_decide_when_a_busy_target_counts_as_a_failure() {
    // auto_resolve off, failures skipped: a 503 is not retried.
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = webhook_site(&target, 1)
        .replace(
            "[sites.LIVE.integrations.orders]\n",
            "[sites.LIVE.integrations.orders]\non_error = \"skip\"\n",
        )
        .replace("key = \"id\"\n", "key = \"id\"\nauto_resolve = false\n");
    let daemon = Daemon::start(dir.path(), &toml).await;
    target.script(&[(503, None)]);
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    daemon.hook("LIVE", "orders", "web", order(2)).await;
    eventually(10, "the second delivered", || async { target.count() >= 1 }).await;
    assert_eq!(
        target.field("n"),
        [json!(2)],
        "the busy answer was not retried"
    );
    let (_, t) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions/1")
        .await;
    assert_eq!(t["state"], "error", "{t}");
    assert!(t["last_error"].as_str().unwrap().contains("503"));

    // A retry limit of 2 under block: the queue waits after two attempts.
    let dir2 = tempfile::tempdir().unwrap();
    let target2 = Target::start().await;
    let toml2 =
        webhook_site(&target2, 1).replace("key = \"id\"\n", "key = \"id\"\nretry_limit = 2\n");
    let daemon2 = Daemon::start(dir2.path(), &toml2).await;
    target2.script(&[(503, None), (503, None), (503, None)]);
    daemon2.hook("LIVE", "orders", "web", order(1)).await;
    daemon2.hook("LIVE", "orders", "web", order(2)).await;
    eventually(10, "blocked after two attempts", || async {
        daemon2.integration("LIVE", "orders").await["blocked"]["seq"] == 1
    })
    .await;
    let (_, t) = daemon2
        .get("/api/v1/sites/LIVE/integrations/orders/transactions/1")
        .await;
    assert_eq!(t["attempts"], 2, "{t}");
    assert_eq!(target2.count(), 0, "nothing passes the failed one");
    let out = daemon2.cli(&["tx", "ignore", "LIVE", "orders", "1"]);
    assert!(out.status.success());
    eventually(10, "the next delivered", || async { target2.count() >= 1 }).await;
    assert_eq!(target2.field("n"), [json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_or_a_run_without_progress_is_flagged_as_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    std::fs::write(
        dir.path().join("slow.jsonl"),
        "{\"id\": 1, \"u\": 1}\n{\"id\": 2, \"u\": 2}\n",
    )
    .unwrap();
    let toml = format!(
        "[sites.LIVE]\nstall_after = \"1s\"\n{}\n[sites.LIVE.endpoints.slow]\nkind = \"file\"\npath = \"{}\"\npage_size = 1\npace = \"3s\"\n\n[[sites.LIVE.integrations.orders.flows]]\nname = \"slow\"\nsource = \"slow\"\ntarget = \"crm\"\ncursor = \"u\"\n",
        webhook_site(&target, 1),
        dir.path().join("slow.jsonl").display()
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    // The target keeps answering 503: after a second the drain is stalled,
    // with the reason; once it answers, the flag goes. It fails until the
    // flag was seen (three 503s left a stall of ~2 s, which a loaded
    // machine's PostgreSQL pass once did not look within).
    target.script(&[(503, Some(1)); 60]);
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "the drain flagged as stalled", || async {
        daemon.integration("LIVE", "orders").await["stalled"]
            .as_str()
            .is_some_and(|s| s.contains("503"))
    })
    .await;
    assert_eq!(
        daemon.integration("LIVE", "orders").await["holds"],
        json!([])
    );
    target.end_script();
    eventually(15, "delivered", || async { target.count() >= 1 }).await;
    assert!(daemon.integration("LIVE", "orders").await["stalled"].is_null());

    // A run that queues nothing for a second is flagged too.
    daemon
        .post(
            "/api/v1/sites/LIVE/flows/slow/run",
            json!({"mode": "changed"}),
        )
        .await;
    eventually(10, "the run flagged as stalled", || async {
        let flow = daemon.flow("LIVE", "slow").await;
        flow["status"] == "Running"
            && flow["stalled"]
                .as_str()
                .is_some_and(|s| s.contains("no progress"))
    })
    .await;
    eventually(10, "the run ended", || async {
        daemon.flow("LIVE", "slow").await["status"] == "Success"
    })
    .await;
    assert!(daemon.flow("LIVE", "slow").await["stalled"].is_null());
}
