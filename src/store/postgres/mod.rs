//! The shared store: one PostgreSQL database for many sites (and, later,
//! many nodes).
//!
//! # Files
//! - `mod.rs`: [`PgStore`], the [`Store`] trait's queries on a pool of
//!   connections, and the migrations' runner.
//! - `migrations/NNN_*.sql`: the schema, step by step.
//! - `tests.rs`: what only this backend has to show (sites apart in one
//!   database, two stores of one site at once, migrations run once, errors
//!   without the password). The tests of the [`Store`] trait itself run
//!   against both backends (`store/tests/`).
//!
//! # Layout
//! Every table is named `sluice_*` and its key starts with `site`: a
//! [`PgStore`] is bound to one site and every statement names it, so sites
//! sharing the database never see each other's rows. The tables are
//! SQLite's (`sqlite/mod.rs`), with these differences:
//!
//! | table | key | differs from SQLite's |
//! | --- | --- | --- |
//! | `sluice_sites` | `site` | one row per site instead of `id = 1` |
//! | `sluice_sequences` | `(site, integration)` | only `last_seq`: no `queued`, no `floor` (see *Bookkeeping*) |
//! | `sluice_runs`, `sluice_log`, `sluice_audit` | `(site, id)` | ids from one identity per table, shared by the sites |
//! | `sluice_migrations` | `version` | the schema's steps applied; of the database, not of a site |
//!
//! # Design constraints
//! The module doc of `store/` binds here as for SQLite. How they are kept:
//! - **One transaction per write.** Each method that writes runs its
//!   statements in one PostgreSQL transaction on a connection of the pool,
//!   and returns once it committed (`synchronous_commit` as the server is
//!   set: on, by default, so on disk). A failing write rolls back whole.
//!   There is no writer thread: PostgreSQL orders the concurrent writers
//!   (and groups their commits itself).
//! - **Order.** `enqueue` raises the integration's `sluice_sequences.last_seq`
//!   by the number of records and inserts them below it in the same
//!   transaction. The upsert's row lock makes a second enqueue of the same
//!   integration (from this process or another node) wait for the first
//!   one's commit or rollback: numbers are strictly increasing, gap-free
//!   and never reused, and each call's records are consecutive, in order.
//! - **Bookkeeping.** None kept beside the queue: a partial index holds the
//!   Queued transactions, so the head of the queue is read without walking
//!   past what was sent, and `queued_count` counts them. Another node may
//!   enqueue or ack at any time: a count in memory would be a guess.
//! - **The log in order.** Appends to a site's log take an advisory lock
//!   of that site's log first, so ids are committed in the order they were
//!   given out and a reader following `id > after` misses no line.
//! - **Migrations once.** Each step is applied in its own transaction that
//!   first takes a database-wide advisory lock: processes opening at once
//!   wait for each other, and the next one finds the step recorded in
//!   `sluice_migrations`. A database newer than this sluice is refused.
//! - **Bad data.** Nothing read is trusted: an unknown state or a value of
//!   the wrong type is [`StoreError::Corrupt`], never a panic.
//! - **Space.** The database server's disk is not ours to watch:
//!   [`Store::space`] stays [`Space::Writable`], and a server out of space
//!   is an error like any other of the server.
//! - **Secrets.** The URL's password never reaches an error message: every
//!   error of the driver or the pool is passed through `redact::urls_in`.

pub mod cluster;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::types::FromSql;
use tokio_postgres::{NoTls, Row};

use super::{
    Activity, AuditEntry, ErrorTx, FlowRecord, HistoryRow, HoldPeriod, Link, LogEntry, NewRecord,
    OpenAlert, QueuedAlert, QueuedTx, Result, RunRecord, Space, Store, StoreError, TxRecord, HOUR,
    MINUTE,
};
use crate::model::{
    now_millis, FlowStatus, Hold, HoldKind, IntegrationChange, IntegrationRecord, IntegrationState,
    Millis, RunMode, RunResult, SiteState, TxState,
};

/// The schema, one step a file; `sluice_migrations` records each applied.
pub(super) const MIGRATIONS: [&str; 6] = [
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_cluster.sql"),
    include_str!("migrations/003_tokens.sql"),
    include_str!("migrations/004_history.sql"),
    include_str!("migrations/005_alerts.sql"),
    include_str!("migrations/006_hold_periods.sql"),
];

/// The advisory lock the migrations are applied under ("sluice" in ASCII):
/// one key for the whole database.
const MIGRATION_LOCK: i64 = 0x736c_7569_6365;

/// Connections a store keeps at most.
const POOL_SIZE: usize = 8;

/// How long a new connection may take, and how long a caller waits for one
/// of the pool when all are taken.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Transactions deleted by one statement of a prune: other writes go
/// between.
const PRUNE_CHUNK: i64 = 5000;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(said(&e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Postgres(said(&e))
    }
}

/// An error and each of its causes ("error connecting to server: Connection
/// refused"), with any URL's password taken out.
fn said(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    crate::redact::urls_in(&text)
}

/// A PostgreSQL-backed [`Store`] of one site. Cheap to share behind an
/// `Arc`; many of them (of one site or of many) may share a database.
pub struct PgStore {
    pool: Pool,
    /// The site every statement reads and writes.
    site: String,
    /// Never changes (see *Space* above); kept so that receivers stay open.
    space: watch::Sender<Space>,
    /// On a node of a cluster: the leases it holds. The sender's and the
    /// runs' writes of an integration are then made only under its lease,
    /// changes of state are notified to the other nodes, and log and audit
    /// lines name the node (see `cluster.rs`).
    fences: Option<Arc<cluster::Fences>>,
}

