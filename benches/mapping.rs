//! The mapping benchmark: what a flow's `map` and `transform` cost, as
//! ratios to the same drain with no mapping, in the same run.
//!
//! ```sh
//! cargo bench --bench mapping                         # N = 200,000
//! SLUICE_BENCH_N=50000 cargo bench --bench mapping    # what CI runs
//! ```
//!
//! N orders of about ten fields (a nested customer) are queued while paused
//! and drained through the engine's sender to an in-process target, 100 a
//! delivery, three ways: no mapping (the baseline), a five-field `map`
//! (rename, nested source, constant, default, nested target) and a jq
//! `transform` (a computed field and a `select`). Each drain runs twice,
//! interleaved, and the faster is kept (the machine is shared). Beside the
//! drains, `Mapping::apply_text` is timed alone, per record. It reports; it
//! does not assert timings. It exits non-zero only if a drain delivered
//! out of order, too few or too many, or a sampled record's content is not
//! what its mapping makes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sluice::config::{FlowConfig, IntegrationConfig, OnError};
use sluice::connectors::webhook::WebhookConfig;
use sluice::connectors::{Delivered, Delivery, DeliveryError, EndpointKind, Target};
use sluice::engine::endpoint::Endpoint;
use sluice::engine::health::Health;
use sluice::engine::sender::Sender;
use sluice::engine::Integration;
use sluice::log::SiteLog;
use sluice::mapping::{Field, MapTable, Mapping, Path as FieldPath, Rule, Transform};
use sluice::model::IntegrationEvent;
use sluice::store::{NewRecord, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use common::{order, rate};

/// Records queued a store transaction.
const TXN: usize = 1000;
/// Records a delivery.
const BATCH: usize = 100;
/// Drains of each kind; the faster is reported.
const ROUNDS: usize = 2;
/// Every this many (by seq) the target keeps the payload, to check it.
const SAMPLE: i64 = 487;
/// Records `apply_text` is timed on, at most.
const MICRO: usize = 20_000;

/// The jq program: a computed field and a filter that keeps every order
/// (`qty` is never 0), so all N are delivered.
const PROGRAM: &str = ".total = (.qty * .price) | select(.total > 0)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Map,
    Jq,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Plain, Kind::Map, Kind::Jq];

    fn label(self) -> &'static str {
        match self {
            Kind::Plain => "no mapping (baseline)",
            Kind::Map => "map, five fields",
            Kind::Jq => "jq transform",
        }
    }

    fn mapping(self) -> Mapping {
        match self {
            Kind::Plain => Mapping::default(),
            Kind::Map => Mapping {
                map: Some(map_table()),
                transform: None,
            },
            Kind::Jq => Mapping {
                map: None,
                transform: Some(Transform::compile(PROGRAM).unwrap()),
            },
        }
    }

    /// Whether `payload` is what order `i` becomes; why not if it is not.
    fn check(self, i: usize, payload: &str) -> Result<(), String> {
        let wrong = |why: &str| Err(format!("record {}: {why}: {payload}", i + 1));
        if self == Kind::Plain {
            return if payload == order(i) {
                Ok(())
            } else {
                wrong("not the queued payload")
            };
        }
        let Ok(mut got) = serde_json::from_str::<Value>(payload) else {
            return wrong("not JSON");
        };
        let want = match self {
            Kind::Plain => unreachable!("checked above"),
            Kind::Map => json!({
                "order_id": format!("o{i:07}"),
                "city": "Wellington",
                "channel": "web",
                "note": "none",
                "billing": {"zip": (6000 + i % 100).to_string()},
            }),
            Kind::Jq => {
                let total = got
                    .as_object_mut()
                    .and_then(|o| o.remove("total"))
                    .and_then(|t| t.as_f64());
                let expected = (1 + i % 5) as f64 * ((i % 1000) as f64 + 0.5);
                if total != Some(expected) {
                    return wrong(&format!("total is not {expected}"));
                }
                serde_json::from_str(&order(i)).unwrap()
            }
        };
        if got == want {
            Ok(())
        } else {
            wrong(&format!("not {want}"))
        }
    }
}

