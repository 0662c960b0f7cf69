//! The embedded store: one SQLite file per site.
//!
//! # Layout
//! `migrations/*.sql` create the tables, applied in order by
//! `PRAGMA user_version`. The queue is `transactions`, keyed and ordered by
//! `(integration, seq)` (a `WITHOUT ROWID` table, so the key is the row's
//! place on disk); `state` is [`TxState::code`]. `sequences` keeps the last
//! sequence number given out per integration, so none is ever reused.
//!
//! # Design constraints
//! - **One writer.** Every write goes to a dedicated OS thread that owns the
//!   write connection. It takes every write waiting in its channel and
//!   commits them in one SQLite transaction (group commit), each inside its
//!   own savepoint so that one failing write does not undo the others, and
//!   answers each caller after the commit. Writes are applied in the order
//!   they were sent.
//! - **Reads beside it.** Reads use a second connection (WAL lets it read
//!   the last commit while the writer writes) on tokio's blocking pool.
//! - **What is durable when.** A write's future resolves after its commit:
//!   with `synchronous = FULL` (the default) it survives power loss, with
//!   `NORMAL` a crash of the process. Acks of deliveries (`ack_sent`,
//!   `record_failure`) are committed without waiting for the disk when no
//!   other write shares their group: they survive a crash of the process,
//!   and a power cut can only make those transactions be sent again, with
//!   the same idempotency keys.
//! - **Counts.** `queued_count` is kept in memory: loaded with one query at
//!   open, moved by each committed write, so the API never counts a million
//!   rows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{
    AuditEntry, FlowRecord, IntegrationRecord, LogEntry, NewRecord, QueuedTx, Result, RunRecord,
    Store, StoreError, TxRecord,
};
use crate::model::{
    now_millis, FlowStatus, Hold, HoldKind, IntegrationState, Millis, RunMode, RunResult,
    SiteState, TxState,
};

const MIGRATIONS: [&str; 1] = [include_str!("migrations/001_init.sql")];

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// A commit survives power loss.
    #[default]
    Full,
    /// A commit survives a crash of the process.
    Normal,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
}

/// The pragmas every connection of the store runs with (a benchmark's
/// baseline uses exactly these).
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
    Ok(())
}

/// What the writer thread keeps between writes.
struct WriterState {
    /// Last sequence number given out, per integration (loaded lazily).
    last_seq: HashMap<String, i64>,
    /// Changes to queued counts made by the writes of the open transaction.
    count_delta: HashMap<String, i64>,
}

type Reply = Box<dyn FnOnce(Result<()>) + Send>;
type Work = Box<dyn FnOnce(&Connection, &mut WriterState) -> (bool, Reply) + Send>;

/// One write for the writer thread.
struct Job {
    /// Whether its commit must reach the disk before it is answered. Acks of
    /// deliveries need not: losing one to a power cut only sends those
    /// transactions again, with the same idempotency keys.
    durable: bool,
    work: Work,
}

pub struct SqliteStore {
    writer: Mutex<mpsc::Sender<Job>>,
    reader: Arc<Mutex<Connection>>,
    counts: Arc<Mutex<HashMap<String, i64>>>,
}

fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let conn = Connection::open(path)?;
    apply_pragmas(&conn, options)?;
    Ok(conn)
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
    let mut stmt = conn.prepare(
        "SELECT integration, COUNT(*) FROM transactions WHERE state = 0 GROUP BY integration",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = HashMap::new();
    for row in rows {
        let (k, v) = row?;
        counts.insert(k, v);
    }
    Ok(counts)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let mut write = open_connection(path, &options)?;
        migrate(&mut write)?;
        let read = open_connection(path, &options)?;
        let counts = Arc::new(Mutex::new(load_counts(&write)?));
        let (tx, rx) = mpsc::channel::<Job>();
        let published = counts.clone();
        std::thread::Builder::new()
            .name(format!(
                "sluice-store-{}",
                path.file_stem().and_then(|s| s.to_str()).unwrap_or("site")
            ))
            .spawn(move || writer_loop(write, rx, published, options))?;
        Ok(SqliteStore {
            writer: Mutex::new(tx),
            reader: Arc::new(Mutex::new(read)),
            counts,
        })
    }

    /// Runs `f` on the writer thread inside the next group commit; resolves
    /// after that commit, which is on disk.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut WriterState) -> Result<T> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// As [`SqliteStore::write`]; with `durable` false the commit may still
    /// be in the operating system's cache when it resolves (it survives a
    /// crash of the process, not a power cut). It becomes durable with the
    /// next durable commit.
    async fn write_with<T, F>(&self, durable: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut WriterState) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let work: Work = Box::new(move |conn, state| {
            let result = f(conn, state);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit: Result<()>| {
                let _gone = tx.send(commit.and(result));
            });
            (ok, reply)
        });
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job { durable, work })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the read connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// Largest number of writes committed together.
const MAX_GROUP: usize = 1024;

fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    counts: Arc<Mutex<HashMap<String, i64>>>,
    options: SqliteOptions,
) {
    let mut state = WriterState {
        last_seq: HashMap::new(),
        count_delta: HashMap::new(),
    };
    let full = options.synchronous == Synchronous::Full;
    let mut syncing_fully = full;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // A group of acks alone commits without waiting for the disk.
        let want_full = full && group.iter().any(|j| j.durable);
        if want_full != syncing_fully {
            let level = if want_full { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", level) {
                Ok(()) => syncing_fully = want_full,
                Err(e) => tracing::error!("store: cannot set synchronous={level}: {e}"),
            }
        }
        let mut replies = Vec::with_capacity(group.len());
        let begun = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = begun {
            let msg = e.to_string();
            for job in group {
                // Not run: answer each with the error.
                let (_, reply) = fail_job(job, &conn, &mut state);
                reply(Err(StoreError::Corrupt(format!(
                    "cannot begin a transaction: {msg}"
                ))));
            }
            continue;
        }
        for job in group {
            let saved = conn.execute_batch("SAVEPOINT job");
            let before = state.count_delta.clone();
            let (ok, reply) = (job.work)(&conn, &mut state);
            if saved.is_ok() {
                let end = if ok {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                };
                if let Err(e) = conn.execute_batch(end) {
                    tracing::error!("store: cannot end a savepoint: {e}");
                }
            }
            if !ok {
                state.count_delta = before;
            }
            replies.push(reply);
        }
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        match &committed {
            Ok(()) => {
                let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                for (k, d) in state.count_delta.drain() {
                    *c.entry(k).or_insert(0) += d;
                }
            }
            Err(_) => {
                let _rolled = conn.execute_batch("ROLLBACK");
                state.count_delta.clear();
                state.last_seq.clear();
            }
        }
        for reply in replies {
            reply(match &committed {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Corrupt(format!("commit failed: {e}"))),
            });
        }
    }
}

/// Runs nothing of `job` but lets it build its reply (it is answered with an
/// error by the caller). The job closure must be consumed to get its reply,
/// so it runs inside a savepoint that is rolled back.
fn fail_job(job: Job, conn: &Connection, state: &mut WriterState) -> (bool, Reply) {
    let saved = conn.execute_batch("SAVEPOINT failed");
    let out = (job.work)(conn, state);
    if saved.is_ok() {
        let _undone = conn.execute_batch("ROLLBACK TO failed; RELEASE failed");
    }
    state.count_delta.clear();
    out
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} '{value}' in the data file"))
}

fn last_seq(conn: &Connection, state: &mut WriterState, integration: &str) -> Result<i64> {
    if let Some(seq) = state.last_seq.get(integration) {
        return Ok(*seq);
    }
    let kept: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM sequences WHERE integration = ?1")?
        .query_row([integration], |r| r.get(0))
        .optional()?;
    let max: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM transactions WHERE integration = ?1")?
        .query_row([integration], |r| r.get(0))?;
    let seq = kept.unwrap_or(0).max(max);
    state.last_seq.insert(integration.to_string(), seq);
    Ok(seq)
}