impl PgStore {
    /// One statement on an alert's condition (open, remind, close) and, if
    /// it changed a row, `document` queued to `channel` in the same
    /// transaction: whatever node runs it, one alert per change.
    async fn change_alert(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        channel: &str,
        document: &str,
        now: Millis,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        let changed = db.execute(statement, params).await? > 0;
        if changed {
            queue_alert(&db, &self.site, channel, document, now).await?;
        }
        db.commit().await?;
        Ok(changed)
    }

    /// Connects to the database at `url` (`postgres://user:password@host/db`),
    /// brings its schema up to date, and binds the store to `site`.
    pub async fn open(url: &str, site: &str) -> Result<PgStore> {
        let pool = pool(url, POOL_SIZE)?;
        let mut client = pool.get().await.map_err(|e| at_server(url, &e))?;
        migrate(&mut client).await?;
        Ok(PgStore {
            pool,
            site: site.to_string(),
            space: watch::channel(Space::Writable).0,
            fences: None,
        })
    }

    /// The store of a node of a cluster, which holds the leases in `fences`.
    pub fn fenced(mut self, fences: Arc<cluster::Fences>) -> PgStore {
        self.fences = Some(fences);
        self
    }

    /// On a node: that it still holds `integration`'s lease, checked in
    /// `db` (see `cluster::check_fence`).
    async fn fence(
        &self,
        db: &deadpool_postgres::Transaction<'_>,
        integration: &str,
    ) -> Result<()> {
        match &self.fences {
            Some(fences) => cluster::check_fence(db, fences, &self.site, integration).await,
            None => Ok(()),
        }
    }

    /// On a node: tells the others, with the commit of `db`, that `kind`
    /// `name` changed.
    /// Sets a flow's status in `db`, and tells the other nodes.
    async fn put_flow_status(
        &self,
        db: &deadpool_postgres::Transaction<'_>,
        flow: &str,
        status: FlowStatus,
    ) -> Result<()> {
        let stmt = db.prepare_cached(PUT_FLOW_STATUS).await?;
        db.execute(&stmt, &[&self.site, &flow, &status.encode(), &now_millis()])
            .await?;
        self.changed(db, "flow", flow).await
    }

    async fn changed(
        &self,
        db: &deadpool_postgres::Transaction<'_>,
        kind: &str,
        name: &str,
    ) -> Result<()> {
        match &self.fences {
            Some(fences) => {
                let notice = cluster::Notice::new(&self.site, kind, name, fences.node());
                cluster::notify_in(db, cluster::CHANGED, &notice).await
            }
            None => Ok(()),
        }
    }

    /// A transaction's state set: by its sender (`fenced`, under the lease)
    /// or by a person (from any node; the sender is told).
    async fn set_tx_state(
        &self,
        integration: &str,
        seq: i64,
        to: TxState,
        error: Option<String>,
        fenced: bool,
    ) -> Result<()> {
        if to == TxState::Sending {
            return Err(StoreError::Corrupt(
                "settle: Sending is never stored".to_string(),
            ));
        }
        let code = i16::try_from(to.code())
            .map_err(|_| corrupt("transaction state", &to.code().to_string()))?;
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        if fenced {
            self.fence(&db, integration).await?;
        }
        let stmt = db
            .prepare_cached(
                "UPDATE sluice_transactions
                    SET state = $4, last_error = COALESCE($5, last_error), updated_at = $6
                  WHERE site = $1 AND integration = $2 AND seq = $3",
            )
            .await?;
        db.execute(
            &stmt,
            &[&self.site, &integration, &seq, &code, &error, &now_millis()],
        )
        .await?;
        if !fenced {
            self.changed(&db, "integration", integration).await?;
        }
        db.commit().await?;
        Ok(())
    }

    /// The node that writes, on a node of a cluster.
    fn node(&self) -> Option<&str> {
        self.fences.as_ref().map(|f| f.node())
    }

    /// The site this store is bound to.
    pub fn site(&self) -> &str {
        &self.site
    }

    async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }
}

/// An error of reaching the server at `url`, naming it (without the
/// password).
pub(super) fn at_server(url: &str, e: &dyn std::error::Error) -> StoreError {
    StoreError::Postgres(format!("{}: {}", crate::redact::url(url), said(e)))
}

/// A pool of at most `size` connections to the database at `url`; none is
/// made yet. The one way the stores, the cluster's tables and the tokens
/// reach PostgreSQL: the same time limits and errors for all.
pub(super) fn pool(url: &str, size: usize) -> Result<Pool> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| at_server(url, &e))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Postgres(said(&e)))
}

/// Applies the steps the database lacks, each in its own transaction under
/// [`MIGRATION_LOCK`], so that stores opening at once apply each step once.
async fn migrate(client: &mut Object) -> Result<()> {
    loop {
        let db = client.transaction().await?;
        db.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS sluice_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at BIGINT  NOT NULL
             )",
        )
        .await?;
        let row = db
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM sluice_migrations",
                &[],
            )
            .await?;
        let version: i32 = get(&row, 0)?;
        let applied = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {applied}, newer than this sluice knows ({})",
                MIGRATIONS.len()
            )));
        }
        let Some(step) = MIGRATIONS.get(applied) else {
            db.commit().await?;
            return Ok(());
        };
        db.batch_execute(step).await?;
        db.execute(
            "INSERT INTO sluice_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(version + 1), &now_millis()],
        )
        .await?;
        db.commit().await?;
    }
}

/// Column `i` of `row`: a value of the wrong type is corruption, not a
/// panic.
fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("unexpected data in the database: {e}")))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} '{value}' in the database"))
}

/// A `LIMIT`: every `usize` fits (beyond `i64::MAX` is no limit).
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn decode_status(status: &str) -> Result<FlowStatus> {
    FlowStatus::decode(status).ok_or_else(|| corrupt("flow status", status))
}

