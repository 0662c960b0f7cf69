//! PostgreSQL → an HTTPS API with `batch = 100`: a table read by the real
//! daemon and posted, 100 records a request, to a local HTTPS API (a
//! private CA, `ca_file`), against a plain loop in the same run that reads
//! the same rows (PostgreSQL's own `row_to_json`) and posts the same
//! batches to the same API, one request at a time, keeping nothing.
//!
//! ```sh
//! cargo bench --bench pg_api                          # 200,000 rows
//! SLUICE_BENCH_ROWS=50000 cargo bench --bench pg_api  # what CI runs
//! ```
//!
//! It reports; it exits non-zero only if a record is missing or out of
//! order. Needs the test PostgreSQL (`SLUICE_TEST_PG_URL`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/sql/mod.rs"]
mod sql;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{eventually, tls, Daemon};
use futures_util::{pin_mut, TryStreamExt};
use sql::PgDb;

const BATCH: usize = 100;

/// What the API took: records, and whether their ids came in order.
#[derive(Default)]
struct Taken {
    records: AtomicU64,
    last_id: AtomicI64,
    out_of_order: AtomicU64,
}

async fn take(State(taken): State<Arc<Taken>>, body: Bytes) -> StatusCode {
    let Ok(serde_json::Value::Array(records)) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for r in &records {
        let id = r["id"].as_i64().unwrap_or(0);
        if id <= taken.last_id.swap(id, Ordering::SeqCst) {
            taken.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
    }
    taken
        .records
        .fetch_add(records.len() as u64, Ordering::SeqCst);
    StatusCode::OK
}

/// Starts the HTTPS API; its URL.
async fn api(ca: &tls::TestCa, taken: Arc<Taken>) -> String {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/records",
        tcp.local_addr().unwrap().port()
    );
    let listener = tls::TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(ca.server_config("api", None)),
        connections: Arc::default(),
    };
    let app = Router::new()
        .route("/records", post(take))
        .with_state(taken);
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}

/// The baseline: the rows as PostgreSQL's JSON, posted 100 at a time.
async fn baseline(db: &PgDb, url: &str, ca_file: &std::path::Path) -> Duration {
    let tls = sluice::tls::client_config(sluice::tls::ClientFiles {
        ca_file: Some(ca_file),
        identity: None,
    })
    .unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let started = Instant::now();
    let rows = db
        .client
        .query_raw(
            "SELECT row_to_json(s)::text FROM src s ORDER BY updated_at, id",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut body = Vec::with_capacity(64 * 1024);
    let mut n = 0;
    let send = |body: &mut Vec<u8>| {
        body.push(b']');
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(std::mem::take(body));
        async move {
            let status = request.send().await.unwrap().status();
            assert!(status.is_success(), "{status}");
        }
    };
    while let Some(row) = rows.try_next().await.unwrap() {
        body.push(if n == 0 { b'[' } else { b',' });
        body.extend_from_slice(row.get::<_, &str>(0).as_bytes());
        n += 1;
        if n == BATCH {
            send(&mut body).await;
            n = 0;
        }
    }
    if n > 0 {
        send(&mut body).await;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: u64 = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let db = PgDb::new().await;
    db.exec(
        "CREATE TABLE src (
            id bigint PRIMARY KEY, name text NOT NULL, email text, qty integer,
            price numeric(12,2), ratio double precision, active boolean, born date,
            note text, updated_at timestamptz NOT NULL)",
    )
    .await;
    db.exec(&format!(
        "INSERT INTO src SELECT g, 'customer ' || g, 'c' || g || '@example.com', g % 1000,
            (g % 100000) / 100.0, g / 7.0, g % 2 = 0, date '1970-01-01' + (g % 20000)::int,
            repeat('x', 20), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 millisecond'
         FROM generate_series(1, {rows}) g"
    ))
    .await;
    db.exec("VACUUM ANALYZE src").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::TestCa::new(dir.path(), "api");

    let taken = Arc::new(Taken::default());
    let url = api(&ca, taken.clone()).await;
    let took = baseline(&db, &url, &ca.ca_file()).await;
    assert_eq!(taken.records.load(Ordering::SeqCst), rows);
    let base_rate = rows as f64 / took.as_secs_f64();
    println!(
        "baseline (row_to_json, POST 100 a request, nothing kept): {rows} rows in {:.2}s = {base_rate:.0} rows/s",
        took.as_secs_f64()
    );

    let taken = Arc::new(Taken::default());
    let url = api(&ca, taken.clone()).await;
    let toml = format!(
        r#"
[sites.S.endpoints.src]
kind = "postgres"
url = "{db}"
table = "src"
page_size = 5000

[sites.S.endpoints.api]
kind = "http"
url = "{url}"
batch = {BATCH}
ca_file = "{ca}"

[sites.S.integrations.sync]

[[sites.S.integrations.sync.flows]]
name = "rows"
source = "src"
target = "api"
key = "id"
cursor = "updated_at"
"#,
        db = db.url,
        ca = ca.ca_file().display()
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let started = Instant::now();
    sql::start_run(&daemon, "all").await;
    let want = rows;
    eventually(600, "every row at the API", || async {
        taken.records.load(Ordering::SeqCst) >= want
    })
    .await;
    let took = started.elapsed();
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "sluice 'Send All' PostgreSQL → HTTPS API, batch {BATCH}: {rows} rows in {:.2}s = {rate:.0} rows/s, {:.2} of the baseline",
        took.as_secs_f64(),
        rate / base_rate
    );
    let got = taken.records.load(Ordering::SeqCst);
    let disorder = taken.out_of_order.load(Ordering::SeqCst);
    if got != rows || disorder > 0 {
        eprintln!("WRONG: {got} of {rows} records, {disorder} out of order");
        std::process::exit(1);
    }
}
