//! A flow's `map` and `transform`, end to end with the real binary: the
//! record a target gets, the ones a filter ignores (with the reason), one
//! record into two, a jq program that does not compile (a configuration
//! error at its line), a transform failing at run time repaired by a fixed
//! configuration, a reload and `sluice tx retry` (seed 002's repair), and
//! `sluice flow try`.

mod common;

use std::process::Command;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// The site of [`webhook_site`] (flow `web` from webhook `shop` to the
/// target) with `lines` added to the flow.
fn mapped_site(target: &Target, lines: &str) -> String {
    webhook_site(target, 1).replace("key = \"id\"\n", &format!("key = \"id\"\n{lines}\n"))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn transactions(daemon: &Daemon, state: &str) -> Vec<Value> {
    let (status, v) = daemon
        .get(&format!(
            "/api/v1/sites/LIVE/integrations/orders/transactions?state={state}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_renames_copies_nested_fields_and_sets_constants_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = mapped_site(
        &target,
        r#"map = { contact_id = "id", city = "address.city", country = { value = "NZ" }, tier = { from = "level", default = "basic" }, "billing.zip" = "address.zip" }"#,
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let record =
        json!({"id": "c1", "name": "dropped", "address": {"city": "Nelson", "zip": "7010"}});
    let (status, _) = daemon.hook("LIVE", "orders", "web", record.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(10, "the mapped record delivered", || async {
        target.count() == 1
    })
    .await;
    let got = &target.received()[0];
    assert_eq!(
        got.record,
        json!({"contact_id": "c1", "city": "Nelson", "country": "NZ", "tier": "basic",
               "billing": {"zip": "7010"}})
    );
    assert_eq!(got.key, "LIVE:orders:1");
    // The queue keeps the record as it arrived (recorded as sent just
    // after the target took it).
    eventually(10, "recorded as sent", || async {
        transactions(&daemon, "sent").await.len() == 1
    })
    .await;
    let sent = transactions(&daemon, "sent").await;
    assert_eq!(sent[0]["record"], record);

    // `flow try --file`: what a record becomes, nothing sent.
    let file = dir.path().join("record.json");
    std::fs::write(&file, r#"{"id": "c2", "level": "gold"}"#).unwrap();
    let out = daemon.cli(&[
        "flow",
        "try",
        "LIVE",
        "web",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        r#"{"contact_id":"c2","country":"NZ","tier":"gold"}"#
    );
    let out = daemon.cli(&[
        "--json",
        "flow",
        "try",
        "LIVE",
        "web",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["input"], json!({"id": "c2", "level": "gold"}));
    assert_eq!(answer["ignored"], Value::Null);
    assert_eq!(answer["error"], Value::Null);
    // The API call.
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/LIVE/flows/web/try",
            json!({"record": {"id": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["output"],
        json!([{"contact_id": 3, "country": "NZ", "tier": "basic"}])
    );
    // A webhook flow has no source to read a record from.
    let (status, answer) = daemon
        .post("/api/v1/sites/LIVE/flows/web/try", json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("webhook"),
        "{answer}"
    );
    assert_eq!(target.count(), 1, "a try sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_ignores_what_it_filters_out_and_makes_one_record_into_several() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = mapped_site(
        &target,
        r#"transform = "select(.qty > 0) | if .lines then .lines[] + {order: .id} else . end""#,
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    for record in [
        json!({"id": "o1", "qty": 0}),
        json!({"id": "o2", "qty": 1, "lines": [{"sku": "a"}, {"sku": "b"}]}),
        json!({"id": "o3", "qty": 2}),
    ] {
        let (status, _) = daemon.hook("LIVE", "orders", "web", record).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "o2 (twice) and o3 delivered", || async {
        target.count() == 3
    })
    .await;
    let got: Vec<(String, Value)> = target
        .received()
        .into_iter()
        .map(|r| (r.key, r.record))
        .collect();
    assert_eq!(
        got,
        [
            (
                "LIVE:orders:2".to_string(),
                json!({"sku": "a", "order": "o2"})
            ),
            (
                "LIVE:orders:2#2".to_string(),
                json!({"sku": "b", "order": "o2"})
            ),
            ("LIVE:orders:3".to_string(), json!({"id": "o3", "qty": 2})),
        ]
    );
    // o1 was never sent: Ignored, with the reason.
    let ignored = transactions(&daemon, "ignored").await;
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert_eq!(ignored[0]["seq"], 1);
    assert_eq!(
        ignored[0]["last_error"],
        "flow web: the transform yielded nothing"
    );
    // Two transactions, three records: recorded as sent just after.
    eventually(10, "two recorded as sent", || async {
        transactions(&daemon, "sent").await.len() >= 2
    })
    .await;
    let sent = transactions(&daemon, "sent").await;
    assert_eq!(sent.len(), 2, "two transactions, three records: {sent:?}");
    let out = daemon.cli(&["tx", "list", "LIVE", "orders"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("flow web: the transform yielded nothing"),
        "{}",
        stdout(&out)
    );
    // `flow try` says so too.
    let file = dir.path().join("zero.json");
    std::fs::write(&file, r#"{"qty": 0}"#).unwrap();
    let out = daemon.cli(&[
        "flow",
        "try",
        "LIVE",
        "web",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "ignored: flow web: the transform yielded nothing"
    );
}

#[test]
fn a_jq_syntax_error_is_a_configuration_error_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"listen = "127.0.0.1:0"

[sites.LIVE.endpoints.shop]
kind = "webhook"

[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://127.0.0.1:9/x"

[sites.LIVE.integrations.orders]

[[sites.LIVE.integrations.orders.flows]]
name = "web"
source = "shop"
target = "crm"
transform = ".total = (.qty * .price"
map = { id = "id", country = 5, tier = { from = "level", defualt = "basic" } }
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // Every problem at once, each at its line and key, jaq's message given.
    assert!(
        err.contains("bad.toml:16: sites.LIVE.integrations.orders.flows[0].transform"),
        "{err}"
    );
    assert!(err.contains("does not compile: expected"), "{err}");
    assert!(
        err.contains("bad.toml:17: sites.LIVE.integrations.orders.flows[0].map.country"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:17: sites.LIVE.integrations.orders.flows[0].map.tier.defualt"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_failing_blocks_and_a_fixed_one_repairs_it_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = mapped_site(&target, r#"transform = ".total = (.qty * .price)""#).replace(
        "[sites.LIVE.integrations.orders]\n",
        "[sites.LIVE.integrations.orders]\non_error = \"block\"\n",
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    // The price comes as an object: jq cannot multiply by it.
    for record in [
        json!({"id": "r1", "qty": 2, "price": {"amount": 3}}),
        json!({"id": "r2", "qty": 1, "price": {"amount": 2}}),
    ] {
        let (status, _) = daemon.hook("LIVE", "orders", "web", record).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "r1 in Error", || async {
        transactions(&daemon, "error").await.len() == 1
    })
    .await;
    let failed = &transactions(&daemon, "error").await[0];
    assert_eq!(failed["seq"], 1);
    let why = failed["last_error"].as_str().unwrap();
    assert!(why.starts_with("flow web: the transform failed: "), "{why}");
    // Blocked behind it: r2 waits; the target was never called.
    let integration = daemon.integration("LIVE", "orders").await;
    assert_eq!(
        transactions(&daemon, "queued").await.len(),
        1,
        "{integration}"
    );
    assert_eq!(target.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    // `flow try` shows the failure, exit 1.
    let file = dir.path().join("r1.json");
    std::fs::write(&file, r#"{"id": "r1", "qty": 2, "price": {"amount": 3}}"#).unwrap();
    let out = daemon.cli(&[
        "flow",
        "try",
        "LIVE",
        "web",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the transform failed"),
        "{out:?}"
    );

    // The repair: the mapping fixed, the site reloaded, the record retried.
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        text.replace(".qty * .price", ".qty * .price.amount"),
    )
    .unwrap();
    let out = daemon.cli(&["site", "reload", "LIVE"]);
    assert!(out.status.success(), "{out:?}");
    let out = daemon.cli(&["tx", "retry", "LIVE", "orders", "1"]);
    assert!(out.status.success(), "{out:?}");
    eventually(10, "r1 then r2 delivered", || async { target.count() == 2 }).await;
    assert_eq!(target.field("total"), [json!(6), json!(2)]);
    assert_eq!(target.field("id"), [json!("r1"), json!("r2")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_try_reads_the_first_record_of_a_pull_source() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    std::fs::write(
        dir.path().join("erp.jsonl"),
        "{\"id\": 2, \"full_name\": \"Bea\", \"updated_at\": \"2026-01-02\"}\n\
         {\"id\": 1, \"full_name\": \"Al\", \"updated_at\": \"2026-01-01\"}\n",
    )
    .unwrap();
    let toml = format!(
        r#"
[sites.LIVE.endpoints.erp]
kind = "file"
path = "erp.jsonl"

[sites.LIVE.endpoints.crm]
kind = "http"
url = "{}"

[sites.LIVE.integrations.orders]

[[sites.LIVE.integrations.orders.flows]]
name = "customers"
source = "erp"
target = "crm"
cursor = "updated_at"

[sites.LIVE.integrations.orders.flows.map]
customer = "id"
name = {{ from = "full_name" }}
"#,
        target.url()
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let out = daemon.cli(&["flow", "try", "LIVE", "customers"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), r#"{"customer":1,"name":"Al"}"#);
    let out = daemon.cli(&["--json", "flow", "try", "LIVE", "customers"]);
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["input"]["full_name"], "Al");
    assert_eq!(target.count(), 0, "a try sends nothing");
}
