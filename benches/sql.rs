//! The database benchmark: a PostgreSQL table copied to another by the
//! real daemon, against `COPY src TO STDOUT` piped into `COPY dst FROM
//! STDIN` between the same tables in the same run (the physical limit).
//!
//! ```sh
//! cargo bench --bench sql                           # 1,000,000 rows
//! SLUICE_BENCH_ROWS=100000 cargo bench --bench sql  # what CI runs
//! ```
//!
//! Measured: 'Send All' of the whole table and 'Send Changed' after 1 % of
//! the rows changed (rows/s, and the ratio to COPY); the two halves of a
//! 'Send All' apart (reading and queueing with the integration paused,
//! then draining the queue); and the daemon's peak
//! memory (VmHWM) reading the big table against a fresh daemon reading
//! 1,000 rows — a table is read page by page, so the peak must not grow
//! with it. The source reads with the default `page_size` (1,000 rows),
//! the target writes `batch = 1000` (`SLUICE_BENCH_BATCH` to try another).
//! Needs the test PostgreSQL (`SLUICE_TEST_PG_URL`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/sql/mod.rs"]
mod sql;

use std::time::{Duration, Instant};

use common::Daemon;
use futures_util::{SinkExt, StreamExt};
use sql::{site, PgDb};

const TABLE: &str = "(
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text,
    qty integer,
    price numeric(12,2),
    ratio double precision,
    active boolean,
    born date,
    note text,
    updated_at timestamptz NOT NULL
)";

fn fill(rows: u64) -> String {
    format!(
        "INSERT INTO src SELECT g, 'customer ' || g, 'c' || g || '@example.com', g % 1000,
            (g % 100000) / 100.0, g / 7.0, g % 2 = 0, date '1970-01-01' + (g % 20000)::int,
            repeat('x', 20), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 millisecond'
         FROM generate_series(1, {rows}) g"
    )
}

fn config(url: &str, src: &str) -> String {
    site(
        &format!("kind = \"postgres\"\nurl = \"{url}\"\ntable = \"{src}\""),
        &format!(
            "kind = \"postgres\"\nurl = \"{url}\"\ntable = \"dst\"\nkey = [\"id\"]\nbatch = {}",
            std::env::var("SLUICE_BENCH_BATCH").unwrap_or_else(|_| "1000".into())
        ),
    )
}

