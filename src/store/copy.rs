//! `sluice store copy`: a stopped site's SQLite data file into the
//! PostgreSQL store, so that a site moves from one node to a shared
//! database without losing a queued record.
//!
//! # Design constraints
//! - **Nothing moves meanwhile.** The copy takes the data directory's lock
//!   ([`Lock::take`]) before it reads anything, so a daemon running on the
//!   site makes it fail, and no daemon starts while it reads. The site must
//!   have been left Stopped: a site left Running would start (and deliver)
//!   on whichever store a daemon opens first.
//! - **The source is read, never written.** The file is brought up to this
//!   sluice's schema by [`SqliteStore::open`] (its migrations, nothing
//!   else), then read on read-only connections.
//! - **All or nothing, never a merge.** Everything is written in ONE
//!   PostgreSQL transaction, which first looks for any row of the site in
//!   every `sluice_*` table that has a `site` column (tables of later
//!   migrations too) and refuses if there is one. Two copies of one site at
//!   once wait for each other on the site log's advisory lock (the one
//!   [`PgStore`]'s appends take), and the second then finds the first's
//!   rows.
//! - **Order and numbers.** Sequence numbers are copied as they are, and
//!   `last_seq` is the highest ever given out: SQLite's `queues.last_seq`,
//!   which outlives pruned transactions (or the highest seq stored, were it
//!   ever lower), so a number is never given out twice. Runs, log lines and
//!   audit entries take new ids from PostgreSQL's identities, shared by all
//!   sites: they are written in their old id order, so the new ids keep it
//!   and a log reader following `id > after` reads them in order.
//! - **Memory.** Each table is read on a blocking thread, [`CHUNK`] rows at
//!   a time, through a channel of [`CHUNKS_AHEAD`] chunks, and written by
//!   binary `COPY`: memory does not grow with the queue.
//! - **Bad data.** A state, kind, mode or status this sluice does not know
//!   stops the copy before anything is committed: it would be
//!   [`StoreError::Corrupt`] in PostgreSQL as in SQLite.
//! - **Secrets.** The URL's password is in no message: errors of the
//!   server or the connection go through `redact::urls_in`.

use std::path::{Path, PathBuf};
use std::pin::pin;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use super::{PgStore, SqliteStore, Store, StoreError};
use crate::data_dir::{Lock, LockError};
use crate::model::{
    now_millis, FlowStatus, HoldKind, IntegrationState, RunMode, RunResult, SiteState, TxState,
};

/// Rows read from the data file at a time.
const CHUNK: usize = 1000;

/// Chunks read ahead of the one being written.
const CHUNKS_AHEAD: usize = 4;

/// The audit entry the copy adds to the copied site.
pub const AUDIT_ACTION: &str = "store.copy";

/// Why a site was not copied. Nothing was written in PostgreSQL but,
/// possibly, its schema.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the data directory {} is in use by a running sluice daemon{}: stop the site \
         (sluice site stop {site} --reason TEXT), then stop the daemon, and copy again",
        dir.display(),
        match pid { Some(pid) => format!(" (PID {pid})"), None => String::new() }
    )]
    DaemonRunning {
        site: String,
        dir: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot lock the data directory: {0}")]
    Lock(LockError),
    #[error("site {site} has no data file at {}: nothing to copy", file.display())]
    NoDataFile { site: String, file: PathBuf },
    #[error(
        "site {site} is {}: stop it first: sluice site stop {site} --reason TEXT",
        match state {
            Some(s) => format!("{}, not stopped", s.as_str()),
            None => "not stopped (it never ran)".to_string(),
        }
    )]
    NotStopped {
        site: String,
        state: Option<SiteState>,
    },
    #[error(
        "PostgreSQL already holds rows of site {site} (in {}): a copy never merges; nothing was \
         copied",
        tables.join(", ")
    )]
    AlreadyThere { site: String, tables: Vec<String> },
    #[error("cannot read the data file {}: {source}", file.display())]
    Source { file: PathBuf, source: StoreError },
    #[error("{0}")]
    Target(StoreError),
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> CopyError {
        CopyError::Target(e.into())
    }
}

