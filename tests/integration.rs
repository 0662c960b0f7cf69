//! Seeds 001 and 002: pausing, resuming, stopping and starting an
//! integration.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_integration_queues_in_order_and_resume_drains_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let marker = Target::start().await;
    let toml = webhook_site(&target, 1) + &marker_integration(&marker);
    let daemon = Daemon::start(dir.path(), &toml).await;

    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "planned maintenance"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "paused");
    assert_eq!(v["holds"][0]["kind"], "operator");
    assert_eq!(v["holds"][0]["reason"], "planned maintenance");

    // Accepted and queued, one at a time and as an array; nothing is sent.
    for n in 0..40 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let batch: Vec<Value> = (40..60).map(order).collect();
    let (status, _) = daemon
        .hook("LIVE", "orders", "web", Value::Array(batch))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Another integration's record, posted after these, went all the way
    // through: had the pause not held, the first of these would have been
    // sent long before.
    daemon.marker_delivered(&marker).await;
    assert_eq!(target.count(), 0, "nothing reaches the target while paused");
    assert_eq!(
        target.requests.load(Ordering::SeqCst),
        0,
        "nothing reaches the target while paused"
    );
    assert_eq!(daemon.integration("LIVE", "orders").await["queued"], 60);

    // Resume against a slow target: progress is visible while it drains.
    target.set_delay(Duration::from_millis(30));
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "active");
    assert_eq!(v["holds"], json!([]));
    // Poll until progress shows part of the backlog done.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = daemon.integration("LIVE", "orders").await;
        if let Some(done) = v["resume"]["done"].as_i64() {
            assert_eq!(v["resume"]["total"], 60, "{v}");
            if done > 0 && done < 60 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no progress seen while draining: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New records follow the backlog.
    for n in 60..70 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(20, "70 records delivered", || async {
        target.count() >= 70
    })
    .await;
    let ns: Vec<Value> = target.field("n");
    assert_eq!(
        ns,
        (0..70).map(|n| json!(n)).collect::<Vec<_>>(),
        "creation order"
    );
    let keys: Vec<String> = target.received().into_iter().map(|r| r.key).collect();
    assert_eq!(keys[0], "LIVE:orders:1");
    assert_eq!(keys[69], "LIVE:orders:70");
    eventually(5, "the drain is over", || async {
        daemon.integration("LIVE", "orders").await["resume"].is_null()
    })
    .await;
    assert_eq!(daemon.integration("LIVE", "orders").await["queued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_returns_only_when_no_send_will_start() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(20));
    // As slow as the target: a delivery in flight when pause returned would
    // end before a marker record sent after it.
    let marker = Target::start().await;
    marker.set_delay(Duration::from_millis(20));
    let toml = webhook_site(&target, 1) + &marker_integration(&marker);
    let daemon = Daemon::start(dir.path(), &toml).await;
    let batch: Vec<Value> = (0..200).map(order).collect();
    let (status, _) = daemon
        .hook("LIVE", "orders", "web", Value::Array(batch))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(10, "the drain started", || async { target.count() >= 5 }).await;
    for _ in 0..3 {
        let (status, _) = daemon
            .post("/api/v1/sites/LIVE/integrations/orders/pause", json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let at_pause = target.count();
        // Requests are counted as they arrive, before the target's delay:
        // a send that starts after this is seen at once.
        let asked_at_pause = target.requests.load(Ordering::SeqCst);
        // A sender that went on after the pause returned would have sent
        // at once, before this other record was even posted.
        daemon.marker_delivered(&marker).await;
        assert_eq!(
            target.requests.load(Ordering::SeqCst),
            asked_at_pause,
            "a send started after pause returned"
        );
        assert_eq!(
            target.count(),
            at_pause,
            "a send started after pause returned"
        );
        let (status, _) = daemon
            .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let resumed_at = target.count();
        eventually(10, "sending again", || async {
            target.count() > resumed_at + 3
        })
        .await;
    }
    eventually(20, "all delivered", || async { target.count() >= 200 }).await;
    let ns: Vec<Value> = target.field("n");
    assert_eq!(ns, (0..200).map(|n| json!(n)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_through_the_cli_shows_progress_until_the_backlog_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(10));
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let out = daemon.cli(&["integration", "pause", "LIVE", "orders", "--reason", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: Vec<Value> = (0..150).map(order).collect();
    daemon
        .hook("LIVE", "orders", "web", Value::Array(batch))
        .await;
    let started = Instant::now();
    let out = daemon.cli(&["integration", "resume", "LIVE", "orders"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It returned only when the backlog was sent, and said so.
    assert!(
        target.count() >= 150,
        "returned after {:?} with {} sent",
        started.elapsed(),
        target.count()
    );
    assert!(stdout.contains("150"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_integration_captures_nothing_and_mismatches_are_409() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = format!(
        r#"{}
[sites.LIVE.endpoints.ticker]
kind = "generator"

[[sites.LIVE.integrations.orders.flows]]
name = "ticks"
source = "ticker"
target = "crm"
schedule = "every 1s"
"#,
        // Level 6 keeps the line that says a scheduled firing was skipped.
        "[sites.LIVE]\nlog_level = 6\n".to_string() + &webhook_site(&target, 1)
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let action = |a: &'static str| format!("/api/v1/sites/LIVE/integrations/orders/{a}");

    // Active: resume and start do not fit.
    for a in ["resume", "start"] {
        let (status, v) = daemon.post(&action(a), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{a}: {v}");
        assert!(v["error"].as_str().unwrap().contains("active"), "{a}: {v}");
    }
    let (status, v) = daemon
        .post(&action("stop"), json!({"reason": "decommissioned"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["status"], "Disabled");
    let runs_before = daemon.flow("LIVE", "ticks").await["last_run"]["id"].clone();

    // Stopped: the webhook answers 503 with Retry-After; nothing runs.
    let (status, retry) = daemon.hook("LIVE", "orders", "web", order(1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.unwrap().parse::<u64>().unwrap() > 0);
    // Two firings of the schedule come and are skipped, each said in the
    // log when it would have run (or one runs, and fails the test below).
    let skipped = "Scheduled run of flow ticks skipped";
    let before = daemon.log_lines("LIVE", 6, skipped).await;
    eventually(10, "two scheduled firings skipped", || async {
        daemon.log_lines("LIVE", 6, skipped).await >= before + 2
            || daemon.flow("LIVE", "ticks").await["last_run"]["id"] != runs_before
    })
    .await;
    assert_eq!(
        daemon.flow("LIVE", "ticks").await["last_run"]["id"],
        runs_before,
        "no scheduled run"
    );
    for a in ["pause", "resume", "stop"] {
        let (status, v) = daemon.post(&action(a), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{a}: {v}");
        assert!(v["error"].as_str().unwrap().contains("stopped"), "{a}: {v}");
    }
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/flows/ticks/run", json!({"mode": "all"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // Started again, it captures again; a paused one refuses start and pause.
    let (status, _) = daemon.post(&action("start"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = daemon.hook("LIVE", "orders", "web", order(2)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    daemon.post(&action("pause"), json!({})).await;
    for a in ["pause", "start"] {
        let (status, v) = daemon.post(&action(a), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{a}: {v}");
        assert!(v["error"].as_str().unwrap().contains("paused"), "{a}: {v}");
    }
    // Unknown names are 404, bad bodies 400, all JSON.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/nope/pause", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
    let (status, v) = daemon.post("/api/v1/sites/NOPE/start", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = daemon.post(&action("pause"), json!({"reason": 5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].is_string());
    let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "integration.stop"
            && a["reason"] == "decommissioned"
            && a["actor"] == "tester"));
}
