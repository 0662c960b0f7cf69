//! The queue benchmark: what sluice's durable ordered queue costs, against
//! plain SQLite doing the same work with the same pragmas, in the same run.
//!
//! ```sh
//! cargo bench --bench queue                          # N = 1,000,000
//! SLUICE_BENCH_N=100000 cargo bench --bench queue    # what CI runs
//! ```
//!
//! It measures: the raw baseline (insert N rows, then delete them, 1000 per
//! transaction); sluice queueing N while paused and draining them on resume
//! to an in-process target and to a local HTTP target (batches of 100); how
//! long a pause takes to return during a drain; and the peak RSS of a fresh
//! process with 1,000 and with N queued. It reports; it does not assert
//! timings. It exits non-zero only if delivery order or count is wrong.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use sluice::config::{IntegrationConfig, OnError};
use sluice::connectors::http::HttpConfig;
use sluice::connectors::webhook::WebhookConfig;
use sluice::connectors::{Delivered, Delivery, DeliveryError, EndpointKind, Target};
use sluice::engine::endpoint::Endpoint;
use sluice::engine::health::Health;
use sluice::engine::sender::Sender;
use sluice::engine::Integration;
use sluice::log::SiteLog;
use sluice::model::IntegrationEvent;
use sluice::store::{NewRecord, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use common::{payload, rate, raw_delete, raw_insert, raw_table};

const TXN: usize = 1000;

fn records(from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| NewRecord {
            key: Some(format!("o{i:07}")),
            payload: payload(i),
        })
        .collect()
}

/// Plain SQLite, the store's pragmas and row shape: insert N, then delete
/// them in sequence order, 1000 rows a transaction.
fn raw_baseline(dir: &Path, n: usize) -> (f64, f64) {
    let conn = raw_table(dir);
    let started = Instant::now();
    raw_insert(&conn, n, TXN, 1);
    let insert = rate(n, started.elapsed());
    let started = Instant::now();
    raw_delete(&conn, n, TXN);
    (insert, rate(n, started.elapsed()))
}

/// An in-process target: counts, and checks sequence order by the key.
#[derive(Default)]
struct Counting {
    count: AtomicU64,
    last: AtomicI64,
    in_order: AtomicBool,
}

impl Counting {
    fn new() -> Arc<Counting> {
        Arc::new(Counting {
            in_order: AtomicBool::new(true),
            ..Counting::default()
        })
    }