/// Rename, nested source, constant, default (for a `null`), nested target.
fn map_table() -> MapTable {
    let path = |p: &str| FieldPath::parse(p).unwrap();
    let from = |p: &str| Rule::From {
        path: path(p),
        default: None,
    };
    MapTable::new(vec![
        Field {
            target: path("order_id"),
            rule: from("id"),
        },
        Field {
            target: path("city"),
            rule: from("customer.address.city"),
        },
        Field {
            target: path("channel"),
            rule: Rule::Value(json!("web")),
        },
        Field {
            target: path("note"),
            rule: Rule::From {
                path: path("note"),
                default: Some(json!("none")),
            },
        },
        Field {
            target: path("billing.zip"),
            rule: from("customer.address.zip"),
        },
    ])
    .unwrap()
}

/// What the in-process target saw: a count, whether seqs came in order
/// (by the idempotency key `{site}:{integration}:{seq}`; a second output
/// of one record, `…#2`, breaks it), and a sample of payloads.
struct Seen {
    count: AtomicU64,
    last: AtomicI64,
    in_order: AtomicBool,
    sample: Mutex<Vec<(i64, String)>>,
}

impl Seen {
    fn new() -> Arc<Seen> {
        Arc::new(Seen {
            count: AtomicU64::new(0),
            last: AtomicI64::new(0),
            in_order: AtomicBool::new(true),
            sample: Mutex::new(Vec::new()),
        })
    }

