//! Durable state of one site: its transaction queue, flow checkpoints, site
//! and integration states, run history, site log and audit trail.
//!
//! # Design constraints
//! - One store per site (its own data file, or its own rows of a shared
//!   database). Nothing outside `store/` knows what backs it: the [`Store`]
//!   trait speaks in domain terms.
//! - **What is durable when.** Every `async fn` that writes returns only once
//!   its write is committed; all but the acks of deliveries (`ack_sent`,
//!   `record_failure`) are then on disk. An ack may be lost to a power cut
//!   (not to a crash of the process): those transactions are then sent
//!   again, with the same idempotency keys. `enqueue` commits the records *and* the flow's
//!   checkpoint in one transaction, so a checkpoint never covers a record that
//!   is not queued, and a queued record is never captured again by a
//!   'Send Changed' run.
//! - **Order.** Each integration has its own sequence, assigned by `enqueue` in
//!   call order, strictly increasing, never reused. `next_batch` returns
//!   pending transactions in sequence order.
//! - **What may repeat.** `Sending` is never stored: a batch in flight when the
//!   process dies is still Queued afterwards and is sent again, with the same
//!   idempotency key. Acks are applied in the order they are called.
//! - **Memory.** The queue lives on disk; nothing here holds it in memory, so
//!   memory does not grow with queue length.
//! - **A full disk.** A write that fails for lack of space is
//!   [`StoreError::Full`] and leaves nothing behind: the store is as if it
//!   had not been asked. The same write succeeds once space is freed.
//!   [`Store::space`] tells when the disk became full and when writes went
//!   through again, so that it is said once, not at every failed write.
//! - **No rule here.** The store stores what the model decided (an
//!   integration's state and holds by kind, flows' statuses, the site's
//!   state) and decides nothing itself: which hold a state change removes,
//!   what a site's start does to the flows or how a cut-off run ends is
//!   told to it. Another backend implements the same trait without a copy
//!   of any rule.
//! - **Operators' changes are audited in the same transaction.** A site's
//!   start or stop and an integration's state change are stored together
//!   with their audit entry: both, or neither.
//!
//! # Files
//! - `mod.rs`: the [`Store`] trait and the types it speaks in.
//! - [`sqlite`]: the embedded backend, one SQLite file per site: the store
//!   (`mod.rs`), its writer thread, its migrations, the audit table's SQL,
//!   its SQLite-only tests (bookkeeping, a full disk, bad files).
//! - [`postgres`]: the shared backend, many sites in one PostgreSQL
//!   database: the store and its migrations, and the tests only it needs.
//! - `tests/`: the tests of the [`Store`] trait, run against each backend
//!   (PostgreSQL when `SLUICE_TEST_PG_URL` is set), and the model-based
//!   test of the queue.
//! - [`copy`]: `sluice store copy`, a stopped site's SQLite file into
//!   the PostgreSQL store, in one transaction (ids, sequences and order
//!   kept as the module says).
//! - [`tokens`]: the daemon's token store (`tokens.db` with SQLite; the
//!   shared database's `sluice_tokens` with PostgreSQL, in
//!   `postgres/tokens.rs`): the SQL of API tokens, dashboard sessions and
//!   their audit trail; the rules are `auth`'s.

pub mod copy;
pub mod postgres;
pub mod sqlite;
pub mod tokens;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::watch;

use crate::model::{
    FlowStatus, Hold, HoldKind, IntegrationChange, IntegrationRecord, Millis, RunMode, RunResult,
    SiteState, TxState,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    /// An error of the PostgreSQL server, the connection to it or the
    /// pool, as text with any URL's password taken out.
    #[error("store: PostgreSQL: {0}")]
    Postgres(String),
    #[error("store: the writer thread is gone")]
    Closed,
    #[error("store: {0}")]
    Corrupt(String),
    /// On a node of a cluster: the write is one only the holder of the
    /// integration's lease may make, and this node does not hold it (any
    /// more). Nothing was written.
    #[error("{0}")]
    Fenced(String),
    /// The disk holding the data file is full (or its quota is used up):
    /// the write was not taken and nothing of it is stored. The same write
    /// succeeds once space is freed.
    #[error("the disk holding {} is full", file.display())]
    Full { file: PathBuf },
}