/// What a copy wrote, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Copied {
    pub site: String,
    pub transactions: u64,
    pub queued: u64,
    pub sent: u64,
    pub error: u64,
    pub ignored: u64,
    /// Integrations with a sequence (that ever queued).
    pub sequences: u64,
    pub integrations: u64,
    pub holds: u64,
    pub flows: u64,
    pub runs: u64,
    pub links: u64,
    pub log_lines: u64,
    /// Without the copy's own entry.
    pub audit_entries: u64,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |count: u64, one: &str, many: &str| match count {
            1 => format!("1 {one}"),
            _ => format!("{count} {many}"),
        };
        write!(
            f,
            "copied site {}: {} ({} queued, {} sent, {} error, {} ignored), {}, {}, {}, {}, \
             {}, {}, {}, {}",
            self.site,
            n(self.transactions, "transaction", "transactions"),
            self.queued,
            self.sent,
            self.error,
            self.ignored,
            n(self.sequences, "sequence", "sequences"),
            n(self.integrations, "integration state", "integration states"),
            n(self.holds, "hold", "holds"),
            n(self.flows, "flow", "flows"),
            n(self.runs, "run", "runs"),
            n(self.links, "link", "links"),
            n(self.log_lines, "log line", "log lines"),
            n(self.audit_entries, "audit entry", "audit entries"),
        )
    }
}

/// Where the site's data is: the data directory (for its lock) and the
/// site's SQLite file.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub site: &'a str,
    pub data_dir: &'a Path,
    pub data_file: &'a Path,
}

/// Copies the site's data file into the PostgreSQL database at `url`, in
/// one transaction, and adds the audit entry [`AUDIT_ACTION`] by `actor`.
pub async fn to_postgres(source: Source<'_>, url: &str, actor: &str) -> Result<Copied, CopyError> {
    let site = source.site.to_string();
    let file = source.data_file.to_path_buf();
    if !file.is_file() {
        return Err(CopyError::NoDataFile { site, file });
    }
    let _lock = Lock::take(source.data_dir).map_err(|e| match e {
        LockError::Held { dir, pid } => CopyError::DaemonRunning {
            site: site.clone(),
            dir,
            pid,
        },
        other => CopyError::Lock(other),
    })?;
    let in_file = |source| CopyError::Source {
        file: file.clone(),
        source,
    };
    // Its migrations, and the state through the store's own reading; kept
    // open to the end so that the file's WAL stays for the readers.
    let sqlite = SqliteStore::open(&file).map_err(in_file)?;
    match sqlite.site_state().await.map_err(in_file)? {
        Some(SiteState::Stopped) => {}
        state => return Err(CopyError::NotStopped { site, state }),
    }

    // The schema, as a daemon would make it.
    drop(PgStore::open(url, &site).await.map_err(CopyError::Target)?);
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| at_server(url, e))?;
    let connection = tokio::spawn(connection);
    let copied = copy(&mut client, &site, &file, actor).await;
    drop(client);
    // The connection ends with its client; its error, if any, was the
    // copy's too.
    connection.await.ok();
    drop(sqlite);
    copied
}

async fn copy(
    client: &mut tokio_postgres::Client,
    site: &str,
    file: &Path,
    actor: &str,
) -> Result<Copied, CopyError> {
    let db = client.transaction().await?;
    db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('sluice_log/' || $1, 0))",
        &[&site],
    )
    .await?;
    let tables = tables_holding(&db, site).await?;
    if !tables.is_empty() {
        return Err(CopyError::AlreadyThere {
            site: site.to_string(),
            tables,
        });
    }
    let mut c = Copied {
        site: site.to_string(),
        ..Copied::default()
    };
    // One row: its state was read as Stopped.
    copy_rows::<SiteRow>(&db, file, site, |_| {}).await?;
    c.integrations = copy_rows::<IntegrationRow>(&db, file, site, |_| {}).await?;
    c.holds = copy_rows::<HoldRow>(&db, file, site, |_| {}).await?;
    c.flows = copy_rows::<FlowRow>(&db, file, site, |_| {}).await?;
    c.sequences = copy_rows::<SequenceRow>(&db, file, site, |_| {}).await?;
    let (mut queued, mut sent, mut error, mut ignored) = (0, 0, 0, 0);
    c.transactions = copy_rows::<TxRow>(&db, file, site, |t| match t.state {
        TxState::Queued => queued += 1,
        // Refused when read.
        TxState::Sending => {}
        TxState::Sent => sent += 1,
        TxState::Error => error += 1,
        TxState::Ignored => ignored += 1,
    })
    .await?;
    (c.queued, c.sent, c.error, c.ignored) = (queued, sent, error, ignored);
    c.runs = copy_rows::<RunRow>(&db, file, site, |_| {}).await?;
    c.links = copy_rows::<LinkRow>(&db, file, site, |_| {}).await?;
    c.log_lines = copy_rows::<LogRow>(&db, file, site, |_| {}).await?;
    c.audit_entries = copy_rows::<AuditRow>(&db, file, site, |_| {}).await?;
    let reason = format!(
        "copied from the SQLite file {}: {} transactions",
        file.display(),
        c.transactions
    );
    db.execute(
        "INSERT INTO sluice_audit (site, ts, actor, action, subject, reason, outcome)
         VALUES ($1, $2, $3, $4, $1, $5, 'ok')",
        &[&site, &now_millis(), &actor, &AUDIT_ACTION, &reason],
    )
    .await?;
    db.commit().await?;
    Ok(c)
}