const TX_COLUMNS: &str =
    "seq, flow, key, state, created_at, updated_at, attempts, last_error, payload";

fn tx_record(r: &Row) -> Result<TxRecord> {
    let code = i64::from(get::<i16>(r, 3)?);
    let state =
        TxState::from_code(code).ok_or_else(|| corrupt("transaction state", &code.to_string()))?;
    if state == TxState::Sending {
        return Err(corrupt("stored transaction state", state.as_str()));
    }
    let payload: String = get(r, 8)?;
    let record = match serde_json::from_str(&payload) {
        Ok(value) => value,
        Err(_) => serde_json::Value::String(payload),
    };
    Ok(TxRecord {
        seq: get(r, 0)?,
        flow: get(r, 1)?,
        key: get(r, 2)?,
        state,
        created_at: get(r, 4)?,
        updated_at: get(r, 5)?,
        attempts: get(r, 6)?,
        last_error: get(r, 7)?,
        record,
    })
}

fn run_record(r: &Row) -> Result<RunRecord> {
    let mode: String = get(r, 2)?;
    let result: Option<String> = get(r, 5)?;
    Ok(RunRecord {
        id: get(r, 0)?,
        flow: get(r, 1)?,
        mode: RunMode::parse(&mode).ok_or_else(|| corrupt("run mode", &mode))?,
        started_at: get(r, 3)?,
        finished_at: get(r, 4)?,
        result: result
            .map(|s| RunResult::parse(&s).ok_or_else(|| corrupt("run result", &s)))
            .transpose()?,
        captured: get(r, 6)?,
        error: get(r, 7)?,
        pages: get(r, 8)?,
        seqs: match (get::<Option<i64>>(r, 9)?, get::<Option<i64>>(r, 10)?) {
            (Some(first), Some(last)) => Some((first, last)),
            _ => None,
        },
    })
}

/// An audit entry: `id, ts, actor, action, subject, reason, outcome, node`
/// of `sluice_audit` or `sluice_token_audit`.
pub(super) fn audit_entry(r: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: get(r, 0)?,
        ts: get(r, 1)?,
        actor: get(r, 2)?,
        action: get(r, 3)?,
        subject: get(r, 4)?,
        reason: get(r, 5)?,
        outcome: get(r, 6)?,
        node: get(r, 7)?,
    })
}

const PUT_HOLD: &str =
    "INSERT INTO sluice_holds (site, integration, kind, placed_by, since, reason)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (site, integration, kind) DO UPDATE SET
       placed_by = excluded.placed_by, since = excluded.since, reason = excluded.reason";

const PUT_SITE_STATE: &str =
    "INSERT INTO sluice_sites (site, state, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (site) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";

const PUT_FLOW_STATUS: &str =
    "INSERT INTO sluice_flows (site, name, status, updated_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (site, name) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at";

const INSERT_AUDIT: &str =
    "INSERT INTO sluice_audit (site, ts, actor, action, subject, reason, outcome, node)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";

const PUT_LINKS: &str = "INSERT INTO sluice_links (site, flow, key, link, updated_at)
     SELECT $1, l.flow, l.key, l.link, $5
       FROM unnest($2::text[], $3::text[], $4::text[]) AS l(flow, key, link)
     ON CONFLICT (site, flow, key) DO UPDATE
     SET link = excluded.link, updated_at = excluded.updated_at";

/// `links` with one link per (flow, key), the last given winning, in the
/// order of their first appearance: one statement may not set a row twice.
fn last_links(links: &[Link]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for l in links {
        match at.get(&(l.flow.as_str(), l.key.as_str())) {
            Some(&i) => out.2[i] = &l.link,
            None => {
                at.insert((&l.flow, &l.key), out.0.len());
                out.0.push(&l.flow);
                out.1.push(&l.key);
                out.2.push(&l.link);
            }
        }
    }
    out
}