impl StoreError {
    /// Whether the write was refused because this node does not hold the
    /// integration's lease.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced(_))
    }

    /// Whether the write failed for lack of space, and nothing else.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }
}

/// Whether an SQLite error means the disk is full (`SQLITE_FULL`: SQLite
/// maps a write's `ENOSPC` to it).
pub fn sqlite_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Whether an I/O error means the disk is full (`ENOSPC`, `EDQUOT`).
pub fn io_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What the writes of a data file last found of its disk. It changes only
/// when that changes: to `Full` at the first write refused for lack of
/// space, to `Recovered` at the first write that goes through after that.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Space {
    /// Writes go through (or none was tried yet).
    #[default]
    Writable,
    /// Writes are refused for lack of space, since `since`.
    Full { file: PathBuf, since: Millis },
    /// Writes go through again, at `until`, after the disk was full from
    /// `since`; `refused` writes were refused meanwhile.
    Recovered {
        file: PathBuf,
        since: Millis,
        until: Millis,
        refused: u64,
    },
}

/// One record captured from a source, not yet queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The value of the flow's key field, if it has one.
    pub key: Option<String>,
    /// The record as JSON text, delivered as it is.
    pub payload: String,
}

/// A pending transaction, as the sender reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTx {
    pub seq: i64,
    pub flow: String,
    /// The value of the flow's key field, if the record has one.
    pub key: Option<String>,
    pub payload: String,
    pub attempts: i64,
}

/// A record link (Unifi's bond): within a flow, the record's key and the
/// id its target gave it when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Link {
    pub flow: String,
    pub key: String,
    pub link: String,
    /// When it was made or last set; 0 for one not yet stored.
    pub updated_at: Millis,
}

/// A transaction as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxRecord {
    pub seq: i64,
    pub flow: String,
    pub key: Option<String>,
    pub state: TxState,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub attempts: i64,
    /// The target's answer or the error of the last failed attempt.
    pub last_error: Option<String>,
    pub record: serde_json::Value,
}

/// A transaction in Error as errors are grouped by cause: without its
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTx {
    pub seq: i64,
    pub flow: String,
    /// When it failed (its last change).
    pub updated_at: Millis,
    /// The target's answer.
    pub last_error: Option<String>,
}

/// The stored state of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub status: FlowStatus,
    /// The cursor value (JSON text) up to which 'Send Changed' has captured.
    pub checkpoint: Option<String>,
}

/// One run (iteration) of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub flow: String,
    pub mode: RunMode,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub result: Option<RunResult>,
    /// Records queued by this run.
    pub captured: i64,
    pub error: Option<String>,
    /// Pages read from the source.
    pub pages: i64,
    /// The first and last sequence numbers its records were given.
    pub seqs: Option<(i64, i64)>,
}

/// One line of the site log (seed 000's format is applied when shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    pub id: i64,
    pub ts: Millis,
    pub level: u8,
    pub message: String,
}

/// What happened to an integration's transactions over a period of its
/// history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Activity {
    /// Records queued.
    pub queued: i64,
    /// Transactions delivered (Sent).
    pub delivered: i64,
    /// Transactions that failed for good (Error).
    pub failed: i64,
    /// Deliveries that failed and are tried again.
    pub retried: i64,
}

impl Activity {
    pub fn is_empty(&self) -> bool {
        *self == Activity::default()
    }
}

impl std::ops::AddAssign for Activity {
    fn add_assign(&mut self, other: Activity) {
        self.queued += other.queued;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retried += other.retried;
    }
}

/// A minute of history, once it is over.
pub const MINUTE: Millis = 60_000;
/// An hour of history: minutes older than two days are rolled into hours.
pub const HOUR: Millis = 3_600_000;

/// One period of an integration's history, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub integration: String,
    /// Its start.
    pub at: Millis,
    /// Its length: [`MINUTE`] or [`HOUR`].
    pub span: Millis,
    pub counts: Activity,
    /// Transactions Queued at its end.
    pub depth: i64,
}

/// When a hold was on: from its `since` to `until` (`None` while it
/// lasts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldPeriod {
    pub integration: String,
    pub hold: Hold,
    pub until: Option<Millis>,
}

