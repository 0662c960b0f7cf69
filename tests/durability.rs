//! Nothing acknowledged is lost: SIGKILL while records flow, and restarts
//! that keep every state.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_record_survives_sigkill_and_arrives_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(20));
    let mut daemon = Daemon::start(dir.path(), &webhook_site(&target, 5)).await;

    // Send records, one request each, while the integration drains; kill the
    // daemon part-way with SIGKILL.
    let mut accepted = Vec::new();
    let mut n = 0;
    while accepted.len() < 300 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        accepted.push(n);
        n += 1;
    }
    eventually(10, "some delivered", || async { target.count() > 20 }).await;
    daemon.kill();
    let delivered_at_kill = target.count();
    assert!(
        delivered_at_kill < accepted.len(),
        "the kill came before the drain ended ({delivered_at_kill} delivered)"
    );

    target.set_delay(Duration::ZERO);
    daemon.restart().await;
    // More after the restart, to see that new records still come after.
    for _ in 0..50 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        accepted.push(n);
        n += 1;
    }
    eventually(30, "all accepted records delivered", || async {
        target.deduplicated().len() >= accepted.len()
    })
    .await;
    let unique: Vec<Value> = target
        .deduplicated()
        .into_iter()
        .map(|r| r.record["n"].clone())
        .collect();
    let want: Vec<Value> = accepted.iter().map(|n| json!(n)).collect();
    assert_eq!(unique, want, "every accepted record, once, in order");
    // Anything delivered twice came with the same key (checked by
    // `deduplicated`), and only what was delivered but not yet recorded at
    // the kill: at most two batches of 5 (tests/resend.rs kills again and
    // again).
    let repeats = target.count() - target.deduplicated().len();
    assert!(
        repeats <= 10,
        "{repeats} repeats; delivered {delivered_at_kill} before the kill"
    );
    // And keys are the `{site}:{integration}:{seq}` of the store.
    assert!(target
        .received()
        .iter()
        .all(|r| r.key.starts_with("LIVE:orders:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_checkpoints_and_queues_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let mut lines = String::new();
    for i in 1..=30 {
        lines.push_str(&format!(
            "{{\"id\": {i}, \"updated_at\": \"2026-01-{i:02}\"}}\n"
        ));
    }
    std::fs::write(dir.path().join("erp.jsonl"), lines).unwrap();
    let toml = format!(
        r#"{webhook}
[sites.LIVE.endpoints.erp]
kind = "file"
path = "{erp}"

[sites.LIVE.integrations.customers]

[[sites.LIVE.integrations.customers.flows]]
name = "customers"
source = "erp"
target = "crm"
key = "id"
cursor = "updated_at"

[sites.STAGE.endpoints.shop]
kind = "webhook"

[sites.STAGE.endpoints.crm]
kind = "http"
url = "{url}"

[sites.STAGE.integrations.orders]

[[sites.STAGE.integrations.orders.flows]]
name = "web"
source = "shop"
target = "crm"
"#,
        webhook = webhook_site(&target, 1),
        erp = dir.path().join("erp.jsonl").display(),
        url = target.url(),
    );
    let mut daemon = Daemon::start(dir.path(), &toml).await;

    // customers: paused, then a full run queues 30 and moves the checkpoint.
    daemon
        .post(
            "/api/v1/sites/LIVE/integrations/customers/pause",
            json!({"reason": "hold it"}),
        )
        .await;
    daemon
        .post(
            "/api/v1/sites/LIVE/flows/customers/run",
            json!({"mode": "changed"}),
        )
        .await;
    eventually(10, "the run queued 30", || async {
        daemon.integration("LIVE", "customers").await["queued"] == 30
    })
    .await;
    // orders: stopped. STAGE: stopped.
    daemon
        .post("/api/v1/sites/LIVE/integrations/orders/stop", json!({}))
        .await;
    let (status, _) = daemon
        .post("/api/v1/sites/STAGE/stop", json!({"reason": "stocktake"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let checkpoint = daemon.flow("LIVE", "customers").await["checkpoint"].clone();
    assert_eq!(checkpoint, json!("2026-01-30"));

    daemon.restart().await;

    let customers = daemon.integration("LIVE", "customers").await;
    assert_eq!(customers["state"], "paused");
    assert_eq!(customers["holds"][0]["kind"], "operator");
    assert_eq!(customers["holds"][0]["reason"], "hold it");
    assert_eq!(customers["queued"], 30);
    assert_eq!(
        daemon.integration("LIVE", "orders").await["state"],
        "stopped"
    );
    let (_, stage) = daemon.get("/api/v1/sites/STAGE").await;
    assert_eq!(stage["state"], "stopped");
    assert_eq!(stage["stop_reason"], "stocktake");
    let (_, live) = daemon.get("/api/v1/sites/LIVE").await;
    assert_eq!(live["state"], "running");
    assert_eq!(
        daemon.flow("LIVE", "customers").await["checkpoint"],
        checkpoint
    );
    let (status, _) = daemon.hook("STAGE", "orders", "web", order(1)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a stopped site takes nothing"
    );

    // Nothing was sent while paused; 'Send Changed' finds nothing new.
    assert_eq!(target.count(), 0);
    daemon
        .post(
            "/api/v1/sites/LIVE/flows/customers/run",
            json!({"mode": "changed"}),
        )
        .await;
    eventually(10, "the run ended", || async {
        daemon.flow("LIVE", "customers").await["status"] == "Success"
    })
    .await;
    assert_eq!(
        daemon.flow("LIVE", "customers").await["last_run"]["captured"],
        0
    );
    daemon
        .post(
            "/api/v1/sites/LIVE/integrations/customers/resume",
            json!({}),
        )
        .await;
    eventually(10, "the queue drained", || async { target.count() >= 30 }).await;
    let ids: Vec<Value> = target.field("id");
    assert_eq!(ids, (1..=30).map(|i| json!(i)).collect::<Vec<_>>());
}
