//! An integration's history (counts per minute, for charts) against what
//! actually happened in a run: records queued, delivered, failed for good
//! and retried, and the queue's depth; kept across a stop of the site.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// The sums over every point of a history: (queued, delivered, failed,
/// retried), and the last point's depth.
fn sums(points: &Value) -> ((i64, i64, i64, i64), Value) {
    let points = points.as_array().expect("an array of points");
    let sum = |field: &str| -> i64 { points.iter().map(|p| p[field].as_i64().unwrap()).sum() };
    (
        (
            sum("queued"),
            sum("delivered"),
            sum("failed"),
            sum("retried"),
        ),
        points.last().unwrap()["depth"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_counts_what_was_queued_delivered_failed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = webhook_site(&target, 1).replace(
        "[sites.LIVE.integrations.orders]\n",
        "[sites.LIVE.integrations.orders]\non_error = \"skip\"\n",
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let history = "/api/v1/sites/LIVE/integrations/orders/history";

    // Nothing yet: every minute of the last hour, all zero.
    let (status, points) = daemon.get(history).await;
    assert_eq!(status, StatusCode::OK, "{points}");
    assert!(
        (60..=61).contains(&points.as_array().unwrap().len()),
        "{points}"
    );
    assert_eq!(sums(&points).0, (0, 0, 0, 0));

    // Ten records, three of them refused for good.
    for n in 1..=10 {
        let mut record = order(n);
        if n % 3 == 0 {
            record["reject"] = json!(true);
        }
        let (status, _) = daemon.hook("LIVE", "orders", "web", record).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "7 delivered, 3 failed", || async {
        let v = daemon.integration("LIVE", "orders").await;
        target.count() == 7 && v["queued"] == 0
    })
    .await;

    // The target goes away: five more wait, retried, then delivered.
    target.stop().await;
    for n in 11..=15 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(10, "held: the endpoint is offline", || async {
        hold_kinds(&daemon.integration("LIVE", "orders").await)
            .contains(&"endpoint-offline".to_string())
    })
    .await;
    let (_, points) = daemon.get(history).await;
    let ((queued, delivered, _, retried), depth) = sums(&points);
    assert_eq!((queued, delivered), (15, 7));
    assert!(retried >= 1, "{points}");
    assert_eq!(depth, 5, "the five waiting: {points}");
    target.restart().await;
    eventually(20, "all 12 delivered", || async {
        target.deduplicated().len() == 12
            && daemon.integration("LIVE", "orders").await["queued"] == 0
    })
    .await;

    let (_, points) = daemon.get(history).await;
    let ((queued, delivered, failed, retried), depth) = sums(&points);
    assert_eq!((queued, failed), (15, 3), "{points}");
    // A record delivered twice (its answer lost) counts twice.
    assert_eq!(delivered as usize, target.count(), "{points}");
    assert!(retried >= 1);
    assert_eq!(depth, 0);
    let (_, site_points) = daemon.get("/api/v1/sites/LIVE/history").await;
    assert_eq!(
        sums(&site_points).0,
        (queued, delivered, failed, retried),
        "the site's history adds up its integrations'"
    );

    // A stop writes the unfinished minute: after it, the same counts come
    // from the store alone.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "history"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, points) = daemon.get(history).await;
    assert_eq!(sums(&points).0, (queued, delivered, failed, retried));
    let (_, points) = daemon
        .get(&format!("{history}?step=1h&since=2026-01-01T00:00:00Z"))
        .await;
    assert_eq!(sums(&points).0, (queued, delivered, failed, retried));
    let (status, v) = daemon.post("/api/v1/sites/LIVE/start", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, points) = daemon.get(&format!("{history}?step=1d")).await;
    assert_eq!(sums(&points).0, (queued, delivered, failed, retried));

    // The bands of the chart: the outage and the stop, each over.
    let (status, holds) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/holds")
        .await;
    assert_eq!(status, StatusCode::OK, "{holds}");
    let holds = holds.as_array().unwrap();
    let kinds: Vec<&str> = holds.iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["endpoint-offline", "site-stopped"], "{holds:?}");
    assert!(holds.iter().all(|h| h["until"].is_string()), "{holds:?}");
    assert_eq!(holds[0]["by"], "sluice");
    assert!(holds[0]["reason"].as_str().unwrap().contains("crm"));
    assert_eq!(
        (&holds[1]["by"], &holds[1]["reason"]),
        (&json!("tester"), &json!("history"))
    );
    let (_, site_holds) = daemon.get("/api/v1/sites/LIVE/holds").await;
    assert_eq!(site_holds.as_array().unwrap().len(), 2);
    assert_eq!(site_holds[0]["integration"], "orders");

    // Bad questions get a clear answer.
    for (query, says) in [
        ("?step=5m", "1m, 1h, 1d"),
        ("?since=yesterday", "RFC 3339"),
        ("?since=2020-01-01T00:00:00Z", "larger step"),
        ("?limit=3", "limit"),
    ] {
        let (status, v) = daemon.get(&format!("{history}{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{query}: {v}");
    }
    let (status, _) = daemon
        .get("/api/v1/sites/LIVE/integrations/nothing/history")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_history_off_keeps_none_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = format!(
        "[sites.LIVE]\nkeep_history = \"off\"\n{}",
        webhook_site(&target, 1)
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "delivered", || async { target.count() == 1 }).await;
    let (status, v) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/history")
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("keep_history"), "{v}");
}