/// A condition a channel was alerted of that has not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlert {
    pub channel: String,
    pub key: String,
    /// The condition as JSON, as it was when it started.
    pub condition: String,
    /// When its alert or its last reminder was queued.
    pub last_sent: Millis,
}

/// An alert waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAlert {
    pub id: i64,
    pub channel: String,
    /// Its JSON document.
    pub document: String,
    /// Tries that failed so far.
    pub attempts: i64,
}

/// Who did what, when, why, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: Millis,
    pub actor: String,
    /// e.g. `site.stop`, `integration.pause`, `flow.run`.
    pub action: String,
    /// What it was done to: the site, `integration/NAME`, `flow/NAME`.
    pub subject: String,
    pub reason: Option<String>,
    /// `ok`, or why it was refused.
    pub outcome: String,
    /// On a cluster, the node that wrote it (`None` on a single node, and
    /// when given to a store: the store names the node it writes for).
    pub node: Option<String>,
}

/// The durable state of one site. Every method is safe to call from many
/// tasks at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ----- site -----
    /// The state the site was last left in; `None` if it never ran.
    async fn site_state(&self) -> Result<Option<SiteState>>;
    /// Records a stop, in one transaction: the site's state Stopped,
    /// `hold` (the `site-stopped` hold) on each of `integrations`, and
    /// `audit`.
    async fn set_site_stopped(
        &self,
        hold: Hold,
        integrations: Vec<String>,
        audit: AuditEntry,
    ) -> Result<()>;
    /// Records a start as decided, in one transaction: the site's state
    /// Running, the hold of kind `lift` removed from every integration,
    /// each of `flows` given its status, and `audit`.
    async fn set_site_running(
        &self,
        lift: HoldKind,
        flows: Vec<(String, FlowStatus)>,
        audit: AuditEntry,
    ) -> Result<()>;

    // ----- integrations -----
    /// `None` for an integration never seen before.
    async fn integration(&self, name: &str) -> Result<Option<IntegrationRecord>>;
    /// Stores a change of the integration as the model decided it, in one
    /// transaction: its state (when the change sets one), the hold of
    /// `remove`'s kind removed, `put` put (replacing the hold of its kind),
    /// and `audit` (a person's change). Returns whether there was a hold of
    /// `remove`'s kind to remove. Changes of different kinds of hold
    /// commute: none replaces the whole set.
    async fn change_integration(
        &self,
        name: &str,
        change: IntegrationChange,
        audit: Option<AuditEntry>,
    ) -> Result<bool>;

    // ----- flows -----
    /// `FlowStatus::Blank` and no checkpoint for a flow never seen before.
    async fn flow(&self, flow: &str) -> Result<FlowRecord>;
    async fn set_flow_status(&self, flow: &str, status: FlowStatus) -> Result<()>;
    /// Every stored flow with its status, by name.
    async fn flow_statuses(&self) -> Result<Vec<(String, FlowStatus)>>;

    // ----- the queue -----
    /// Queues `records` at the end of the integration's queue, in order, and
    /// in the same transaction moves the flow's checkpoint to `checkpoint`
    /// (when given) and adds their number to run `run` (when given). Returns
    /// the first and last sequence numbers assigned (`None` for no records).
    /// Concurrent calls are committed together (group commit). A run's
    /// records (`checkpoint` or `run` given) are the write of the node that
    /// holds the integration's lease, like the acks.
    async fn enqueue(
        &self,
        integration: &str,
        flow: &str,
        records: Vec<NewRecord>,
        checkpoint: Option<String>,
        run: Option<i64>,
    ) -> Result<Option<(i64, i64)>>;
    /// Up to `limit` pending (Queued) transactions with `seq > after`, in
    /// sequence order.
    async fn next_batch(
        &self,
        integration: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedTx>>;
    /// Marks transactions `first..=last` that are still Queued as Sent, and
    /// keeps the links their deliveries made, in the same transaction (so a
    /// record counts as sent only with the id its target gave it).
    async fn ack_sent(
        &self,
        integration: &str,
        first: i64,
        last: i64,
        links: Vec<Link>,
    ) -> Result<()>;
    /// Marks one transaction Error (with the target's answer) or Ignored:
    /// its sender's write (on a node of a cluster, under its lease).
    async fn settle(
        &self,
        integration: &str,
        seq: i64,
        state: TxState,
        error: Option<String>,
    ) -> Result<()>;
    /// A person's retry (Queued) or ignore (Ignored) of one transaction,
    /// from any node.
    async fn settle_by_operator(&self, integration: &str, seq: i64, to: TxState) -> Result<()> {
        self.settle(integration, seq, to, None).await
    }
    /// Counts a failed attempt of `first..=last` and keeps the error.
    async fn record_failure(
        &self,
        integration: &str,
        first: i64,
        last: i64,
        error: &str,
    ) -> Result<()>;
    /// The oldest transaction in Error, if any: under `on_error = "block"`
    /// the queue waits behind it.
    async fn first_error(&self, integration: &str) -> Result<Option<i64>>;
    /// One transaction, if it exists.
    async fn transaction(&self, integration: &str, seq: i64) -> Result<Option<TxRecord>>;
    /// Whether one of the integration's last `within` transactions (by
    /// sequence number, whatever their state) came from `flow` with this
    /// key and this payload: a message a broker delivers again after a
    /// crash between queueing it and acknowledging it.
    async fn queued_recently(
        &self,
        integration: &str,
        flow: &str,
        key: Option<&str>,
        payload: &str,
        within: i64,
    ) -> Result<bool>;
    /// Deletes Sent and Ignored transactions last changed before `before`
    /// (Queued and Error ones are kept whatever their age); returns how many.
    /// Sequence numbers are never reused after a prune.
    async fn prune(&self, before: Millis) -> Result<usize>;
    /// Transactions still Queued.
    async fn queued_count(&self, integration: &str) -> Result<i64>;
    /// Transactions for operators, newest first, optionally of one state,
    /// with `seq < before` when given.
    async fn transactions(
        &self,
        integration: &str,
        state: Option<TxState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<TxRecord>>;

    // ----- errors handled in bulk -----
    /// The integration's transactions in Error with `seq > after`, in
    /// sequence order, at most `limit`, without their records: what
    /// grouping errors by cause reads, page by page.
    async fn errors(&self, integration: &str, after: i64, limit: usize) -> Result<Vec<ErrorTx>>;
    /// A person's retry (Queued) or ignore (Ignored) of many transactions,
    /// from any node, in one transaction: those of `seqs` that are still
    /// in `from` (the state the model decided `to` for) take `to`; the
    /// others — changed meanwhile, or pruned — are left as they are.
    /// Returns how many took `to`.
    async fn settle_many_by_operator(
        &self,
        integration: &str,
        seqs: Vec<i64>,
        from: TxState,
        to: TxState,
    ) -> Result<usize>;

    // ----- record links -----
    /// The id the flow's target gave the record of `key`, if any.
    async fn link(&self, flow: &str, key: &str) -> Result<Option<String>>;
    /// The flow's links, by key, from `after` on (exclusive); only `key`'s
    /// when given.
    async fn links(
        &self,
        flow: &str,
        key: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>>;
    /// Sets one link by hand (a repair); audited by the caller.
    async fn set_link(&self, flow: &str, key: &str, link: &str) -> Result<()>;
    /// Deletes one link by hand: the next record of the key is a create
    /// again. Whether there was one.
    async fn delete_link(&self, flow: &str, key: &str) -> Result<bool>;

    // ----- runs -----
    async fn start_run(&self, flow: &str, mode: RunMode) -> Result<i64>;
    /// Records the end of a run and, if given, its flow's status after it,
    /// in one transaction: a run seen over is never of a flow still Running.
    async fn finish_run(
        &self,
        run: i64,
        result: RunResult,
        error: Option<String>,
        flow: Option<(&str, FlowStatus)>,
    ) -> Result<()>;
    /// The latest runs of a flow, newest first.
    async fn runs(&self, flow: &str, limit: usize) -> Result<Vec<RunRecord>>;
    /// How many of an integration's transactions with a sequence number in
    /// `first..=last` are Error (a run's failures).
    async fn errors_between(&self, integration: &str, first: i64, last: i64) -> Result<i64>;
    /// Ends the runs left without an end (by a crash) with `result` and
    /// `error`, as the engine decided; returns how many.
    async fn close_abandoned_runs(&self, result: RunResult, error: &str) -> Result<usize>;

    // ----- log and audit -----
    async fn append_log(&self, ts: Millis, level: u8, message: &str) -> Result<i64>;
    /// Log entries with `id > after`, `level <= max_level`, `ts >= since`,
    /// oldest first, at most `limit` (the newest `limit` when more match).
    async fn log(
        &self,
        after: i64,
        since: Option<Millis>,
        max_level: u8,
        limit: usize,
    ) -> Result<Vec<LogEntry>>;
    async fn append_audit(&self, entry: AuditEntry) -> Result<i64>;
    /// Audit entries, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>>;

    // ----- history -----
    /// Adds each integration's counts to its minute starting at `at` and
    /// sets the minute's depth, in one transaction. Counts written for the
    /// same minute again (another node of a cluster, a flush at a stop) add
    /// up.
    async fn add_history(&self, at: Millis, rows: Vec<(String, Activity, i64)>) -> Result<()>;
    /// The history of `integration` (of every integration when `None`)
    /// from `since` on, oldest first.
    async fn history(&self, integration: Option<&str>, since: Millis) -> Result<Vec<HistoryRow>>;
    /// Rolls the minutes that start before `hours_before` (a whole hour)
    /// into their hours (counts added, the depth of the hour's last minute),
    /// then deletes every period that starts before `drop_before`, and the
    /// hold periods that ended before it.
    async fn roll_history(&self, hours_before: Millis, drop_before: Millis) -> Result<()>;
    /// When the holds of `integration` (of every integration when `None`)
    /// were on, of those on at `since` or after, oldest first. Kept by the
    /// store whenever a hold is placed, replaced or lifted.
    async fn hold_periods(
        &self,
        integration: Option<&str>,
        since: Millis,
    ) -> Result<Vec<HoldPeriod>>;

    // ----- alerts -----
    /// Every condition a channel was alerted of that has not ended.
    async fn open_alerts(&self) -> Result<Vec<OpenAlert>>;
    /// Records, in one transaction, that `channel` is alerted of condition
    /// `key` and queues `document` for it, unless the condition is open
    /// for the channel already (another node of a cluster did it): then
    /// nothing is written. Whether it was written.
    async fn open_alert(
        &self,
        channel: &str,
        key: &str,
        condition: &str,
        document: &str,
        now: Millis,
    ) -> Result<bool>;
    /// Queues a reminder of an open condition, unless one was queued since
    /// `was` (its `last_sent` as read). Whether it was queued.
    async fn remind_alert(
        &self,
        channel: &str,
        key: &str,
        was: Millis,
        document: &str,
        now: Millis,
    ) -> Result<bool>;
    /// Ends the condition and queues `document` (its "resolved"), in one
    /// transaction, if it was open. Whether it was.
    async fn close_alert(
        &self,
        channel: &str,
        key: &str,
        document: &str,
        now: Millis,
    ) -> Result<bool>;
    /// Up to `limit` queued alerts due at `now`, oldest first; each is not
    /// due again before `now + hold`, so that no other node sends it while
    /// this one does. A channel's alerts go in the order they were queued:
    /// one is not due while an earlier one of its channel waits.
    async fn due_alerts(&self, now: Millis, hold: Millis, limit: usize)
        -> Result<Vec<QueuedAlert>>;
    /// A queued alert was sent: taken out of the queue, with `audit`, in
    /// one transaction.
    async fn alert_sent(&self, id: i64, audit: AuditEntry) -> Result<()>;
    /// A try of a queued alert failed: counted, kept with `error`, not
    /// tried again before `next_at`.
    async fn alert_failed(&self, id: i64, next_at: Millis, error: &str) -> Result<()>;
    /// A queued alert not tried, behind one of its channel that failed:
    /// not due before `next_at`, its tries as they were.
    async fn postpone_alert(&self, id: i64, next_at: Millis) -> Result<()>;

    // ----- the disk -----
    /// Follows what writes find of the disk: full, or writable (again).
    fn space(&self) -> watch::Receiver<Space>;
}

#[cfg(test)]
pub(crate) mod tests;
