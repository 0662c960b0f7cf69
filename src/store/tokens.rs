//! The token store: the API tokens, the dashboard's sessions and the audit
//! trail of token changes, behind [`TokenStore`]. With `store = "sqlite"`
//! it is `tokens.db`, one small SQLite file per daemon beside the sites'
//! data files ([`SqliteTokenStore`], here); with `store = "postgres"` it is
//! the `sluice_tokens`, `sluice_sessions` and `sluice_token_audit` tables
//! of the shared database, one set for every node on it
//! ([`super::postgres::tokens::PgTokenStore`]).
//!
//! # Design constraints
//! Both backends keep these; how SQLite does is said here, PostgreSQL's in
//! its file.
//! - **SQL only.** What a token looks like, how it and a session id are
//!   hashed, and what a role may do are `auth`'s rules: a store keeps the
//!   digests and role names it is handed and answers with what it stored.
//!   It holds no clear-text token or session id.
//! - **No cache.** Every request reads the store, so a token created on the
//!   command line (or on another node) is accepted at once, a revoked one
//!   refused at once: a lookup is one indexed query. The daemon and
//!   `sluice token …` run beside it open the same file (WAL, `synchronous =
//!   FULL`, a busy timeout of 5 s); SQLite's calls run on tokio's blocking
//!   threads, never on a worker.
//! - **A change and its audit entry are one transaction**: both, or
//!   neither. Revoking a token deletes its sessions in that transaction
//!   too, and a session is opened in one transaction that finds its token:
//!   a session never outlives its token. The audit table is a site's
//!   ([`super::sqlite`]'s `audit.rs`).
//! - **A full disk.** A change the disk has no space for is
//!   [`StoreError::Full`] and leaves nothing behind. The daemon's log says
//!   so once, and once when a change goes through again.
//! - **Reads stay reads.** A token's `last_used_at` is written at most once
//!   a minute, and a busy store only delays that note.
//! - SQLite's schema is created if missing (`IF NOT EXISTS`), not versioned
//!   like a site's data file; PostgreSQL's is a step of its migrations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

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
pub const NOTE_USE_EVERY_MS: i64 = 60_000;

/// A token as stored: its digest stays in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub name: String,
    /// The role's name, as it was handed to [`TokenStore::create`].
    pub role: String,
    pub created_at: Millis,
    pub created_by: String,
    pub last_used_at: Option<Millis>,
}

/// Who holds a token: its name and its role's name, as stored.
pub type Holder = (String, String);

/// The tokens of a daemon (or of every node on one database), in domain
/// terms. Digests in, names and role names out.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Where it keeps them, for messages: the file, or the database's URL
    /// without its password.
    fn place(&self) -> String;

    /// The file it keeps, if it is one.
    fn file(&self) -> Option<&Path>;

    /// Whether any token exists.
    async fn any(&self) -> Result<bool>;

    /// Stores a token by its `digest`, with the change in the audit trail:
    /// `false` (and the refusal audited) if one of that name exists.
    async fn create(&self, name: &str, role: &str, digest: &str, actor: &str) -> Result<bool>;

    /// Deletes a token and its sessions, with the change in the audit
    /// trail: `false` (and the refusal audited) if there is none of that
    /// name.
    async fn revoke(&self, name: &str, actor: &str) -> Result<bool>;

    /// Every token, by name.
    async fn list(&self) -> Result<Vec<StoredToken>>;

    /// Who holds the token whose digest is `digest`, if there is one.
    /// Notes the time it was last used (at most once a minute).
    async fn holder(&self, digest: &str) -> Result<Option<Holder>>;

    /// Stores a session by its digest `session`, for the holder of the
    /// token whose digest is `token`, lasting `ttl_ms`: in one transaction
    /// that finds the token, so that it cannot be revoked in between.
    /// `None` (and nothing stored) if there is no such token. Expired
    /// sessions are swept on the way.
    async fn open_session(&self, session: &str, token: &str, ttl_ms: i64)
        -> Result<Option<Holder>>;

    /// Who holds the token a session (by its digest) was opened with, while
    /// it is unexpired and that token is not revoked.
    async fn session_holder(&self, digest: &str) -> Result<Option<Holder>>;

    /// Deletes a session by its digest; nothing if it is unknown.
    async fn close_session(&self, digest: &str) -> Result<()>;

    /// The token changes, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>>;
}

/// `tokens.db`: the token store of one daemon on SQLite.
#[derive(Clone)]
pub struct SqliteTokenStore {
    file: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Since when changes have been refused for lack of space, and how
    /// many: said when it starts and when it ends, not at each refusal.
    full: Arc<Mutex<Option<(std::time::Instant, u64)>>>,
}

