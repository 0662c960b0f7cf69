//! The store benchmark: the SQLite backend on its own (no engine, no
//! target), against plain SQLite doing the same work with the same pragmas
//! and the same rows, in the same run.
//!
//! ```sh
//! cargo bench --bench store                         # N = 1,000,000
//! SLUICE_BENCH_N=100000 cargo bench --bench store   # a quick look
//! BENCH_DIR=/mnt/disk cargo bench --bench store     # on another disk
//! ```
//!
//! It measures, for N records in calls of 1000 (`synchronous = FULL`):
//! enqueue by one caller and by four at once (their calls share commits);
//! draining by reading a batch and acking it, and the sender's way (the ack
//! of one batch beside the read of the next); `next_batch` from 0 behind N
//! Sent rows; the prune of those. The baseline is one plain connection with
//! the store's pragmas and row shape: insert 1000 rows a transaction; read
//! 1000 and mark them Sent in a transaction that does not wait for the disk
//! (as the store's acks do not); the same read from 0 without the store's
//! floor; delete 5000 rows a transaction (as a prune). The ratio is sluice's
//! speed over the baseline's (above 1: sluice is faster). It reports; it
//! does not assert timings, and stops only if a count is wrong.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;
use sluice::model::now_millis;
use sluice::store::{NewRecord, Result, SqliteStore, Store};

use common::{payload, rate, raw_delete, raw_insert, raw_table};

/// Records a call (`enqueue`, `next_batch`), rows a transaction of the
/// baseline.
const CALL: usize = 1000;

/// Rows a transaction of the baseline's delete: the store's prune chunk.
const DELETE_CHUNK: usize = 5000;

fn records(from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| NewRecord {
            key: Some(format!("k{i}")),
            payload: format!("{{\"n\":{i}}}"),
        })
        .collect()
}

/// What plain SQLite took for each step.
struct Baseline {
    insert: Duration,
    drain: Duration,
    scan: Duration,
    delete: Duration,
}

