use rusqlite::{params, Connection};

use crate::store::{AuditEntry, Result};

/// Appends an audit entry; returns its id.
pub(super) fn put_audit(conn: &Connection, entry: &AuditEntry) -> Result<i64> {
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

/// A row of an `audit` table (`SELECT id, ts, actor, action, subject,
/// reason, outcome`): the site store's, and the token store's of the same
/// shape.
pub(crate) fn audit_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        ts: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        reason: r.get(5)?,
        outcome: r.get(6)?,
    })
}
