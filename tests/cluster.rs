//! Several nodes on one PostgreSQL store: any node takes records and
//! answers; one node sends each integration, the holder of its lease; when
//! it dies another takes over within a lease and goes on in order; a node
//! frozen past its lease sends nothing more when it wakes (fencing).
//!
//! Every test here runs on PostgreSQL (`SLUICE_TEST_PG_URL`), whatever
//! `SLUICE_TEST_STORE` says.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::PgDb;
use common::{eventually, order, webhook_site, Daemon, Options, Target};
use serde_json::Value;

/// The lease of the tests' clusters.
const LEASE: Duration = Duration::from_secs(2);

/// A cluster of `n` nodes `n1`… on one new database, sharing one
/// configuration file (the site of `webhook_site`), each with a data
/// directory of its own.
async fn cluster(dir: &Path, target: &Target, batch: usize, n: usize) -> Vec<Daemon> {
    let db = Arc::new(PgDb::new().await);
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nstore = \"postgres\"\n\
             store_url_env = \"SLUICE_TEST_STORE_URL\"\nlease = \"{}s\"\n{}",
            dir.join("data").display(),
            LEASE.as_secs(),
            webhook_site(target, batch)
        ),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let home = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let options = Options {
            node: Some(format!("n{i}")),
            data_dir: Some(home.join("data")),
            ..Options::default()
        };
        nodes.push(Daemon::start_node(&home, &config, options, db.clone()).await);
    }
    nodes
}

/// The node that sends LIVE/orders, as `asked` answers.
async fn owner(asked: &Daemon) -> Option<String> {
    asked.integration("LIVE", "orders").await["owner"]["node"]
        .as_str()
        .map(str::to_string)
}

fn index_of(name: &str) -> usize {
    name.trim_start_matches('n').parse::<usize>().unwrap() - 1
}

/// The sequence number in an idempotency key `LIVE:orders:SEQ`.
fn seq(key: &str) -> i64 {
    key.rsplit(':').next().unwrap().parse().unwrap()
}

/// First deliveries come in sequence order; returns how many deliveries
/// were repeats (same key again).
fn check_order(target: &Target) -> usize {
    let mut seen = HashSet::new();
    let mut last = 0;
    let mut repeats = 0;
    for r in target.received() {
        if !seen.insert(r.key.clone()) {
            repeats += 1;
            continue;
        }
        let s = seq(&r.key);
        assert!(s > last, "first deliveries out of order: {s} after {last}");
        last = s;
    }
    repeats
}

/// The `id` of every record the target received.
fn delivered_ids(target: &Target) -> Vec<Value> {
    target
        .received()
        .into_iter()
        .map(|r| r.record["id"].clone())
        .collect()
}