#[async_trait]
impl Store for PgStore {
    async fn site_state(&self) -> Result<Option<SiteState>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT state FROM sluice_sites WHERE site = $1")
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&self.site]).await? else {
            return Ok(None);
        };
        let state: String = get(&row, 0)?;
        SiteState::parse(&state)
            .ok_or_else(|| corrupt("site state", &state))
            .map(Some)
    }

    async fn set_site_stopped(
        &self,
        hold: Hold,
        integrations: Vec<String>,
        audit: AuditEntry,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        let site_state = db.prepare_cached(PUT_SITE_STATE).await?;
        db.execute(
            &site_state,
            &[&self.site, &SiteState::Stopped.as_str(), &now_millis()],
        )
        .await?;
        let put_hold = db.prepare_cached(PUT_HOLD).await?;
        for name in &integrations {
            db.execute(
                &put_hold,
                &[
                    &self.site,
                    name,
                    &hold.kind.as_str(),
                    &hold.by,
                    &hold.since,
                    &hold.reason,
                ],
            )
            .await?;
        }
        insert_audit(&db, &self.site, self.node(), &audit).await?;
        self.changed(&db, "site", &self.site).await?;
        db.commit().await?;
        Ok(())
    }

    async fn set_site_running(
        &self,
        lift: HoldKind,
        flows: Vec<(String, FlowStatus)>,
        audit: AuditEntry,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        let now = now_millis();
        let put_status = db.prepare_cached(PUT_FLOW_STATUS).await?;
        for (flow, status) in &flows {
            db.execute(&put_status, &[&self.site, flow, &status.encode(), &now])
                .await?;
        }
        let lift_holds = db
            .prepare_cached("DELETE FROM sluice_holds WHERE site = $1 AND kind = $2")
            .await?;
        db.execute(&lift_holds, &[&self.site, &lift.as_str()])
            .await?;
        let site_state = db.prepare_cached(PUT_SITE_STATE).await?;
        db.execute(
            &site_state,
            &[&self.site, &SiteState::Running.as_str(), &now],
        )
        .await?;
        insert_audit(&db, &self.site, self.node(), &audit).await?;
        self.changed(&db, "site", &self.site).await?;
        db.commit().await?;
        Ok(())
    }

    async fn integration(&self, name: &str) -> Result<Option<IntegrationRecord>> {
        let client = self.client().await?;
        // One statement, so the state and its holds are of one snapshot.
        let stmt = client
            .prepare_cached(
                "SELECT i.state, h.kind, h.placed_by, h.since, h.reason
                   FROM sluice_integrations i
                   LEFT JOIN sluice_holds h ON h.site = i.site AND h.integration = i.name
                  WHERE i.site = $1 AND i.name = $2
                  ORDER BY h.since, h.kind",
            )
            .await?;
        let rows = client.query(&stmt, &[&self.site, &name]).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let state: String = get(first, 0)?;
        let mut holds = Vec::new();
        for row in &rows {
            let Some(kind) = get::<Option<String>>(row, 1)? else {
                continue;
            };
            holds.push(Hold {
                kind: HoldKind::parse(&kind).ok_or_else(|| corrupt("hold", &kind))?,
                by: get(row, 2)?,
                since: get(row, 3)?,
                reason: get(row, 4)?,
            });
        }
        Ok(Some(IntegrationRecord {
            state: IntegrationState::parse(&state)
                .ok_or_else(|| corrupt("integration state", &state))?,
            holds: holds.into_iter().collect(),
        }))
    }

    async fn change_integration(
        &self,
        name: &str,
        change: IntegrationChange,
        audit: Option<AuditEntry>,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        if let Some(state) = change.state {
            let stmt = db
                .prepare_cached(
                    "INSERT INTO sluice_integrations (site, name, state, updated_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (site, name) DO UPDATE
                     SET state = excluded.state, updated_at = excluded.updated_at",
                )
                .await?;
            db.execute(&stmt, &[&self.site, &name, &state.as_str(), &now_millis()])
                .await?;
        }
        let mut removed = false;
        if let Some(kind) = change.remove {
            let stmt = db
                .prepare_cached(
                    "DELETE FROM sluice_holds WHERE site = $1 AND integration = $2 AND kind = $3",
                )
                .await?;
            removed = db
                .execute(&stmt, &[&self.site, &name, &kind.as_str()])
                .await?
                > 0;
        }
        if let Some(hold) = &change.put {
            let stmt = db.prepare_cached(PUT_HOLD).await?;
            db.execute(
                &stmt,
                &[
                    &self.site,
                    &name,
                    &hold.kind.as_str(),
                    &hold.by,
                    &hold.since,
                    &hold.reason,
                ],
            )
            .await?;
        }
        if let Some(audit) = audit {
            insert_audit(&db, &self.site, self.node(), &audit).await?;
        }
        self.changed(&db, "integration", name).await?;
        db.commit().await?;
        Ok(removed)
    }

    async fn flow(&self, flow: &str) -> Result<FlowRecord> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT status, checkpoint FROM sluice_flows WHERE site = $1 AND name = $2",
            )
            .await?;
        Ok(match client.query_opt(&stmt, &[&self.site, &flow]).await? {
            None => FlowRecord {
                status: FlowStatus::Blank,
                checkpoint: None,
            },
            Some(row) => FlowRecord {
                status: decode_status(&get::<String>(&row, 0)?)?,
                checkpoint: get(&row, 1)?,
            },
        })
    }

    async fn set_flow_status(&self, flow: &str, status: FlowStatus) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        self.put_flow_status(&db, flow, status).await?;
        db.commit().await?;
        Ok(())
    }

    async fn flow_statuses(&self) -> Result<Vec<(String, FlowStatus)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT name, status FROM sluice_flows WHERE site = $1 ORDER BY name")
            .await?;
        let mut out = Vec::new();
        for row in client.query(&stmt, &[&self.site]).await? {
            out.push((get(&row, 0)?, decode_status(&get::<String>(&row, 1)?)?));
        }
        Ok(out)
    }

    async fn enqueue(
        &self,
        integration: &str,
        flow: &str,
        records: Vec<NewRecord>,
        checkpoint: Option<String>,
        run: Option<i64>,
    ) -> Result<Option<(i64, i64)>> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        if checkpoint.is_some() || run.is_some() {
            // A run's records: its node's write, under the lease.
            self.fence(&db, integration).await?;
        }
        let now = now_millis();
        let n = records.len() as i64;
        let mut range = None;
        if n > 0 {
            // The row lock taken here orders this enqueue after any other
            // of the integration still open, and is held to the commit.
            let next = db
                .prepare_cached(
                    "INSERT INTO sluice_sequences (site, integration, last_seq) VALUES ($1, $2, $3)
                     ON CONFLICT (site, integration) DO UPDATE
                     SET last_seq = sluice_sequences.last_seq + excluded.last_seq
                     RETURNING last_seq",
                )
                .await?;
            let last: i64 = get(
                &db.query_one(&next, &[&self.site, &integration, &n]).await?,
                0,
            )?;
            let first = last - n + 1;
            // All the records in one statement: their columns as arrays.
            let keys: Vec<Option<&str>> = records.iter().map(|r| r.key.as_deref()).collect();
            let payloads: Vec<&str> = records.iter().map(|r| r.payload.as_str()).collect();
            let insert = db
                .prepare_cached(
                    "INSERT INTO sluice_transactions
                       (site, integration, seq, flow, key, payload, state, created_at, updated_at)
                     SELECT $1, $2, $3 + r.n, $4, r.key, r.payload, 0, $5, $5
                       FROM unnest($6::text[], $7::text[]) WITH ORDINALITY AS r(key, payload, n)",
                )
                .await?;
            db.execute(
                &insert,
                &[
                    &self.site,
                    &integration,
                    &(first - 1),
                    &flow,
                    &now,
                    &keys,
                    &payloads,
                ],
            )
            .await?;
            range = Some((first, last));
        }
        if let Some(run) = run {
            let (first, last) = range.map_or((None, None), |(f, l)| (Some(f), Some(l)));
            let stmt = db
                .prepare_cached(
                    "UPDATE sluice_runs SET captured = captured + $3, pages = pages + 1,
                            first_seq = COALESCE(first_seq, $4), last_seq = COALESCE($5, last_seq)
                      WHERE site = $1 AND id = $2",
                )
                .await?;
            db.execute(&stmt, &[&self.site, &run, &n, &first, &last])
                .await?;
        }
        if let Some(checkpoint) = checkpoint {
            let stmt = db
                .prepare_cached(
                    "INSERT INTO sluice_flows (site, name, status, checkpoint, updated_at)
                     VALUES ($1, $2, '', $3, $4)
                     ON CONFLICT (site, name) DO UPDATE SET
                       checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                )
                .await?;
            db.execute(&stmt, &[&self.site, &flow, &checkpoint, &now])
                .await?;
        }
        db.commit().await?;
        Ok(range)
    }

    async fn next_batch(
        &self,
        integration: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedTx>> {
        let client = self.client().await?;
        // `state = 0` written out: the partial index of Queued rows.
        let stmt = client
            .prepare_cached(
                "SELECT seq, flow, payload, attempts, key FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND state = 0 AND seq > $3
                  ORDER BY seq LIMIT $4",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&self.site, &integration, &after, &limit_of(limit)])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedTx {
                    seq: get(r, 0)?,
                    flow: get(r, 1)?,
                    payload: get(r, 2)?,
                    attempts: get(r, 3)?,
                    key: get(r, 4)?,
                })
            })
            .collect()
    }

    async fn ack_sent(
        &self,
        integration: &str,
        first: i64,
        last: i64,
        links: Vec<Link>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        self.fence(&db, integration).await?;
        let now = now_millis();
        if !links.is_empty() {
            let (flows, keys, ids) = last_links(&links);
            let stmt = db.prepare_cached(PUT_LINKS).await?;
            db.execute(&stmt, &[&self.site, &flows, &keys, &ids, &now])
                .await?;
        }
        let stmt = db
            .prepare_cached(
                "UPDATE sluice_transactions SET state = 2, updated_at = $3
                  WHERE site = $1 AND integration = $2 AND seq BETWEEN $4 AND $5 AND state = 0",
            )
            .await?;
        db.execute(&stmt, &[&self.site, &integration, &now, &first, &last])
            .await?;
        db.commit().await?;
        Ok(())
    }

    async fn settle(
        &self,
        integration: &str,
        seq: i64,
        to: TxState,
        error: Option<String>,
    ) -> Result<()> {
        self.set_tx_state(integration, seq, to, error, true).await
    }

    async fn settle_by_operator(&self, integration: &str, seq: i64, to: TxState) -> Result<()> {
        self.set_tx_state(integration, seq, to, None, false).await
    }

    async fn record_failure(
        &self,
        integration: &str,
        first: i64,
        last: i64,
        error: &str,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        self.fence(&db, integration).await?;
        let stmt = db
            .prepare_cached(
                "UPDATE sluice_transactions
                    SET attempts = attempts + 1, last_error = $5, updated_at = $6
                  WHERE site = $1 AND integration = $2 AND seq BETWEEN $3 AND $4 AND state = 0",
            )
            .await?;
        db.execute(
            &stmt,
            &[
                &self.site,
                &integration,
                &first,
                &last,
                &error,
                &now_millis(),
            ],
        )
        .await?;
        db.commit().await?;
        Ok(())
    }

    async fn first_error(&self, integration: &str) -> Result<Option<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT MIN(seq) FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND state = 3",
            )
            .await?;
        get(
            &client.query_one(&stmt, &[&self.site, &integration]).await?,
            0,
        )
    }

    async fn queued_recently(
        &self,
        integration: &str,
        flow: &str,
        key: Option<&str>,
        payload: &str,
        within: i64,
    ) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sluice_transactions
                  WHERE site = $1 AND integration = $2
                    AND seq > (SELECT last_seq FROM sluice_sequences
                                WHERE site = $1 AND integration = $2) - $6
                    AND flow = $3 AND key IS NOT DISTINCT FROM $4 AND payload = $5)",
            )
            .await?;
        get(
            &client
                .query_one(
                    &stmt,
                    &[&self.site, &integration, &flow, &key, &payload, &within],
                )
                .await?,
            0,
        )
    }

    async fn transaction(&self, integration: &str, seq: i64) -> Result<Option<TxRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {TX_COLUMNS} FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND seq = $3"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&self.site, &integration, &seq])
            .await?
            .as_ref()
            .map(tx_record)
            .transpose()
    }

    async fn prune(&self, before: Millis) -> Result<usize> {
        // In chunks, each its own transaction, so a large prune does not
        // hold locks long. Sequence numbers live on in `sluice_sequences`.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM sluice_transactions
                  WHERE (site, integration, seq) IN (
                    SELECT site, integration, seq FROM sluice_transactions
                     WHERE site = $1 AND state IN (2, 4) AND updated_at < $2 LIMIT $3)",
            )
            .await?;
        let mut total = 0;
        loop {
            let n = client
                .execute(&stmt, &[&self.site, &before, &PRUNE_CHUNK])
                .await?;
            total += n as usize;
            if n < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn queued_count(&self, integration: &str) -> Result<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT count(*) FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND state = 0",
            )
            .await?;
        get(
            &client.query_one(&stmt, &[&self.site, &integration]).await?,
            0,
        )
    }

    async fn transactions(
        &self,
        integration: &str,
        state: Option<TxState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<TxRecord>> {
        // The state is written into the statement, not bound, so the
        // planner picks its partial index.
        let filter = match state {
            None => "",
            Some(TxState::Sending) => return Ok(Vec::new()),
            Some(TxState::Queued) => "AND state = 0",
            Some(TxState::Sent) => "AND state = 2",
            Some(TxState::Error) => "AND state = 3",
            Some(TxState::Ignored) => "AND state = 4",
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {TX_COLUMNS} FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND seq < $3 {filter}
                  ORDER BY seq DESC LIMIT $4"
            ))
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &self.site,
                    &integration,
                    &before.unwrap_or(i64::MAX),
                    &limit_of(limit),
                ],
            )
            .await?;
        rows.iter().map(tx_record).collect()
    }

    async fn errors(&self, integration: &str, after: i64, limit: usize) -> Result<Vec<ErrorTx>> {
        let client = self.client().await?;
        // `state = 3` (Error), written in: the partial index
        // sluice_transactions_error.
        let stmt = client
            .prepare_cached(
                "SELECT seq, flow, updated_at, last_error FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND state = 3 AND seq > $3
                  ORDER BY seq LIMIT $4",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&self.site, &integration, &after, &limit_of(limit)])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ErrorTx {
                    seq: get(r, 0)?,
                    flow: get(r, 1)?,
                    updated_at: get(r, 2)?,
                    last_error: get(r, 3)?,
                })
            })
            .collect()
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
        let code = |state: TxState| {
            i16::try_from(state.code())
                .map_err(|_| corrupt("transaction state", &state.code().to_string()))
        };
        let (from, to) = (code(from)?, code(to)?);
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        let stmt = db
            .prepare_cached(
                "UPDATE sluice_transactions SET state = $5, updated_at = $6
                  WHERE site = $1 AND integration = $2 AND seq = ANY($3) AND state = $4",
            )
            .await?;
        let done = db
            .execute(
                &stmt,
                &[&self.site, &integration, &seqs, &from, &to, &now_millis()],
            )
            .await?;
        if done > 0 {
            // The node that sends the integration is told, as for one.
            self.changed(&db, "integration", integration).await?;
        }
        db.commit().await?;
        Ok(usize::try_from(done).unwrap_or(usize::MAX))
    }

    async fn link(&self, flow: &str, key: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT link FROM sluice_links WHERE site = $1 AND flow = $2 AND key = $3",
            )
            .await?;
        client
            .query_opt(&stmt, &[&self.site, &flow, &key])
            .await?
            .map(|row| get(&row, 0))
            .transpose()
    }

    async fn links(
        &self,
        flow: &str,
        key: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT flow, key, link, updated_at FROM sluice_links
                  WHERE site = $1 AND flow = $2
                    AND ($3::text IS NULL OR key = $3) AND ($4::text IS NULL OR key > $4)
                  ORDER BY key LIMIT $5",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&self.site, &flow, &key, &after, &limit_of(limit)])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Link {
                    flow: get(r, 0)?,
                    key: get(r, 1)?,
                    link: get(r, 2)?,
                    updated_at: get(r, 3)?,
                })
            })
            .collect()
    }

    async fn set_link(&self, flow: &str, key: &str, link: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(PUT_LINKS).await?;
        client
            .execute(
                &stmt,
                &[
                    &self.site,
                    &vec![flow],
                    &vec![key],
                    &vec![link],
                    &now_millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn delete_link(&self, flow: &str, key: &str) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM sluice_links WHERE site = $1 AND flow = $2 AND key = $3")
            .await?;
        Ok(client.execute(&stmt, &[&self.site, &flow, &key]).await? > 0)
    }

    async fn start_run(&self, flow: &str, mode: RunMode) -> Result<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO sluice_runs (site, flow, mode, started_at) VALUES ($1, $2, $3, $4)
                 RETURNING id",
            )
            .await?;
        get(
            &client
                .query_one(&stmt, &[&self.site, &flow, &mode.as_str(), &now_millis()])
                .await?,
            0,
        )
    }

    async fn finish_run(
        &self,
        run: i64,
        result: RunResult,
        error: Option<String>,
        flow: Option<(&str, FlowStatus)>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        let stmt = db
            .prepare_cached(
                "UPDATE sluice_runs SET finished_at = $3, result = $4, error = $5
                  WHERE site = $1 AND id = $2",
            )
            .await?;
        db.execute(
            &stmt,
            &[&self.site, &run, &now_millis(), &result.as_str(), &error],
        )
        .await?;
        if let Some((name, status)) = flow {
            self.put_flow_status(&db, name, status).await?;
        }
        db.commit().await?;
        Ok(())
    }

    async fn runs(&self, flow: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, flow, mode, started_at, finished_at, result, captured, error,
                        pages, first_seq, last_seq
                   FROM sluice_runs WHERE site = $1 AND flow = $2 ORDER BY id DESC LIMIT $3",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&self.site, &flow, &limit_of(limit)])
            .await?;
        rows.iter().map(run_record).collect()
    }

    async fn errors_between(&self, integration: &str, first: i64, last: i64) -> Result<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT count(*) FROM sluice_transactions
                  WHERE site = $1 AND integration = $2 AND state = 3 AND seq BETWEEN $3 AND $4",
            )
            .await?;
        get(
            &client
                .query_one(&stmt, &[&self.site, &integration, &first, &last])
                .await?,
            0,
        )
    }

    async fn close_abandoned_runs(&self, result: RunResult, error: &str) -> Result<usize> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE sluice_runs SET finished_at = $2, result = $3, error = $4
                  WHERE site = $1 AND finished_at IS NULL",
            )
            .await?;
        let n = client
            .execute(
                &stmt,
                &[&self.site, &now_millis(), &result.as_str(), &error],
            )
            .await?;
        Ok(n as usize)
    }

    async fn append_log(&self, ts: Millis, level: u8, message: &str) -> Result<i64> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        // Appends of one site one after the other, to their commit: ids
        // become visible in order (see *The log in order*).
        db.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('sluice_log/' || $1, 0))",
            &[&self.site],
        )
        .await?;
        let stmt = db
            .prepare_cached(
                "INSERT INTO sluice_log (site, ts, level, message, node)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .await?;
        let row = db
            .query_one(
                &stmt,
                &[&self.site, &ts, &i32::from(level), &message, &self.node()],
            )
            .await?;
        db.commit().await?;
        get(&row, 0)
    }

    async fn log(
        &self,
        after: i64,
        since: Option<Millis>,
        max_level: u8,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let client = self.client().await?;
        // Newest first to take the newest `limit`, then turned around.
        let stmt = client
            .prepare_cached(
                "SELECT id, ts, level, message FROM sluice_log
                  WHERE site = $1 AND id > $2 AND ts >= $3 AND level <= $4
                  ORDER BY id DESC LIMIT $5",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &self.site,
                    &after,
                    &since.unwrap_or(i64::MIN),
                    &i32::from(max_level),
                    &limit_of(limit),
                ],
            )
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let level: i32 = get(r, 2)?;
                Ok(LogEntry {
                    id: get(r, 0)?,
                    ts: get(r, 1)?,
                    level: u8::try_from(level)
                        .map_err(|_| corrupt("log level", &level.to_string()))?,
                    message: get(r, 3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<i64> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(INSERT_AUDIT).await?;
        let row = client
            .query_one(&stmt, &audit_params(&self.site, &self.node(), &entry))
            .await?;
        get(&row, 0)
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, ts, actor, action, subject, reason, outcome, node FROM sluice_audit
                  WHERE site = $1 ORDER BY id DESC LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&self.site, &limit_of(limit)]).await?;
        rows.iter().map(audit_entry).collect()
    }

    async fn add_history(&self, at: Millis, rows: Vec<(String, Activity, i64)>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let column =
            |f: fn(&Activity) -> i64| rows.iter().map(|(_, c, _)| f(c)).collect::<Vec<_>>();
        let names: Vec<&str> = rows.iter().map(|(name, _, _)| name.as_str()).collect();
        let depths: Vec<i64> = rows.iter().map(|(_, _, depth)| *depth).collect();
        let client = self.client().await?;
        // In name order, so two nodes adding to the same minutes take the
        // rows' locks in the same order.
        let stmt = client
            .prepare_cached(
                "INSERT INTO sluice_history
                   (site, integration, at, span, queued, delivered, failed, retried, depth)
                 SELECT $1, n, $2, $3, q, d, f, r, depth
                   FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
                               $8::bigint[], $9::bigint[]) AS t(n, q, d, f, r, depth)
                  ORDER BY n
                 ON CONFLICT (site, integration, at, span) DO UPDATE SET
                   queued = sluice_history.queued + excluded.queued,
                   delivered = sluice_history.delivered + excluded.delivered,
                   failed = sluice_history.failed + excluded.failed,
                   retried = sluice_history.retried + excluded.retried,
                   depth = excluded.depth",
            )
            .await?;
        client
            .execute(
                &stmt,
                &[
                    &self.site,
                    &at,
                    &MINUTE,
                    &names,
                    &column(|c| c.queued),
                    &column(|c| c.delivered),
                    &column(|c| c.failed),
                    &column(|c| c.retried),
                    &depths,
                ],
            )
            .await?;
        Ok(())
    }

    async fn history(&self, integration: Option<&str>, since: Millis) -> Result<Vec<HistoryRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT integration, at, span, queued, delivered, failed, retried, depth
                   FROM sluice_history
                  WHERE site = $1 AND at >= $2 AND ($3::text IS NULL OR integration = $3)
                  ORDER BY at, integration",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&self.site, &since, &integration])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryRow {
                    integration: get(r, 0)?,
                    at: get(r, 1)?,
                    span: get(r, 2)?,
                    counts: Activity {
                        queued: get(r, 3)?,
                        delivered: get(r, 4)?,
                        failed: get(r, 5)?,
                        retried: get(r, 6)?,
                    },
                    depth: get(r, 7)?,
                })
            })
            .collect()
    }

    async fn roll_history(&self, hours_before: Millis, drop_before: Millis) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        db.execute(
            "INSERT INTO sluice_history
               (site, integration, at, span, queued, delivered, failed, retried, depth)
             SELECT site, integration, at - at % $3, $3, sum(queued), sum(delivered),
                    sum(failed), sum(retried), (array_agg(depth ORDER BY at DESC))[1]
               FROM sluice_history
              WHERE site = $1 AND span = $4 AND at < $2
              GROUP BY site, integration, at - at % $3
              ORDER BY integration, at - at % $3
             ON CONFLICT (site, integration, at, span) DO UPDATE SET
               queued = sluice_history.queued + excluded.queued,
               delivered = sluice_history.delivered + excluded.delivered,
               failed = sluice_history.failed + excluded.failed,
               retried = sluice_history.retried + excluded.retried,
               depth = excluded.depth",
            &[&self.site, &hours_before, &HOUR, &MINUTE],
        )
        .await?;
        db.execute(
            "DELETE FROM sluice_history WHERE site = $1 AND span = $3 AND at < $2",
            &[&self.site, &hours_before, &MINUTE],
        )
        .await?;
        db.execute(
            "DELETE FROM sluice_history WHERE site = $1 AND at < $2",
            &[&self.site, &drop_before],
        )
        .await?;
        db.execute(
            "DELETE FROM sluice_hold_periods WHERE site = $1 AND until < $2",
            &[&self.site, &drop_before],
        )
        .await?;
        db.commit().await?;
        Ok(())
    }

    async fn hold_periods(
        &self,
        integration: Option<&str>,
        since: Millis,
    ) -> Result<Vec<HoldPeriod>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT integration, kind, placed_by, reason, since, until
                   FROM sluice_hold_periods
                  WHERE site = $1 AND (until IS NULL OR until >= $2)
                    AND ($3::text IS NULL OR integration = $3)
                  ORDER BY since, integration, kind",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&self.site, &since, &integration])
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = get(r, 1)?;
                let kind = HoldKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown hold kind '{kind}'")))?;
                Ok(HoldPeriod {
                    integration: get(r, 0)?,
                    hold: Hold {
                        kind,
                        by: get(r, 2)?,
                        since: get(r, 4)?,
                        reason: get(r, 3)?,
                    },
                    until: get(r, 5)?,
                })
            })
            .collect()
    }

    async fn open_alerts(&self) -> Result<Vec<OpenAlert>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT channel, key, condition, last_sent FROM sluice_alert_conditions
                  WHERE site = $1 ORDER BY channel, key",
            )
            .await?;
        let rows = client.query(&stmt, &[&self.site]).await?;
        rows.iter()
            .map(|r| {
                Ok(OpenAlert {
                    channel: get(r, 0)?,
                    key: get(r, 1)?,
                    condition: get(r, 2)?,
                    last_sent: get(r, 3)?,
                })
            })
            .collect()
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
            "INSERT INTO sluice_alert_conditions (site, channel, key, condition, last_sent)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site, channel, key) DO NOTHING",
            &[&self.site, &channel, &key, &condition, &now],
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
            "UPDATE sluice_alert_conditions SET last_sent = $5
              WHERE site = $1 AND channel = $2 AND key = $3 AND last_sent = $4",
            &[&self.site, &channel, &key, &was, &now],
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
            "DELETE FROM sluice_alert_conditions
              WHERE site = $1 AND channel = $2 AND key = $3",
            &[&self.site, &channel, &key],
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
        let client = self.client().await?;
        // SKIP LOCKED: what another node is claiming now is left to it.
        let rows = client
            .query(
                "UPDATE sluice_alert_outbox SET next_at = $3
                  WHERE id IN (SELECT id FROM sluice_alert_outbox AS a
                                WHERE site = $1 AND next_at <= $2
                                  AND NOT EXISTS (SELECT 1 FROM sluice_alert_outbox AS b
                                                   WHERE b.site = a.site
                                                     AND b.channel = a.channel
                                                     AND b.id < a.id AND b.next_at > $2)
                                ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING id, channel, document, attempts",
                &[&self.site, &now, &(now + hold), &limit_of(limit)],
            )
            .await?;
        let mut due = rows
            .iter()
            .map(|r| {
                Ok(QueuedAlert {
                    id: get(r, 0)?,
                    channel: get(r, 1)?,
                    document: get(r, 2)?,
                    attempts: i64::from(get::<i32>(r, 3)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        due.sort_by_key(|a| a.id);
        Ok(due)
    }

    async fn alert_sent(&self, id: i64, audit: AuditEntry) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        db.execute(
            "DELETE FROM sluice_alert_outbox WHERE site = $1 AND id = $2",
            &[&self.site, &id],
        )
        .await?;
        insert_audit(&db, &self.site, self.node(), &audit).await?;
        db.commit().await?;
        Ok(())
    }

    async fn alert_failed(&self, id: i64, next_at: Millis, error: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sluice_alert_outbox SET attempts = attempts + 1, next_at = $3,
                        last_error = $4
                  WHERE site = $1 AND id = $2",
                &[&self.site, &id, &next_at, &error],
            )
            .await?;
        Ok(())
    }

    async fn postpone_alert(&self, id: i64, next_at: Millis) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sluice_alert_outbox SET next_at = $3 WHERE site = $1 AND id = $2",
                &[&self.site, &id, &next_at],
            )
            .await?;
        Ok(())
    }

    fn space(&self) -> watch::Receiver<Space> {
        self.space.subscribe()
    }
}

