//! The schema of a site's data file, one step a file in `migrations/`.
//!
//! A step is applied once, in its own transaction, and `PRAGMA
//! user_version` counts the steps applied: a file is brought up to date
//! when it is opened, and a file newer than this sluice is refused, not
//! misread. So a released step is not edited: a change is a new step.

use rusqlite::Connection;

use crate::store::{Result, StoreError};

/// The schema, one step a file; `user_version` is how many were applied.
pub(super) const MIGRATIONS: [&str; 7] = [
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_queue_bookkeeping.sql"),
    include_str!("migrations/003_run_counts.sql"),
    include_str!("migrations/004_links.sql"),
    include_str!("migrations/005_history.sql"),
    include_str!("migrations/006_alerts.sql"),
    include_str!("migrations/007_hold_periods.sql"),
];

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the data file has schema version {version}, newer than this sluice knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let db = conn.transaction()?;
        db.execute_batch(sql)?;
        db.pragma_update(None, "user_version", (i + 1) as i64)?;
        db.commit()?;
    }
    Ok(())
}