    fn see(&self, key: &str) {
        let seq: i64 = key
            .rsplit(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        if seq != self.last.load(Ordering::Relaxed) + 1 {
            self.in_order.store(false, Ordering::Relaxed);
        }
        self.last.store(seq, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

struct InProcess(Arc<Counting>);

#[async_trait]
impl Target for InProcess {
    fn batch_size(&self) -> usize {
        TXN
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        for d in batch {
            self.0.see(d.key);
        }
        Ok(Delivered::default())
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        Ok("in process".into())
    }
}

struct Bench {
    store: Arc<dyn Store>,
    log: Arc<SiteLog>,
}

impl Bench {
    fn open(dir: &Path) -> Bench {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("BENCH.db")).unwrap());
        let log = Arc::new(SiteLog::open(
            "BENCH",
            4,
            store.clone(),
            &dir.join("BENCH.log"),
        ));
        Bench { store, log }
    }

    /// A paused integration with `n` queued, and the time queueing took.
    async fn queued(&self, name: &str, n: usize) -> (Arc<Integration>, Duration) {
        let config = IntegrationConfig {
            name: name.into(),
            on_error: OnError::Block,
            flows: Vec::new(),
        };
        let integration = Integration::open(config, self.store.clone()).await.unwrap();
        integration
            .apply(IntegrationEvent::Pause, "bench", None)
            .await
            .unwrap();
        let started = Instant::now();
        for chunk in 0..n / TXN {
            self.store
                .enqueue(name, "f", records(chunk * TXN, TXN), None, None)
                .await
                .unwrap();
        }
        (integration, started.elapsed())
    }

    /// Resumes `integration` into an in-process target and waits until all
    /// `n` arrived; returns the target and how long the drain took.
    async fn drain_in_process(
        &self,
        integration: &Arc<Integration>,
        n: usize,
        token: &CancellationToken,
        metrics: bool,
    ) -> (Arc<Counting>, Duration) {
        let seen = Counting::new();
        let endpoint = Endpoint::with_target(
            "mem",
            EndpointKind::Webhook(WebhookConfig::default()),
            Arc::new(InProcess(seen.clone())),
        );
        let mut sender = self.sender(integration, endpoint);
        if !metrics {
            // Handles made under the no-op recorder count nothing.
            sender.metrics = metrics::with_local_recorder(&metrics::NoopRecorder, || {
                sluice::engine::counters::SenderMetrics::new(
                    "BENCH",
                    &integration.name,
                    integration.tally.clone(),
                )
            });
        }
        tokio::spawn(sender.run(token.clone()));
        let started = Instant::now();
        integration
            .apply(IntegrationEvent::Resume, "bench", None)
            .await
            .unwrap();
        wait_for(|| seen.count.load(Ordering::Relaxed), n).await;
        (seen, started.elapsed())
    }

    fn sender(&self, integration: &Arc<Integration>, endpoint: Endpoint) -> Sender {
        let endpoint = Arc::new(endpoint);
        let health = Health::new(
            self.log.clone(),
            &BTreeMap::from([(endpoint.name.clone(), endpoint.clone())]),
            &BTreeMap::from([(integration.name.clone(), integration.clone())]),
        );
        Sender {
            site: "BENCH".into(),
            integration: integration.clone(),
            store: self.store.clone(),
            routes: HashMap::from([("f".to_string(), endpoint)]),
            log: self.log.clone(),
            health: Arc::new(health),
            metrics: sluice::engine::counters::SenderMetrics::new(
                "BENCH",
                &integration.name,
                integration.tally.clone(),
            ),
        }
    }
}

/// Writes the integration's history as `engine::history::write` does (its
/// tally taken, the queue's depth read, one row added), every second until
/// `stop`, then once more; returns how many deliveries it wrote.
async fn write_history(
    store: Arc<dyn Store>,
    integration: Arc<Integration>,
    stop: CancellationToken,
) -> i64 {
    let mut delivered = 0;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        };
        let counts = integration.tally.take();
        let depth = store.queued_count(&integration.name).await.unwrap();
        let minute = sluice::engine::history::minute_of(sluice::model::now_millis());
        store
            .add_history(minute, vec![(integration.name.clone(), counts, depth)])
            .await
            .unwrap();
        delivered += counts.delivered;
        if stopping {
            return delivered;
        }
    }
}

