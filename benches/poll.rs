//! The poll benchmark: how fast a flow pulls records from a paginated JSON
//! API (`kind = "http_poll"`) into the queue and out to a file target,
//! against a plain reqwest loop fetching and parsing the same pages, in the
//! same run.
//!
//! ```sh
//! cargo bench --bench poll                          # N = 100,000
//! SLUICE_BENCH_N=20000 cargo bench --bench poll     # a quicker look
//! ```
//!
//! The API is a real HTTP server on 127.0.0.1 (axum) answering pages of
//! 1,000 records built before the clock starts, `{"data": […], "links":
//! {"next": "/orders?page=…"}}`, so what is measured is the client side.
//! The daemon runs in process (its real engine: the run, the store, the
//! sender) with a file target. It reports records per second for: the
//! baseline (fetch + parse every page), sluice queueing them (the run's
//! end) and sluice delivering them (the file holds them all), with the
//! ratios to the baseline. It exits non-zero only if a record is missing,
//! repeated or out of order in the file.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use sluice::config::Config;
use sluice::engine::Daemon;
use sluice::model::RunMode;

use common::{payload, rate};

const PAGE: usize = 1000;

/// The API's answers, page by page (page 1 first).
type Pages = Arc<Vec<axum::body::Bytes>>;

fn pages(n: usize) -> Pages {
    let count = n.div_ceil(PAGE);
    Arc::new(
        (0..count)
            .map(|p| {
                let records: Vec<String> = (p * PAGE..((p + 1) * PAGE).min(n))
                    .map(|i| payload(i + 1))
                    .collect();
                let next = if p + 1 < count {
                    format!("\"/orders?page={}\"", p + 2)
                } else {
                    "null".into()
                };
                format!(
                    "{{\"data\":[{}],\"links\":{{\"next\":{next}}}}}",
                    records.join(",")
                )
                .into()
            })
            .collect(),
    )
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

async fn answer(
    State(pages): State<Pages>,
    Query(q): Query<PageQuery>,
) -> axum::response::Response {
    let i = q.page.unwrap_or(1).saturating_sub(1);
    match pages.get(i) {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// A plain reqwest loop: fetch every page, parse it, follow `next`.
async fn baseline(base: &str) -> (usize, Duration) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut url = format!("{base}/orders");
    let mut records = 0;
    loop {
        let body = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        records += page["data"].as_array().unwrap().len();
        match page["links"]["next"].as_str() {
            Some(next) => url = format!("{base}{next}"),
            None => break,
        }
    }
    (records, started.elapsed())
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async move {
        let pages = pages(n);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/orders", axum::routing::get(answer))
            .with_state(pages);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = format!("http://{addr}");

        // Warm the server's and the loopback's paths, then the baseline.
        baseline(&base).await;
        let (got, took) = baseline(&base).await;
        assert_eq!(got, n);
        let base_rate = rate(n, took);

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let text = format!(
            r#"[sites.LIVE.endpoints.api]
kind = "http_poll"
url = "{base}/orders"
records = "/data"
next = "/links/next"
[sites.LIVE.endpoints.out]
kind = "file"
path = "{out}"
batch = 1000
[sites.LIVE.integrations.orders]
[[sites.LIVE.integrations.orders.flows]]
name = "pull"
source = "api"
target = "out"
key = "id"
cursor = "n"
"#,
            out = out.display()
        );
        let data = dir.path().join("data");
        let config = Config::parse(&text, &dir.path().join("sluice.toml"), Some(&data)).unwrap();
        let daemon = Daemon::open(&config).await.unwrap();
        daemon.restore().await.unwrap();
        let site = daemon.site("LIVE").unwrap().clone();

        let started = Instant::now();
        site.request_run("pull", RunMode::All, "bench").await.unwrap();
        let mut queued_in = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let run = site.runs("pull", 1).await.unwrap().into_iter().next();
            if let Some(run) = &run {
                if run.result.is_some() && queued_in.is_none() {
                    queued_in = Some(started.elapsed());
                    if run.captured != n as i64 {
                        eprintln!("the run ended {:?} with {} queued: {:?}", run.result, run.captured, run.error);
                        return false;
                    }
                }
            }
            if queued_in.is_some() && site.queued("orders").await.unwrap() == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("not done in 600 s");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delivered_in = started.elapsed();
        let queued_in = queued_in.unwrap();
        daemon.shutdown().await;

        let text = std::fs::read_to_string(&out).unwrap();
        let in_order = text
            .lines()
            .enumerate()
            .all(|(i, line)| line.contains(&format!("\"n\":{},", i + 1)));
        let lines = text.lines().count();

        let queue_rate = rate(n, queued_in);
        let deliver_rate = rate(n, delivered_in);
        println!("poll: {n} records from a local API in pages of {PAGE}");
        println!("  baseline (reqwest: fetch + parse)   {base_rate:>10.0} records/s");
        println!(
            "  sluice http_poll → queue            {queue_rate:>10.0} records/s  ({:.2}× baseline)",
            queue_rate / base_rate
        );
        println!(
            "  sluice http_poll → queue → file     {deliver_rate:>10.0} records/s  ({:.2}× baseline)",
            deliver_rate / base_rate
        );
        if lines != n || !in_order {
            eprintln!("the file holds {lines} records (want {n}), in order: {in_order}");
            return false;
        }
        true
    });
    if !ok {
        std::process::exit(1);
    }
}
