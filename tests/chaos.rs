//! Chaos: the daemon is killed with SIGKILL at random moments while records
//! are posted to its webhook and drained to a real target, and started
//! again, many times. At the end every record it accepted has been
//! delivered, in order; what was sent twice after a kill is at most what
//! was in flight.
//!
//! Two integrations take part, one delivering one record a request
//! (`batch = 1`), one ten (`batch = 10`). Each has one poster, which numbers
//! its records 1, 2, 3… and posts one to five at a time, from the start
//! until the last kill (and on until it has its share of the records); a
//! record counts as accepted only when its POST was answered 202. A POST that a kill cut off
//! got no answer: its records may or may not have been queued, so they
//! count neither as accepted nor, if they never arrive, as lost.
//!
//! The size comes from the environment; the default is the reduced size
//! that `cargo test` (and so CI) runs, a few seconds:
//!
//! ```sh
//! cargo test --test chaos -- --nocapture                                   # 5 kills, ≥ 2000 records
//! SLUICE_CHAOS_KILLS=100 SLUICE_CHAOS_RECORDS=100000 cargo test --release --test chaos -- --nocapture
//! ```

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The integrations: name (also its flow's name) and the batch of its target.
const INTEGRATIONS: [(&str, usize); 2] = [("orders", 1), ("invoices", 10)];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(target: &Target) -> String {
    let mut toml = String::from("[sites.LIVE.endpoints.shop]\nkind = \"webhook\"\n");
    for (name, batch) in INTEGRATIONS {
        toml.push_str(&format!(
            r#"
[sites.LIVE.endpoints.{name}-target]
kind = "http"
url = "{url}"
batch = {batch}

[sites.LIVE.integrations.{name}]

[[sites.LIVE.integrations.{name}.flows]]
name = "{name}"
source = "shop"
target = "{name}-target"
"#,
            url = target.url(),
        ));
    }
    toml
}

/// What one poster saw.
#[derive(Default)]
struct Posted {
    /// Records answered 202.
    accepted: Vec<u64>,
    /// Records whose POST got no answer (cut off by a kill).
    unanswered: Vec<u64>,
}

/// Posts numbered records to one integration's webhook until told to stop,
/// and at least until `records` are accepted.
async fn post(url: String, records: usize, stop: Arc<AtomicBool>) -> Posted {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut rng = Rng::from_clock();
    let mut posted = Posted::default();
    let mut next = 1u64;
    while !stop.load(Ordering::SeqCst) || posted.accepted.len() < records {
        let count = 1 + rng.below(5);
        let numbers: Vec<u64> = (next..next + count).collect();
        next += count;
        let body: Vec<Value> = numbers.iter().map(|n| json!({ "n": n })).collect();
        match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().as_u16() == 202 => posted.accepted.extend(numbers),
            // Refused (a site starting, say): not queued.
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            // The daemon is down: nothing was sent.
            Err(e) if e.is_connect() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => posted.unanswered.extend(numbers),
        }
    }
    posted
}

/// The integration a record the target received belongs to (by its key,
/// `LIVE:{integration}:{seq}`).
fn integration_of(r: &Received) -> &str {
    r.key.split(':').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_keeps_order() {
    let kills = env("SLUICE_CHAOS_KILLS", 5);
    let records = env("SLUICE_CHAOS_RECORDS", 2000);
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    // Every delivery takes a moment, so kills cut some off.
    target.set_delay(Duration::from_millis(1));
    let mut daemon = Daemon::start(dir.path(), &config(&target)).await;
    let mut rng = Rng::from_clock();
    let seed = rng.seed();

    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = INTEGRATIONS
        .iter()
        .map(|(name, _)| {
            let url = daemon.url(&format!("/hooks/LIVE/{name}/{name}"));
            tokio::spawn(post(url, records / INTEGRATIONS.len(), stop.clone()))
        })
        .collect();

    // The killer: a random while of posting and draining, SIGKILL, a random
    // while down (posts are refused), start again.
    let mut marks = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        daemon.kill();
        marks.push(target.count());
        tokio::time::sleep(Duration::from_millis(rng.below(100))).await;
        daemon.restart().await;
    }
    // The posters go on until their count is accepted.
    stop.store(true, Ordering::SeqCst);
    let mut posted = HashMap::new();
    for (handle, (name, _)) in posters.into_iter().zip(INTEGRATIONS) {
        let finished = tokio::time::timeout(Duration::from_secs(60), handle).await;
        let p = match finished {
            Ok(p) => p.unwrap(),
            Err(_) => panic!("the poster of {name} did not finish"),
        };
        posted.insert(name, p);
    }

    // Everything queued is delivered: nothing is queued any more.
    for (name, _) in INTEGRATIONS {
        eventually(120, &format!("{name} drained"), || async {
            daemon.integration("LIVE", name).await["queued"] == 0
        })
        .await;
    }

    let received = target.received();
    let mut lost_total = 0;
    let mut violations_total = 0;
    println!("chaos: {kills} kills (seed {seed})");
    for (name, batch) in INTEGRATIONS {
        let p = &posted[name];
        let mut delivered = HashSet::new();
        let mut keys = HashSet::new();
        let mut highest = 0u64;
        let mut violations = 0;
        for r in received.iter().filter(|r| integration_of(r) == name) {
            if !keys.insert(r.key.clone()) {
                continue; // a resend
            }
            let n = r.record["n"].as_u64().unwrap();
            if n < highest {
                violations += 1;
            }
            highest = highest.max(n);
            delivered.insert(n);
        }
        let lost: Vec<u64> = p
            .accepted
            .iter()
            .copied()
            .filter(|n| !delivered.contains(n))
            .collect();
        let unanswered_delivered = p
            .unanswered
            .iter()
            .filter(|n| delivered.contains(n))
            .count();
        let resent = resent_per_kill(&received, &marks, |r| integration_of(r) == name);
        println!(
            "{name} (batch {batch}): accepted {}, unanswered {} ({unanswered_delivered} of them \
             delivered), delivered {} (unique), lost {}, resent per kill (at most {}) {resent:?}, order \
             violations {violations}",
            p.accepted.len(),
            p.unanswered.len(),
            delivered.len(),
            lost.len(),
            resent.iter().max().unwrap_or(&0),
        );
        assert!(
            resent.iter().all(|&n| n <= 2 * batch),
            "{name}: more than two batches resent after a kill: {resent:?} (seed {seed})"
        );
        if !lost.is_empty() {
            println!("{name}: lost {lost:?}");
        }
        lost_total += lost.len();
        violations_total += violations;
    }
    assert_eq!(lost_total, 0, "accepted records lost (seed {seed})");
    assert_eq!(violations_total, 0, "records out of order (seed {seed})");
}