    fn see(&self, delivery: &Delivery<'_>) {
        let seq: i64 = delivery
            .key
            .rsplit(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        if seq != self.last.load(Ordering::Relaxed) + 1 {
            self.in_order.store(false, Ordering::Relaxed);
        }
        self.last.store(seq, Ordering::Relaxed);
        if seq % SAMPLE == 1 {
            self.sample.lock().push((seq, delivery.payload.to_string()));
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Why the drain of `n` records of `kind` was wrong, if it was.
    fn verdict(&self, kind: Kind, n: usize) -> Result<(), String> {
        let count = self.count.load(Ordering::Relaxed);
        if count != n as u64 {
            return Err(format!("{count} delivered, not {n}"));
        }
        if !self.in_order.load(Ordering::Relaxed) {
            return Err("delivered out of order".into());
        }
        let sample = self.sample.lock();
        let expected = (n as i64 + SAMPLE - 1) / SAMPLE;
        if sample.len() as i64 != expected {
            return Err(format!("{} sampled, not {expected}", sample.len()));
        }
        for (seq, payload) in sample.iter() {
            kind.check(*seq as usize - 1, payload)?;
        }
        Ok(())
    }
}

struct InProcess(Arc<Seen>);

#[async_trait]
impl Target for InProcess {
    fn batch_size(&self) -> usize {
        BATCH
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        for d in batch {
            self.0.see(d);
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

    /// A paused integration whose one flow `f` has `kind`'s mapping, with
    /// `n` orders queued.
    async fn queued(&self, name: &str, kind: Kind, n: usize) -> Arc<Integration> {
        let flow = FlowConfig {
            name: "f".into(),
            source: "shop".into(),
            target: "mem".into(),
            schedule: None,
            key: None,
            cursor: None,
            enabled: true,
            auto_resolve: true,
            retry_limit: 0,
            mapping: kind.mapping(),
        };
        let config = IntegrationConfig {
            name: name.into(),
            on_error: OnError::Block,
            flows: vec![flow],
        };
        let integration = Integration::open(config, self.store.clone()).await.unwrap();
        integration
            .apply(IntegrationEvent::Pause, "bench", None)
            .await
            .unwrap();
        for chunk in 0..n / TXN {
            let records = (chunk * TXN..(chunk + 1) * TXN)
                .map(|i| NewRecord {
                    key: Some(format!("o{i:07}")),
                    payload: order(i),
                })
                .collect();
            self.store
                .enqueue(name, "f", records, None, None)
                .await
                .unwrap();
        }
        integration
    }

    /// Resumes `integration` into an in-process target and waits until `n`
    /// arrived (or a minute passed without one more); what the target saw
    /// and how long the drain took.
    async fn drain(&self, integration: &Arc<Integration>, n: usize) -> (Arc<Seen>, Duration) {
        let seen = Seen::new();
        let endpoint = Arc::new(Endpoint::with_target(
            "mem",
            EndpointKind::Webhook(WebhookConfig::default()),
            Arc::new(InProcess(seen.clone())),
        ));
        let health = Health::new(
            self.log.clone(),
            &BTreeMap::from([(endpoint.name.clone(), endpoint.clone())]),
            &BTreeMap::from([(integration.name.clone(), integration.clone())]),
        );
        let sender = Sender {
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
        };
        let token = CancellationToken::new();
        let running = tokio::spawn(sender.run(token.clone()));
        let started = Instant::now();
        integration
            .apply(IntegrationEvent::Resume, "bench", None)
            .await
            .unwrap();
        // Not a bare deadline: a stalled drain (a mapping failed, the queue
        // blocked) is reported as a wrong count instead of hanging CI.
        let (mut at, mut moved) = (0, Instant::now());
        loop {
            let count = seen.count.load(Ordering::Relaxed);
            if count >= n as u64 {
                break;
            }
            if count != at {
                (at, moved) = (count, Instant::now());
            } else if moved.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        token.cancel();
        running.await.unwrap();
        (seen, took)
    }
}

/// Microseconds per record of `mapping.apply_text` over `payloads`: the
/// fastest of [`ROUNDS`] + 1 loops (the first also warms up).
fn per_record_us(mapping: &Mapping, payloads: &[String]) -> f64 {
    (0..=ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for p in payloads {
                std::hint::black_box(mapping.apply_text(std::hint::black_box(p)).unwrap());
            }
            started.elapsed().as_secs_f64() * 1e6 / payloads.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // As in the daemon: every delivery is counted and timed.
    sluice::metrics::install();
    let n: usize = std::env::var("SLUICE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
        .max(TXN)
        / TXN
        * TXN;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "sluice mapping benchmark, N = {n} orders of ~{} bytes (in-process target, batch \
         {BATCH}, best of {ROUNDS} drains)",
        order(n / 2).len()
    );

    let mut best = [Duration::MAX; 3];
    let mut wrong = Vec::new();
    rt.block_on(async {
        let bench = Bench::open(dir.path());
        for round in 0..ROUNDS {
            for (k, kind) in Kind::ALL.into_iter().enumerate() {
                let name = format!("orders-{k}-{round}");
                let integration = bench.queued(&name, kind, n).await;
                let (seen, took) = bench.drain(&integration, n).await;
                best[k] = best[k].min(took);
                if let Err(why) = seen.verdict(kind, n) {
                    wrong.push(format!("{} (round {}): {why}", kind.label(), round + 1));
                }
            }
        }
    });

    let payloads: Vec<String> = (0..n.min(MICRO)).map(order).collect();
    let micro: Vec<f64> = Kind::ALL
        .iter()
        .map(|kind| per_record_us(&kind.mapping(), &payloads))
        .collect();

    let base = rate(n, best[0]);
    println!();
    println!(
        "{:<24} {:>10} {:>9} {:>16} {:>18}",
        "", "drain", "ratio", "drain µs/record", "apply_text µs/rec"
    );
    for (k, kind) in Kind::ALL.into_iter().enumerate() {
        let r = rate(n, best[k]);
        println!(
            "{:<24} {:>10} {:>9.2} {:>16} {:>18.2}",
            kind.label(),
            format!("{:.0}k/s", r / 1000.0),
            r / base,
            if k == 0 {
                format!("{:.2}", 1e6 / r)
            } else {
                format!("{:+.2}", 1e6 / r - 1e6 / base)
            },
            micro[k]
        );
    }
    println!(
        "map: {}",
        map_table()
            .fields()
            .iter()
            .map(|f| f.target.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("transform: {PROGRAM}");
    if wrong.is_empty() {
        println!("every drain: {n} delivered in order; sampled content (1 in {SAMPLE}) as mapped");
    } else {
        for why in &wrong {
            eprintln!("WRONG: {why}");
        }
        std::process::exit(1);
    }
}
