//! The embedded store: one SQLite file per site.
//!
//! # Layout
//! `migrations/NNN_*.sql` are applied in order, each in its own transaction,
//! and `PRAGMA user_version` records how many were. The tables:
//!
//! | table | key | holds |
//! | --- | --- | --- |
//! | `site` | `id = 1` | the site's state as last left |
//! | `integrations` | `name` | the lifecycle state a person set |
//! | `holds` | `(integration, kind)` | why an integration does not send: who, since when, why |
//! | `flows` | `name` | status ([`FlowStatus::encode`]) and 'Send Changed' checkpoint |
//! | `transactions` | `(integration, seq)` | the queue: flow, key, payload (JSON text), state ([`TxState::code`]), attempts, last error |
//! | `queues` | `integration` | the queue's bookkeeping: `last_seq`, `queued`, `floor` |
//! | `runs` | `id` | runs of flows: mode, start, end, result, records captured, pages, the seqs they got |
//! | `log`, `audit` | `id` | the site log and the audit trail, in order of arrival |
//!
//! `transactions` is a `WITHOUT ROWID` table: rows sit on disk in
//! `(integration, seq)` order, so queueing appends and reading the queue is
//! a range scan. Only partial indexes sit beside it, on the few Error and
//! Ignored rows, so queueing and acking touch one B-tree.
//!
//! # Design constraints
//! - **One writer.** Every write goes to a dedicated OS thread that owns the
//!   write connection (`sqlite/writer.rs`). It takes every write waiting in its
//!   channel and commits them in ONE SQLite transaction (group commit), each
//!   inside its own savepoint so that a failing write is undone alone.
//!   Writes are applied strictly in the order they were sent.
//! - **Reads beside it.** Reads run on tokio's blocking pool against a small
//!   pool of read connections; WAL lets them read the last commit while the
//!   writer writes. No async thread ever waits on SQLite.
//! - **What is durable when.** A write's future resolves only after the
//!   commit that holds it. With `synchronous = FULL` (the default) that
//!   commit survives power loss, with `NORMAL` a crash of the process.
//!   Acks of deliveries (`ack_sent`, `record_failure`) are the exception
//!   that `store/mod.rs` allows: a group made only of them commits without
//!   waiting for the disk, so it survives a crash of the process but a power
//!   cut may undo it. Those transactions are then Queued again and are sent
//!   again, with the same idempotency keys; the next durable commit takes
//!   every earlier one to the disk with it.
//! - **Atomic capture.** `enqueue` writes the records, the flow's checkpoint
//!   and the run's captured count in one transaction: a checkpoint never
//!   covers a record that is not queued.
//! - **Order.** `seq` is assigned by the writer in call order, from
//!   `queues.last_seq + 1` on: strictly increasing per integration, never
//!   reused (the row outlives pruning). Each `enqueue` call's records get
//!   consecutive numbers, in the order given.
//! - **What may repeat.** `Sending` is never stored: what was in flight at a
//!   crash is still Queued.
//! - **Bookkeeping.** `queues` is written in the same transaction as every
//!   change of state of the integration's transactions, so it is exact
//!   after any crash: `queued` counts the Queued rows, and `floor` is the
//!   lowest Queued seq minus one (`last_seq` when none is Queued). Reading
//!   the queue starts above the floor, so a million Sent rows behind it cost
//!   nothing. `queued_count` answers from memory: the counts are loaded from
//!   `queues` at open and published by the writer after each commit.
//! - **Memory.** The queue lives on disk. Memory holds one `queues` row per
//!   integration and SQLite's bounded page caches, whatever the queue length.
//! - **Bad data.** Nothing read from the file is trusted: an unknown state,
//!   a wrong type or an impossible count is [`StoreError::Corrupt`], never
//!   a panic.
//! - **A full disk.** `SQLITE_FULL` (SQLite's name for a write's `ENOSPC`)
//!   is [`StoreError::Full`], naming the file. SQLite undoes the failed
//!   statement, or the whole transaction: either way the writer rolls the
//!   group back and answers each of its writes `Full`, so nothing of them
//!   stays. In WAL mode a write may still go through on a full disk while
//!   the WAL has room it can reuse; that write is then durable like any
//!   other. The writer publishes what its commits find ([`Space`]): full at
//!   the first refusal, recovered at the first commit after it.

mod writer;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, LazyLock, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::{oneshot, watch};

use self::writer::{Counts, Ctx, Msg, Pending};
use super::{
    io_disk_full, sqlite_disk_full, AuditEntry, FlowRecord, IntegrationRecord, LogEntry, NewRecord,
    QueuedTx, Result, RunRecord, Space, Store, StoreError, TxRecord,
};
use crate::model::{
    now_millis, FlowStatus, Hold, HoldKind, IntegrationState, Millis, RunMode, RunResult,
    SiteState, TxState,
};

/// The schema, one step a file; `user_version` is how many were applied.
const MIGRATIONS: [&str; 3] = [
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_queue_bookkeeping.sql"),
    include_str!("migrations/003_run_counts.sql"),
];

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// A commit survives power loss.
    #[default]
    Full,
    /// A commit survives a crash of the process; a power cut may undo the
    /// last ones (never half of one).
    Normal,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
}

/// The pragmas every connection of the store runs with. A benchmark's
/// baseline opens its plain connection with this, so both pay the same.
pub fn apply_pragmas(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 8 MiB of page cache a connection: bounded, whatever the queue length.
    conn.pragma_update(None, "cache_size", -8000)?;
    // A large group commit may grow the WAL; give the space back after the
    // next checkpoint.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(())
}

/// Read connections kept open between reads.
const IDLE_READERS: usize = 4;

/// A SQLite-backed [`Store`]. Cheap to share behind an `Arc`; dropping it
/// lets the writer thread finish what it was sent and close the file.
pub struct SqliteStore {
    writer: mpsc::Sender<Msg>,
    readers: Arc<Readers>,
    /// Queued transactions per integration, as of the last commit.
    counts: Counts,
    /// What the writer's commits last found of the disk.
    space: watch::Receiver<Space>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore> {
        let file = path.to_path_buf();
        let in_file = |e| classify(e, &file);
        crate::data_dir::private_database(path)
            .map_err(StoreError::from)
            .map_err(in_file)?;
        let mut write = Connection::open(path)
            .map_err(StoreError::from)
            .map_err(in_file)?;
        apply_pragmas(&write, &options)
            .map_err(StoreError::from)
            .map_err(in_file)?;
        write.set_prepared_statement_cache_capacity(64);
        migrate(&mut write).map_err(in_file)?;
        let counts = Arc::new(Mutex::new(load_counts(&write).map_err(in_file)?));
        let readers = Arc::new(Readers {
            path: path.to_path_buf(),
            options,
            idle: Mutex::new(Vec::new()),
        });
        // Fail now, not at the first read, if the file cannot be read.
        let first = readers.open()?;
        readers.put(first);
        let (tx, rx) = mpsc::channel::<Msg>();
        let published = counts.clone();
        let (space_tx, space) = watch::channel(Space::Writable);
        let path_buf = path.to_path_buf();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("site");
        std::thread::Builder::new()
            .name(format!("sluice-store-{name}"))
            .spawn(move || {
                writer::run(
                    write,
                    rx,
                    published,
                    options.synchronous,
                    path_buf,
                    space_tx,
                )
            })?;
        Ok(SqliteStore {
            writer: tx,
            readers,
            counts,
            space,
        })
    }

