//! A crash resends only what was in flight: the daemon is killed with
//! SIGKILL again and again while it drains, and after each kill the target
//! gets at most two batches' worth of records a second time (the batch whose
//! acknowledgement was being written and the one being delivered).

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

/// Kills while it drains.
const KILLS: usize = 6;

async fn kills_mid_drain_resend_at_most_two_batches(batch: usize) {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    // Slow enough that every kill lands in the middle of the drain.
    target.set_delay(Duration::from_millis(1));
    let mut daemon = Daemon::start(dir.path(), &webhook_site(&target, batch)).await;
    let mut rng = Rng::from_clock();
    let seed = rng.seed();

    let mut posted = 0;
    let mut marks = Vec::new();
    for _ in 0..KILLS {
        // Keep well ahead of the drain.
        while posted < target.deduplicated().len() + 200 * batch + 500 {
            let records: Vec<Value> = (posted..posted + 500).map(order).collect();
            let (status, _) = daemon
                .hook("LIVE", "orders", "web", Value::Array(records))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED);
            posted += 500;
        }
        // The drain is under way (this run of the daemon delivered), then
        // it runs a random while longer.
        let before = target.count();
        eventually(20, "the drain delivers", || async {
            target.count() > before + batch
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        daemon.kill();
        marks.push(target.count());
        daemon.restart().await;
    }
    eventually(60, "every record delivered", || async {
        target.deduplicated().len() >= posted
    })
    .await;

    let unique: Vec<Value> = target
        .deduplicated()
        .into_iter()
        .map(|r| r.record["n"].clone())
        .collect();
    let want: Vec<Value> = (0..posted).map(|n| serde_json::json!(n)).collect();
    assert!(unique == want, "every record once, in order");
    let resent = resent_per_kill(&target.received(), &marks, |_| true);
    println!("batch {batch}: resent per kill {resent:?} (kills at {marks:?}, seed {seed})");
    assert!(
        resent.iter().all(|&n| n <= 2 * batch),
        "batch {batch}: resent per kill {resent:?}, more than two batches ({}); \
         kills at deliveries {marks:?}, seed {seed}",
        2 * batch
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_mid_drain_resend_at_most_two_records_with_batch_1() {
    kills_mid_drain_resend_at_most_two_batches(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_mid_drain_resend_at_most_two_batches_with_batch_10() {
    kills_mid_drain_resend_at_most_two_batches(10).await;
}