impl SqliteTokenStore {
    /// Opens (creating if needed) the token store in `data_dir`. A file
    /// that cannot be created is [`StoreError::Io`].
    pub fn open(data_dir: &Path) -> Result<SqliteTokenStore> {
        let file = data_dir.join(FILE_NAME);
        crate::data_dir::private_database(&file)?;
        let conn = Connection::open(&file)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteTokenStore {
            file,
            conn: Arc::new(Mutex::new(conn)),
            full: Arc::default(),
        })
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

    /// Runs `f` on the connection on one of tokio's blocking threads:
    /// SQLite blocks (on the disk, and up to the busy timeout on the lock
    /// of a `sluice token` run beside).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.with(f)).await {
            Ok(done) => done,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only when the runtime shuts down.
                Err(_) => Err(StoreError::Closed),
            },
        }
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
            node: None,
        };
        audit::insert(db, &entry).map(drop)
    }
}

#[async_trait]
impl TokenStore for SqliteTokenStore {
    fn place(&self) -> String {
        self.file.display().to_string()
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.file)
    }

    async fn any(&self) -> Result<bool> {
        self.run(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM tokens)", [], |r| r.get(0)))
            .await
    }

    async fn create(&self, name: &str, role: &str, digest: &str, actor: &str) -> Result<bool> {
        let (name, role, digest, actor) = (
            name.to_string(),
            role.to_string(),
            digest.to_string(),
            actor.to_string(),
        );
        let inserted = self
            .run(move |c| {
                let db = c.unchecked_transaction()?;
                let n = db.execute(
                    "INSERT INTO tokens (name, role, hash, created_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                    params![name, role, digest, now_millis(), actor],
                )?;
                let outcome = if n == 1 { "ok" } else { "refused: exists" };
                let reason = format!("role {role}");
                Self::record(&db, &actor, "token.create", &name, Some(&reason), outcome)?;
                db.commit()?;
                Ok(n)
            })
            .await?;
        self.note_written();
        Ok(inserted == 1)
    }

    async fn revoke(&self, name: &str, actor: &str) -> Result<bool> {
        let (name, actor) = (name.to_string(), actor.to_string());
        let removed = self
            .run(move |c| {
                let db = c.unchecked_transaction()?;
                let n = db.execute("DELETE FROM tokens WHERE name = ?1", params![name])?;
                // Its dashboard sessions end with it.
                db.execute("DELETE FROM sessions WHERE token = ?1", params![name])?;
                let outcome = if n == 1 {
                    "ok"
                } else {
                    "refused: no such token"
                };
                Self::record(&db, &actor, "token.revoke", &name, None, outcome)?;
                db.commit()?;
                Ok(n)
            })
            .await?;
        self.note_written();
        Ok(removed == 1)
    }

    async fn list(&self) -> Result<Vec<StoredToken>> {
        self.run(|c| {
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
        .await
    }

    async fn holder(&self, digest: &str) -> Result<Option<Holder>> {
        let digest = digest.to_string();
        self.run(move |c| {
            let found: Option<(String, String, Option<Millis>)> = c
                .prepare_cached("SELECT name, role, last_used_at FROM tokens WHERE hash = ?1")?
                .query_row(params![digest], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
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
        .await
    }

    async fn open_session(
        &self,
        session: &str,
        token: &str,
        ttl_ms: i64,
    ) -> Result<Option<Holder>> {
        let (session, token) = (session.to_string(), token.to_string());
        let opened = self
            .run(move |c| {
                // Immediate: the token is read under the write lock, so a
                // revoke (of the daemon or the command line) comes wholly
                // before or after.
                let db = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
                let found: Option<Holder> = db
                    .query_row(
                        "SELECT name, role FROM tokens WHERE hash = ?1",
                        params![token],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((name, role)) = found else {
                    return Ok(None);
                };
                let now = now_millis();
                db.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])?;
                db.execute(
                    "INSERT INTO sessions (hash, token, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![session, name, now, now.saturating_add(ttl_ms)],
                )?;
                db.execute(
                    "UPDATE tokens SET last_used_at = ?1 WHERE name = ?2",
                    params![now, name],
                )?;
                db.commit()?;
                Ok(Some((name, role)))
            })
            .await?;
        self.note_written();
        Ok(opened)
    }

    async fn session_holder(&self, digest: &str) -> Result<Option<Holder>> {
        let digest = digest.to_string();
        self.run(move |c| {
            c.prepare_cached(
                "SELECT t.name, t.role FROM sessions s JOIN tokens t ON t.name = s.token
                 WHERE s.hash = ?1 AND s.expires_at > ?2",
            )?
            .query_row(params![digest, now_millis()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .await
    }

    async fn close_session(&self, digest: &str) -> Result<()> {
        let digest = digest.to_string();
        self.run(move |c| c.execute("DELETE FROM sessions WHERE hash = ?1", params![digest]))
            .await
            .map(drop)
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.run(move |c| audit::newest(c, limit)).await
    }
}
