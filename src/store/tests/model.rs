//! Random sequences of enqueues, deliveries, failures, rejections, retries
//! and restarts against a queue per integration kept in memory: after each
//! step, the store must answer what the model holds. Against SQLite, and
//! against PostgreSQL (fewer cases: each has a database of its own) when
//! `SLUICE_TEST_PG_URL` is set.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        b: bool,
        n: usize,
    },
    /// Read `n` from the head, ack the first `acked` of them.
    Deliver {
        b: bool,
        n: usize,
        acked: usize,
    },
    /// A failed attempt of the first `n` pending.
    Fail {
        b: bool,
        n: usize,
    },
    /// The first pending is rejected (Error).
    Reject {
        b: bool,
    },
    /// The `i`-th transaction in Error is retried (Queued again).
    Retry {
        b: bool,
        i: usize,
    },
    /// Drop the store and open it again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0..90usize).prop_map(|(b, n)| Op::Enqueue { b, n }),
        4 => (any::<bool>(), 1..40usize, 0..40usize)
            .prop_map(|(b, n, acked)| Op::Deliver { b, n, acked }),
        1 => (any::<bool>(), 1..5usize).prop_map(|(b, n)| Op::Fail { b, n }),
        2 => any::<bool>().prop_map(|b| Op::Reject { b }),
        1 => (any::<bool>(), 0..8usize).prop_map(|(b, i)| Op::Retry { b, i }),
        1 => Just(Op::Reopen),
    ]
}

/// One integration's queue as it should be.
#[derive(Default)]
struct Model {
    /// Pending transactions in order: (seq, attempts).
    pending: BTreeMap<i64, i64>,
    /// Transactions in Error: seq → attempts.
    errors: BTreeMap<i64, i64>,
    last_seq: i64,
}

async fn check(backend: &Backend, store: &dyn Store, name: &str, m: &Model) {
    let want: Vec<(i64, i64)> = m.pending.iter().map(|(s, a)| (*s, *a)).collect();
    let got: Vec<(i64, i64)> = store
        .next_batch(name, 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|t| (t.seq, t.attempts))
        .collect();
    assert_eq!(got, want, "pending of {name}");
    // Reading on from the middle.
    if let Some((after, _)) = want.get(want.len() / 2) {
        let got = seqs(&store.next_batch(name, *after, 3).await.unwrap());
        let want: Vec<i64> = m
            .pending
            .range(after + 1..)
            .map(|(s, _)| *s)
            .take(3)
            .collect();
        assert_eq!(got, want, "pending of {name} after {after}");
    }
    assert_eq!(store.queued_count(name).await.unwrap(), want.len() as i64);
    assert_eq!(
        store.first_error(name).await.unwrap(),
        m.errors.keys().next().copied()
    );
    // SQLite's bookkeeping is exact: floor included.
    if m.last_seq > 0 {
        if let Some(stored) = backend.bookkeeping(name) {
            let floor = m.pending.keys().next().map_or(m.last_seq, |s| s - 1);
            assert_eq!(
                stored,
                Some((m.last_seq, want.len() as i64, floor)),
                "bookkeeping of {name}"
            );
        }
    }
}

/// Runs `ops` against a fresh store of `backend`, checking it against the
/// model after each.
async fn run(backend: &Backend, ops: Vec<Op>) {
    let mut store = backend.open().await;
    let mut models = [Model::default(), Model::default()];
    let name = |b: bool| if b { "b" } else { "a" };
    for op in ops {
        match op {
            Op::Enqueue { b, n } => {
                let m = &mut models[usize::from(b)];
                let got = store
                    .enqueue(name(b), "f", records(0, n), None, None)
                    .await
                    .unwrap();
                if n == 0 {
                    assert_eq!(got, None);
                } else {
                    assert_eq!(got, Some((m.last_seq + 1, m.last_seq + n as i64)));
                    for _ in 0..n {
                        m.last_seq += 1;
                        m.pending.insert(m.last_seq, 0);
                    }
                }
            }
            Op::Deliver { b, n, acked } => {
                let m = &mut models[usize::from(b)];
                let batch = store.next_batch(name(b), 0, n).await.unwrap();
                let acked = acked.min(batch.len());
                if acked > 0 {
                    let (first, last) = (batch[0].seq, batch[acked - 1].seq);
                    store.ack_sent(name(b), first, last, vec![]).await.unwrap();
                    for t in &batch[..acked] {
                        m.pending.remove(&t.seq);
                    }
                }
            }
            Op::Fail { b, n } => {
                let m = &mut models[usize::from(b)];
                let head: Vec<i64> = m.pending.keys().take(n).copied().collect();
                if let (Some(first), Some(last)) = (head.first(), head.last()) {
                    store
                        .record_failure(name(b), *first, *last, "503")
                        .await
                        .unwrap();
                    for seq in head {
                        *m.pending.get_mut(&seq).unwrap() += 1;
                    }
                }
            }
            Op::Reject { b } => {
                let m = &mut models[usize::from(b)];
                if let Some((seq, attempts)) = m.pending.pop_first() {
                    store
                        .settle(name(b), seq, TxState::Error, Some("no".into()))
                        .await
                        .unwrap();
                    m.errors.insert(seq, attempts);
                }
            }
            Op::Retry { b, i } => {
                let m = &mut models[usize::from(b)];
                if let Some(seq) = m.errors.keys().nth(i % m.errors.len().max(1)).copied() {
                    store
                        .settle(name(b), seq, TxState::Queued, None)
                        .await
                        .unwrap();
                    let attempts = m.errors.remove(&seq).unwrap();
                    m.pending.insert(seq, attempts);
                }
            }
            Op::Reopen => {
                drop(store);
                store = backend.open().await;
            }
        }
        for b in [false, true] {
            check(backend, &*store, name(b), &models[usize::from(b)]).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Random enqueues, deliveries, failures, rejections, retries and
    /// restarts against a queue per integration kept in memory.
    #[test]
    fn the_queue_matches_a_simple_model(ops in proptest::collection::vec(op(), 1..50)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&Backend::sqlite(), ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    /// The same against PostgreSQL, each case in a database of its own.
    #[test]
    fn the_queue_matches_a_simple_model_on_postgres(ops in proptest::collection::vec(op(), 1..50)) {
        let Some(url) = pg_url() else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let backend = Backend::postgres(&url).await;
            run(&backend, ops).await;
        });
    }
}
