//! What only the SQLite store has, against a real file in a temporary
//! folder: the queues' bookkeeping, a full disk, migrations of old files,
//! bad data on disk, the query plans, `synchronous`. The tests of the
//! [`Store`] trait run against it in `store/tests/`.

use super::migrations::MIGRATIONS;
use super::*;
use crate::store::tests::{assert_reads_corrupt, entry, hold, records, seqs};

/// The `queues` row as stored: (last_seq, queued, floor).
async fn bookkeeping(s: &SqliteStore, integration: &str) -> Option<(i64, i64, i64)> {
    let integration = integration.to_string();
    s.read(move |conn| {
        Ok(conn
            .query_row(
                "SELECT last_seq, queued, floor FROM queues WHERE integration = ?1",
                [integration],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    })
    .await
    .unwrap()
}

/// Caps the file at its current size: from then on SQLite answers a
/// write that needs another page `SQLITE_FULL`, as on a full disk.
async fn cap(s: &SqliteStore, extra_pages: i64) {
    s.write(move |ctx| {
        let pages: i64 = ctx
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        ctx.conn
            .pragma_update(None, "max_page_count", pages + extra_pages)?;
        Ok(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_full_disk_refuses_a_write_whole_and_is_told_at_its_start_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let s = SqliteStore::open(&path).unwrap();
    s.enqueue("a", "f", records(0, 2), Some("2".into()), None)
        .await
        .unwrap();
    let mut space = s.space();
    assert_eq!(*space.borrow_and_update(), Space::Writable);
    cap(&s, 0).await;
    let big = |from| {
        (from..from + 200)
            .map(|i| NewRecord {
                key: Some(format!("k{i}")),
                payload: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(500)),
            })
            .collect::<Vec<_>>()
    };
    let got = s.enqueue("a", "f", big(2), Some("lost".into()), None).await;
    match got {
        Err(StoreError::Full { file }) => assert_eq!(file, path),
        other => panic!("{other:?}"),
    }
    // Told once, at the first refusal.
    assert!(space.has_changed().unwrap());
    assert!(matches!(*space.borrow_and_update(), Space::Full { ref file, .. } if *file == path));
    // A stop that needs space is refused whole: no state, no hold, no
    // audit entry.
    let hold = Hold {
        reason: "x".repeat(20_000),
        ..hold(HoldKind::SiteStopped)
    };
    let got = s
        .set_site_stopped(hold, vec!["a".into()], entry("site.stop"))
        .await;
    assert!(matches!(got, Err(StoreError::Full { .. })), "{got:?}");
    assert_eq!(s.site_state().await.unwrap(), None);
    assert!(s.audit(10).await.unwrap().is_empty());
    assert_eq!(s.integration("a").await.unwrap(), None);
    assert!(!space.has_changed().unwrap(), "said once, not per refusal");
    // Nothing of the refused writes stays.
    assert_eq!(s.queued_count("a").await.unwrap(), 2);
    assert_eq!(seqs(&s.next_batch("a", 0, 1000).await.unwrap()), [1, 2]);
    assert_eq!(s.flow("f").await.unwrap().checkpoint.as_deref(), Some("2"));
    assert_eq!(bookkeeping(&s, "a").await, Some((2, 2, 0)));

    // Space again: the same write goes through, and that is told once.
    cap(&s, 10_000).await;
    match &*space.borrow_and_update() {
        Space::Recovered { file, refused, .. } => {
            assert_eq!(file, &path);
            assert_eq!(*refused, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.enqueue("a", "f", big(2), Some("202".into()), None)
            .await
            .unwrap(),
        Some((3, 202))
    );
    assert!(!space.has_changed().unwrap());
}

/// The floor stays exact (the lowest Queued seq minus one), so reading
/// the queue never walks past what was already delivered.
#[tokio::test]
async fn the_floor_follows_the_first_queued_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("site.db")).unwrap();
    s.enqueue("a", "f", records(0, 10), None, None)
        .await
        .unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((10, 10, 0)));
    // An error comes before the ack of what preceded it.
    s.settle("a", 5, TxState::Error, None).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((10, 9, 0)));
    s.ack_sent("a", 1, 4, vec![]).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((10, 5, 5)));
    s.ack_sent("a", 6, 8, vec![]).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((10, 2, 8)));
    // An ack past the end does not lift the floor over future records.
    s.ack_sent("a", 9, i64::MAX, vec![]).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((10, 0, 10)));
    s.enqueue("a", "f", records(10, 2), None, None)
        .await
        .unwrap();
    assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [11, 12]);
    // A retry lowers it again.
    s.settle("a", 5, TxState::Queued, None).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((12, 3, 4)));
    assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [5, 11, 12]);
    s.ack_sent("a", 5, 5, vec![]).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((12, 2, 10)));
    // A gap of acks out of order: the floor waits for the first.
    s.ack_sent("a", 12, 12, vec![]).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((12, 1, 10)));
    s.ack_sent("a", 11, 11, vec![]).await.unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((12, 0, 12)));
}

