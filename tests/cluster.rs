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
use std::time::{Duration, Instant};

use common::{eventually, eventually_seen, order, webhook_site, Daemon, Options, Target};
use serde_json::Value;

/// The lease of the tests' clusters.
const LEASE: Duration = Duration::from_secs(2);

/// One cluster at a time: each test runs two or three daemons, and leases
/// of two seconds are not the test of a machine's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster of `n` nodes `n1`… on one new database, sharing one
/// configuration file (the site of `webhook_site`), each with a data
/// directory of its own.
async fn cluster(dir: &Path, target: &Target, batch: usize, n: usize) -> Vec<Daemon> {
    cluster_of(dir, &webhook_site(target, batch), n).await
}

/// A cluster of `n` nodes on one new database running the sites of `toml`.
async fn cluster_of(dir: &Path, toml: &str, n: usize) -> Vec<Daemon> {
    common::cluster(dir, toml, n, LEASE, Options::default()).await
}

/// The site of `webhook_site` with a second flow `pull` of integration
/// `orders`: from endpoint `erp`, a file of 20 records (`o1`… with cursor
/// `u`) in `dir`, to the target; `more` adds keys to the flow.
fn file_site(dir: &Path, target: &Target, more: &str) -> String {
    let source = dir.join("orders.jsonl");
    let lines: String = (1..=20)
        .map(|n| format!("{{\"id\": \"o{n}\", \"u\": {n}}}\n"))
        .collect();
    std::fs::write(&source, lines).unwrap();
    format!(
        "{}\n[sites.LIVE.endpoints.erp]\nkind = \"file\"\npath = \"{}\"\n\n\
         [[sites.LIVE.integrations.orders.flows]]\nname = \"pull\"\nsource = \"erp\"\n\
         target = \"crm\"\nkey = \"id\"\ncursor = \"u\"\n{more}",
        webhook_site(target, 10),
        source.display()
    )
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
    let _one = ONE_AT_A_TIME.lock().await;
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
    let _one = ONE_AT_A_TIME.lock().await;
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

/// Waits until some node sends LIVE/orders; returns its index.
async fn owner_index(nodes: &[Daemon]) -> usize {
    eventually(20, "an owner", || async {
        owner(&nodes[0]).await.is_some()
    })
    .await;
    index_of(&owner(&nodes[0]).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_asked_of_another_node_answers_once_the_owner_sends_nothing_more() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(50));
    let nodes = cluster(dir.path(), &target, 1, 2).await;
    let sender = owner_index(&nodes).await;
    let other = 1 - sender;
    for n in 1..=200usize {
        let (status, _) = nodes[other].hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status.as_u16(), 202);
    }
    eventually(20, "the drain under way", || async { target.count() >= 5 }).await;

    // Paused through the node that does not send: when the answer comes,
    // no delivery is in flight or starts any more.
    let (status, answer) = nodes[other]
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            serde_json::json!({"reason": "stocktake"}),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let at_answer = target.count();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        target.count(),
        at_answer,
        "a delivery after the pause's answer"
    );
    assert!(at_answer < 200);
    // Both nodes say so; the audit trail names the node that was asked.
    for node in &nodes {
        assert_eq!(node.integration("LIVE", "orders").await["state"], "paused");
    }
    let audit = nodes[sender].get("/api/v1/sites/LIVE/audit").await.1;
    let paused = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "integration.pause")
        .unwrap();
    assert_eq!(paused["node"], format!("n{}", other + 1), "{paused}");

    // Resumed through the other node again: the sender drains the rest.
    let (status, _) = nodes[other]
        .post(
            "/api/v1/sites/LIVE/integrations/orders/resume",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status.as_u16(), 200);
    target.set_delay(Duration::ZERO);
    eventually(30, "all delivered", || async {
        let ids = delivered_ids(&target);
        (1..=200).all(|n| ids.contains(&order(n)["id"]))
    })
    .await;
    assert_eq!(check_order(&target), 0, "nothing sent twice");

    // A site stopped through one node stops everywhere; started through
    // the other, it sends again.
    let (status, _) = nodes[other]
        .post(
            "/api/v1/sites/LIVE/stop",
            serde_json::json!({"reason": "maintenance"}),
        )
        .await;
    assert_eq!(status.as_u16(), 200);
    eventually(10, "stopped on every node", || async {
        nodes[sender].get("/api/v1/sites/LIVE").await.1["state"] == "stopped"
    })
    .await;
    let (status, _) = nodes[sender]
        .hook("LIVE", "orders", "web", order(201))
        .await;
    assert_eq!(status.as_u16(), 503, "a stopped site takes no records");
    let (status, _) = nodes[sender]
        .post("/api/v1/sites/LIVE/start", serde_json::json!({}))
        .await;
    assert_eq!(status.as_u16(), 200);
    eventually(10, "running on every node", || async {
        nodes[other].get("/api/v1/sites/LIVE").await.1["state"] == "running"
    })
    .await;
    let (status, _) = nodes[other].hook("LIVE", "orders", "web", order(202)).await;
    assert_eq!(status.as_u16(), 202);
    eventually(20, "delivered after the start", || async {
        delivered_ids(&target).contains(&order(202)["id"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_spread_over_the_nodes_and_move_back_when_one_joins() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let mut toml = webhook_site(&target, 10);
    for name in ["stock", "prices", "returns"] {
        toml.push_str(&format!(
            "\n[[sites.LIVE.integrations.{name}.flows]]\nname = \"{name}\"\nsource = \"shop\"\ntarget = \"crm\"\n"
        ));
    }
    let mut nodes = cluster_of(dir.path(), &toml, 1).await;
    let held = |listed: &Value, node: &str| -> usize {
        listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == node)
            .map_or(0, |n| n["integrations"].as_array().map_or(0, Vec::len))
    };
    eventually(20, "one node sends all four", || async {
        held(&nodes[0].get("/api/v1/nodes").await.1, "n1") == 4
    })
    .await;
    // A second node joins: two each, without a person doing anything.
    let home = dir.path().join("n2");
    std::fs::create_dir_all(&home).unwrap();
    let db = nodes[0].store_db();
    let options = Options {
        node: Some("n2".into()),
        data_dir: Some(home.join("data")),
        ..Options::default()
    };
    nodes.push(Daemon::start_node(&home, &nodes[0].config.clone(), options, db).await);
    eventually(30, "two each", || async {
        let listed = nodes[1].get("/api/v1/nodes").await.1;
        held(&listed, "n1") == 2 && held(&listed, "n2") == 2
    })
    .await;
    // Records of every integration still arrive, whichever node takes them.
    for (i, name) in ["orders", "stock", "prices", "returns"].iter().enumerate() {
        let flow = if *name == "orders" { "web" } else { name };
        let (status, _) = nodes[i % 2].hook("LIVE", name, flow, order(i + 1)).await;
        assert_eq!(status.as_u16(), 202);
    }
    eventually(20, "four delivered", || async { target.count() >= 4 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_cluster_and_a_run_asked_of_any_node_runs_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = file_site(dir.path(), &target, "schedule = \"every 1s\"\n");
    let nodes = cluster_of(dir.path(), &toml, 3).await;
    let sender = owner_index(&nodes).await;
    // The first runs queue the file once.
    eventually(20, "the file delivered", || async { target.count() >= 20 }).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = nodes[0].log("LIVE").await;
    let runs = log.matches("'Send Changed' done").count();
    assert!(
        (2..=7).contains(&runs),
        "{runs} scheduled runs in about 5 s on three nodes:\n{log}"
    );
    assert!(!log.contains("failed"), "{log}");
    assert_eq!(target.count(), 20, "each record once");

    // 'Send All' asked of a node that does not send: it runs once, there.
    // (409 while a scheduled run is under way: asked again.)
    let asked = (sender + 1) % 3;
    eventually(10, "'Send All' taken", || async {
        let (status, answer) = nodes[asked]
            .post(
                "/api/v1/sites/LIVE/flows/pull/run",
                serde_json::json!({"mode": "all"}),
            )
            .await;
        assert!(
            status.is_success() || status.as_u16() == 409,
            "{status} {answer}"
        );
        status.is_success()
    })
    .await;
    eventually(20, "sent again, once", || async { target.count() >= 40 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.count(), 40, "one 'Send All', not one per node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_asked_of_one_node_is_applied_by_every_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let nodes = cluster(dir.path(), &target, 10, 2).await;
    owner_index(&nodes).await;
    // The shared file gains an integration; one node is asked to reload.
    let mut text = std::fs::read_to_string(&nodes[0].config).unwrap();
    text.push_str(
        "\n[[sites.LIVE.integrations.stock.flows]]\nname = \"stock\"\nsource = \"shop\"\ntarget = \"crm\"\n",
    );
    std::fs::write(&nodes[0].config, text).unwrap();
    let (status, answer) = nodes[0]
        .post("/api/v1/sites/LIVE/reload", serde_json::json!({}))
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    eventually(10, "the other node has it too", || async {
        nodes[1]
            .get("/api/v1/sites/LIVE/integrations/stock")
            .await
            .0
            == 200
    })
    .await;
    // Records of the new integration, taken by either node, are sent.
    let (status, answer) = nodes[1].hook("LIVE", "stock", "stock", order(1)).await;
    assert_eq!(status.as_u16(), 202, "{answer:?}");
    eventually(20, "delivered", || async { target.count() >= 1 }).await;
    let audit = nodes[1].get("/api/v1/sites/LIVE/audit").await.1;
    let reloads = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "site.reload")
        .count();
    assert_eq!(reloads, 1, "audited once, by the node asked: {audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_given_to_one_node_reach_the_node_that_sends() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.require_token("sesame");
    let nodes = cluster(dir.path(), &target, 10, 2).await;
    let sender = owner_index(&nodes).await;
    let other = 1 - sender;
    for n in 1..=5usize {
        let (status, _) = nodes[other].hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status.as_u16(), 202);
    }
    eventually(20, "held: the target wants a token", || async {
        nodes[other].integration("LIVE", "orders").await["holds"][0]["kind"] == "unauthorized"
    })
    .await;
    // Given to the node that does not send: it passes them on.
    let (status, answer) = nodes[other]
        .post(
            "/api/v1/sites/LIVE/endpoints/crm/reauthorize",
            serde_json::json!({"token": "sesame"}),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    eventually(20, "delivered with the new token", || async {
        target.count() >= 5
    })
    .await;
    let log = nodes[0].log("LIVE").await;
    assert!(
        log.contains(&format!("Endpoint crm: node n{} took them", sender + 1)),
        "{log}"
    );
    assert!(!log.contains("sesame"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_asked_for_while_the_node_takes_the_lease_over_runs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = file_site(dir.path(), &target, "");
    // A run request that finds its node without the lease is held (the
    // hook) for longer than the lease takes to pass to that node.
    let options = Options {
        env: vec![("SLUICE_TEST_STALL_UNLEASED_REQUEST".into(), "5000".into())],
        ..Options::default()
    };
    let mut nodes = common::cluster(dir.path(), &toml, 2, LEASE, options).await;
    let sender = owner_index(&nodes).await;
    let other = 1 - sender;
    nodes[sender].kill();
    // Asked of the other node while the dead one's lease runs out: it takes
    // the lease and looks for requests to run while this one is held, and
    // must still run it, once.
    let (status, answer) = nodes[other]
        .post(
            "/api/v1/sites/LIVE/flows/pull/run",
            serde_json::json!({"mode": "changed"}),
        )
        .await;
    assert!(status.is_success(), "{status} {answer}");
    let (_, log) = eventually_seen(
        30,
        "the file delivered",
        || async { (target.count(), nodes[other].log("LIVE").await) },
        |(count, _)| *count >= 20,
    )
    .await;
    let took = format!("Node n{} sends integration orders from now on", other + 1);
    let leased = log.find(&took).expect(&log);
    let ran = log.find("'Send Changed' done").expect(&log);
    assert!(
        leased < ran,
        "run by the node that took the lease over:\n{log}"
    );
    // The run over and its queue sent: nothing more is coming.
    eventually(20, "the queue sent", || async {
        let i = nodes[other].integration("LIVE", "orders").await;
        let running = i["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["status"] == "Running");
        i["queued"] == 0 && !running
    })
    .await;
    assert_eq!(target.count(), 20, "each record once");
}
