//! The token store: `tokens.db`, one small SQLite file per daemon beside
//! the sites' data files. It keeps the API tokens, the dashboard's sessions
//! and the audit trail of token changes.
//!
//! # Design constraints
//! - **SQL only.** What a token looks like, how it and a session id are
//!   hashed, and what a role may do are `auth`'s rules: this file
//!   stores the digests and role names it is handed and answers with what
//!   it stored. It holds no clear-text token or session id.
//! - **Shared with the command line.** The daemon and `sluice token …` run
//!   beside it open the same file (WAL, `synchronous = FULL`, a busy timeout
//!   of 5 s): every request reads the file, so a token created on the
//!   command line is accepted at once, a revoked one refused at once (a
//!   lookup by primary key is microseconds).
//! - **A change and its audit entry are one transaction**: both, or
//!   neither. Revoking a token deletes its sessions in that transaction
//!   too. The audit table is a site's ([`super::sqlite`]'s `audit.rs`).
//! - **A full disk.** A change the disk has no space for is
//!   [`StoreError::Full`] and leaves nothing behind. The daemon's log says
//!   so once, and once when a change goes through again.
//! - **Reads stay reads.** A token's `last_used_at` is written at most once
//!   a minute, and a busy file only delays that note.
//! - The schema is created if missing (`IF NOT EXISTS`), not versioned like
//!   a site's data file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::sqlite::audit;
use super::{sqlite_disk_full, AuditEntry, Result, StoreError};
use crate::model::{now_millis, Millis};

/// The file beside the sites' data files.
pub const FILE_NAME: &str = "tokens.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    name         TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL, -- milliseconds since the epoch
    created_by   TEXT NOT NULL,
    last_used_at INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    hash       TEXT PRIMARY KEY, -- SHA-256 of the cookie's session id
    token      TEXT NOT NULL,    -- the name of the token it was opened with
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL  -- milliseconds since the epoch
);
CREATE INDEX IF NOT EXISTS sessions_by_token ON sessions (token);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL, -- milliseconds since the epoch, as a site's audit
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason  TEXT,
    outcome TEXT NOT NULL
);
";

/// How often a token's `last_used_at` is written at most: reads of the API
/// do not each turn into a write.
const NOTE_USE_EVERY_MS: i64 = 60_000;

/// A token as stored: its digest stays in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub name: String,
    /// The role's name, as it was handed to [`TokenStore::create`].
    pub role: String,
    pub created_at: Millis,
    pub created_by: String,
    pub last_used_at: Option<Millis>,
}

/// The token store of one daemon.
#[derive(Clone)]
pub struct TokenStore {
    file: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Since when changes have been refused for lack of space, and how
    /// many: said when it starts and when it ends, not at each refusal.
    full: Arc<Mutex<Option<(std::time::Instant, u64)>>>,
}

impl TokenStore {
    /// Opens (creating if needed) the token store in `data_dir`. A file
    /// that cannot be created is [`StoreError::Io`].
    pub fn open(data_dir: &Path) -> Result<TokenStore> {
        let file = data_dir.join(FILE_NAME);
        crate::data_dir::private_database(&file)?;
        let conn = Connection::open(&file)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(TokenStore {
            file,
            conn: Arc::new(Mutex::new(conn)),
            full: Arc::default(),
        })
    }

