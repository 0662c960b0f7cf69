//! What only the PostgreSQL store has to show: sites apart in one
//! database, two stores of one site at once (their sequences, their log),
//! migrations applied once, errors without the password, bad data, the
//! partial indexes the queue is read by. Each test has a database of its own on the
//! server of `SLUICE_TEST_PG_URL`, and passes without a word when it is
//! not set.

use super::*;
use crate::model::{IntegrationState, RunMode, SiteState};
use crate::store::tests::{assert_reads_corrupt, enqueue_at_once, pg_url, records, seqs, PgTestDb};
use crate::store::{AuditEntry, Link};
use std::sync::Arc;

fn audit(action: &str) -> AuditEntry {
    crate::store::tests::entry(action)
}

/// Two sites in one database: each store sees its own rows only, and
/// each site's sequences start at 1.
#[tokio::test]
async fn sites_in_one_database_do_not_see_each_other() {
    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let north = PgStore::open(&db.url, "north").await.unwrap();
    let south = PgStore::open(&db.url, "south").await.unwrap();
    assert_eq!(north.site(), "north");
    assert_eq!(
        north
            .enqueue("a", "f", records(0, 3), Some("3".into()), None)
            .await
            .unwrap(),
        Some((1, 3))
    );
    assert_eq!(
        south
            .enqueue("a", "f", records(10, 2), Some("12".into()), None)
            .await
            .unwrap(),
        Some((1, 2))
    );
    assert_eq!(north.queued_count("a").await.unwrap(), 3);
    assert_eq!(south.queued_count("a").await.unwrap(), 2);
    let batch = south.next_batch("a", 0, 10).await.unwrap();
    assert_eq!(seqs(&batch), [1, 2]);
    assert_eq!(batch[0].payload, "{\"n\":10}");
    // An ack of one site's seqs leaves the other's queue as it was.
    north
        .ack_sent(
            "a",
            1,
            3,
            vec![Link {
                flow: "f".into(),
                key: "k0".into(),
                link: "100".into(),
                updated_at: 0,
            }],
        )
        .await
        .unwrap();
    assert_eq!(north.queued_count("a").await.unwrap(), 0);
    assert_eq!(seqs(&south.next_batch("a", 0, 10).await.unwrap()), [1, 2]);
    assert_eq!(north.link("f", "k0").await.unwrap().as_deref(), Some("100"));
    assert_eq!(south.link("f", "k0").await.unwrap(), None);
    assert_eq!(
        north.flow("f").await.unwrap().checkpoint.as_deref(),
        Some("3")
    );
    assert_eq!(
        south.flow("f").await.unwrap().checkpoint.as_deref(),
        Some("12")
    );
    // States, holds, runs, log and audit are the site's own too.
    north
        .set_site_stopped(
            crate::store::tests::hold(HoldKind::SiteStopped),
            vec!["a".into()],
            audit("site.stop"),
        )
        .await
        .unwrap();
    south
        .change_integration(
            "a",
            IntegrationChange {
                state: Some(IntegrationState::Active),
                put: Some(crate::store::tests::hold(HoldKind::SiteStopped)),
                remove: None,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(north.site_state().await.unwrap(), Some(SiteState::Stopped));
    assert_eq!(south.site_state().await.unwrap(), None);
    assert!(south.audit(10).await.unwrap().is_empty());
    // A start of one site lifts its own holds only.
    north
        .set_site_running(HoldKind::SiteStopped, vec![], audit("site.start"))
        .await
        .unwrap();
    let held = south.integration("a").await.unwrap().unwrap();
    assert_eq!(held.holds.len(), 1);
    let run = north.start_run("f", RunMode::All).await.unwrap();
    assert!(south.runs("f", 10).await.unwrap().is_empty());
    south
        .finish_run(run, RunResult::Failed, Some("not mine".into()), None)
        .await
        .unwrap();
    assert_eq!(north.runs("f", 1).await.unwrap()[0].result, None);
    assert_eq!(
        south
            .close_abandoned_runs(RunResult::Halted, "crash")
            .await
            .unwrap(),
        0
    );
    north.append_log(1, 3, "north's").await.unwrap();
    assert!(south.log(0, None, 9, 10).await.unwrap().is_empty());
    assert_eq!(south.prune(now_millis() + 1).await.unwrap(), 0);
    assert_eq!(north.prune(now_millis() + 1).await.unwrap(), 3);
    // The disk of the server is not ours: the store says nothing of it.
    assert_eq!(*north.space().borrow(), Space::Writable);
}

/// Two nodes of one site enqueue at once: every number is given once,
/// without a gap, each call's records consecutive and in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_of_one_site_enqueue_at_once_without_a_gap() {
    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let nodes: [Arc<dyn Store>; 2] = [
        Arc::new(PgStore::open(&db.url, "LIVE").await.unwrap()),
        Arc::new(PgStore::open(&db.url, "LIVE").await.unwrap()),
    ];
    let (ranges, next) = enqueue_at_once(&nodes, 16, |t, call| 1 + (t * 7 + call) % 50).await;
    // Either node reads the whole queue, in order.
    let batch = nodes[1].next_batch("a", 0, 100_000).await.unwrap();
    assert_eq!(seqs(&batch), (1..next).collect::<Vec<i64>>());
    assert_eq!(nodes[0].queued_count("a").await.unwrap(), next - 1);
    for ((first, last), from) in ranges {
        for seq in first..=last {
            let payload = &batch[(seq - 1) as usize].payload;
            assert_eq!(
                *payload,
                format!("{{\"n\":{}}}", from as i64 + (seq - first))
            );
        }
    }
}

/// Stores opening a new database at once apply each step once; a database
/// newer than this code is refused, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_apply_each_migration_once() {
    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let opens: Vec<_> = (0..6)
        .map(|i| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::open(&url, &format!("s{i}")).await.map(|_| ()) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let client = db.client().await;
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM sluice_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=MIGRATIONS.len() as i32).collect::<Vec<_>>());
    // Opening again applies nothing.
    PgStore::open(&db.url, "again").await.unwrap();
    client
        .batch_execute("INSERT INTO sluice_migrations VALUES (99, 0)")
        .await
        .unwrap();
    let got = PgStore::open(&db.url, "LIVE").await.map(|_| ());
    assert!(matches!(got, Err(StoreError::Corrupt(_))), "{got:?}");
}

