//! What the benchmarks share: the records they queue, and plain SQLite set
//! up as the store sets itself up (the same pragmas, the same row shape),
//! the baseline each measures sluice against in the same run.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};
use sluice::store::sqlite::{apply_pragmas, SqliteOptions};

/// A record as a web store would post it (about 70 bytes of JSON).
pub fn payload(i: usize) -> String {
    format!(
        "{{\"id\":\"o{i:07}\",\"n\":{i},\"amount\":{}.5,\"sku\":\"ABC-123\"}}",
        i % 1000
    )
}

/// An order as a web shop would post it: about ten fields, a customer with
/// a nested address, a `null` (about 300 bytes of JSON). `qty` is never 0.
pub fn order(i: usize) -> String {
    format!(
        "{{\"id\":\"o{i:07}\",\"n\":{i},\"qty\":{},\"price\":{}.5,\"sku\":\"SKU-{}\",\
         \"status\":\"paid\",\"currency\":\"NZD\",\"created_at\":\"2026-12-01T10:00:00Z\",\
         \"customer\":{{\"name\":\"Customer {}\",\"email\":\"c{}@example.com\",\
         \"address\":{{\"city\":\"Wellington\",\"zip\":\"{}\"}}}},\"note\":null}}",
        1 + i % 5,
        i % 1000,
        i % 97,
        i % 1000,
        i % 1000,
        6000 + i % 100
    )
}

/// Records per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A plain connection to `dir/raw.db` with the store's pragmas and a table
/// of the queue's row shape.
pub fn raw_table(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join("raw.db")).unwrap();
    apply_pragmas(&conn, &SqliteOptions::default()).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (integration TEXT NOT NULL, seq INTEGER NOT NULL, flow TEXT NOT NULL,
           key TEXT, payload TEXT NOT NULL, state INTEGER NOT NULL DEFAULT 0,
           created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
           attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
           PRIMARY KEY (integration, seq)) WITHOUT ROWID",
    )
    .unwrap();
    conn
}

/// Inserts records `0..n` (seq 1..=n) into [`raw_table`], `per` a
/// transaction, each stamped `at`.
pub fn raw_insert(conn: &Connection, n: usize, per: usize, at: i64) {
    for chunk in 0..n / per {
        conn.execute_batch("BEGIN").unwrap();
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO t (integration, seq, flow, key, payload, state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)",
                )
                .unwrap();
            for i in chunk * per..(chunk + 1) * per {
                insert
                    .execute(params![
                        "orders",
                        i as i64 + 1,
                        "f",
                        format!("o{i:07}"),
                        payload(i),
                        at
                    ])
                    .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
    }
}

/// Deletes seq `1..=n` from [`raw_table`] in sequence order, `per` a
/// transaction.
pub fn raw_delete(conn: &Connection, n: usize, per: usize) {
    for chunk in 0..n.div_ceil(per) {
        conn.execute_batch("BEGIN").unwrap();
        conn.prepare_cached("DELETE FROM t WHERE integration = ?1 AND seq BETWEEN ?2 AND ?3")
            .unwrap()
            .execute(params![
                "orders",
                (chunk * per) as i64 + 1,
                ((chunk + 1) * per) as i64
            ])
            .unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }
}