/// An error of reaching the server, naming it (without the password).
fn at_server(url: &str, e: tokio_postgres::Error) -> CopyError {
    let said = match StoreError::from(e) {
        StoreError::Postgres(text) => text,
        other => other.to_string(),
    };
    CopyError::Target(StoreError::Postgres(format!(
        "{}: {said}",
        crate::redact::url(url)
    )))
}

/// The `sluice_*` tables (with a `site` column) that hold a row of `site`.
async fn tables_holding(
    db: &tokio_postgres::Transaction<'_>,
    site: &str,
) -> Result<Vec<String>, CopyError> {
    let rows = db
        .query(
            "SELECT table_name::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND column_name = 'site'
                AND table_name LIKE 'sluice\\_%'
              ORDER BY table_name",
            &[],
        )
        .await?;
    let mut holding = Vec::new();
    for row in rows {
        let table: String = row.try_get(0)?;
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let found: bool = db
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {quoted} WHERE site = $1)"),
                &[&site],
            )
            .await?
            .try_get(0)?;
        if found {
            holding.push(table);
        }
    }
    Ok(holding)
}

/// One table's rows: how they are read from the data file and written into
/// PostgreSQL.
trait Rows: Sized + Send + 'static {
    /// What is read, in the order written.
    const SELECT: &'static str;
    /// The table and its columns, `site` first.
    const INTO: &'static str;
    /// The columns' types, as `INTO` lists them.
    const TYPES: &'static [Type];
    /// A row as read, checked.
    fn read(row: &rusqlite::Row<'_>) -> super::Result<Self>;
    /// Its values, as `INTO` lists them.
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)>;
}

/// Copies `T`'s rows by one binary `COPY`; `tally` sees each. How many.
async fn copy_rows<T: Rows>(
    db: &tokio_postgres::Transaction<'_>,
    file: &Path,
    site: &str,
    mut tally: impl FnMut(&T),
) -> Result<u64, CopyError> {
    let (mut chunks, reader) = read_rows::<T>(file.to_path_buf());
    let sink = db
        .copy_in(&format!("COPY {} FROM STDIN (FORMAT binary)", T::INTO))
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, T::TYPES));
    let mut n = 0;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.map_err(|source| CopyError::Source {
            file: file.to_path_buf(),
            source,
        })?;
        for row in &chunk {
            writer.as_mut().write(&row.values(&site)).await?;
            tally(row);
            n += 1;
        }
    }
    // The channel also closes when the reader panics: that is no end of
    // the table.
    reader.await.map_err(|e| CopyError::Source {
        file: file.to_path_buf(),
        source: StoreError::Io(std::io::Error::other(format!("the reader failed: {e}"))),
    })?;
    writer.as_mut().finish().await?;
    Ok(n)
}

/// `T`'s rows, read on a blocking thread a chunk at a time, and that
/// thread. It stops when the receiver is dropped (the copy gave up).
fn read_rows<T: Rows>(
    file: PathBuf,
) -> (
    mpsc::Receiver<super::Result<Vec<T>>>,
    tokio::task::JoinHandle<()>,
) {
    let (chunks, rx) = mpsc::channel(CHUNKS_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = send_rows(&file, &chunks) {
            // Unless the copy gave up already.
            chunks.blocking_send(Err(e)).ok();
        }
    });
    (rx, reader)
}

fn send_rows<T: Rows>(
    file: &Path,
    chunks: &mpsc::Sender<super::Result<Vec<T>>>,
) -> super::Result<()> {
    let conn = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare(T::SELECT)?;
    let mut rows = stmt.query([])?;
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.next()? {
        chunk.push(T::read(row)?);
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if chunks.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        chunks.blocking_send(Ok(chunk)).ok();
    }
    Ok(())
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} '{value}'"))
}

/// `value` if `parses` (the model's parser) knows it: a value this sluice
/// does not know is refused here, not found later in PostgreSQL.
fn known(what: &str, value: String, parses: impl FnOnce(&str) -> bool) -> super::Result<String> {
    match parses(&value) {
        true => Ok(value),
        false => Err(corrupt(what, &value)),
    }
}