/// Neither a server that cannot be reached nor a URL that does not parse
/// shows the password in its error.
#[tokio::test]
async fn errors_do_not_show_the_password() {
    let unreachable = "postgres://postgres:s3cret-pw@127.0.0.1:1/test";
    let bad = "postgres://postgres:s3cret-pw@127.0.0.1:port/test";
    for url in [unreachable, bad] {
        let got = PgStore::open(url, "LIVE").await.map(|_| ());
        let Err(e) = got else { panic!("{url} opened") };
        assert!(matches!(e, StoreError::Postgres(_)), "{e:?}");
        assert!(!e.to_string().contains("s3cret-pw"), "{e}");
        assert!(!format!("{e:?}").contains("s3cret-pw"), "{e:?}");
    }
}

/// Nothing read is trusted: unknown names, states and levels are
/// `Corrupt`, not a panic.
#[tokio::test]
async fn bad_data_in_the_database_is_corrupt_not_a_panic() {
    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let s = PgStore::open(&db.url, "LIVE").await.unwrap();
    s.enqueue("a", "f", records(0, 2), None, None)
        .await
        .unwrap();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO sluice_sites VALUES ('LIVE', 'dancing', 0);
             INSERT INTO sluice_integrations VALUES ('LIVE', 'a', 'active', 0);
             INSERT INTO sluice_holds VALUES ('LIVE', 'a', 'gremlins', 'x', 0, 'y');
             INSERT INTO sluice_flows (site, name, status, updated_at) VALUES ('LIVE', 'f', 'Exploded', 0);
             INSERT INTO sluice_runs (site, flow, mode, started_at) VALUES ('LIVE', 'f', 'sideways', 0);
             INSERT INTO sluice_log (site, ts, level, message) VALUES ('LIVE', 0, -1, 'loud');
             UPDATE sluice_transactions SET state = 9 WHERE seq = 1;",
        )
        .await
        .unwrap();
    assert_reads_corrupt(&s).await;
}

