//! The embedded store: one SQLite file per site.
//!
//! # Files
//! - `mod.rs`: [`SqliteStore`], the [`Store`] trait's queries, reads on a
//!   small pool of connections.
//! - `writer.rs`: the writer thread, the only one that writes (group
//!   commit, the queues' bookkeeping, a full disk).
//! - `migrations.rs` and `migrations/NNN_*.sql`: the schema, step by step.
//! - `audit.rs`: the audit table's SQL, shared with the token store.
//! - `tests.rs`, `tests/model.rs`: the store's tests, and random sequences
//!   of operations against a model of the queue. Its throughput is
//!   `benches/store.rs`.
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

pub(super) mod audit;
mod migrations;
mod writer;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, LazyLock};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::{oneshot, watch};

use self::migrations::migrate;
use self::writer::{Counts, Ctx, Msg, Pending};
use super::{
    io_disk_full, sqlite_disk_full, Activity, AuditEntry, ErrorTx, FlowRecord, HistoryRow,
    HoldPeriod, Link, LogEntry, NewRecord, OpenAlert, QueuedAlert, QueuedTx, Result, RunRecord,
    Space, Store, StoreError, TxRecord, HOUR, MINUTE,
};
use crate::model::{
    now_millis, FlowStatus, Hold, HoldKind, IntegrationChange, IntegrationRecord, IntegrationState,
    Millis, RunMode, RunResult, SiteState, TxState,
};

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
    // 2 MiB of page cache a connection: bounded, whatever the queue length.
    // The queue is written at one end of its tree and read and deleted at
    // the other; a few hundred pages hold both paths.
    conn.pragma_update(None, "cache_size", -2000)?;
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
    /// One statement on an alert's condition (open, remind, close) and, if
    /// it changed a row, `document` queued to `channel` in the same
    /// transaction.
    async fn change_alert(
        &self,
        statement: &'static str,
        values: Vec<rusqlite::types::Value>,
        channel: &str,
        document: &str,
        now: Millis,
    ) -> Result<bool> {
        let (channel, document) = (channel.to_string(), document.to_string());
        self.write(move |ctx| {
            let changed = ctx
                .conn
                .prepare_cached(statement)?
                .execute(rusqlite::params_from_iter(values))?
                > 0;
            if changed {
                queue_alert(ctx.conn, &channel, &document, now)?;
            }
            Ok(changed)
        })
        .await
    }

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
        let (writes, queue) = mpsc::channel::<Msg>();
        let published = counts.clone();
        let (space_tx, space) = watch::channel(Space::Writable);
        let path_buf = path.to_path_buf();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("site");
        std::thread::Builder::new()
            .name(format!("sluice-store-{name}"))
            .spawn(move || {
                writer::run(
                    write,
                    queue,
                    published,
                    options.synchronous,
                    path_buf,
                    space_tx,
                )
            })?;
        Ok(SqliteStore {
            writer: writes,
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
        let (reply, answer) = oneshot::channel::<Result<T>>();
        self.writer
            .send(Msg::Write(Box::new(Pending::new(durable, f, reply))))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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
        let idle = std::mem::take(&mut *self.readers.idle.lock());
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
        conn.pragma_update(None, "cache_size", -1000)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = f(&conn);
        self.put(conn);
        out
    }
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

fn put_flow_status(conn: &Connection, flow: &str, status: FlowStatus) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO flows (name, status, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
    )?
    .execute(params![flow, status.encode(), now_millis()])?;
    Ok(())
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

/// Sets one transaction's state in the open write, with its queue's
/// bookkeeping (`queued`, `floor`); when `only_from` is given, only if it
/// is in that state. Whether it was set (`false`: no such transaction, or
/// in another state).
fn set_tx_state(
    ctx: &mut Ctx<'_>,
    integration: &str,
    seq: i64,
    to: TxState,
    error: Option<&str>,
    only_from: Option<TxState>,
) -> Result<bool> {
    let mut q = ctx.queue(integration)?;
    let from: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT state FROM transactions WHERE integration = ?1 AND seq = ?2")?
        .query_row(params![integration, seq], |r| r.get(0))
        .optional()?;
    let Some(from) = from else { return Ok(false) };
    if only_from.is_some_and(|state| state.code() != from) {
        return Ok(false);
    }
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
                ctx.raise_floor(integration, &mut q, seq)?;
            }
        }
        (false, true) => {
            q.queued += 1;
            q.floor = q.floor.min(seq - 1);
        }
        _ => return Ok(true),
    }
    ctx.set_queue(integration, q)?;
    Ok(true)
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
            audit::insert(ctx.conn, &audit)?;
            Ok(())
        })
        .await
    }

    async fn set_site_running(
        &self,
        lift: HoldKind,
        flows: Vec<(String, FlowStatus)>,
        audit: AuditEntry,
    ) -> Result<()> {
        self.write(move |ctx| {
            for (flow, status) in &flows {
                put_flow_status(ctx.conn, flow, *status)?;
            }
            ctx.conn
                .prepare_cached("DELETE FROM holds WHERE kind = ?1")?
                .execute([lift.as_str()])?;
            put_site_state(ctx.conn, SiteState::Running)?;
            audit::insert(ctx.conn, &audit)?;
            Ok(())
        })
        .await
    }

    async fn integration(&self, name: &str) -> Result<Option<IntegrationRecord>> {
        let name = name.to_string();
        self.read(move |conn| {
            // One snapshot: the state and its holds change together.
            let db = conn.unchecked_transaction()?;
            let state: Option<String> = db
                .prepare_cached("SELECT state FROM integrations WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            let Some(state) = state else { return Ok(None) };
            Ok(Some(IntegrationRecord {
                state: IntegrationState::parse(&state)
                    .ok_or_else(|| corrupt("integration state", &state))?,
                holds: holds_of(&db, &name)?.into_iter().collect(),
            }))
        })
        .await
    }

    async fn change_integration(
        &self,
        name: &str,
        change: IntegrationChange,
        audit: Option<AuditEntry>,
    ) -> Result<bool> {
        let name = name.to_string();
        self.write(move |ctx| {
            let conn = ctx.conn;
            if let Some(state) = change.state {
                conn.prepare_cached(
                    "INSERT INTO integrations (name, state, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                )?
                .execute(params![name, state.as_str(), now_millis()])?;
            }
            let mut removed = false;
            if let Some(kind) = change.remove {
                removed = conn
                    .prepare_cached("DELETE FROM holds WHERE integration = ?1 AND kind = ?2")?
                    .execute(params![name, kind.as_str()])?
                    > 0;
            }
            if let Some(hold) = &change.put {
                put_hold(conn, &name, hold)?;
            }
            if let Some(audit) = audit {
                audit::insert(conn, &audit)?;
            }
            Ok(removed)
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
        self.write(move |ctx| put_flow_status(ctx.conn, &flow, status))
            .await
    }

    async fn flow_statuses(&self) -> Result<Vec<(String, FlowStatus)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name, status FROM flows ORDER BY name")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (name, status) = row?;
                out.push((name, decode_status(&status)?));
            }
            Ok(out)
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
                "SELECT seq, flow, payload, attempts, key FROM transactions
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
                    key: r.get(4)?,
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

    async fn ack_sent(
        &self,
        integration: &str,
        first: i64,
        last: i64,
        links: Vec<Link>,
    ) -> Result<()> {
        let integration = integration.to_string();
        self.write_with(false, move |ctx| {
            let now = now_millis();
            for l in &links {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO links (flow, key, link, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (flow, key) DO UPDATE
                         SET link = excluded.link, updated_at = excluded.updated_at",
                    )?
                    .execute(params![l.flow, l.key, l.link, now])?;
            }
            let mut q = ctx.queue(&integration)?;
            let n = ctx
                .conn
                .prepare_cached(
                    "UPDATE transactions SET state = 2, updated_at = ?1
                     WHERE integration = ?2 AND seq BETWEEN ?3 AND ?4 AND state = 0",
                )?
                .execute(params![now, integration, first, last])?;
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
            set_tx_state(ctx, &integration, seq, to, error.as_deref(), None)?;
            Ok(())
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

    async fn queued_recently(
        &self,
        integration: &str,
        flow: &str,
        key: Option<&str>,
        payload: &str,
        within: i64,
    ) -> Result<bool> {
        let (integration, flow) = (integration.to_string(), flow.to_string());
        let (key, payload) = (key.map(str::to_string), payload.to_string());
        self.read(move |conn| {
            // The primary key's range from the last sequence number back.
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM transactions
                      WHERE integration = ?1
                        AND seq > (SELECT last_seq FROM queues WHERE integration = ?1) - ?5
                        AND flow = ?2 AND key IS ?3 AND payload = ?4)",
                )?
                .query_row(params![integration, flow, key, payload, within], |r| {
                    r.get(0)
                })?)
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
        Ok(self.counts.lock().get(integration).copied().unwrap_or(0))
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

    async fn finish_run(
        &self,
        run: i64,
        result: RunResult,
        error: Option<String>,
        flow: Option<(&str, FlowStatus)>,
    ) -> Result<()> {
        let flow = flow.map(|(name, status)| (name.to_string(), status));
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?1, result = ?2, error = ?3 WHERE id = ?4",
                )?
                .execute(params![now_millis(), result.as_str(), error, run])?;
            match flow {
                Some((name, status)) => put_flow_status(ctx.conn, &name, status),
                None => Ok(()),
            }
        })
        .await
    }

    async fn errors(&self, integration: &str, after: i64, limit: usize) -> Result<Vec<ErrorTx>> {
        let integration = integration.to_string();
        self.read(move |conn| {
            // `state = 3` (Error) matches the partial index transactions_error.
            let mut stmt = conn.prepare_cached(
                "SELECT seq, flow, updated_at, last_error FROM transactions
                  WHERE integration = ?1 AND state = 3 AND seq > ?2
                  ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![integration, after, limit_of(limit)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(ErrorTx {
                    seq: r.get(0)?,
                    flow: r.get(1)?,
                    updated_at: r.get(2)?,
                    last_error: r.get(3)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn settle_many_by_operator(
        &self,
        integration: &str,
        seqs: Vec<i64>,
        from: TxState,
        to: TxState,
    ) -> Result<usize> {
        if to == TxState::Sending {
            return Err(StoreError::Corrupt(
                "settle: Sending is never stored".to_string(),
            ));
        }
        let integration = integration.to_string();
        self.write(move |ctx| {
            let mut done = 0;
            for seq in seqs {
                if set_tx_state(ctx, &integration, seq, to, None, Some(from))? {
                    done += 1;
                }
            }
            Ok(done)
        })
        .await
    }

    async fn link(&self, flow: &str, key: &str) -> Result<Option<String>> {
        let (flow, key) = (flow.to_string(), key.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT link FROM links WHERE flow = ?1 AND key = ?2")?
                .query_row(params![flow, key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn links(
        &self,
        flow: &str,
        key: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>> {
        let flow = flow.to_string();
        let key = key.map(str::to_string);
        let after = after.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT flow, key, link, updated_at FROM links
                 WHERE flow = ?1 AND (?2 IS NULL OR key = ?2) AND (?3 IS NULL OR key > ?3)
                 ORDER BY key LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![flow, key, after, limit_of(limit)], |r| {
                Ok(Link {
                    flow: r.get(0)?,
                    key: r.get(1)?,
                    link: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            })?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?);
            }
            Ok(out)
        })
        .await
    }

    async fn set_link(&self, flow: &str, key: &str, link: &str) -> Result<()> {
        let (flow, key, link) = (flow.to_string(), key.to_string(), link.to_string());
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO links (flow, key, link, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (flow, key) DO UPDATE
                     SET link = excluded.link, updated_at = excluded.updated_at",
                )?
                .execute(params![flow, key, link, now_millis()])?;
            Ok(())
        })
        .await
    }

    async fn delete_link(&self, flow: &str, key: &str) -> Result<bool> {
        let (flow, key) = (flow.to_string(), key.to_string());
        self.write(move |ctx| {
            Ok(ctx
                .conn
                .prepare_cached("DELETE FROM links WHERE flow = ?1 AND key = ?2")?
                .execute(params![flow, key])?
                > 0)
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

    async fn close_abandoned_runs(&self, result: RunResult, error: &str) -> Result<usize> {
        let error = error.to_string();
        self.write(move |ctx| {
            let n = ctx
                .conn
                .prepare_cached(
                    "UPDATE runs SET finished_at = ?1, result = ?2, error = ?3
                     WHERE finished_at IS NULL",
                )?
                .execute(params![now_millis(), result.as_str(), error])?;
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
        self.write(move |ctx| Ok(audit::insert(ctx.conn, &entry)?))
            .await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| Ok(audit::newest(conn, limit)?)).await
    }

    async fn add_history(&self, at: Millis, rows: Vec<(String, Activity, i64)>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Not a delivery's record: it may wait for the next durable commit.
        self.write_with(false, move |ctx| {
            let mut add = ctx.conn.prepare_cached(
                "INSERT INTO history
                   (integration, at, span, queued, delivered, failed, retried, depth)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (integration, at, span) DO UPDATE SET
                   queued = queued + excluded.queued,
                   delivered = delivered + excluded.delivered,
                   failed = failed + excluded.failed,
                   retried = retried + excluded.retried,
                   depth = excluded.depth",
            )?;
            for (integration, c, depth) in &rows {
                add.execute(params![
                    integration,
                    at,
                    MINUTE,
                    c.queued,
                    c.delivered,
                    c.failed,
                    c.retried,
                    depth
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn history(&self, integration: Option<&str>, since: Millis) -> Result<Vec<HistoryRow>> {
        let integration = integration.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT integration, at, span, queued, delivered, failed, retried, depth
                   FROM history
                  WHERE at >= ?1 AND (?2 IS NULL OR integration = ?2)
                  ORDER BY at, integration",
            )?;
            let rows = stmt
                .query_map(params![since, integration], |r| {
                    Ok(HistoryRow {
                        integration: r.get(0)?,
                        at: r.get(1)?,
                        span: r.get(2)?,
                        counts: Activity {
                            queued: r.get(3)?,
                            delivered: r.get(4)?,
                            failed: r.get(5)?,
                            retried: r.get(6)?,
                        },
                        depth: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn roll_history(&self, hours_before: Millis, drop_before: Millis) -> Result<()> {
        self.write_with(false, move |ctx| {
            // SQLite takes the bare `depth` from the row of `max(at)`, the
            // hour's last minute; `WHERE true` parts the SELECT from the
            // upsert.
            ctx.conn
                .prepare_cached(
                    "INSERT INTO history
                       (integration, at, span, queued, delivered, failed, retried, depth)
                     SELECT integration, hour, ?2, q, d, f, r, depth
                       FROM (SELECT integration, at - at % ?2 AS hour, sum(queued) AS q,
                                    sum(delivered) AS d, sum(failed) AS f, sum(retried) AS r,
                                    max(at), depth
                               FROM history WHERE span = ?3 AND at < ?1
                              GROUP BY integration, hour)
                      WHERE true
                     ON CONFLICT (integration, at, span) DO UPDATE SET
                       queued = queued + excluded.queued,
                       delivered = delivered + excluded.delivered,
                       failed = failed + excluded.failed,
                       retried = retried + excluded.retried,
                       depth = excluded.depth",
                )?
                .execute(params![hours_before, HOUR, MINUTE])?;
            ctx.conn
                .prepare_cached("DELETE FROM history WHERE span = ?2 AND at < ?1")?
                .execute(params![hours_before, MINUTE])?;
            ctx.conn
                .prepare_cached("DELETE FROM history WHERE at < ?1")?
                .execute(params![drop_before])?;
            ctx.conn
                .prepare_cached("DELETE FROM hold_periods WHERE until < ?1")?
                .execute(params![drop_before])?;
            Ok(())
        })
        .await
    }

    async fn hold_periods(
        &self,
        integration: Option<&str>,
        since: Millis,
    ) -> Result<Vec<HoldPeriod>> {
        let integration = integration.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT integration, kind, placed_by, reason, since, until FROM hold_periods
                  WHERE (until IS NULL OR until >= ?1) AND (?2 IS NULL OR integration = ?2)
                  ORDER BY since, integration, kind",
            )?;
            let rows = stmt
                .query_map(params![since, integration], |r| {
                    let kind: String = r.get(1)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        kind,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(integration, kind, by, reason, since, until)| {
                    let kind = HoldKind::parse(&kind).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown hold kind '{kind}'"))
                    })?;
                    Ok(HoldPeriod {
                        integration,
                        hold: Hold {
                            kind,
                            by,
                            since,
                            reason,
                        },
                        until,
                    })
                })
                .collect()
        })
        .await
    }

    async fn open_alerts(&self) -> Result<Vec<OpenAlert>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT channel, key, condition, last_sent FROM alert_conditions
                  ORDER BY channel, key",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(OpenAlert {
                        channel: r.get(0)?,
                        key: r.get(1)?,
                        condition: r.get(2)?,
                        last_sent: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn open_alert(
        &self,
        channel: &str,
        key: &str,
        condition: &str,
        document: &str,
        now: Millis,
    ) -> Result<bool> {
        self.change_alert(
            "INSERT INTO alert_conditions (channel, key, condition, last_sent)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (channel, key) DO NOTHING",
            vec![text(channel), text(key), text(condition), now.into()],
            channel,
            document,
            now,
        )
        .await
    }

    async fn remind_alert(
        &self,
        channel: &str,
        key: &str,
        was: Millis,
        document: &str,
        now: Millis,
    ) -> Result<bool> {
        self.change_alert(
            "UPDATE alert_conditions SET last_sent = ?4
              WHERE channel = ?1 AND key = ?2 AND last_sent = ?3",
            vec![text(channel), text(key), was.into(), now.into()],
            channel,
            document,
            now,
        )
        .await
    }

    async fn close_alert(
        &self,
        channel: &str,
        key: &str,
        document: &str,
        now: Millis,
    ) -> Result<bool> {
        self.change_alert(
            "DELETE FROM alert_conditions WHERE channel = ?1 AND key = ?2",
            vec![text(channel), text(key)],
            channel,
            document,
            now,
        )
        .await
    }

    async fn due_alerts(
        &self,
        now: Millis,
        hold: Millis,
        limit: usize,
    ) -> Result<Vec<QueuedAlert>> {
        // Asked every second: a read says whether a write is needed at all.
        let any = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM alert_outbox WHERE next_at <= ?1)",
                    )?
                    .query_row([now], |r| r.get::<_, bool>(0))?)
            })
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(move |ctx| {
            let mut stmt = ctx.conn.prepare_cached(
                "UPDATE alert_outbox SET next_at = ?2
                  WHERE id IN (SELECT id FROM alert_outbox AS a WHERE next_at <= ?1
                                 AND NOT EXISTS (SELECT 1 FROM alert_outbox AS b
                                                  WHERE b.channel = a.channel AND b.id < a.id
                                                    AND b.next_at > ?1)
                                ORDER BY id LIMIT ?3)
                 RETURNING id, channel, document, attempts",
            )?;
            let mut due = stmt
                .query_map(params![now, now + hold, limit_of(limit)], |r| {
                    Ok(QueuedAlert {
                        id: r.get(0)?,
                        channel: r.get(1)?,
                        document: r.get(2)?,
                        attempts: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            due.sort_by_key(|a| a.id);
            Ok(due)
        })
        .await
    }

    async fn alert_sent(&self, id: i64, audit: AuditEntry) -> Result<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("DELETE FROM alert_outbox WHERE id = ?1")?
                .execute([id])?;
            audit::insert(ctx.conn, &audit)?;
            Ok(())
        })
        .await
    }

    async fn alert_failed(&self, id: i64, next_at: Millis, error: &str) -> Result<()> {
        let error = error.to_string();
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "UPDATE alert_outbox SET attempts = attempts + 1, next_at = ?2,
                            last_error = ?3
                      WHERE id = ?1",
                )?
                .execute(params![id, next_at, error])?;
            Ok(())
        })
        .await
    }

    async fn postpone_alert(&self, id: i64, next_at: Millis) -> Result<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("UPDATE alert_outbox SET next_at = ?2 WHERE id = ?1")?
                .execute(params![id, next_at])?;
            Ok(())
        })
        .await
    }

    fn space(&self) -> watch::Receiver<Space> {
        self.space.clone()
    }
}

/// A text parameter of a statement whose values are gathered first.
fn text(s: &str) -> rusqlite::types::Value {
    rusqlite::types::Value::Text(s.to_string())
}

/// Puts an alert in the outbox, due now.
fn queue_alert(
    conn: &Connection,
    channel: &str,
    document: &str,
    now: Millis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO alert_outbox (channel, document, queued_at, next_at) VALUES (?1, ?2, ?3, ?3)",
    )?
    .execute(params![channel, document, now])?;
    Ok(())
}

#[cfg(test)]
mod tests;
