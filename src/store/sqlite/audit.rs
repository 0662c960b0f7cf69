//! The audit table, as every SQLite file of sluice keeps it: a site's data
//! file and the token store (`tokens.db`) have the same `audit` table
//! (`id`, `ts`, `actor`, `action`, `subject`, `reason`, `outcome`), so its
//! insert, its listing and its row mapper are written once, here.
//!
//! Each takes the connection (or transaction) it runs on: an entry is
//! written in the same transaction as the change it records.

use rusqlite::{params, Connection};

use super::limit_of;
use crate::store::AuditEntry;

/// Appends an audit entry; returns its id.
pub(in crate::store) fn insert(conn: &Connection, entry: &AuditEntry) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO audit (ts, actor, action, subject, reason, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entry.ts,
        entry.actor,
        entry.action,
        entry.subject,
        entry.reason,
        entry.outcome
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The newest `limit` entries, newest first.
pub(in crate::store) fn newest(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, actor, action, subject, reason, outcome FROM audit
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit_of(limit)], entry)?;
    rows.collect()
}

/// A row of `SELECT id, ts, actor, action, subject, reason, outcome`.
fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        ts: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        reason: r.get(5)?,
        outcome: r.get(6)?,
        node: None,
    })
}