    /// Runs `f` on the writer thread in the next group commit; resolves
    /// after that commit is on disk.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// As [`SqliteStore::write`]; with `durable` false the commit may still
    /// be in the operating system's cache when it resolves (it survives a
    /// crash of the process, not a power cut).
    async fn write_with<T, F>(&self, durable: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        self.writer
            .send(Msg::Write(Box::new(Pending::new(durable, f, tx))))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f).map_err(|e| classify(e, &readers.path)))
            .await
            .map_err(|e| {
                StoreError::Io(std::io::Error::other(format!("store: a read failed: {e}")))
            })?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Idle read connections are closed on the writer thread, before the
        // write connection: the last connection to close checkpoints the
        // WAL, which must not happen on an async thread.
        let idle =
            std::mem::take(&mut *self.readers.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for conn in idle {
            // If the writer is gone, the connection closes here.
            let _gone = self.writer.send(Msg::Close(conn));
        }
    }
}

/// The read connections: taken for one read, given back after it.
struct Readers {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)?;
        apply_pragmas(&conn, &self.options)?;
        conn.pragma_update(None, "query_only", true)?;
        // Every commit of the writer empties a reader's cache: keep it small.
        conn.pragma_update(None, "cache_size", -2000)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = f(&conn);
        self.put(conn);
        out
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
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
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn load_counts(conn: &Connection) -> Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare("SELECT integration, queued FROM queues")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = HashMap::new();
    for row in rows {
        let (name, queued) = row?;
        if queued < 0 {
            return Err(StoreError::Corrupt(format!(
                "negative queued count {queued} for '{name}'"
            )));
        }
        counts.insert(name, queued);
    }
    Ok(counts)
}

/// Data that does not fit its column is corruption, not a database error;
/// a disk without space is [`StoreError::Full`], naming `file`.
fn classify(e: StoreError, file: &Path) -> StoreError {
    use rusqlite::Error as E;
    match e {
        StoreError::Sqlite(e) if sqlite_disk_full(&e) => StoreError::Full {
            file: file.to_path_buf(),
        },
        StoreError::Io(e) if io_disk_full(&e) => StoreError::Full {
            file: file.to_path_buf(),
        },
        StoreError::Sqlite(
            e @ (E::InvalidColumnType(..)
            | E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)
            | E::Utf8Error(..)),
        ) => StoreError::Corrupt(format!("unexpected data in the data file: {e}")),
        StoreError::Sqlite(E::SqliteFailure(f, msg))
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(msg.unwrap_or_else(|| f.to_string()))
        }
        other => other,
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} '{value}' in the data file"))
}

/// A `LIMIT` for SQLite: every `usize` fits (beyond `i64::MAX` is no limit).
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Rows a multi-row `INSERT` of the queue takes, largest first: one
/// statement per 64 records cuts SQLite's per-statement cost, the smaller
/// ones take the rest.
const INSERT_ROWS: [usize; 3] = [64, 8, 1];

/// `INSERT`s of `INSERT_ROWS[i]` rows: `?1` integration, `?2` flow, `?3`
/// now, then `seq`, `key`, `payload` for each row from `?4` on.
static INSERT_SQL: LazyLock<[String; 3]> = LazyLock::new(|| INSERT_ROWS.map(insert_sql));

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO transactions (integration, seq, flow, key, payload, state, created_at, updated_at) VALUES ",
    );
    for r in 0..rows {
        let b = 4 + 3 * r;
        let sep = if r == 0 { "" } else { ", " };
        let _infallible = write!(
            sql,
            "{sep}(?1, ?{b}, ?2, ?{}, ?{}, 0, ?3, ?3)",
            b + 1,
            b + 2
        );
    }
    sql
}

/// Appends `records` to the queue from `seq + 1` on; returns the last seq.
fn insert_records(
    conn: &Connection,
    integration: &str,
    flow: &str,
    records: &[NewRecord],
    mut seq: i64,
    now: Millis,
) -> Result<i64> {
    let mut rest = records;
    for (rows, sql) in INSERT_ROWS.iter().zip(INSERT_SQL.iter()) {
        if rest.len() < *rows {
            continue;
        }
        let mut insert = conn.prepare_cached(sql)?;
        insert.raw_bind_parameter(1, integration)?;
        insert.raw_bind_parameter(2, flow)?;
        insert.raw_bind_parameter(3, now)?;
        while rest.len() >= *rows {
            let (chunk, tail) = rest.split_at(*rows);
            for (r, record) in chunk.iter().enumerate() {
                seq += 1;
                let b = 4 + 3 * r;
                insert.raw_bind_parameter(b, seq)?;
                insert.raw_bind_parameter(b + 1, &record.key)?;
                insert.raw_bind_parameter(b + 2, &record.payload)?;
            }
            insert.raw_execute()?;
            rest = tail;
        }
    }
    Ok(seq)
}

fn holds_of(conn: &Connection, integration: &str) -> Result<Vec<Hold>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, placed_by, since, reason FROM holds WHERE integration = ?1 ORDER BY since, kind",
    )?;
    let rows = stmt.query_map([integration], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut holds = Vec::new();
    for row in rows {
        let (kind, by, since, reason) = row?;
        holds.push(Hold {
            kind: HoldKind::parse(&kind).ok_or_else(|| corrupt("hold", &kind))?,
            by,
            since,
            reason,
        });
    }
    Ok(holds)
}

fn put_hold(conn: &Connection, integration: &str, hold: &Hold) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO holds (integration, kind, placed_by, since, reason) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (integration, kind) DO UPDATE SET
           placed_by = excluded.placed_by, since = excluded.since, reason = excluded.reason",
    )?
    .execute(params![integration, hold.kind.as_str(), hold.by, hold.since, hold.reason])?;
    Ok(())
}

fn put_site_state(conn: &Connection, state: SiteState) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO site (id, state, updated_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )?
    .execute(params![state.as_str(), now_millis()])?;
    Ok(())
}