struct SiteRow {
    state: String,
    updated_at: i64,
}

impl Rows for SiteRow {
    const SELECT: &'static str = "SELECT state, updated_at FROM site";
    const INTO: &'static str = "sluice_sites (site, state, updated_at)";
    const TYPES: &'static [Type] = &[Type::TEXT, Type::TEXT, Type::INT8];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(SiteRow {
            state: known("site state", r.get(0)?, |s| SiteState::parse(s).is_some())?,
            updated_at: r.get(1)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![site, &self.state, &self.updated_at]
    }
}

struct IntegrationRow {
    name: String,
    state: String,
    updated_at: i64,
}

impl Rows for IntegrationRow {
    const SELECT: &'static str = "SELECT name, state, updated_at FROM integrations ORDER BY name";
    const INTO: &'static str = "sluice_integrations (site, name, state, updated_at)";
    const TYPES: &'static [Type] = &[Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(IntegrationRow {
            name: r.get(0)?,
            state: known("integration state", r.get(1)?, |s| {
                IntegrationState::parse(s).is_some()
            })?,
            updated_at: r.get(2)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![site, &self.name, &self.state, &self.updated_at]
    }
}

struct HoldRow {
    integration: String,
    kind: String,
    placed_by: String,
    since: i64,
    reason: String,
}

impl Rows for HoldRow {
    const SELECT: &'static str = "SELECT integration, kind, placed_by, since, reason FROM holds
                                   ORDER BY integration, kind";
    const INTO: &'static str = "sluice_holds (site, integration, kind, placed_by, since, reason)";
    const TYPES: &'static [Type] = &[
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
    ];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(HoldRow {
            integration: r.get(0)?,
            kind: known("hold", r.get(1)?, |k| HoldKind::parse(k).is_some())?,
            placed_by: r.get(2)?,
            since: r.get(3)?,
            reason: r.get(4)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            site,
            &self.integration,
            &self.kind,
            &self.placed_by,
            &self.since,
            &self.reason,
        ]
    }
}

struct FlowRow {
    name: String,
    status: String,
    checkpoint: Option<String>,
    updated_at: i64,
}

impl Rows for FlowRow {
    const SELECT: &'static str =
        "SELECT name, status, checkpoint, updated_at FROM flows ORDER BY name";
    const INTO: &'static str = "sluice_flows (site, name, status, checkpoint, updated_at)";
    const TYPES: &'static [Type] = &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(FlowRow {
            name: r.get(0)?,
            status: known("flow status", r.get(1)?, |s| {
                FlowStatus::decode(s).is_some()
            })?,
            checkpoint: r.get(2)?,
            updated_at: r.get(3)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            site,
            &self.name,
            &self.status,
            &self.checkpoint,
            &self.updated_at,
        ]
    }
}

/// The highest sequence number given out per integration: the queue's
/// bookkeeping keeps it past pruning; the transactions stored are read too
/// so that it is never below one of them.
struct SequenceRow {
    integration: String,
    last_seq: i64,
}

impl Rows for SequenceRow {
    const SELECT: &'static str = "SELECT integration, MAX(last_seq) FROM (
                                      SELECT integration, last_seq FROM queues
                                      UNION ALL
                                      SELECT integration, MAX(seq) FROM transactions
                                       GROUP BY integration)
                                   GROUP BY integration ORDER BY integration";
    const INTO: &'static str = "sluice_sequences (site, integration, last_seq)";
    const TYPES: &'static [Type] = &[Type::TEXT, Type::TEXT, Type::INT8];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(SequenceRow {
            integration: r.get(0)?,
            last_seq: r.get(1)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![site, &self.integration, &self.last_seq]
    }
}

