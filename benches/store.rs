use std::sync::Arc;

use sluice::model::now_millis;
use sluice::store::{NewRecord, Result, SqliteStore, Store};

fn records(from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| NewRecord {
            key: Some(format!("k{i}")),
            payload: format!("{{\"n\":{i}}}"),
        })
        .collect()
}

/// Throughput with `synchronous = FULL`: `cargo bench --bench store`
/// (`BENCH_DIR` picks the disk; the default is the system's temp dir).
async fn throughput() {
    const N: usize = 1_000_000;
    const CALL: usize = 1000;
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let s = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
    let calls: Vec<Vec<NewRecord>> = (0..N / CALL)
        .map(|c| {
            (c * CALL..(c + 1) * CALL)
                .map(|i| NewRecord {
                    key: Some(format!("o{i:07}")),
                    payload: format!(
                        "{{\"id\":\"o{i:07}\",\"n\":{i},\"amount\":{}.5,\"sku\":\"ABC-123\"}}",
                        i % 1000
                    ),
                })
                .collect()
        })
        .collect();
    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64();

    let started = std::time::Instant::now();
    for call in calls {
        s.enqueue("orders", "f", call, None, None).await.unwrap();
    }
    let e = started.elapsed();
    println!(
        "enqueue, one caller:    {N} in {e:.2?} = {:.0}/s",
        rate(N, e)
    );
    assert_eq!(s.queued_count("orders").await.unwrap(), N as i64);

    let started = std::time::Instant::now();
    let (mut after, mut n) = (0, 0);
    loop {
        let batch = s.next_batch("orders", after, CALL).await.unwrap();
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            break;
        };
        s.ack_sent("orders", first.seq, last.seq).await.unwrap();
        after = last.seq;
        n += batch.len();
    }
    let d = started.elapsed();
    assert_eq!(n, N);
    println!(
        "drain, read then ack:   {N} in {d:.2?} = {:.0}/s",
        rate(N, d)
    );

    let started = std::time::Instant::now();
    assert!(s.next_batch("orders", 0, CALL).await.unwrap().is_empty());
    println!(
        "next_batch from 0 behind {N} Sent: {:.2?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    assert_eq!(s.prune(now_millis() + 1).await.unwrap(), N);
    println!("prune of {N} Sent: {:.2?}", started.elapsed());

    // Four callers at once: their calls share commits.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for c in 0..N / CALL / 4 {
                let call = records((t * N / 4) + c * CALL, CALL);
                s.enqueue("more", "f", call, None, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let e = started.elapsed();
    println!(
        "enqueue, four callers:  {N} in {e:.2?} = {:.0}/s",
        rate(N, e)
    );

    // The sender's way: the ack of one batch runs beside the next read.
    let started = std::time::Instant::now();
    let (mut after, mut n) = (0, 0);
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
            s2.ack_sent("more", first, last).await
        }));
        after = last;
        n += batch.len();
    }
    let d = started.elapsed();
    assert_eq!(n, N);
    println!(
        "drain, ack beside read: {N} in {d:.2?} = {:.0}/s",
        rate(N, d)
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(throughput());
}