/// Appends an audit entry; returns its id.
fn put_audit(conn: &Connection, entry: &AuditEntry) -> Result<i64> {
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

fn decode_status(status: &str) -> Result<FlowStatus> {
    FlowStatus::decode(status).ok_or_else(|| corrupt("flow status", status))
}

const TX_COLUMNS: &str =
    "seq, flow, key, state, created_at, updated_at, attempts, last_error, payload";

fn tx_record(r: &rusqlite::Row<'_>) -> Result<TxRecord> {
    let code: i64 = r.get(3)?;
    let state =
        TxState::from_code(code).ok_or_else(|| corrupt("transaction state", &code.to_string()))?;
    if state == TxState::Sending {
        return Err(corrupt("stored transaction state", state.as_str()));
    }
    let payload: String = r.get(8)?;
    let record = match serde_json::from_str(&payload) {
        Ok(value) => value,
        Err(_) => serde_json::Value::String(payload),
    };
    Ok(TxRecord {
        seq: r.get(0)?,
        flow: r.get(1)?,
        key: r.get(2)?,
        state,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        record,
    })
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

fn run_record(r: &rusqlite::Row<'_>) -> Result<RunRecord> {
    let mode: String = r.get(2)?;
    let result: Option<String> = r.get(5)?;
    Ok(RunRecord {
        id: r.get(0)?,
        flow: r.get(1)?,
        mode: RunMode::parse(&mode).ok_or_else(|| corrupt("run mode", &mode))?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        result: result
            .map(|s| RunResult::parse(&s).ok_or_else(|| corrupt("run result", &s)))
            .transpose()?,
        captured: r.get(6)?,
        error: r.get(7)?,
        pages: r.get(8)?,
        seqs: match (r.get::<_, Option<i64>>(9)?, r.get::<_, Option<i64>>(10)?) {
            (Some(first), Some(last)) => Some((first, last)),
            _ => None,
        },
    })
}

/// Transactions deleted by one write of a prune: other writes go between.
const PRUNE_CHUNK: usize = 5000;

#[async_trait]
impl Store for SqliteStore {
    async fn site_state(&self) -> Result<Option<SiteState>> {
        self.read(|conn| {
            let state: Option<String> = conn
                .prepare_cached("SELECT state FROM site WHERE id = 1")?
                .query_row([], |r| r.get(0))
                .optional()?;
            state
                .map(|s| SiteState::parse(&s).ok_or_else(|| corrupt("site state", &s)))
                .transpose()
        })
        .await
    }

    async fn set_site_stopped(
        &self,
        hold: Hold,
        integrations: Vec<String>,
        audit: AuditEntry,
    ) -> Result<()> {
        self.write(move |ctx| {
            put_site_state(ctx.conn, SiteState::Stopped)?;
            for name in &integrations {
                put_hold(ctx.conn, name, &hold)?;
            }
            put_audit(ctx.conn, &audit)?;
            Ok(())
        })
        .await
    }

    async fn set_site_running(&self, audit: AuditEntry) -> Result<Vec<(String, FlowStatus)>> {
        self.write(move |ctx| {
            let mut pending = Vec::new();
            {
                let mut stmt = ctx.conn.prepare_cached(
                    "SELECT name, status FROM flows WHERE status <> '' ORDER BY name",
                )?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (name, status) = row?;
                    let status = decode_status(&status)?;
                    if let FlowStatus::Pending(_) = status {
                        pending.push((name, status));
                    }
                }
            }
            ctx.conn
                .prepare_cached("UPDATE flows SET status = '', updated_at = ?1 WHERE status <> ''")?
                .execute([now_millis()])?;
            ctx.conn
                .prepare_cached("DELETE FROM holds WHERE kind = ?1")?
                .execute([HoldKind::SiteStopped.as_str()])?;
            put_site_state(ctx.conn, SiteState::Running)?;
            put_audit(ctx.conn, &audit)?;
            Ok(pending)
        })
        .await
    }

    async fn integration(&self, name: &str) -> Result<Option<IntegrationRecord>> {
        let name = name.to_string();
        self.read(move |conn| {
            // One snapshot: the state and its holds change together.
            let tx = conn.unchecked_transaction()?;
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM integrations WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            let Some(state) = state else { return Ok(None) };
            Ok(Some(IntegrationRecord {
                state: IntegrationState::parse(&state)
                    .ok_or_else(|| corrupt("integration state", &state))?,
                holds: holds_of(&tx, &name)?,
            }))
        })
        .await
    }

    async fn set_integration_state(
        &self,
        name: &str,
        state: IntegrationState,
        hold: Option<Hold>,
        audit: Option<AuditEntry>,
    ) -> Result<()> {
        let name = name.to_string();
        self.write(move |ctx| {
            let conn = ctx.conn;
            conn.prepare_cached(
                "INSERT INTO integrations (name, state, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )?
            .execute(params![name, state.as_str(), now_millis()])?;
            match (state, hold) {
                (IntegrationState::Paused, Some(hold)) => put_hold(conn, &name, &hold)?,
                // Paused again without a hold: the one it has stays.
                (IntegrationState::Paused, None) => {}
                _ => {
                    conn.prepare_cached("DELETE FROM holds WHERE integration = ?1 AND kind = ?2")?
                        .execute(params![name, HoldKind::Operator.as_str()])?;
                }
            }
            if let Some(audit) = audit {
                put_audit(conn, &audit)?;
            }
            Ok(())
        })
        .await
    }

    async fn add_hold(&self, integration: &str, hold: Hold) -> Result<()> {
        let integration = integration.to_string();
        self.write(move |ctx| put_hold(ctx.conn, &integration, &hold))
            .await
    }

    async fn remove_hold(&self, integration: &str, kind: HoldKind) -> Result<bool> {
        let integration = integration.to_string();
        self.write(move |ctx| {
            let n = ctx
                .conn
                .prepare_cached("DELETE FROM holds WHERE integration = ?1 AND kind = ?2")?
                .execute(params![integration, kind.as_str()])?;
            Ok(n > 0)
        })
        .await
    }

    async fn flow(&self, flow: &str) -> Result<FlowRecord> {
        let flow = flow.to_string();
        self.read(move |conn| {
            let row: Option<(String, Option<String>)> = conn
                .prepare_cached("SELECT status, checkpoint FROM flows WHERE name = ?1")?
                .query_row([&flow], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(match row {
                None => FlowRecord {
                    status: FlowStatus::Blank,
                    checkpoint: None,
                },
                Some((status, checkpoint)) => FlowRecord {
                    status: decode_status(&status)?,
                    checkpoint,
                },
            })
        })
        .await
    }

    async fn set_flow_status(&self, flow: &str, status: FlowStatus) -> Result<()> {
        let flow = flow.to_string();
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO flows (name, status, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
                )?
                .execute(params![flow, status.encode(), now_millis()])?;
            Ok(())
        })
        .await
    }

    async fn enqueue(
        &self,
        integration: &str,
        flow: &str,
        records: Vec<NewRecord>,
        checkpoint: Option<String>,
        run: Option<i64>,
    ) -> Result<Option<(i64, i64)>> {
        let integration = integration.to_string();
        let flow = flow.to_string();
        self.write(move |ctx| {
            let now = now_millis();
            let mut range = None;
            if !records.is_empty() {
                let mut q = ctx.queue(&integration)?;
                let n = records.len() as i64;
                let last = insert_records(ctx.conn, &integration, &flow, &records, q.last_seq, now)?;
                range = Some((q.last_seq + 1, last));
                // The floor stays: what was Queued still is, and when
                // nothing was, `last_seq + 1` is now the first Queued.
                q.last_seq = last;
                q.queued += n;
                ctx.set_queue(&integration, q)?;
            }
            if let Some(run) = run {
                let (first, last) = range.map_or((None, None), |(f, l)| (Some(f), Some(l)));
                ctx.conn
                    .prepare_cached(
                        "UPDATE runs SET captured = captured + ?1, pages = pages + 1,
                                first_seq = COALESCE(first_seq, ?3), last_seq = COALESCE(?4, last_seq)
                          WHERE id = ?2",
                    )?
                    .execute(params![records.len() as i64, run, first, last])?;
            }
            if let Some(checkpoint) = checkpoint {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO flows (name, status, checkpoint, updated_at) VALUES (?1, '', ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET
                           checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                    )?
                    .execute(params![flow, checkpoint, now])?;
            }
            Ok(range)
        })
        .await
    }

    async fn next_batch(
        &self,
        integration: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedTx>> {
        let integration = integration.to_string();
        self.read(move |conn| {
            // One statement, so the floor and the rows are of one snapshot.
            let mut stmt = conn.prepare_cached(
                "SELECT seq, flow, payload, attempts FROM transactions
                 WHERE integration = ?1 AND state = 0
                   AND seq > MAX(?2, COALESCE((SELECT floor FROM queues WHERE integration = ?1), 0))
                 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![integration, after, limit_of(limit)], |r| {
                Ok(QueuedTx {
                    seq: r.get(0)?,
                    flow: r.get(1)?,
                    payload: r.get(2)?,
                    attempts: r.get(3)?,
                })
            })?;
            let mut batch = Vec::with_capacity(limit.min(4096));
            for row in rows {
                batch.push(row?);
            }
            Ok(batch)
        })
        .await
    }

    async fn ack_sent(&self, integration: &str, first: i64, last: i64) -> Result<()> {
        let integration = integration.to_string();
        self.write_with(false, move |ctx| {
            let mut q = ctx.queue(&integration)?;
            let n = ctx
                .conn
                .prepare_cached(
                    "UPDATE transactions SET state = 2, updated_at = ?1
                     WHERE integration = ?2 AND seq BETWEEN ?3 AND ?4 AND state = 0",
                )?
                .execute(params![now_millis(), integration, first, last])?;
            if n == 0 {
                return Ok(());
            }
            q.queued -= n as i64;
            if first <= q.floor + 1 {
                ctx.raise_floor(&integration, &mut q, last)?;
            }
            ctx.set_queue(&integration, q)
        })
        .await
    }

    async fn settle(
        &self,
        integration: &str,
        seq: i64,
        to: TxState,
        error: Option<String>,
    ) -> Result<()> {
        if to == TxState::Sending {
            return Err(StoreError::Corrupt(
                "settle: Sending is never stored".to_string(),
            ));
        }
        let integration = integration.to_string();
        self.write(move |ctx| {
            let mut q = ctx.queue(&integration)?;
            let from: Option<i64> = ctx
                .conn
                .prepare_cached(
                    "SELECT state FROM transactions WHERE integration = ?1 AND seq = ?2",
                )?
                .query_row(params![integration, seq], |r| r.get(0))
                .optional()?;
            let Some(from) = from else { return Ok(()) };
            ctx.conn
                .prepare_cached(
                    "UPDATE transactions
                     SET state = ?1, last_error = COALESCE(?2, last_error), updated_at = ?3
                     WHERE integration = ?4 AND seq = ?5",
                )?
                .execute(params![to.code(), error, now_millis(), integration, seq])?;
            let queued = TxState::Queued.code();
            match (from == queued, to.code() == queued) {
                (true, false) => {
                    q.queued -= 1;
                    if seq == q.floor + 1 {
                        ctx.raise_floor(&integration, &mut q, seq)?;
                    }
                }
                (false, true) => {
                    q.queued += 1;
                    q.floor = q.floor.min(seq - 1);
                }
                _ => return Ok(()),
            }
            ctx.set_queue(&integration, q)
        })
        .await
    }

    async fn record_failure(
        &self,
        integration: &str,
        first: i64,
        last: i64,
        error: &str,
    ) -> Result<()> {
        let integration = integration.to_string();
        let error = error.to_string();
        self.write_with(false, move |ctx| {
            ctx.conn
                .prepare_cached(
                    "UPDATE transactions SET attempts = attempts + 1, last_error = ?1, updated_at = ?2
                     WHERE integration = ?3 AND seq BETWEEN ?4 AND ?5 AND state = 0",
                )?
                .execute(params![error, now_millis(), integration, first, last])?;
            Ok(())
        })
        .await
    }

    async fn first_error(&self, integration: &str) -> Result<Option<i64>> {
        let integration = integration.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(seq) FROM transactions WHERE integration = ?1 AND state = 3",
                )?
                .query_row([integration], |r| r.get(0))?)
        })
        .await
    }

    async fn transaction(&self, integration: &str, seq: i64) -> Result<Option<TxRecord>> {
        let integration = integration.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TX_COLUMNS} FROM transactions WHERE integration = ?1 AND seq = ?2"
            ))?;
            let mut rows = stmt.query(params![integration, seq])?;
            rows.next()?.map(tx_record).transpose()
        })
        .await
    }

    async fn prune(&self, before: Millis) -> Result<usize> {
        // In chunks, each its own write, so a large prune does not hold up
        // the queue. Sequence numbers live on in `queues`.
        let mut total = 0;
        loop {
            let n = self
                .write(move |ctx| {
                    let n = ctx
                        .conn
                        .prepare_cached(
                            "DELETE FROM transactions WHERE (integration, seq) IN (
                               SELECT integration, seq FROM transactions
                               WHERE state IN (2, 4) AND updated_at < ?1 LIMIT ?2)",
                        )?
                        .execute(params![before, limit_of(PRUNE_CHUNK)])?;
                    Ok(n)
                })
                .await?;
            total += n;
            if n < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    async fn queued_count(&self, integration: &str) -> Result<i64> {
        Ok(self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(integration)
            .copied()
            .unwrap_or(0))
    }

    async fn transactions(
        &self,
        integration: &str,
        state: Option<TxState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<TxRecord>> {
        // The state is written into the statement, not bound, so SQLite can
        // pick the partial index of Error and Ignored; Queued ones are
        // looked for above the floor only.
        let filter = match state {
            None => "",
            Some(TxState::Sending) => return Ok(Vec::new()),
            Some(TxState::Queued) => {
                "AND state = 0 AND seq > COALESCE((SELECT floor FROM queues WHERE integration = ?1), 0)"
            }
            Some(TxState::Sent) => "AND state = 2",
            Some(TxState::Error) => "AND state = 3",
            Some(TxState::Ignored) => "AND state = 4",
        };
        let sql = format!(
            "SELECT {TX_COLUMNS} FROM transactions
             WHERE integration = ?1 AND seq < ?2 {filter}
             ORDER BY seq DESC LIMIT ?3"
        );
        let integration = integration.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![
                integration,
                before.unwrap_or(i64::MAX),
                limit_of(limit)
            ])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(tx_record(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn start_run(&self, flow: &str, mode: RunMode) -> Result<i64> {
        let flow = flow.to_string();
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("INSERT INTO runs (flow, mode, started_at) VALUES (?1, ?2, ?3)")?
                .execute(params![flow, mode.as_str(), now_millis()])?;
            Ok(ctx.conn.last_insert_rowid())
        })
        .await
    }

    async fn finish_run(&self, run: i64, result: RunResult, error: Option<String>) -> Result<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?1, result = ?2, error = ?3 WHERE id = ?4",
                )?
                .execute(params![now_millis(), result.as_str(), error, run])?;
            Ok(())
        })
        .await
    }

    async fn runs(&self, flow: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let flow = flow.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, flow, mode, started_at, finished_at, result, captured, error,
                        pages, first_seq, last_seq
                 FROM runs WHERE flow = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![flow, limit_of(limit)])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(run_record(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn errors_between(&self, integration: &str, first: i64, last: i64) -> Result<i64> {
        let integration = integration.to_string();
        self.read(move |conn| {
            // `state = 3` (Error) matches the partial index transactions_error.
            Ok(conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM transactions
                      WHERE integration = ?1 AND state = 3 AND seq BETWEEN ?2 AND ?3",
                )?
                .query_row(params![integration, first, last], |r| r.get(0))?)
        })
        .await
    }

    async fn close_abandoned_runs(&self) -> Result<usize> {
        self.write(|ctx| {
            let n = ctx
                .conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?1, result = ?2, error = ?3
                     WHERE finished_at IS NULL",
                )?
                .execute(params![
                    now_millis(),
                    RunResult::Halted.as_str(),
                    "the daemon stopped during the run"
                ])?;
            Ok(n)
        })
        .await
    }

    async fn append_log(&self, ts: Millis, level: u8, message: &str) -> Result<i64> {
        let message = message.to_string();
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("INSERT INTO log (ts, level, message) VALUES (?1, ?2, ?3)")?
                .execute(params![ts, level, message])?;
            Ok(ctx.conn.last_insert_rowid())
        })
        .await
    }

    async fn log(
        &self,
        after: i64,
        since: Option<Millis>,
        max_level: u8,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        self.read(move |conn| {
            // Newest first to take the newest `limit`, then turned around.
            let mut stmt = conn.prepare_cached(
                "SELECT id, ts, level, message FROM log
                 WHERE id > ?1 AND ts >= ?2 AND level <= ?3
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![after, since.unwrap_or(i64::MIN), max_level, limit_of(limit)],
                |r| {
                    Ok(LogEntry {
                        id: r.get(0)?,
                        ts: r.get(1)?,
                        level: r.get(2)?,
                        message: r.get(3)?,
                    })
                },
            )?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<i64> {
        self.write(move |ctx| put_audit(ctx.conn, &entry)).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, ts, actor, action, subject, reason, outcome FROM audit
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit_of(limit)], audit_entry)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    fn space(&self) -> watch::Receiver<Space> {
        self.space.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn records(from: usize, n: usize) -> Vec<NewRecord> {
        (from..from + n)
            .map(|i| NewRecord {
                key: Some(format!("k{i}")),
                payload: format!("{{\"n\":{i}}}"),
            })
            .collect()
    }

    fn hold(kind: HoldKind) -> Hold {
        Hold {
            kind,
            by: "ann".into(),
            since: 7,
            reason: "why".into(),
        }
    }

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            ts: 1,
            actor: "ann".into(),
            action: action.into(),
            subject: "LIVE".into(),
            reason: None,
            outcome: "ok".into(),
        }
    }

    fn seqs(batch: &[QueuedTx]) -> Vec<i64> {
        batch.iter().map(|t| t.seq).collect()
    }

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

    #[tokio::test]
    async fn states_holds_checkpoints_and_sequences_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("site.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.site_state().await.unwrap(), None);
            assert_eq!(s.integration("a").await.unwrap(), None);
            // A stop: the state, its holds and its audit entry together.
            s.set_site_stopped(
                hold(HoldKind::SiteStopped),
                vec!["a".into()],
                entry("site.stop"),
            )
            .await
            .unwrap();
            s.set_integration_state(
                "a",
                IntegrationState::Paused,
                Some(hold(HoldKind::Operator)),
                Some(entry("integration.pause")),
            )
            .await
            .unwrap();
            s.add_hold("a", hold(HoldKind::SiteStopped)).await.unwrap();
            s.set_flow_status("f", FlowStatus::Pending(RunMode::Changed))
                .await
                .unwrap();
            s.set_flow_status("g", FlowStatus::Running(RunMode::All))
                .await
                .unwrap();
            assert_eq!(
                s.enqueue("a", "f", records(0, 3), Some("\"x\"".into()), None)
                    .await
                    .unwrap(),
                Some((1, 3))
            );
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.site_state().await.unwrap(), Some(SiteState::Stopped));
        let actions: Vec<_> = s
            .audit(10)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(actions, ["integration.pause", "site.stop"]);
        let a = s.integration("a").await.unwrap().unwrap();
        assert_eq!(a.state, IntegrationState::Paused);
        let kinds: Vec<_> = a.holds.iter().map(|h| h.kind).collect();
        assert!(kinds.contains(&HoldKind::Operator) && kinds.contains(&HoldKind::SiteStopped));
        assert_eq!(a.holds[0], hold(HoldKind::Operator));
        let f = s.flow("f").await.unwrap();
        assert_eq!(f.status, FlowStatus::Pending(RunMode::Changed));
        assert_eq!(f.checkpoint.as_deref(), Some("\"x\""));
        assert_eq!(
            s.flow("never").await.unwrap(),
            FlowRecord {
                status: FlowStatus::Blank,
                checkpoint: None
            }
        );
        assert_eq!(s.queued_count("a").await.unwrap(), 3);
        assert_eq!(s.queued_count("never").await.unwrap(), 0);
        // The sequence goes on after a restart.
        assert_eq!(
            s.enqueue("a", "f", records(3, 2), None, None)
                .await
                .unwrap(),
            Some((4, 5))
        );
        assert_eq!(s.enqueue("a", "f", vec![], None, None).await.unwrap(), None);
        // Paused again without a hold keeps the person's hold.
        s.set_integration_state("a", IntegrationState::Paused, None, None)
            .await
            .unwrap();
        assert_eq!(s.integration("a").await.unwrap().unwrap().holds.len(), 2);
        // Resuming removes the operator hold, not the system's.
        s.set_integration_state("a", IntegrationState::Active, None, None)
            .await
            .unwrap();
        let a = s.integration("a").await.unwrap().unwrap();
        assert_eq!(a.state, IntegrationState::Active);
        assert_eq!(a.holds.len(), 1);
        assert_eq!(a.holds[0].kind, HoldKind::SiteStopped);
        assert!(s.remove_hold("a", HoldKind::SiteStopped).await.unwrap());
        assert!(!s.remove_hold("a", HoldKind::SiteStopped).await.unwrap());
        s.add_hold("a", hold(HoldKind::SiteStopped)).await.unwrap();
        // A start: Running, the site's holds gone, its audit entry; pending
        // requests are returned (and discarded); every status is blanked,
        // Running ones too, but those are not returned.
        let pending = s.set_site_running(entry("site.start")).await.unwrap();
        assert_eq!(
            pending,
            vec![("f".to_string(), FlowStatus::Pending(RunMode::Changed))]
        );
        assert_eq!(s.site_state().await.unwrap(), Some(SiteState::Running));
        assert!(s.integration("a").await.unwrap().unwrap().holds.is_empty());
        assert_eq!(s.audit(1).await.unwrap()[0].action, "site.start");
        assert_eq!(s.flow("f").await.unwrap().status, FlowStatus::Blank);
        assert_eq!(s.flow("g").await.unwrap().status, FlowStatus::Blank);
        assert_eq!(
            s.set_site_running(entry("site.start")).await.unwrap(),
            vec![]
        );
        // The checkpoint is not touched by the reset.
        assert_eq!(
            s.flow("f").await.unwrap().checkpoint.as_deref(),
            Some("\"x\"")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_enqueues_get_distinct_increasing_contiguous_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&dir.path().join("site.db")).unwrap());
        let mut tasks = Vec::new();
        for t in 0..32usize {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                // Each task queues several calls of its own, one after the other.
                for call in 0..4usize {
                    let n = 1 + (t + call) % 70;
                    let first = t * 1000 + call * 100;
                    let range = s
                        .enqueue("a", "f", records(first, n), None, None)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(range.1 - range.0 + 1, n as i64);
                    got.push((range, first));
                }
                got
            }));
        }
        let mut ranges = Vec::new();
        for t in tasks {
            let got = t.await.unwrap();
            // One caller's calls are queued in the order it made them.
            assert!(got.windows(2).all(|w| w[0].0 .1 < w[1].0 .0), "{got:?}");
            ranges.extend(got);
        }
        ranges.sort();
        let mut next = 1;
        for ((first, last), _) in &ranges {
            assert_eq!(*first, next, "no gap, no overlap");
            next = last + 1;
        }
        // Each call's records are contiguous and in their order.
        let batch = s.next_batch("a", 0, 100_000).await.unwrap();
        assert_eq!(batch.len() as i64, next - 1);
        assert_eq!(s.queued_count("a").await.unwrap(), next - 1);
        for ((first, last), from) in ranges {
            for seq in first..=last {
                let t = &batch[(seq - 1) as usize];
                assert_eq!(t.seq, seq);
                let n = serde_json::from_str::<serde_json::Value>(&t.payload).unwrap()["n"]
                    .as_i64()
                    .unwrap();
                assert_eq!(n, from as i64 + (seq - first));
            }
        }
    }

    #[tokio::test]
    async fn enqueue_moves_the_checkpoint_and_the_run_with_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("site.db")).unwrap();
        let run = s.start_run("f", RunMode::Changed).await.unwrap();
        s.enqueue("a", "f", records(0, 4), Some("4".into()), Some(run))
            .await
            .unwrap();
        s.enqueue("a", "f", records(4, 2), Some("6".into()), Some(run))
            .await
            .unwrap();
        // A checkpoint alone moves too.
        s.enqueue("a", "f", vec![], Some("7".into()), Some(run))
            .await
            .unwrap();
        assert_eq!(s.flow("f").await.unwrap().checkpoint.as_deref(), Some("7"));
        let runs = s.runs("f", 5).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].captured, 6);
        assert_eq!(runs[0].pages, 3, "the page that queued nothing counts");
        assert_eq!(runs[0].seqs, Some((1, 6)));
        assert_eq!(s.errors_between("a", 1, 6).await.unwrap(), 0);
        s.settle("a", 2, TxState::Error, Some("422".into()))
            .await
            .unwrap();
        s.settle("a", 5, TxState::Error, Some("422".into()))
            .await
            .unwrap();
        assert_eq!(s.errors_between("a", 1, 6).await.unwrap(), 2);
        assert_eq!(s.errors_between("a", 3, 6).await.unwrap(), 1);
        assert_eq!(s.runs("f", 1).await.unwrap()[0].captured, 6);
        assert_eq!(runs[0].mode, RunMode::Changed);
        assert_eq!(runs[0].result, None);
        assert_eq!(runs[0].finished_at, None);
        // A run left open by a crash is closed as halted.
        assert_eq!(s.close_abandoned_runs().await.unwrap(), 1);
        assert_eq!(s.close_abandoned_runs().await.unwrap(), 0);
        let halted = &s.runs("f", 1).await.unwrap()[0];
        assert_eq!(halted.result, Some(RunResult::Halted));
        assert_eq!(
            halted.error.as_deref(),
            Some("the daemon stopped during the run")
        );
        assert!(halted.finished_at.is_some());
        let second = s.start_run("f", RunMode::All).await.unwrap();
        s.finish_run(second, RunResult::Failed, Some("boom".into()))
            .await
            .unwrap();
        let runs = s.runs("f", 10).await.unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [second, run]);
        assert_eq!(runs[0].result, Some(RunResult::Failed));
        assert_eq!(runs[0].error.as_deref(), Some("boom"));
        assert_eq!(s.runs("f", 1).await.unwrap().len(), 1);
        assert!(s.runs("other", 10).await.unwrap().is_empty());
    }

    /// A write that fails is undone whole (its records, checkpoint and run
    /// count together), and alone: the writes committed with it stand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_enqueue_is_undone_whole_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let s = Arc::new(SqliteStore::open(&path).unwrap());
        s.enqueue("a", "f", records(0, 2), Some("2".into()), None)
            .await
            .unwrap();
        let run = s.start_run("f", RunMode::Changed).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON transactions WHEN NEW.payload = '\"boom\"'
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .unwrap();
        let mut tasks = Vec::new();
        for t in 0..20usize {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut batch = records(100 + t * 10, 70);
                if t == 7 {
                    batch[69].payload = "\"boom\"".into();
                }
                let got = s
                    .enqueue("a", "f", batch, Some(format!("{t}")), Some(run))
                    .await;
                (t, got)
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                (7, got) => assert!(got.is_err(), "{got:?}"),
                (_, got) => {
                    got.unwrap().unwrap();
                    ok += 1;
                }
            }
        }
        assert_eq!(ok, 19);
        assert_eq!(s.queued_count("a").await.unwrap(), 2 + 19 * 70);
        assert_eq!(s.runs("f", 1).await.unwrap()[0].captured, 19 * 70);
        assert_ne!(s.flow("f").await.unwrap().checkpoint.as_deref(), Some("7"));
        let all = s.next_batch("a", 0, 10_000).await.unwrap();
        assert_eq!(all.len(), 2 + 19 * 70);
        assert!(all.iter().all(|t| t.payload != "\"boom\""));
        // No number was lost or reused by the failed write.
        assert_eq!(seqs(&all), (1..=(2 + 19 * 70)).collect::<Vec<i64>>());
        assert_eq!(
            s.enqueue("a", "f", records(0, 1), None, None)
                .await
                .unwrap(),
            Some((1333, 1333))
        );
        // A lone failing write changes nothing either.
        let got = s
            .enqueue(
                "a",
                "f",
                vec![NewRecord {
                    key: None,
                    payload: "\"boom\"".into(),
                }],
                Some("lost".into()),
                Some(run),
            )
            .await;
        assert!(matches!(got, Err(StoreError::Sqlite(_))), "{got:?}");
        assert_ne!(
            s.flow("f").await.unwrap().checkpoint.as_deref(),
            Some("lost")
        );
        assert_eq!(s.queued_count("a").await.unwrap(), 1333);
        assert_eq!(bookkeeping(&s, "a").await, Some((1333, 1333, 0)));
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
        assert!(
            matches!(*space.borrow_and_update(), Space::Full { ref file, .. } if *file == path)
        );
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

    #[tokio::test]
    async fn ack_settle_prune_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let s = SqliteStore::open(&path).unwrap();
        s.enqueue("a", "f", records(0, 5), None, None)
            .await
            .unwrap();
        s.enqueue("b", "g", records(0, 1), None, None)
            .await
            .unwrap();
        s.record_failure("a", 1, 2, "503 busy").await.unwrap();
        s.ack_sent("a", 1, 2).await.unwrap();
        // Acking again changes nothing.
        s.ack_sent("a", 1, 2).await.unwrap();
        s.settle("a", 3, TxState::Error, Some("422 no".into()))
            .await
            .unwrap();
        assert_eq!(s.queued_count("a").await.unwrap(), 2);
        assert_eq!(s.queued_count("b").await.unwrap(), 1);
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [4, 5]);
        assert_eq!(seqs(&s.next_batch("a", 4, 10).await.unwrap()), [5]);
        assert_eq!(seqs(&s.next_batch("a", 0, 1).await.unwrap()), [4]);
        assert_eq!(s.first_error("a").await.unwrap(), Some(3));
        assert_eq!(s.first_error("b").await.unwrap(), None);
        let errors = s
            .transactions("a", Some(TxState::Error), None, 10)
            .await
            .unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].last_error.as_deref(), Some("422 no"));
        let all = s.transactions("a", None, None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|t| t.seq).collect::<Vec<_>>(),
            [5, 4, 3, 2, 1]
        );
        assert_eq!(all[4].attempts, 1);
        assert_eq!(all[4].last_error.as_deref(), Some("503 busy"));
        assert_eq!(all[4].state, TxState::Sent);
        assert_eq!(all[4].key.as_deref(), Some("k0"));
        assert_eq!(all[4].flow, "f");
        assert!(all[4].updated_at >= all[4].created_at);
        assert_eq!(all[0].record, serde_json::json!({"n": 4}));
        let page = s.transactions("a", None, Some(4), 2).await.unwrap();
        assert_eq!(page.iter().map(|t| t.seq).collect::<Vec<_>>(), [3, 2]);
        let queued = s
            .transactions("a", Some(TxState::Queued), None, 10)
            .await
            .unwrap();
        assert_eq!(queued.iter().map(|t| t.seq).collect::<Vec<_>>(), [5, 4]);
        let sent = s
            .transactions("a", Some(TxState::Sent), None, 10)
            .await
            .unwrap();
        assert_eq!(sent.iter().map(|t| t.seq).collect::<Vec<_>>(), [2, 1]);
        assert!(s
            .transactions("a", Some(TxState::Sending), None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            s.transaction("a", 3).await.unwrap().unwrap().state,
            TxState::Error
        );
        assert_eq!(s.transaction("a", 99).await.unwrap(), None);
        assert!(matches!(
            s.settle("a", 4, TxState::Sending, None).await,
            Err(StoreError::Corrupt(_))
        ));
        // A payload that is not JSON is shown as a string.
        s.enqueue(
            "c",
            "f",
            vec![NewRecord {
                key: None,
                payload: "not json".into(),
            }],
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            s.transactions("c", None, None, 1).await.unwrap()[0].record,
            serde_json::json!("not json")
        );
        // Back to Queued (a retry) counts again, in its place in the queue.
        s.settle("a", 3, TxState::Queued, None).await.unwrap();
        assert_eq!(s.queued_count("a").await.unwrap(), 3);
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [3, 4, 5]);
        assert_eq!(
            s.transaction("a", 3)
                .await
                .unwrap()
                .unwrap()
                .last_error
                .as_deref(),
            Some("422 no")
        );
        // Settling a transaction that does not exist changes nothing.
        s.settle("a", 99, TxState::Ignored, None).await.unwrap();
        // Pruning takes only what was sent or ignored, and seqs go on.
        s.settle("a", 4, TxState::Ignored, None).await.unwrap();
        let ignored = s
            .transactions("a", Some(TxState::Ignored), None, 10)
            .await
            .unwrap();
        assert_eq!(ignored.iter().map(|t| t.seq).collect::<Vec<_>>(), [4]);
        s.settle("a", 5, TxState::Error, None).await.unwrap();
        assert_eq!(s.prune(0).await.unwrap(), 0);
        assert_eq!(s.prune(now_millis() + 1).await.unwrap(), 3);
        let left = s.transactions("a", None, None, 10).await.unwrap();
        assert_eq!(left.iter().map(|t| t.seq).collect::<Vec<_>>(), [5, 3]);
        s.ack_sent("a", 1, 10).await.unwrap();
        s.settle("a", 5, TxState::Sent, None).await.unwrap();
        assert_eq!(s.prune(now_millis() + 1).await.unwrap(), 2);
        assert!(s
            .transactions("a", None, None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.queued_count("a").await.unwrap(), 0);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.enqueue("a", "f", records(9, 1), None, None)
                .await
                .unwrap(),
            Some((6, 6))
        );
        assert_eq!(s.queued_count("b").await.unwrap(), 1);
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
        s.ack_sent("a", 1, 4).await.unwrap();
        assert_eq!(bookkeeping(&s, "a").await, Some((10, 5, 5)));
        s.ack_sent("a", 6, 8).await.unwrap();
        assert_eq!(bookkeeping(&s, "a").await, Some((10, 2, 8)));
        // An ack past the end does not lift the floor over future records.
        s.ack_sent("a", 9, i64::MAX).await.unwrap();
        assert_eq!(bookkeeping(&s, "a").await, Some((10, 0, 10)));
        s.enqueue("a", "f", records(10, 2), None, None)
            .await
            .unwrap();
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [11, 12]);
        // A retry lowers it again.
        s.settle("a", 5, TxState::Queued, None).await.unwrap();
        assert_eq!(bookkeeping(&s, "a").await, Some((12, 3, 4)));
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [5, 11, 12]);
        s.ack_sent("a", 5, 5).await.unwrap();
        assert_eq!(bookkeeping(&s, "a").await, Some((12, 2, 10)));
        // A gap of acks out of order: the floor waits for the first.
        s.ack_sent("a", 12, 12).await.unwrap();
        assert_eq!(bookkeeping(&s, "a").await, Some((12, 1, 10)));
        s.ack_sent("a", 11, 11).await.unwrap();
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
        let first_error = plan(
            "SELECT MIN(seq) FROM transactions WHERE integration = ?1 AND state = 3 AND ?2 + ?3",
        )
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
        fn corrupt<T: std::fmt::Debug>(r: Result<T>) {
            assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
        }
        corrupt(s.site_state().await);
        corrupt(s.integration("a").await);
        corrupt(s.flow("f").await);
        corrupt(s.set_site_running(entry("site.start")).await);
        corrupt(s.runs("f", 10).await);
        corrupt(s.log(0, None, 255, 10).await);
        corrupt(s.transaction("a", 1).await);
        corrupt(s.transactions("a", None, None, 10).await);
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
    async fn log_and_audit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("site.db")).unwrap();
        for i in 0..10u8 {
            s.append_log(i64::from(i) * 1000, i % 8, &format!("line {i}"))
                .await
                .unwrap();
        }
        let all = s.log(0, None, 9, 100).await.unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0].message, "line 0");
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        // More match than the limit: the newest, oldest first.
        let newest = s.log(0, None, 9, 3).await.unwrap();
        let msgs: Vec<_> = newest.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["line 7", "line 8", "line 9"]);
        assert!(s
            .log(0, None, 4, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.level <= 4));
        assert_eq!(s.log(0, None, 4, 100).await.unwrap().len(), 7);
        assert_eq!(s.log(0, Some(5000), 9, 100).await.unwrap().len(), 5);
        assert_eq!(s.log(all[8].id, None, 9, 100).await.unwrap().len(), 1);
        assert!(s.log(0, None, 9, 0).await.unwrap().is_empty());
        assert!(s.audit(10).await.unwrap().is_empty());
        for action in ["site.stop", "site.start"] {
            s.append_audit(AuditEntry {
                id: 0,
                ts: 1,
                actor: "ann".into(),
                action: action.into(),
                subject: "LIVE".into(),
                reason: Some("stocktake".into()),
                outcome: "ok".into(),
            })
            .await
            .unwrap();
        }
        let audit = s.audit(10).await.unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[0].action, "site.start");
        assert!(audit[0].id > audit[1].id);
        assert_eq!(audit[1].reason.as_deref(), Some("stocktake"));
        assert_eq!(audit[1].actor, "ann");
        assert_eq!(s.audit(1).await.unwrap().len(), 1);
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
        s.ack_sent("a", 1, 1).await.unwrap();
        assert_eq!(seqs(&s.next_batch("a", 0, 10).await.unwrap()), [2, 3]);
        let raw = Connection::open(&path).unwrap();
        apply_pragmas(&raw, &SqliteOptions::default()).unwrap();
        let mode: String = raw
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    mod model {
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
            /// Drop the store and open the file again.
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

        async fn check(store: &SqliteStore, name: &str, m: &Model) {
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
            // The bookkeeping is exact: floor included.
            if m.last_seq > 0 {
                let floor = m.pending.keys().next().map_or(m.last_seq, |s| s - 1);
                assert_eq!(
                    bookkeeping(store, name).await,
                    Some((m.last_seq, want.len() as i64, floor)),
                    "bookkeeping of {name}"
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
            /// Random enqueues, deliveries, failures, rejections, retries and
            /// restarts against a queue per integration kept in memory.
            #[test]
            fn the_queue_matches_a_simple_model(ops in proptest::collection::vec(op(), 1..50)) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("site.db");
                    let mut store = SqliteStore::open(&path).unwrap();
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
                                    store.ack_sent(name(b), first, last).await.unwrap();
                                    for t in &batch[..acked] {
                                        m.pending.remove(&t.seq);
                                    }
                                }
                            }
                            Op::Fail { b, n } => {
                                let m = &mut models[usize::from(b)];
                                let head: Vec<i64> = m.pending.keys().take(n).copied().collect();
                                if let (Some(first), Some(last)) = (head.first(), head.last()) {
                                    store.record_failure(name(b), *first, *last, "503").await.unwrap();
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
                                    store.settle(name(b), seq, TxState::Queued, None).await.unwrap();
                                    let attempts = m.errors.remove(&seq).unwrap();
                                    m.pending.insert(seq, attempts);
                                }
                            }
                            Op::Reopen => {
                                drop(store);
                                store = SqliteStore::open(&path).unwrap();
                            }
                        }
                        for b in [false, true] {
                            check(&store, name(b), &models[usize::from(b)]).await;
                        }
                    }
                });
            }
        }
    }

    /// Throughput with `synchronous = FULL`:
    /// `cargo test --release --lib -- --ignored --nocapture throughput`
    /// (`BENCH_DIR` picks the disk; the default is the system's temp dir).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
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
}
