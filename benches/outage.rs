//! The outage benchmark: how fast sluice notices that a target went down
//! (and holds the integration), and how fast it delivers again once the
//! target is back — over many outages, with records flowing all along.
//!
//! ```sh
//! cargo bench --bench outage                        # 20 outages, 30 flaps
//! SLUICE_BENCH_REPS=5 cargo bench --bench outage    # what CI runs (5, 7)
//! ```
//!
//! The daemon runs in process (its real engine: sender, health, Monitor
//! probes), records arrive through its webhook path every 5 ms (200 a
//! second), and the target is a real HTTP server on 127.0.0.1 taken down and
//! brought back on the same port. Two cases:
//! - **steady**: `SLUICE_BENCH_REPS` outages of 0.3–1.5 s, each followed by
//!   a full recovery; the target shuts down politely (its kept-alive
//!   connections end after their request).
//! - **flapping**: `SLUICE_BENCH_REPS` × 1.5 back-to-back outages of a random
//!   0.2–2 s with random up-windows of 0.3–2 s between them; going down
//!   closes the listening socket AND cuts every kept-alive connection, as a
//!   crashing or restarting server does. The windows come from a fixed seed
//!   (`SLUICE_BENCH_SEED` to change it), so runs compare.
//!
//! Baselines for comparison, not measured here: Celigo tests offline
//! connections once an hour (seed 003); Envoy's default outlier ejection
//! lasts 30 s. It reports; it fails only if a record is lost or out of
//! order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use sluice::config::Config;
use sluice::engine::Daemon;
use sluice::model::HoldKind;

#[derive(Default)]
struct Seen {
    count: AtomicU64,
    last: AtomicU64,
    in_order: AtomicBool,
    /// When each record first arrived.
    arrivals: Mutex<Vec<Instant>>,
}

/// A running target server: how to stop it and its task.
type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

struct Target {
    addr: std::net::SocketAddr,
    seen: Arc<Seen>,
    running: Option<Running>,
    /// Whether going down cuts the kept-alive connections (flapping case)
    /// instead of letting them end politely (steady case).
    cut: bool,
}

async fn receive(State(seen): State<Arc<Seen>>, body: Bytes) -> StatusCode {
    let n = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(0);
    // Records may repeat after a cut-off delivery; they never go back.
    let last = seen.last.swap(n, Ordering::SeqCst);
    if n != last + 1 && n != last {
        seen.in_order.store(false, Ordering::SeqCst);
    }
    if n != last {
        seen.count.fetch_add(1, Ordering::SeqCst);
        seen.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
    }
    StatusCode::OK
}

impl Target {
    async fn start() -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let seen = Arc::new(Seen {
            in_order: AtomicBool::new(true),
            ..Seen::default()
        });
        let mut t = Target {
            addr: listener.local_addr().unwrap(),
            seen,
            running: None,
            cut: false,
        };
        t.serve(listener);
        t
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route(
                "/records",
                axum::routing::post(receive).get(|| async { StatusCode::OK }),
            )
            .with_state(self.seen.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = if self.cut {
            tokio::spawn(serve_cutting(listener, app, rx))
        } else {
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        rx.await.ok();
                    })
                    .await
                    .unwrap()
            })
        };
        self.running = Some((tx, task));
    }

    async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            tx.send(()).ok();
            task.await.unwrap();
        }
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn count(&self) -> u64 {
        self.seen.count.load(Ordering::SeqCst)
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.seen
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Serves `app` on `listener`, one hyper connection per task, until `stop`:
/// then the listening socket is closed and every connection is dropped
/// where it stands (kept-alive ones included), as when a server dies.
async fn serve_cutting(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                        .ok();
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// xorshift64*: the flapping windows, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        low + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (high - low + 1)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn summary(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (
        v[v.len() / 2],
        v[(v.len() * 9 / 10).min(v.len() - 1)],
        v[v.len() - 1],
    )
}