fn add_count(state: &mut WriterState, integration: &str, delta: i64) {
    if delta != 0 {
        *state
            .count_delta
            .entry(integration.to_string())
            .or_insert(0) += delta;
    }
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

const TX_COLUMNS: &str =
    "seq, flow, key, state, created_at, updated_at, attempts, last_error, payload";

type TxRow = (
    i64,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    String,
);

fn tx_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TxRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn tx_record(row: TxRow) -> Result<TxRecord> {
    let (seq, flow, key, code, created_at, updated_at, attempts, last_error, payload) = row;
    let state =
        TxState::from_code(code).ok_or_else(|| corrupt("transaction state", &code.to_string()))?;
    let record = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
    Ok(TxRecord {
        seq,
        flow,
        key,
        state,
        created_at,
        updated_at,
        attempts,
        last_error,
        record,
    })
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRecord, String, Option<String>)> {
    Ok((
        RunRecord {
            id: r.get(0)?,
            flow: r.get(1)?,
            mode: RunMode::All,
            started_at: r.get(3)?,
            finished_at: r.get(4)?,
            result: None,
            captured: r.get(6)?,
            error: r.get(7)?,
        },
        r.get::<_, String>(2)?,
        r.get::<_, Option<String>>(5)?,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn site_state(&self) -> Result<Option<SiteState>> {
        self.read(|conn| {
            let state: Option<String> = conn
                .query_row("SELECT state FROM site WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            state
                .map(|s| SiteState::parse(&s).ok_or_else(|| corrupt("site state", &s)))
                .transpose()
        })
        .await
    }

    async fn set_site_state(&self, state: SiteState) -> Result<()> {
        self.write(move |conn, _| {
            conn.execute(
                "INSERT INTO site (id, state, updated_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                params![state.as_str(), now_millis()],
            )?;
            Ok(())
        })
        .await
    }

    async fn integration(&self, name: &str) -> Result<Option<IntegrationRecord>> {
        let name = name.to_string();
        self.read(move |conn| {
            let state: Option<String> = conn
                .prepare_cached("SELECT state FROM integrations WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            let Some(state) = state else { return Ok(None) };
            Ok(Some(IntegrationRecord {
                state: IntegrationState::parse(&state)
                    .ok_or_else(|| corrupt("integration state", &state))?,
                holds: holds_of(conn, &name)?,
            }))
        })
        .await
    }

    async fn set_integration_state(
        &self,
        name: &str,
        state: IntegrationState,
        hold: Option<Hold>,
    ) -> Result<()> {
        let name = name.to_string();
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO integrations (name, state, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )?
            .execute(params![name, state.as_str(), now_millis()])?;
            conn.prepare_cached("DELETE FROM holds WHERE integration = ?1 AND kind = ?2")?
                .execute(params![name, HoldKind::Operator.as_str()])?;
            if let (IntegrationState::Paused, Some(hold)) = (state, hold) {
                put_hold(conn, &name, &hold)?;
            }
            Ok(())
        })
        .await
    }

    async fn add_hold(&self, integration: &str, hold: Hold) -> Result<()> {
        let integration = integration.to_string();
        self.write(move |conn, _| put_hold(conn, &integration, &hold))
            .await
    }

    async fn remove_hold(&self, integration: &str, kind: HoldKind) -> Result<bool> {
        let integration = integration.to_string();
        self.write(move |conn, _| {
            let n = conn
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
                    status: FlowStatus::decode(&status)
                        .ok_or_else(|| corrupt("flow status", &status))?,
                    checkpoint,
                },
            })
        })
        .await
    }

    async fn set_flow_status(&self, flow: &str, status: FlowStatus) -> Result<()> {
        let flow = flow.to_string();
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO flows (name, status, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            )?
            .execute(params![flow, status.encode(), now_millis()])?;
            Ok(())
        })
        .await
    }

    async fn reset_flow_statuses(&self) -> Result<Vec<(String, FlowStatus)>> {
        self.write(|conn, _| {
            let mut pending = Vec::new();
            {
                let mut stmt = conn.prepare(
                    "SELECT name, status FROM flows WHERE status LIKE 'Pending%' ORDER BY name",
                )?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (name, status) = row?;
                    let status = FlowStatus::decode(&status)
                        .ok_or_else(|| corrupt("flow status", &status))?;
                    pending.push((name, status));
                }
            }
            conn.execute(
                "UPDATE flows SET status = '', updated_at = ?1 WHERE status <> ''",
                [now_millis()],
            )?;
            Ok(pending)
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
        self.write(move |conn, state| {
            let now = now_millis();
            let mut range = None;
            if !records.is_empty() {
                let last = last_seq(conn, state, &integration)?;
                let mut insert = conn.prepare_cached(
                    "INSERT INTO transactions (integration, seq, flow, key, payload, state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)",
                )?;
                let mut seq = last;
                for record in &records {
                    seq += 1;
                    insert.execute(params![integration, seq, flow, record.key, record.payload, now])?;
                }
                conn.prepare_cached(
                    "INSERT INTO sequences (integration, last_seq) VALUES (?1, ?2)
                     ON CONFLICT (integration) DO UPDATE SET last_seq = excluded.last_seq",
                )?
                .execute(params![integration, seq])?;
                state.last_seq.insert(integration.clone(), seq);
                add_count(state, &integration, records.len() as i64);
                range = Some((last + 1, seq));
            }
            if let Some(checkpoint) = checkpoint {
                conn.prepare_cached(
                    "INSERT INTO flows (name, status, checkpoint, updated_at) VALUES (?1, '', ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                )?
                .execute(params![flow, checkpoint, now])?;
            }
            if let (Some(run), false) = (run, records.is_empty()) {
                conn.prepare_cached("UPDATE runs SET captured = captured + ?1 WHERE id = ?2")?
                    .execute(params![records.len() as i64, run])?;
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
            let mut stmt = conn.prepare_cached(
                "SELECT seq, flow, payload, attempts FROM transactions
                 WHERE integration = ?1 AND seq > ?2 AND state = 0 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![integration, after, limit as i64], |r| {
                Ok(QueuedTx {
                    seq: r.get(0)?,
                    flow: r.get(1)?,
                    payload: r.get(2)?,
                    attempts: r.get(3)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from)
        })
        .await
    }

    async fn ack_sent(&self, integration: &str, first: i64, last: i64) -> Result<()> {
        let integration = integration.to_string();
        self.write_with(false, move |conn, state| {
            let n = conn
                .prepare_cached(
                    "UPDATE transactions SET state = 2, updated_at = ?1
                     WHERE integration = ?2 AND seq BETWEEN ?3 AND ?4 AND state = 0",
                )?
                .execute(params![now_millis(), integration, first, last])?;
            add_count(state, &integration, -(n as i64));
            Ok(())
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
        let integration = integration.to_string();
        self.write(move |conn, state| {
            if to == TxState::Sending {
                return Err(StoreError::Corrupt("Sending is never stored".into()));
            }
            let from: Option<i64> = conn
                .prepare_cached("SELECT state FROM transactions WHERE integration = ?1 AND seq = ?2")?
                .query_row(params![integration, seq], |r| r.get(0))
                .optional()?;
            let Some(from) = from else { return Ok(()) };
            conn.prepare_cached(
                "UPDATE transactions SET state = ?1, last_error = COALESCE(?2, last_error), updated_at = ?3
                 WHERE integration = ?4 AND seq = ?5",
            )?
            .execute(params![to.code(), error, now_millis(), integration, seq])?;
            let queued = TxState::Queued.code();
            let delta = i64::from(to.code() == queued) - i64::from(from == queued);
            add_count(state, &integration, delta);
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
        self.write_with(false, move |conn, _| {
            conn.prepare_cached(
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
            let mut rows = stmt.query_map(params![integration, seq], tx_row)?;
            rows.next().transpose()?.map(tx_record).transpose()
        })
        .await
    }

    async fn prune(&self, before: Millis) -> Result<usize> {
        self.write(move |conn, _| {
            let n = conn.execute(
                "DELETE FROM transactions WHERE state IN (2, 4) AND updated_at < ?1",
                [before],
            )?;
            Ok(n)
        })
        .await
    }

    async fn queued_count(&self, integration: &str) -> Result<i64> {
        Ok(*self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(integration)
            .unwrap_or(&0))
    }

    async fn transactions(
        &self,
        integration: &str,
        state: Option<TxState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<TxRecord>> {
        let integration = integration.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TX_COLUMNS} FROM transactions
                 WHERE integration = ?1 AND seq < ?2 AND (?3 IS NULL OR state = ?3)
                 ORDER BY seq DESC LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![
                    integration,
                    before.unwrap_or(i64::MAX),
                    state.map(TxState::code),
                    limit as i64
                ],
                tx_row,
            )?;
            rows.map(|row| tx_record(row?)).collect()
        })
        .await
    }

    async fn start_run(&self, flow: &str, mode: RunMode) -> Result<i64> {
        let flow = flow.to_string();
        self.write(move |conn, _| {
            conn.prepare_cached("INSERT INTO runs (flow, mode, started_at) VALUES (?1, ?2, ?3)")?
                .execute(params![flow, mode.as_str(), now_millis()])?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn finish_run(&self, run: i64, result: RunResult, error: Option<String>) -> Result<()> {
        self.write(move |conn, _| {
            conn.prepare_cached(
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
                "SELECT id, flow, mode, started_at, finished_at, result, captured, error
                 FROM runs WHERE flow = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![flow, limit as i64], run_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (mut run, mode, result) = row?;
                run.mode = RunMode::parse(&mode).ok_or_else(|| corrupt("run mode", &mode))?;
                run.result = result
                    .map(|r| RunResult::parse(&r).ok_or_else(|| corrupt("run result", &r)))
                    .transpose()?;
                out.push(run);
            }
            Ok(out)
        })
        .await
    }

    async fn close_abandoned_runs(&self) -> Result<usize> {
        self.write(|conn, _| {
            let n = conn.execute(
                "UPDATE runs SET finished_at = ?1, result = 'halted',
                   error = 'the daemon stopped during the run'
                 WHERE finished_at IS NULL",
                [now_millis()],
            )?;
            Ok(n)
        })
        .await
    }

    async fn append_log(&self, ts: Millis, level: u8, message: &str) -> Result<i64> {
        let message = message.to_string();
        self.write(move |conn, _| {
            conn.prepare_cached("INSERT INTO log (ts, level, message) VALUES (?1, ?2, ?3)")?
                .execute(params![ts, level, message])?;
            Ok(conn.last_insert_rowid())
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
            let mut stmt = conn.prepare_cached(
                "SELECT id, ts, level, message FROM log
                 WHERE id > ?1 AND ts >= ?2 AND level <= ?3
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![after, since.unwrap_or(i64::MIN), max_level, limit as i64],
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
        self.write(move |conn, _| {
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
        })
        .await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, ts, actor, action, subject, reason, outcome FROM audit
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    subject: r.get(4)?,
                    reason: r.get(5)?,
                    outcome: r.get(6)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn states_holds_checkpoints_and_sequences_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.site_state().await.unwrap(), None);
            s.set_site_state(SiteState::Stopped).await.unwrap();
            s.set_integration_state(
                "a",
                IntegrationState::Paused,
                Some(hold(HoldKind::Operator)),
            )
            .await
            .unwrap();
            s.add_hold("a", hold(HoldKind::SiteStopped)).await.unwrap();
            s.set_flow_status("f", FlowStatus::Pending(RunMode::Changed))
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
        let a = s.integration("a").await.unwrap().unwrap();
        assert_eq!(a.state, IntegrationState::Paused);
        let kinds: Vec<_> = a.holds.iter().map(|h| h.kind).collect();
        assert!(kinds.contains(&HoldKind::Operator) && kinds.contains(&HoldKind::SiteStopped));
        let f = s.flow("f").await.unwrap();
        assert_eq!(f.status, FlowStatus::Pending(RunMode::Changed));
        assert_eq!(f.checkpoint.as_deref(), Some("\"x\""));
        assert_eq!(s.queued_count("a").await.unwrap(), 3);
        assert_eq!(
            s.enqueue("a", "f", records(3, 2), None, None)
                .await
                .unwrap(),
            Some((4, 5))
        );
        // Resuming removes the operator hold, not the system's.
        s.set_integration_state("a", IntegrationState::Active, None)
            .await
            .unwrap();
        let a = s.integration("a").await.unwrap().unwrap();
        assert_eq!(a.holds.len(), 1);
        assert_eq!(a.holds[0].kind, HoldKind::SiteStopped);
        assert!(s.remove_hold("a", HoldKind::SiteStopped).await.unwrap());
        assert!(!s.remove_hold("a", HoldKind::SiteStopped).await.unwrap());
        // Pending statuses are returned once, and every status is blanked.
        let pending = s.reset_flow_statuses().await.unwrap();
        assert_eq!(
            pending,
            vec![("f".to_string(), FlowStatus::Pending(RunMode::Changed))]
        );
        assert_eq!(s.flow("f").await.unwrap().status, FlowStatus::Blank);
    }

    #[tokio::test]
    async fn concurrent_enqueues_get_distinct_contiguous_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&dir.path().join("site.db")).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.enqueue("a", "f", records(t * 10, 10), None, None)
                    .await
                    .unwrap()
                    .unwrap()
            }));
        }
        let mut ranges = Vec::new();
        for t in tasks {
            ranges.push(t.await.unwrap());
        }
        ranges.sort();
        for (i, (first, last)) in ranges.iter().enumerate() {
            assert_eq!(*first, i as i64 * 10 + 1);
            assert_eq!(*last, first + 9);
        }
        // Each caller's records are contiguous and in their order.
        let batch = s.next_batch("a", 0, 1000).await.unwrap();
        assert_eq!(batch.len(), 160);
        for chunk in batch.chunks(10) {
            let ns: Vec<i64> = chunk
                .iter()
                .map(|t| {
                    serde_json::from_str::<serde_json::Value>(&t.payload).unwrap()["n"]
                        .as_i64()
                        .unwrap()
                })
                .collect();
            assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "{ns:?}");
        }
        assert_eq!(s.queued_count("a").await.unwrap(), 160);
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
        assert_eq!(s.flow("f").await.unwrap().checkpoint.as_deref(), Some("6"));
        let runs = s.runs("f", 5).await.unwrap();
        assert_eq!(runs[0].captured, 6);
        assert_eq!(runs[0].result, None);
        // A run left open by a crash is closed as halted.
        assert_eq!(s.close_abandoned_runs().await.unwrap(), 1);
        assert_eq!(
            s.runs("f", 1).await.unwrap()[0].result,
            Some(RunResult::Halted)
        );
        s.finish_run(run, RunResult::Success, None).await.unwrap();
        assert_eq!(
            s.runs("f", 1).await.unwrap()[0].result,
            Some(RunResult::Success)
        );
    }

    #[tokio::test]
    async fn ack_settle_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("site.db")).unwrap();
        s.enqueue("a", "f", records(0, 5), None, None)
            .await
            .unwrap();
        s.record_failure("a", 1, 2, "503 busy").await.unwrap();
        s.ack_sent("a", 1, 2).await.unwrap();
        s.settle("a", 3, TxState::Error, Some("422 no".into()))
            .await
            .unwrap();
        assert_eq!(s.queued_count("a").await.unwrap(), 2);
        let next: Vec<i64> = s
            .next_batch("a", 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|t| t.seq)
            .collect();
        assert_eq!(next, [4, 5]);
        let errors = s
            .transactions("a", Some(TxState::Error), None, 10)
            .await
            .unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].last_error.as_deref(), Some("422 no"));
        let all = s.transactions("a", None, None, 10).await.unwrap();
        let seqs: Vec<i64> = all.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, [5, 4, 3, 2, 1]);
        assert_eq!(all[4].attempts, 1);
        assert_eq!(all[4].state, TxState::Sent);
        assert_eq!(all[0].record, serde_json::json!({"n": 4}));
        // Back to queued (a retry) counts again.
        s.settle("a", 3, TxState::Queued, None).await.unwrap();
        assert_eq!(s.queued_count("a").await.unwrap(), 3);
        // Pruning takes only what was sent (or ignored), and seqs go on.
        s.settle("a", 4, TxState::Ignored, None).await.unwrap();
        assert_eq!(s.prune(now_millis() + 1).await.unwrap(), 3);
        let left: Vec<i64> = s
            .transactions("a", None, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|t| t.seq)
            .collect();
        assert_eq!(left, [5, 3]);
        drop(s);
        let s = SqliteStore::open(&dir.path().join("site.db")).unwrap();
        assert_eq!(
            s.enqueue("a", "f", records(9, 1), None, None)
                .await
                .unwrap(),
            Some((6, 6))
        );
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
        let newest = s.log(0, None, 9, 3).await.unwrap();
        let msgs: Vec<_> = newest.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["line 7", "line 8", "line 9"]);
        assert!(s
            .log(0, None, 4, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.level <= 4));
        assert_eq!(s.log(0, Some(5000), 9, 100).await.unwrap().len(), 5);
        assert_eq!(s.log(all[8].id, None, 9, 100).await.unwrap().len(), 1);
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
        assert_eq!(audit[0].action, "site.start");
        assert_eq!(audit[1].reason.as_deref(), Some("stocktake"));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Debug, Clone)]
        enum Op {
            Enqueue { b: bool, n: usize },
            Deliver { b: bool, n: usize },
            Reject { b: bool },
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (any::<bool>(), 0..20usize).prop_map(|(b, n)| Op::Enqueue { b, n }),
                (any::<bool>(), 1..30usize).prop_map(|(b, n)| Op::Deliver { b, n }),
                any::<bool>().prop_map(|b| Op::Reject { b }),
                Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
            /// Random enqueues, deliveries, rejections and crashes against a
            /// queue per integration kept in memory.
            #[test]
            fn the_queue_matches_a_simple_model(ops in proptest::collection::vec(op(), 1..40)) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("site.db");
                    let mut store = SqliteStore::open(&path).unwrap();
                    let mut model: [VecDeque<i64>; 2] = [VecDeque::new(), VecDeque::new()];
                    let mut next = [1i64, 1];
                    let name = |b: bool| if b { "b" } else { "a" };
                    for op in ops {
                        match op {
                            Op::Enqueue { b, n } => {
                                let got = store.enqueue(name(b), "f", records(0, n), None, None).await.unwrap();
                                let i = usize::from(b);
                                if n == 0 {
                                    assert_eq!(got, None);
                                } else {
                                    assert_eq!(got, Some((next[i], next[i] + n as i64 - 1)));
                                    for _ in 0..n { model[i].push_back(next[i]); next[i] += 1; }
                                }
                            }
                            Op::Deliver { b, n } => {
                                let i = usize::from(b);
                                let batch = store.next_batch(name(b), 0, n).await.unwrap();
                                if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
                                    store.ack_sent(name(b), first.seq, last.seq).await.unwrap();
                                }
                                for _ in 0..batch.len() { model[i].pop_front(); }
                            }
                            Op::Reject { b } => {
                                let i = usize::from(b);
                                if let Some(seq) = model[i].pop_front() {
                                    store.settle(name(b), seq, TxState::Error, Some("no".into())).await.unwrap();
                                }
                            }
                            Op::Reopen => {
                                drop(store);
                                store = SqliteStore::open(&path).unwrap();
                            }
                        }
                        for b in [false, true] {
                            let i = usize::from(b);
                            let pending: Vec<i64> = store.next_batch(name(b), 0, 10_000).await.unwrap().iter().map(|t| t.seq).collect();
                            assert_eq!(pending, Vec::from(model[i].clone()));
                            assert_eq!(store.queued_count(name(b)).await.unwrap(), model[i].len() as i64);
                        }
                    }
                });
            }
        }
    }
}