struct TxRow {
    integration: String,
    seq: i64,
    flow: String,
    key: Option<String>,
    payload: String,
    /// Never Sending (refused when read).
    state: TxState,
    /// `state`'s code, as stored.
    code: i16,
    created_at: i64,
    updated_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

impl Rows for TxRow {
    const SELECT: &'static str = "SELECT integration, seq, flow, key, payload, state, created_at,
                                         updated_at, attempts, last_error
                                    FROM transactions ORDER BY integration, seq";
    const INTO: &'static str = "sluice_transactions (site, integration, seq, flow, key, payload,
                                    state, created_at, updated_at, attempts, last_error)";
    const TYPES: &'static [Type] = &[
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT2,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
    ];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        let code: i64 = r.get(5)?;
        let state = match TxState::from_code(code) {
            Some(TxState::Sending) | None => {
                return Err(corrupt("stored transaction state", &code.to_string()))
            }
            Some(state) => state,
        };
        Ok(TxRow {
            integration: r.get(0)?,
            seq: r.get(1)?,
            flow: r.get(2)?,
            key: r.get(3)?,
            payload: r.get(4)?,
            state,
            code: i16::try_from(code)
                .map_err(|_| corrupt("transaction state", &code.to_string()))?,
            created_at: r.get(6)?,
            updated_at: r.get(7)?,
            attempts: r.get(8)?,
            last_error: r.get(9)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            site,
            &self.integration,
            &self.seq,
            &self.flow,
            &self.key,
            &self.payload,
            &self.code,
            &self.created_at,
            &self.updated_at,
            &self.attempts,
            &self.last_error,
        ]
    }
}

struct RunRow {
    flow: String,
    mode: String,
    started_at: i64,
    finished_at: Option<i64>,
    result: Option<String>,
    captured: i64,
    error: Option<String>,
    pages: i64,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
}

impl Rows for RunRow {
    const SELECT: &'static str = "SELECT flow, mode, started_at, finished_at, result, captured,
                                         error, pages, first_seq, last_seq
                                    FROM runs ORDER BY id";
    const INTO: &'static str = "sluice_runs (site, flow, mode, started_at, finished_at, result,
                                    captured, error, pages, first_seq, last_seq)";
    const TYPES: &'static [Type] = &[
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::INT8,
    ];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        let result: Option<String> = r.get(4)?;
        Ok(RunRow {
            flow: r.get(0)?,
            mode: known("run mode", r.get(1)?, |m| RunMode::parse(m).is_some())?,
            started_at: r.get(2)?,
            finished_at: r.get(3)?,
            result: result
                .map(|s| known("run result", s, |s| RunResult::parse(s).is_some()))
                .transpose()?,
            captured: r.get(5)?,
            error: r.get(6)?,
            pages: r.get(7)?,
            first_seq: r.get(8)?,
            last_seq: r.get(9)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            site,
            &self.flow,
            &self.mode,
            &self.started_at,
            &self.finished_at,
            &self.result,
            &self.captured,
            &self.error,
            &self.pages,
            &self.first_seq,
            &self.last_seq,
        ]
    }
}

struct LinkRow {
    flow: String,
    key: String,
    link: String,
    updated_at: i64,
}

impl Rows for LinkRow {
    const SELECT: &'static str = "SELECT flow, key, link, updated_at FROM links ORDER BY flow, key";
    const INTO: &'static str = "sluice_links (site, flow, key, link, updated_at)";
    const TYPES: &'static [Type] = &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(LinkRow {
            flow: r.get(0)?,
            key: r.get(1)?,
            link: r.get(2)?,
            updated_at: r.get(3)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![site, &self.flow, &self.key, &self.link, &self.updated_at]
    }
}

/// Without its id: PostgreSQL's identity gives a new one, in this order.
struct LogRow {
    ts: i64,
    level: i32,
    message: String,
}

impl Rows for LogRow {
    const SELECT: &'static str = "SELECT ts, level, message FROM log ORDER BY id";
    const INTO: &'static str = "sluice_log (site, ts, level, message)";
    const TYPES: &'static [Type] = &[Type::TEXT, Type::INT8, Type::INT4, Type::TEXT];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(LogRow {
            ts: r.get(0)?,
            level: r.get(1)?,
            message: r.get(2)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![site, &self.ts, &self.level, &self.message]
    }
}

/// Without its id, as [`LogRow`].
struct AuditRow {
    ts: i64,
    actor: String,
    action: String,
    subject: String,
    reason: Option<String>,
    outcome: String,
}

impl Rows for AuditRow {
    const SELECT: &'static str =
        "SELECT ts, actor, action, subject, reason, outcome FROM audit ORDER BY id";
    const INTO: &'static str = "sluice_audit (site, ts, actor, action, subject, reason, outcome)";
    const TYPES: &'static [Type] = &[
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ];
    fn read(r: &rusqlite::Row<'_>) -> super::Result<Self> {
        Ok(AuditRow {
            ts: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            subject: r.get(3)?,
            reason: r.get(4)?,
            outcome: r.get(5)?,
        })
    }
    fn values<'a>(&'a self, site: &'a &'a str) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            site,
            &self.ts,
            &self.actor,
            &self.action,
            &self.subject,
            &self.reason,
            &self.outcome,
        ]
    }
}