/// The statements that must not scan the queue use the partial indexes of
/// the states they look for (the planner told not to scan, as it would
/// on a table this small).
#[tokio::test]
async fn the_queue_is_read_by_its_partial_indexes() {
    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let s = PgStore::open(&db.url, "LIVE").await.unwrap();
    s.enqueue("a", "f", records(0, 3), None, None)
        .await
        .unwrap();
    let client = db.client().await;
    client
        .batch_execute("ANALYZE; SET enable_seqscan = off; SET enable_bitmapscan = off")
        .await
        .unwrap();
    let plan = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(&format!("EXPLAIN {sql}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let next = plan(
        "SELECT seq, flow, payload, attempts, key FROM sluice_transactions
          WHERE site = 'LIVE' AND integration = 'a' AND state = 0 AND seq > 1
          ORDER BY seq LIMIT 10",
    )
    .await;
    assert!(next.contains("sluice_transactions_queued"), "{next}");
    let count = plan(
        "SELECT count(*) FROM sluice_transactions
          WHERE site = 'LIVE' AND integration = 'a' AND state = 0",
    )
    .await;
    assert!(count.contains("sluice_transactions_queued"), "{count}");
    let first_error = plan(
        "SELECT MIN(seq) FROM sluice_transactions
          WHERE site = 'LIVE' AND integration = 'a' AND state = 3",
    )
    .await;
    assert!(
        first_error.contains("sluice_transactions_error"),
        "{first_error}"
    );
}

/// A reader following the log (`id > after`) while two nodes of the site
/// append to it at once misses no line: ids are committed in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_the_log_misses_no_line() {
    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let nodes = [
        Arc::new(PgStore::open(&db.url, "LIVE").await.unwrap()),
        Arc::new(PgStore::open(&db.url, "LIVE").await.unwrap()),
    ];
    let writers: Vec<_> = (0..8usize)
        .map(|w| {
            let s = nodes[w % 2].clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    s.append_log(i, 3, &format!("{w}/{i}")).await.unwrap();
                }
            })
        })
        .collect();
    let reader = nodes[0].clone();
    let follow = tokio::spawn(async move {
        let (mut after, mut seen) = (0, Vec::new());
        // Bounded: 320 lines come within these reads, or the test fails.
        for _ in 0..100_000 {
            let lines = reader.log(after, None, 9, 1000).await.unwrap();
            if let Some(last) = lines.last() {
                after = last.id;
            }
            seen.extend(lines.into_iter().map(|l| l.message));
            if seen.len() >= 320 {
                break;
            }
        }
        seen
    });
    for w in writers {
        w.await.unwrap();
    }
    let seen = follow.await.unwrap();
    assert_eq!(seen.len(), 320, "lines seen while following");
    assert_eq!(nodes[1].log(0, None, 9, 1000).await.unwrap().len(), 320);
}