    /// The file it keeps.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock();
        f(&conn).map_err(|source| {
            if sqlite_disk_full(&source) {
                self.note_full();
                StoreError::Full {
                    file: self.file.clone(),
                }
            } else {
                StoreError::Sqlite(source)
            }
        })
    }

    /// A change was refused for lack of space.
    fn note_full(&self) {
        let mut full = self.full.lock();
        match full.as_mut() {
            Some((_, refused)) => *refused += 1,
            None => {
                tracing::warn!(
                    "The disk is full: {} cannot be written; token changes are refused until \
                     space is freed",
                    self.file.display()
                );
                *full = Some((std::time::Instant::now(), 1));
            }
        }
    }

    /// A change was stored.
    fn note_written(&self) {
        let ended = self.full.lock().take();
        if let Some((since, refused)) = ended {
            tracing::warn!(
                "The disk is writable again: {} after {}s full; {refused} token change(s) \
                 refused meanwhile",
                self.file.display(),
                since.elapsed().as_secs()
            );
        }
    }

    /// One change to the tokens, in the transaction that made it.
    fn record(
        db: &rusqlite::Transaction<'_>,
        actor: &str,
        action: &str,
        subject: &str,
        reason: Option<&str>,
        outcome: &str,
    ) -> rusqlite::Result<()> {
        let entry = AuditEntry {
            id: 0,
            ts: now_millis(),
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            reason: reason.map(str::to_string),
            outcome: outcome.to_string(),
        };
        audit::insert(db, &entry).map(drop)
    }

    /// Whether any token exists.
    pub fn any(&self) -> Result<bool> {
        self.with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM tokens)", [], |r| r.get(0)))
    }

    /// Stores a token by its `digest`, with the change in the audit trail:
    /// `false` (and the refusal audited) if one of that name exists.
    pub fn create(&self, name: &str, role: &str, digest: &str, actor: &str) -> Result<bool> {
        let inserted = self.with(|c| {
            let db = c.unchecked_transaction()?;
            let n = db.execute(
                "INSERT INTO tokens (name, role, hash, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                params![name, role, digest, now_millis(), actor],
            )?;
            let outcome = if n == 1 { "ok" } else { "refused: exists" };
            let reason = format!("role {role}");
            TokenStore::record(&db, actor, "token.create", name, Some(&reason), outcome)?;
            db.commit()?;
            Ok(n)
        })?;
        self.note_written();
        Ok(inserted == 1)
    }

    /// Deletes a token and its sessions, with the change in the audit
    /// trail: `false` (and the refusal audited) if there is none of that
    /// name.
    pub fn revoke(&self, name: &str, actor: &str) -> Result<bool> {
        let removed = self.with(|c| {
            let db = c.unchecked_transaction()?;
            let n = db.execute("DELETE FROM tokens WHERE name = ?1", params![name])?;
            // Its dashboard sessions end with it.
            db.execute("DELETE FROM sessions WHERE token = ?1", params![name])?;
            let outcome = if n == 1 {
                "ok"
            } else {
                "refused: no such token"
            };
            TokenStore::record(&db, actor, "token.revoke", name, None, outcome)?;
            db.commit()?;
            Ok(n)
        })?;
        self.note_written();
        Ok(removed == 1)
    }

    /// Every token, by name.
    pub fn list(&self) -> Result<Vec<StoredToken>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, role, created_at, created_by, last_used_at FROM tokens ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredToken {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    created_at: r.get(2)?,
                    created_by: r.get(3)?,
                    last_used_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The name and role of the token whose digest is `digest`, if there is
    /// one. Notes the time it was last used (at most once a minute).
    pub fn holder(&self, digest: &str) -> Result<Option<(String, String)>> {
        self.with(|c| {
            let found: Option<(String, String, Option<Millis>)> = c
                .query_row(
                    "SELECT name, role, last_used_at FROM tokens WHERE hash = ?1",
                    params![digest],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((name, role, last_used)) = found else {
                return Ok(None);
            };
            let now = now_millis();
            if last_used.is_none_or(|t| now - t >= NOTE_USE_EVERY_MS) {
                // A busy store only delays the note; the request goes on.
                let _noted = c.execute(
                    "UPDATE tokens SET last_used_at = ?1 WHERE name = ?2",
                    params![now, name],
                );
            }
            Ok(Some((name, role)))
        })
    }

    /// Stores a session by its `digest`, opened with the token `token` (a
    /// name) and lasting `ttl_ms`. Expired sessions are swept on the way.
    pub fn open_session(&self, digest: &str, token: &str, ttl_ms: i64) -> Result<()> {
        let now = now_millis();
        self.with(|c| {
            let db = c.unchecked_transaction()?;
            db.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])?;
            db.execute(
                "INSERT INTO sessions (hash, token, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![digest, token, now, now.saturating_add(ttl_ms)],
            )?;
            db.commit()
        })
    }

    /// The name and role of the token a session (by its digest) was opened
    /// with, while it is unexpired and that token is not revoked.
    pub fn session_holder(&self, digest: &str) -> Result<Option<(String, String)>> {
        self.with(|c| {
            c.query_row(
                "SELECT t.name, t.role FROM sessions s JOIN tokens t ON t.name = s.token
                 WHERE s.hash = ?1 AND s.expires_at > ?2",
                params![digest, now_millis()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    /// Deletes a session by its digest; nothing if it is unknown.
    pub fn close_session(&self, digest: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM sessions WHERE hash = ?1", params![digest]))
            .map(drop)
    }

    /// The token changes, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.with(|c| audit::newest(c, limit))
    }
}
