//! Seed 002's error suite: a rejected record under `on_error = "skip"`,
//! then retry, replay and ignore; and testing an endpoint on demand.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_kept_and_operators_retry_replay_and_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = webhook_site(&target, 1).replace(
        "[sites.LIVE.integrations.orders]\n",
        "[sites.LIVE.integrations.orders]\non_error = \"skip\"\n",
    )
        + "\n[sites.LIVE.endpoints.down]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/records\"\n";
    let daemon = Daemon::start(dir.path(), &toml).await;

    for body in [
        json!({"id": "o1", "n": 1}),
        json!({"id": "o2", "n": 2, "reject": true}),
        json!({"id": "o3", "n": 3}),
    ] {
        let (status, _) = daemon.hook("LIVE", "orders", "web", body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "o1 and o3 delivered", || async { target.count() >= 2 }).await;
    assert_eq!(
        target.field("n"),
        [json!(1), json!(3)],
        "the rejected one is skipped"
    );
    let (_, errors) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions?state=error")
        .await;
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["seq"], 2);
    let answer = errors[0]["last_error"].as_str().unwrap();
    assert!(
        answer.contains("422") && answer.contains("no such customer"),
        "{answer}"
    );

    // Retry once the target takes it: sent again, in its place.
    target.accept_all();
    let out = daemon.cli(&["tx", "retry", "LIVE", "orders", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, "o2 delivered on retry", || async {
        target.count() >= 3
    })
    .await;
    assert_eq!(target.received()[2].key, "LIVE:orders:2");
    let (_, tx) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions/2")
        .await;
    assert_eq!(tx["state"], "sent", "{tx}");

    // A sent transaction cannot be retried, but can be replayed as a new one.
    let out = daemon.cli(&["tx", "retry", "LIVE", "orders", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sent"));
    let (status, copy) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/transactions/1/replay",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{copy}");
    assert_eq!(copy["seq"], 4);
    eventually(10, "the replay delivered", || async { target.count() >= 4 }).await;
    assert_eq!(target.received()[3].key, "LIVE:orders:4");
    assert_eq!(target.received()[3].record["n"], 1);

    // Ignore a queued transaction while paused: it is never sent.
    daemon
        .post("/api/v1/sites/LIVE/integrations/orders/pause", json!({}))
        .await;
    daemon
        .hook("LIVE", "orders", "web", json!({"id": "o5", "n": 5}))
        .await;
    let out = daemon.cli(&["tx", "ignore", "LIVE", "orders", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    daemon
        .hook("LIVE", "orders", "web", json!({"id": "o6", "n": 6}))
        .await;
    // Sent in order: once o6 is in and the queue empty, o5, had it been
    // sent, would have come before.
    eventually(10, "o6 delivered", || async {
        target.field("n").contains(&json!(6))
            && daemon.integration("LIVE", "orders").await["queued"] == 0
    })
    .await;
    let ns: Vec<Value> = target.field("n");
    assert_eq!(ns, [json!(1), json!(3), json!(2), json!(1), json!(6)]);
    let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    for action in ["tx.retry", "tx.replay", "tx.ignore"] {
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["action"] == action),
            "{action}"
        );
    }
    let (status, _) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/transactions/99/retry",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Testing endpoints on demand.
    let out = daemon.cli(&["endpoint", "test", "LIVE", "crm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (status, down) = daemon
        .post("/api/v1/sites/LIVE/endpoints/down/test", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(down["ok"], false, "{down}");
    assert_eq!(down["state"], "offline");
    assert!(
        down["last_error"].as_str().unwrap().contains("127.0.0.1:9"),
        "{down}"
    );
}