/// The transactions this node's sender delivered (its own `/metrics`).
async fn sent_by(node: &Daemon) -> f64 {
    let text = node.get_text("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("sluice_transactions_sent_total{") && l.contains("orders"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_share_the_work_and_a_killed_owner_is_replaced_within_a_lease_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    // Slow enough that the drain is under way when the owner dies.
    target.set_delay(Duration::from_millis(20));
    let batch = 5;
    let mut nodes = cluster(dir.path(), &target, batch, 3).await;

    // Every node is registered and one of them sends the integration; any
    // node says which.
    eventually(20, "three nodes, one owner", || async {
        let (_, listed) = nodes[2].get("/api/v1/nodes").await;
        let names: Vec<&str> = listed
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["name"].as_str()).collect())
            .unwrap_or_default();
        names == ["n1", "n2", "n3"] && owner(&nodes[0]).await.is_some()
    })
    .await;
    let first = owner(&nodes[1]).await.unwrap();
    assert_eq!(owner(&nodes[2]).await.as_deref(), Some(first.as_str()));
    let (_, listed) = nodes[0].get("/api/v1/nodes").await;
    let holders: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["integrations"] == serde_json::json!(["LIVE/orders"]))
        .collect();
    assert_eq!(holders.len(), 1, "one node holds the lease: {listed}");
    assert_eq!(holders[0]["name"], first.as_str());
    let out = nodes[0].cli(&["node", "list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("n1") && text.contains("n3") && text.contains("LIVE/orders"),
        "{text}"
    );

    // Records posted to every node, in turn; the owner is killed mid-drain.
    let victim = index_of(&first);
    let mut accepted = Vec::new();
    let mut killed_at = None;
    for n in 1..=300usize {
        let to = n % 3;
        if killed_at.is_some() && to == victim {
            continue;
        }
        let (status, _) = nodes[to].hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status.as_u16(), 202, "record {n} to n{}", to + 1);
        accepted.push(n);
        if killed_at.is_none() && target.count() >= 40 {
            nodes[victim].kill();
            killed_at = Some(Instant::now());
        }
    }
    let killed_at = killed_at.expect("the drain was under way while posting");
    let survivor = (victim + 1) % 3;

    // Another node takes the lease within a lease period (and a heartbeat).
    let deadline = Instant::now() + Duration::from_secs(20);
    let took = loop {
        let now = owner(&nodes[survivor]).await;
        if now.as_ref().is_some_and(|o| *o != first) {
            break killed_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no other node took the lease over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        took <= LEASE + LEASE / 3 + Duration::from_millis(500),
        "taken over after {took:?}, lease {LEASE:?}"
    );

    // Everything answered 202 arrives; first deliveries in sequence order;
    // repeats only of what was in flight (a chunk, and one being acked).
    eventually(60, "every accepted record delivered", || async {
        let ids = delivered_ids(&target);
        accepted.iter().all(|id| ids.contains(&order(*id)["id"]))
    })
    .await;
    let repeats = check_order(&target);
    assert!(repeats <= 2 * batch, "{repeats} repeats, batch {batch}");
    let log = nodes[survivor].log("LIVE").await;
    assert!(
        log.contains("sends integration orders from now on"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_lease_sends_and_acknowledges_nothing_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(20));
    let batch = 5;
    let nodes = cluster(dir.path(), &target, batch, 3).await;
    eventually(20, "an owner", || async {
        owner(&nodes[0]).await.is_some()
    })
    .await;
    let first = owner(&nodes[0]).await.unwrap();
    let frozen = index_of(&first);
    let other = (frozen + 1) % 3;

    for n in 1..=400usize {
        let (status, _) = nodes[other].hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status.as_u16(), 202);
    }
    eventually(20, "the drain under way", || async { target.count() >= 30 }).await;

    // Frozen past its lease: another node takes over.
    let pid = nodes[frozen].pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let sent_before = {
        // Read from the target's side: the frozen node cannot answer.
        target.count()
    };
    eventually(20, "another node sends", || async {
        owner(&nodes[other]).await.is_some_and(|o| o != first)
    })
    .await;
    eventually(20, "the new owner delivers", || async {
        target.count() > sent_before + 2 * batch
    })
    .await;

    // It wakes: what it sent before it froze may complete, nothing more.
    signal("-CONT");
    let counted_at_wake = sent_by(&nodes[frozen]).await;
    tokio::time::sleep(LEASE).await;
    let counted_later = sent_by(&nodes[frozen]).await;
    assert!(
        counted_later <= counted_at_wake + batch as f64,
        "the woken node sent {counted_at_wake} then {counted_later}"
    );
    eventually(60, "all delivered", || async {
        let ids = delivered_ids(&target);
        (1..=400).all(|n| ids.contains(&order(n)["id"]))
    })
    .await;
    let repeats = check_order(&target);
    assert!(repeats <= 2 * batch, "{repeats} repeats, batch {batch}");
    // It noticed, and said why.
    let log = nodes[other].log("LIVE").await;
    assert!(
        log.contains(&format!("Node {first} stops sending integration orders")),
        "{log}"
    );
    assert_ne!(owner(&nodes[frozen]).await.as_deref(), Some(first.as_str()));
}