/// Two nodes of one site: the holder of an integration's lease writes its
/// acks, failed attempts, settlements and runs' records; once another node
/// took the lease over (after it expired), each of those writes of the
/// first is refused as Fenced and leaves nothing behind, while records any
/// node queues and a person's retry still go through.
#[tokio::test]
async fn a_node_that_lost_the_lease_writes_nothing_of_the_sender() {
    use std::time::Duration;

    use crate::model::TxState;
    use cluster::{ClusterDb, Fences};

    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let lease = Duration::from_millis(200);
    let (f1, f2) = (Fences::new("n1", lease), Fences::new("n2", lease));
    let one = PgStore::open(&db.url, "LIVE")
        .await
        .unwrap()
        .fenced(f1.clone());
    let two = PgStore::open(&db.url, "LIVE")
        .await
        .unwrap()
        .fenced(f2.clone());
    let leases = ClusterDb::open(&db.url).unwrap();

    // Without a lease, a sender's write is refused.
    one.enqueue("orders", "web", records(0, 6), None, None)
        .await
        .unwrap();
    assert!(one
        .ack_sent("orders", 1, 1, vec![])
        .await
        .unwrap_err()
        .is_fenced());

    // n1 holds it: it writes; n2 cannot take it while it has not expired.
    let e1 = leases
        .acquire("LIVE", "orders", "n1", lease)
        .await
        .unwrap()
        .unwrap();
    f1.hold("LIVE", "orders", e1);
    one.ack_sent("orders", 1, 2, vec![]).await.unwrap();
    assert_eq!(
        leases.acquire("LIVE", "orders", "n2", lease).await.unwrap(),
        None
    );

    // Expired and taken over: every sender's write of n1 is refused.
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let e2 = leases
        .acquire("LIVE", "orders", "n2", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e2, e1 + 1);
    f2.hold("LIVE", "orders", e2);
    let refused = one.ack_sent("orders", 3, 3, vec![]).await.unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    assert!(refused.to_string().contains("n1"), "{refused}");
    assert!(one
        .record_failure("orders", 3, 3, "503")
        .await
        .unwrap_err()
        .is_fenced());
    assert!(one
        .settle("orders", 3, TxState::Error, Some("422".into()))
        .await
        .unwrap_err()
        .is_fenced());
    assert!(one
        .enqueue("orders", "pull", records(10, 1), Some("9".into()), None)
        .await
        .unwrap_err()
        .is_fenced());
    // Its renewal finds the lease gone.
    let renewed = leases
        .renew("n1", &[("LIVE".into(), "orders".into(), e1)], lease)
        .await
        .unwrap();
    assert!(renewed.is_empty());
    // Nothing of it was written: 3 is still queued, untried, no checkpoint.
    let t3 = two.transaction("orders", 3).await.unwrap().unwrap();
    assert_eq!(
        (t3.state, t3.attempts, t3.last_error),
        (TxState::Queued, 0, None)
    );
    assert_eq!(two.flow("pull").await.unwrap().checkpoint, None);
    assert_eq!(two.queued_count("orders").await.unwrap(), 4);

    // The new holder writes; anyone queues; a person retries from any node.
    two.ack_sent("orders", 3, 3, vec![]).await.unwrap();
    one.enqueue("orders", "web", records(20, 1), None, None)
        .await
        .unwrap();
    two.settle("orders", 4, TxState::Error, Some("422".into()))
        .await
        .unwrap();
    one.settle_by_operator("orders", 4, TxState::Queued)
        .await
        .unwrap();
    assert_eq!(two.queued_count("orders").await.unwrap(), 4);
}

#[tokio::test]
async fn a_node_frozen_inside_a_fenced_write_does_not_keep_the_lease_from_the_next() {
    use std::time::Duration;

    use cluster::{check_fence, ClusterDb, Fences};

    let Some(url) = pg_url() else { return };
    let db = PgTestDb::new(&url).await;
    let lease = Duration::from_millis(600);
    let f1 = Fences::new("n1", lease);
    let one = PgStore::open(&db.url, "LIVE")
        .await
        .unwrap()
        .fenced(f1.clone());
    let leases = ClusterDb::open(&db.url).unwrap();
    let e1 = leases
        .acquire("LIVE", "orders", "n1", lease)
        .await
        .unwrap()
        .unwrap();
    f1.hold("LIVE", "orders", e1);
    // n1 is inside a write (the lease row held FOR SHARE) and freezes there.
    let mut client = one.pool.get().await.unwrap();
    let frozen = client.transaction().await.unwrap();
    check_fence(&frozen, &f1, "LIVE", "orders").await.unwrap();

    // Once the lease runs out, n2 takes it: the frozen write does not hold
    // it (without the server ending it, n2 would wait until n1 woke).
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let taken = tokio::time::timeout(
        Duration::from_secs(5),
        leases.acquire("LIVE", "orders", "n2", lease),
    )
    .await
    .expect("the frozen node's write keeps the lease from n2")
    .unwrap();
    assert_eq!(taken, Some(e1 + 1));
    // Woken, the frozen write cannot commit.
    assert!(frozen.commit().await.is_err());
}