fn main() {
    let reps: usize = std::env::var("SLUICE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut target = Target::start().await;
        let text = format!(
            r#"[sites.LIVE.endpoints.shop]
kind = "webhook"
[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://{}/records"
timeout = "2s"
[sites.LIVE.integrations.orders]
[[sites.LIVE.integrations.orders.flows]]
name = "web"
source = "shop"
target = "crm"
"#,
            target.addr
        );
        let data = dir.path().join("data");
        let config = Config::parse(&text, &dir.path().join("sluice.toml"), Some(&data)).unwrap();
        let daemon = Daemon::open(&config).await.unwrap();
        daemon.restore().await.unwrap();
        let site = daemon.site("LIVE").unwrap().clone();
        let integration = site.integration("orders").unwrap().clone();

        let feeding = Arc::new(AtomicBool::new(true));
        let fed = Arc::new(AtomicU64::new(0));
        let feeder = {
            let (site, feeding, fed) = (site.clone(), feeding.clone(), fed.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while feeding.load(Ordering::SeqCst) {
                    n += 1;
                    site.accept_pushed("orders", "web", vec![serde_json::json!({ "n": n })])
                        .await
                        .unwrap();
                    fed.store(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        while target.count() < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let held = |kind: HoldKind| integration.record().holds.iter().any(|h| h.kind == kind);
        let (mut detect, mut recover, mut outages) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let down_at = Instant::now();
            target.stop().await;
            while !held(HoldKind::EndpointOffline) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            detect.push(down_at.elapsed());
            // Outages from 0.3 s to 1.5 s.
            let outage = Duration::from_millis(300 + (rep as u64 * 397) % 1200);
            tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
            outages.push(down_at.elapsed());
            let before = target.count();
            let up_at = Instant::now();
            target.restart().await;
            while target.count() <= before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            recover.push(up_at.elapsed());
            while held(HoldKind::EndpointOffline) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Flapping: back-to-back outages that cut kept-alive connections.
        let flaps = (reps * 3 / 2).max(1);
        let seed: u64 = std::env::var("SLUICE_BENCH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5EED_F1A9);
        let mut rng = Rng(seed.max(1));
        target.stop().await;
        target.cut = true;
        target.restart().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Each up-window: when the target came back, and when it went down
        // again.
        let mut windows: Vec<(Instant, Instant)> = Vec::new();
        let (mut downs, mut ups) = (Vec::new(), Vec::new());
        for _ in 0..flaps {
            target.stop().await;
            let down = Duration::from_millis(rng.between(200, 2000));
            tokio::time::sleep(down).await;
            downs.push(down);
            let up_at = Instant::now();
            target.restart().await;
            let up = Duration::from_millis(rng.between(300, 2000));
            tokio::time::sleep(up).await;
            ups.push(up);
            windows.push((up_at, Instant::now()));
        }

        feeding.store(false, Ordering::SeqCst);
        feeder.await.unwrap();
        let total = fed.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while target.count() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let complete = target.count() == total && target.seen.in_order.load(Ordering::SeqCst);
        // The target's last up-window lasts until the end: its first
        // delivery may come after the flapping stopped.
        let arrivals = target.arrivals();
        let mut flap_recover = Vec::new();
        // The up-windows in which nothing was delivered: how long each was.
        let mut silent = Vec::new();
        for (i, (up_at, down_at)) in windows.iter().enumerate() {
            let first = arrivals.partition_point(|t| t < up_at);
            match arrivals.get(first) {
                Some(t) => flap_recover.push(t.duration_since(*up_at)),
                // Never (then the run fails anyway): at least this long.
                None => flap_recover.push(up_at.elapsed()),
            }
            let last_window = i + 1 == windows.len();
            if !last_window && arrivals.get(first).is_none_or(|t| t >= down_at) {
                silent.push(down_at.duration_since(*up_at));
            }
        }

        let (d50, d90, dmax) = summary(detect);
        let (r50, r90, rmax) = summary(recover);
        let (o50, _, omax) = summary(outages);
        println!(
            "sluice outage benchmark: {reps} outages of {} (median) to {}, a record every 5 ms",
            ms(o50),
            ms(omax)
        );
        println!();
        println!(
            "{:<44} {:>9} {:>9} {:>9}   goal",
            "", "median", "p90", "max"
        );
        println!(
            "{:<44} {:>9} {:>9} {:>9}   ≤1 s (Celigo: up to 1 h)",
            "target down → integration held",
            ms(d50),
            ms(d90),
            ms(dmax)
        );
        println!(
            "{:<44} {:>9} {:>9} {:>9}   ≤2 s (Envoy ejection: 30 s)",
            "target back → first delivery",
            ms(r50),
            ms(r90),
            ms(rmax)
        );
        let (f50, f90, fmax) = summary(flap_recover);
        let (dn50, _, dnmax) = summary(downs.clone());
        let (up50, _, upmax) = summary(ups);
        println!();
        println!(
            "flapping: {flaps} back-to-back outages of {} (median) to {}, up-windows of {} \
             (median) to {}; going down cuts kept-alive connections (seed {seed})",
            ms(dn50),
            ms(dnmax),
            ms(up50),
            ms(upmax)
        );
        println!();
        println!(
            "{:<44} {:>9} {:>9} {:>9}   goal",
            "", "median", "p90", "max"
        );
        println!(
            "{:<44} {:>9} {:>9} {:>9}   ≤2 s",
            "target back → first delivery",
            ms(f50),
            ms(f90),
            ms(fmax)
        );
        println!(
            "up-windows with nothing delivered: {} of {}{}",
            silent.len(),
            flaps.saturating_sub(1),
            if silent.is_empty() {
                String::new()
            } else {
                let lengths: Vec<String> = silent.into_iter().map(ms).collect();
                format!(" (up for {})", lengths.join(", "))
            }
        );
        println!(
            "{total} records queued, {} of them delivered, in order: {}",
            target.count(),
            if complete { "yes" } else { "NO" }
        );
        daemon.shutdown().await;
        complete
    });
    if !ok {
        eprintln!("records were lost or delivered out of order");
        std::process::exit(1);
    }
}