/// Runs flow `rows` and waits until everything it read is written: how
/// long that took and how many rows it read. Prints how long the run
/// itself (reading and queueing, without the writing that goes on after
/// it) took.
async fn timed_run(daemon: &Daemon, mode: &str) -> (Duration, i64) {
    let started = Instant::now();
    let last = sql::run(daemon, mode).await;
    let at = |k: &str| {
        last[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    if let (Some(a), Some(b)) = (at("started_at"), at("finished_at")) {
        println!(
            "  the run (read and queued) took {:.2}s of it",
            (b - a).num_milliseconds() as f64 / 1000.0
        );
    }
    (started.elapsed(), last["captured"].as_i64().unwrap_or(0))
}

/// The peak resident memory of a process, in KiB.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `COPY src TO STDOUT` into `COPY copy FROM STDIN`, streamed.
async fn copy(db: &PgDb, url: &str) -> Duration {
    let (other, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move { conn.await.ok() });
    let started = Instant::now();
    let out = db
        .client
        .copy_out("COPY src TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let sink = other
        .copy_in("COPY copy FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        // `feed`, not `send`: a flush a row would make the baseline slow.
        sink.feed(chunk.unwrap()).await.unwrap();
    }
    sink.as_mut().finish().await.unwrap();
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: u64 = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let db = PgDb::new().await;
    db.exec(&format!(
        "CREATE TABLE src {TABLE}; CREATE TABLE dst {TABLE}; CREATE TABLE copy {TABLE};
         CREATE TABLE small {TABLE};"
    ))
    .await;
    db.exec(&fill(rows)).await;
    db.exec("INSERT INTO small SELECT * FROM src WHERE id <= 1000")
        .await;
    db.exec("VACUUM ANALYZE src").await;

    // Each measurement starts from a checkpoint, so that neither pays for
    // the one the loading before it made due.
    // COPY's time varies by half from one run to the next on a small
    // machine (the disk's write-back): the best of two, one before and
    // one after sluice's run, is the limit.
    db.exec("CHECKPOINT").await;
    let first_copy = copy(&db, &db.url).await;

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &config(&db.url, "src")).await;
    db.exec("CHECKPOINT").await;
    let (took, read) = timed_run(&daemon, "all").await;
    assert_eq!(read as u64, rows);
    assert_eq!(db.count("SELECT * FROM dst").await as u64, rows);
    db.exec("TRUNCATE copy").await;
    db.exec("CHECKPOINT").await;
    let second_copy = copy(&db, &db.url).await;
    let copied = first_copy.min(second_copy);
    let copy_rate = rows as f64 / copied.as_secs_f64();
    println!(
        "COPY src TO STDOUT | COPY FROM STDIN: {rows} rows in {:.2}s = {copy_rate:.0} rows/s \
         (the better of {:.2}s before and {:.2}s after sluice's run)",
        copied.as_secs_f64(),
        first_copy.as_secs_f64(),
        second_copy.as_secs_f64()
    );
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "sluice 'Send All': {rows} rows in {:.2}s = {rate:.0} rows/s, {:.2} of COPY",
        took.as_secs_f64(),
        rate / copy_rate
    );
    let big_peak = vm_hwm(daemon.pid());

    db.exec("UPDATE src SET qty = qty + 1, updated_at = now() WHERE id % 100 = 0")
        .await;
    let (took, read) = timed_run(&daemon, "changed").await;
    println!(
        "sluice 'Send Changed': {read} changed rows of {rows} in {:.3}s = {:.0} rows/s",
        took.as_secs_f64(),
        read as f64 / took.as_secs_f64()
    );
    assert_eq!(
        db.count("SELECT * FROM src EXCEPT SELECT * FROM dst").await,
        0
    );
    drop(daemon);

    // The two halves apart: reading and queueing with the integration
    // paused, then the drain of the queue alone.
    let dir = tempfile::tempdir().unwrap();
    db.exec("TRUNCATE dst").await;
    let daemon = Daemon::start(dir.path(), &config(&db.url, "src")).await;
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/pause",
            serde_json::json!({}),
        )
        .await;
    assert!(status.is_success());
    db.exec("CHECKPOINT").await;
    let started = Instant::now();
    let before = sql::start_run(&daemon, "all").await;
    common::eventually(120, "the paused run over", || async {
        let flow = daemon.flow("S", "rows").await;
        flow["last_run"]["id"] != before && flow["status"] != "Running"
    })
    .await;
    let read = started.elapsed();
    db.exec("CHECKPOINT").await;
    let started = Instant::now();
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/resume",
            serde_json::json!({}),
        )
        .await;
    assert!(status.is_success());
    common::eventually(120, "the queue drained", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    let drained = started.elapsed();
    println!(
        "apart: read and queued (paused) {rows} rows in {:.2}s = {:.0} rows/s; \
         drained in {:.2}s = {:.0} rows/s",
        read.as_secs_f64(),
        rows as f64 / read.as_secs_f64(),
        drained.as_secs_f64(),
        rows as f64 / drained.as_secs_f64()
    );
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    db.exec("TRUNCATE dst").await;
    let daemon = Daemon::start(dir.path(), &config(&db.url, "small")).await;
    timed_run(&daemon, "all").await;
    let small_peak = vm_hwm(daemon.pid());
    println!(
        "daemon peak RSS (VmHWM): {} MiB reading {rows} rows, {} MiB reading 1000 rows",
        big_peak / 1024,
        small_peak / 1024
    );
}