/// Puts an alert in the outbox, due now, inside the open transaction.
async fn queue_alert(
    db: &deadpool_postgres::Transaction<'_>,
    site: &String,
    channel: &str,
    document: &str,
    now: Millis,
) -> Result<()> {
    db.execute(
        "INSERT INTO sluice_alert_outbox (site, channel, document, queued_at, next_at)
         VALUES ($1, $2, $3, $4, $4)",
        &[site, &channel, &document, &now],
    )
    .await?;
    Ok(())
}

/// The parameters of [`INSERT_AUDIT`].
fn audit_params<'a>(
    site: &'a String,
    node: &'a Option<&'a str>,
    entry: &'a AuditEntry,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 8] {
    [
        site,
        &entry.ts,
        &entry.actor,
        &entry.action,
        &entry.subject,
        &entry.reason,
        &entry.outcome,
        node,
    ]
}

/// Appends `entry` to the site's audit trail inside the open transaction.
async fn insert_audit(
    db: &deadpool_postgres::Transaction<'_>,
    site: &String,
    node: Option<&str>,
    entry: &AuditEntry,
) -> Result<i64> {
    let stmt = db.prepare_cached(INSERT_AUDIT).await?;
    get(
        &db.query_one(&stmt, &audit_params(site, &node, entry))
            .await?,
        0,
    )
}

#[cfg(test)]
mod tests;