/// Plain SQLite, the store's pragmas and row shape, one connection.
fn baseline(dir: &Path, n: usize) -> Baseline {
    let conn = raw_table(dir);
    let started = Instant::now();
    raw_insert(&conn, n, CALL, now_millis());
    let insert = started.elapsed();

    let read = "SELECT seq, flow, payload, attempts FROM t
                WHERE integration = ?1 AND state = 0 AND seq > ?2 ORDER BY seq LIMIT ?3";
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let started = Instant::now();
    let (mut after, mut drained) = (0i64, 0);
    loop {
        let seqs: Vec<i64> = conn
            .prepare_cached(read)
            .unwrap()
            .query_map(params!["orders", after, CALL as i64], |r| {
                let _row: (String, String, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
                r.get(0)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else {
            break;
        };
        conn.execute_batch("BEGIN").unwrap();
        conn.prepare_cached(
            "UPDATE t SET state = 2, updated_at = ?4
             WHERE integration = ?1 AND seq BETWEEN ?2 AND ?3",
        )
        .unwrap()
        .execute(params!["orders", first, last, now_millis()])
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        after = *last;
        drained += seqs.len();
    }
    let drain = started.elapsed();
    assert_eq!(drained, n);
    conn.pragma_update(None, "synchronous", "FULL").unwrap();

    let started = Instant::now();
    let mut rows = conn.prepare_cached(read).unwrap();
    assert!(rows
        .query(params!["orders", 0, CALL as i64])
        .unwrap()
        .next()
        .unwrap()
        .is_none());
    drop(rows);
    let scan = started.elapsed();

    let started = Instant::now();
    raw_delete(&conn, n, DELETE_CHUNK);
    let delete = started.elapsed();
    Baseline {
        insert,
        drain,
        scan,
        delete,
    }
}

/// One line of the report: a step of N records, sluice against the
/// baseline.
fn row(step: &str, n: usize, took: Duration, base: &str, base_took: Duration) {
    println!(
        "{step:<32} {:>9.2?} {:>9}   {base:<16} {:>9.2?} {:>9}   {:>6.2}",
        took,
        format!("{:.0}k/s", rate(n, took) / 1000.0),
        base_took,
        format!("{:.0}k/s", rate(n, base_took) / 1000.0),
        base_took.as_secs_f64() / took.as_secs_f64(),
    );
}

/// The store's steps, each against the baseline's.
async fn throughput(dir: &Path, n: usize, base: &Baseline) {
    let s = Arc::new(SqliteStore::open(&dir.join("bench.db")).unwrap());
    let calls: Vec<Vec<NewRecord>> = (0..n / CALL)
        .map(|c| {
            (c * CALL..(c + 1) * CALL)
                .map(|i| NewRecord {
                    key: Some(format!("o{i:07}")),
                    payload: payload(i),
                })
                .collect()
        })
        .collect();

    let started = Instant::now();
    for call in calls {
        s.enqueue("orders", "f", call, None, None).await.unwrap();
    }
    let took = started.elapsed();
    row("enqueue, one caller", n, took, "raw insert", base.insert);
    assert_eq!(s.queued_count("orders").await.unwrap(), n as i64);

    let started = Instant::now();
    let (mut after, mut drained) = (0, 0);
    loop {
        let batch = s.next_batch("orders", after, CALL).await.unwrap();
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            break;
        };
        s.ack_sent("orders", first.seq, last.seq, vec![])
            .await
            .unwrap();
        after = last.seq;
        drained += batch.len();
    }
    let took = started.elapsed();
    assert_eq!(drained, n);
    row("drain, read then ack", n, took, "raw read+mark", base.drain);

    let started = Instant::now();
    assert!(s.next_batch("orders", 0, CALL).await.unwrap().is_empty());
    let took = started.elapsed();
    println!(
        "{:<32} {took:>9.2?} {:>9}   {:<16} {:>9.2?} {:>9}   {:>6.0}",
        "next_batch from 0 behind N Sent",
        "",
        "raw, no floor",
        base.scan,
        "",
        base.scan.as_secs_f64() / took.as_secs_f64(),
    );

    let started = Instant::now();
    assert_eq!(s.prune(now_millis() + 1).await.unwrap(), n);
    let took = started.elapsed();
    row("prune of N Sent", n, took, "raw delete", base.delete);

    // Four callers at once: their calls share commits.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for c in 0..n / CALL / 4 {
                let call = records((t * n / 4) + c * CALL, CALL);
                s.enqueue("more", "f", call, None, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    row("enqueue, four callers", n, took, "raw insert", base.insert);

    // The sender's way: the ack of one batch runs beside the next read.
    let started = Instant::now();
    let (mut after, mut drained) = (0, 0);
    let mut acking: Option<tokio::task::JoinHandle<Result<()>>> = None;
    loop {
        let batch = s.next_batch("more", after, CALL).await.unwrap();
        if let Some(ack) = acking.take() {
            ack.await.unwrap().unwrap();
        }
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            break;
        };
        let (first, last) = (first.seq, last.seq);
        let s2 = s.clone();
        acking = Some(tokio::spawn(async move {
            s2.ack_sent("more", first, last, vec![]).await
        }));
        after = last;
        drained += batch.len();
    }
    let took = started.elapsed();
    assert_eq!(drained, n);
    row(
        "drain, ack beside read",
        n,
        took,
        "raw read+mark",
        base.drain,
    );
}

fn main() {
    // Four callers share the calls: N is a multiple of four calls.
    let n: usize = std::env::var("SLUICE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        .max(4 * CALL)
        / (4 * CALL)
        * (4 * CALL);
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    println!("sluice store benchmark, N = {n} (synchronous=FULL, WAL, {CALL} records a call)");
    let base = baseline(dir.path(), n);
    println!();
    println!(
        "{:<32} {:>9} {:>9}   {:<16} {:>9} {:>9}   {:>6}",
        "", "sluice", "", "baseline", "", "", "ratio"
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(throughput(dir.path(), n, &base));
}