async fn wait_for(count: impl Fn() -> u64, n: usize) {
    while count() < n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The local HTTP target: counts records and checks their order by
/// `X-Sluice-Keys`.
async fn http_target(seen: Arc<Counting>) -> String {
    async fn receive(
        State(seen): State<Arc<Counting>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let Ok(records) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        let keys = headers
            .get("x-sluice-keys")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut n = 0;
        for key in keys.split(',').filter(|k| !k.is_empty()) {
            seen.see(key);
            n += 1;
        }
        if n != records.len() {
            seen.in_order.store(false, Ordering::Relaxed);
        }
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/records", axum::routing::post(receive))
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/records")
}

/// The transport ceiling: the same server fed directly by a plain loop of
/// 100-record requests.
async fn transport_ceiling(n: usize) -> f64 {
    let seen = Counting::new();
    let url = http_target(seen.clone()).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    for chunk in 0..n / 100 {
        let body = format!(
            "[{}]",
            (chunk * 100..(chunk + 1) * 100)
                .map(payload)
                .collect::<Vec<_>>()
                .join(",")
        );
        let keys = (chunk * 100..(chunk + 1) * 100)
            .map(|i| format!("BENCH:raw:{}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-sluice-keys", keys)
            .body(body)
            .send()
            .await
            .unwrap();
    }
    rate(n, started.elapsed())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// In a fresh process: queue `n` while paused, drain them, print peak RSS.
fn child_rss(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let bench = Bench::open(dir.path());
        let (integration, _) = bench.queued("orders", n).await;
        let token = CancellationToken::new();
        bench.drain_in_process(&integration, n, &token, true).await;
        token.cancel();
    });
    println!("peak_rss_kib={}", peak_rss_kib());
}

fn rss_of_child(n: usize) -> Option<u64> {
    let out = Command::new(std::env::current_exe().ok()?)
        .env("SLUICE_BENCH_CHILD", n.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib=").and_then(|v| v.parse().ok()))
}

fn main() {
    // As in the daemon: every delivery is counted and timed.
    sluice::metrics::install();
    if let Some(n) = std::env::var("SLUICE_BENCH_CHILD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        child_rss(n);
        return;
    }
    let n: usize = std::env::var("SLUICE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        .max(TXN)
        / TXN
        * TXN;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut correct = true;
    let dir = tempfile::tempdir().unwrap();
    println!("sluice queue benchmark, N = {n} (synchronous=FULL, WAL, {TXN} rows a transaction)");

    let (raw_insert, raw_delete) = raw_baseline(dir.path(), n);
    let report = rt.block_on(async {
        let bench = Bench::open(dir.path());

        // The cost of counting and timing deliveries: the same drain with
        // the metrics handles made under a no-op recorder, first (so the
        // measured drain below runs on the larger file: a cost overstated,
        // never hidden).
        let token = CancellationToken::new();
        let (plain, _) = bench.queued("orders-plain", n).await;
        let (seen, took) = bench.drain_in_process(&plain, n, &token, false).await;
        let drain_plain = rate(n, took);
        let plain_ok =
            seen.in_order.load(Ordering::Relaxed) && seen.count.load(Ordering::Relaxed) == n as u64;

        // Queue N while paused, then resume into an in-process target.
        let (integration, queued_in) = bench.queued("orders", n).await;
        let enqueue = rate(n, queued_in);
        let (seen, took) = bench.drain_in_process(&integration, n, &token, true).await;
        let drain_mem = rate(n, took);
        let mem_ok = plain_ok
            && seen.in_order.load(Ordering::Relaxed)
            && seen.count.load(Ordering::Relaxed) == n as u64;

        // The cost of history: the same drain while its minutes are written
        // as the History worker writes them, but every second rather than
        // every minute (a cost overstated, never hidden).
        let (integration, _) = bench.queued("orders-history", n).await;
        let writing = CancellationToken::new();
        let writer = tokio::spawn(write_history(
            bench.store.clone(),
            integration.clone(),
            writing.clone(),
        ));
        let (seen, took) = bench.drain_in_process(&integration, n, &token, true).await;
        writing.cancel();
        let written = writer.await.unwrap();
        let drain_history = rate(n, took);
        let mem_ok = mem_ok
            && written == n as i64
            && seen.in_order.load(Ordering::Relaxed)
            && seen.count.load(Ordering::Relaxed) == n as u64;

        // The same to a local HTTP target, batches of 100, pausing on the way.
        let (integration, _) = bench.queued("orders-http", n).await;
        let seen_http = Counting::new();
        let url = http_target(seen_http.clone()).await;
        let endpoint = Endpoint::new(
            "http",
            EndpointKind::Http(
                toml::from_str::<HttpConfig>(&format!("url = \"{url}\"\nbatch = 100")).unwrap(),
            ),
            dir.path(),
        );
        tokio::spawn(bench.sender(&integration, endpoint).run(token.clone()));
        let started = Instant::now();
        let mut paused_for = Duration::ZERO;
        let mut pauses = Vec::new();
        let mut pause_holds = true;
        integration
            .apply(IntegrationEvent::Resume, "bench", None)
            .await
            .unwrap();
        while seen_http.count.load(Ordering::Relaxed) < n as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if pauses.len() < 20 && seen_http.count.load(Ordering::Relaxed) < n as u64 * 9 / 10 {
                let t = Instant::now();
                integration
                    .apply(IntegrationEvent::Pause, "bench", None)
                    .await
                    .unwrap();
                pauses.push(t.elapsed());
                let at = seen_http.count.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                pause_holds &= seen_http.count.load(Ordering::Relaxed) == at;
                paused_for += t.elapsed();
                integration
                    .apply(IntegrationEvent::Resume, "bench", None)
                    .await
                    .unwrap();
            }
        }
        let drain_http = rate(n, started.elapsed().saturating_sub(paused_for));
        let http_ok = seen_http.in_order.load(Ordering::Relaxed)
            && seen_http.count.load(Ordering::Relaxed) == n as u64;
        token.cancel();
        let ceiling = transport_ceiling(n).await;
        pauses.sort();
        (
            enqueue,
            drain_mem,
            drain_plain,
            drain_history,
            mem_ok,
            drain_http,
            http_ok,
            ceiling,
            pauses,
            pause_holds,
        )
    });
    let (
        enqueue,
        drain_mem,
        drain_plain,
        drain_history,
        mem_ok,
        drain_http,
        http_ok,
        ceiling,
        pauses,
        pause_holds,
    ) = report;
    correct &= mem_ok && http_ok && pause_holds;

    let rss_small = rss_of_child(1000);
    let rss_large = rss_of_child(n);

    let k = |r: f64| format!("{:.0}k/s", r / 1000.0);
    println!();
    println!(
        "{:<34} {:>11} {:>22} {:>7}   goal",
        "", "sluice", "baseline", "ratio"
    );
    println!(
        "{:<34} {:>11} {:>22} {:>7.2}   -",
        "queue N while paused",
        k(enqueue),
        format!("raw insert {}", k(raw_insert)),
        enqueue / raw_insert
    );
    println!(
        "{:<34} {:>11} {:>22} {:>7.2}   ≥100k/s and ≥0.50  {}",
        "drain → in-process target",
        k(drain_mem),
        format!("raw delete {}", k(raw_delete)),
        drain_mem / raw_delete,
        if mem_ok {
            "order ok"
        } else {
            "ORDER OR COUNT WRONG"
        }
    );
    println!(
        "{:<34} {:>11} {:>22} {:>7.2}   cost of /metrics counters",
        "",
        "",
        format!("metrics off {}", k(drain_plain)),
        drain_mem / drain_plain,
    );
    println!(
        "{:<34} {:>11} {:>22} {:>7.2}   cost of history",
        "drain, history written each second",
        k(drain_history),
        format!("history unwritten {}", k(drain_mem)),
        drain_history / drain_mem,
    );
    println!(
        "{:<34} {:>11} {:>22} {:>7.2}   ≥100k/s  {}",
        "drain → HTTP target, batch 100",
        k(drain_http),
        format!("raw delete {}", k(raw_delete)),
        drain_http / raw_delete,
        if http_ok {
            "order ok"
        } else {
            "ORDER OR COUNT WRONG"
        }
    );
    println!(
        "{:<34} {:>11} {:>22} {:>7.2}",
        "",
        "",
        format!("plain HTTP loop {}", k(ceiling)),
        drain_http / ceiling
    );
    if let (Some(median), Some(p90), Some(max)) = (
        pauses.get(pauses.len() / 2),
        pauses.get(pauses.len() * 9 / 10),
        pauses.last(),
    ) {
        println!(
            "{:<34} {:>11} {:>22} {:>7}   <10 ms  pause holds: {}",
            format!("pause latency, median ({})", pauses.len()),
            format!("{:.2} ms", median.as_secs_f64() * 1000.0),
            format!(
                "p90 {:.1} ms, max {:.1} ms",
                p90.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0
            ),
            "",
            if pause_holds { "yes" } else { "NO" }
        );
    }
    match (rss_small, rss_large) {
        (Some(small), Some(large)) => println!(
            "{:<34} {:>11} {:>22} {:>7}   ≤32 MiB growth",
            "peak RSS, N queued vs 1,000",
            format!("{:.1} MiB", large as f64 / 1024.0),
            format!("1,000: {:.1} MiB", small as f64 / 1024.0),
            format!("+{:.1}", (large as f64 - small as f64) / 1024.0)
        ),
        _ => println!("peak RSS: could not be measured"),
    }
    if !correct {
        eprintln!("delivery order or count was wrong, or a pause did not hold");
        std::process::exit(1);
    }
}