/// The statements that must not scan the queue use the key or an index.
#[tokio::test]
async fn the_queue_is_read_by_key_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("site.db")).unwrap();
    let plan = |sql: &'static str| {
        s.read(move |conn| {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let rows = stmt.query_map(params!["a", 0, 10], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
        })
    };
    let next = plan(
        "SELECT seq, flow, payload, attempts FROM transactions
         WHERE integration = ?1 AND state = 0
           AND seq > MAX(?2, COALESCE((SELECT floor FROM queues WHERE integration = ?1), 0))
         ORDER BY seq LIMIT ?3",
    )
    .await
    .unwrap();
    assert!(
        next.contains("SEARCH transactions USING PRIMARY KEY (integration=? AND seq>?)"),
        "{next}"
    );
    let first_error =
        plan("SELECT MIN(seq) FROM transactions WHERE integration = ?1 AND state = 3 AND ?2 + ?3")
            .await
            .unwrap();
    assert!(first_error.contains("transactions_error"), "{first_error}");
}

#[tokio::test]
async fn a_version_1_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO transactions (integration, seq, flow, payload, state, created_at, updated_at)
             VALUES ('a', 1, 'f', '1', 2, 0, 0), ('a', 2, 'f', '2', 3, 0, 0),
                    ('a', 3, 'f', '3', 0, 0, 0), ('a', 4, 'f', '4', 0, 0, 0),
                    ('b', 1, 'f', '1', 2, 0, 0);
             INSERT INTO sequences VALUES ('a', 4), ('b', 7), ('c', 3);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(bookkeeping(&s, "a").await, Some((4, 2, 2)));
    assert_eq!(bookkeeping(&s, "b").await, Some((7, 0, 1)));
    assert_eq!(bookkeeping(&s, "c").await, Some((3, 0, 3)));
    assert_eq!(s.queued_count("a").await.unwrap(), 2);
    assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [3, 4]);
    assert_eq!(
        s.enqueue("b", "f", records(0, 1), None, None)
            .await
            .unwrap(),
        Some((8, 8))
    );
    assert_eq!(
        s.enqueue("c", "f", records(0, 1), None, None)
            .await
            .unwrap(),
        Some((4, 4))
    );
    drop(s);
    // A file newer than this code is refused, not misread.
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn bad_data_on_disk_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let s = SqliteStore::open(&path).unwrap();
    s.enqueue("a", "f", records(0, 2), None, None)
        .await
        .unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "INSERT INTO site (id, state, updated_at) VALUES (1, 'dancing', 0);
         INSERT INTO integrations (name, state, updated_at) VALUES ('a', 'active', 0);
         INSERT INTO holds VALUES ('a', 'gremlins', 'x', 0, 'y');
         INSERT INTO flows (name, status, updated_at) VALUES ('f', 'Exploded', 0);
         INSERT INTO runs (flow, mode, started_at) VALUES ('f', 'sideways', 0);
         INSERT INTO log (ts, level, message) VALUES (0, -1, 'loud');
         UPDATE transactions SET state = 9 WHERE seq = 1;
         UPDATE transactions SET attempts = 'many' WHERE seq = 2;",
    )
    .unwrap();
    assert_reads_corrupt(&s).await;
    fn corrupt<T: std::fmt::Debug>(r: Result<T>) {
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    }
    corrupt(s.next_batch("a", 0, 10).await);
    raw.execute("UPDATE queues SET floor = -5", []).unwrap();
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    corrupt(s.enqueue("a", "f", records(0, 1), None, None).await);
    raw.execute("UPDATE queues SET queued = -1", []).unwrap();
    drop(s);
    corrupt(SqliteStore::open(&path).map(|_| ()));
}

#[tokio::test]
async fn normal_synchronous_works_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let s = SqliteStore::open_with(
        &path,
        SqliteOptions {
            synchronous: Synchronous::Normal,
        },
    )
    .unwrap();
    s.enqueue("a", "f", records(0, 3), None, None)
        .await
        .unwrap();
    s.ack_sent("a", 1, 1, vec![]).await.unwrap();
    assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [2, 3]);
    let raw = Connection::open(&path).unwrap();
    apply_pragmas(&raw, &SqliteOptions::default()).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}
