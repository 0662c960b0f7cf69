//! What the nodes of a cluster share in the database beside the sites'
//! stores: the node registry, the integrations' leases and the
//! notifications. The engine decides (which lease to take, when to let one
//! go); here are its statements.
//!
//! # Design constraints
//! - **One clock.** Every time here is the database's
//!   (`clock_timestamp()`, in milliseconds): a lease expires by it,
//!   whatever the nodes' own clocks say.
//! - **A lease changes hands only once it expired.** [`ClusterDb::acquire`]
//!   takes a lease that is free or expired, and raises its epoch; a holder
//!   renews ([`ClusterDb::renew`]) or lets go ([`ClusterDb::release`]) only
//!   with the epoch it was given. So two nodes never hold one epoch.
//! - **Fencing.** A [`PgStore`](super::PgStore) given the node's [`Fences`]
//!   writes an integration's acknowledgements, failed attempts, settlements
//!   and runs' records only in a transaction that finds the lease still
//!   held by this node at that epoch, and keeps the lease row locked
//!   (`FOR SHARE`) to its commit: a node taking the lease over waits for
//!   that commit, then reads the queue as it left it.
//! - **Notifications** (`LISTEN/NOTIFY`): `sluice_changed` carries
//!   `SITE \x1f KIND \x1f NAME \x1f NODE` (kind `site`, `integration` or
//!   `flow`; the node that wrote it), sent in the transaction of the
//!   change; `sluice_queued` carries `SITE \x1f integration \x1f NAME \x1f
//!   NODE` when records were queued by a node that does not send them. A notification may be lost (a connection
//!   cut): the heartbeat reads the same state again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{get, said};
use crate::model::Millis;
use crate::store::{Result, StoreError};

/// The database's clock, in milliseconds.
pub(super) const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The channel of changes of state (site, integration, flow).
pub const CHANGED: &str = "sluice_changed";
/// The channel of records queued by a node that does not send them.
pub const QUEUED: &str = "sluice_queued";

/// Separates the parts of a notification's payload.
const SEP: char = '\u{1f}';

/// The leases this node holds, by site and integration: the epoch each was
/// given. Shared by the node's engine (which takes and loses leases) and
/// its stores (which write only under a lease held).
pub struct Fences {
    node: String,
    held: Mutex<HashMap<(String, String), i64>>,
    /// How long a fenced transaction may sit idle (its node frozen, or cut
    /// off) before the server ends it: half a lease, so that the lease row
    /// it holds `FOR SHARE` is free again by the time the lease runs out and
    /// another node can take it.
    idle_limit: std::time::Duration,
}

impl Fences {
    pub fn new(node: &str, lease: std::time::Duration) -> Arc<Fences> {
        Arc::new(Fences {
            node: node.to_string(),
            held: Mutex::new(HashMap::new()),
            idle_limit: (lease / 2).max(std::time::Duration::from_millis(100)),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn hold(&self, site: &str, integration: &str, epoch: i64) {
        self.held
            .lock()
            .insert((site.to_string(), integration.to_string()), epoch);
    }

    pub fn release(&self, site: &str, integration: &str) {
        self.held
            .lock()
            .remove(&(site.to_string(), integration.to_string()));
    }

    /// Every lease held: site, integration, epoch.
    pub fn all(&self) -> Vec<(String, String, i64)> {
        self.held
            .lock()
            .iter()
            .map(|((s, i), e)| (s.clone(), i.clone(), *e))
            .collect()
    }

    pub fn epoch(&self, site: &str, integration: &str) -> Option<i64> {
        self.held
            .lock()
            .get(&(site.to_string(), integration.to_string()))
            .copied()
    }
}

/// Checks, inside the open transaction `db`, that `fences`' node still
/// holds the lease of `site`/`integration` at the epoch it was given, and
/// locks the lease row to the commit; [`StoreError::Fenced`] if not.
pub(super) async fn check_fence(
    db: &deadpool_postgres::Transaction<'_>,
    fences: &Fences,
    site: &str,
    integration: &str,
) -> Result<()> {
    let lost = |epoch: Option<i64>| {
        StoreError::Fenced(match epoch {
            Some(epoch) => format!(
                "node {} no longer holds the lease of {site}/{integration} (epoch {epoch})",
                fences.node
            ),
            None => format!(
                "node {} does not hold the lease of {site}/{integration}",
                fences.node
            ),
        })
    };
    let Some(epoch) = fences.epoch(site, integration) else {
        return Err(lost(None));
    };
    // A node frozen (SIGSTOP, a stalled VM) inside this transaction would
    // hold the lease row, and every row it wrote, until it woke: the node
    // taking the lease over would wait for it. The server ends the
    // transaction instead; the frozen node's write then fails, as a fenced
    // write should.
    db.batch_execute(&format!(
        "SET LOCAL idle_in_transaction_session_timeout = {}",
        fences.idle_limit.as_millis()
    ))
    .await?;
    let stmt = db
        .prepare_cached(
            "SELECT 1 FROM sluice_leases
              WHERE site = $1 AND integration = $2 AND owner = $3 AND epoch = $4
              FOR SHARE",
        )
        .await?;
    match db
        .query_opt(&stmt, &[&site, &integration, &fences.node, &epoch])
        .await?
    {
        Some(_) => Ok(()),
        None => Err(lost(Some(epoch))),
    }
}

/// Sends a notification of a change inside the open transaction `db`: it
/// goes out with the commit, or not at all.
pub(super) async fn notify_in(
    db: &deadpool_postgres::Transaction<'_>,
    channel: &str,
    notice: &Notice,
) -> Result<()> {
    db.execute("SELECT pg_notify($1, $2)", &[&channel, &notice.payload()])
        .await?;
    Ok(())
}

/// A notification as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// [`CHANGED`] or [`QUEUED`].
    pub channel: String,
    pub site: String,
    /// `site`, `integration` or `flow`.
    pub kind: String,
    pub name: String,
    /// The node that sent it.
    pub node: String,
}

impl Notice {
    pub fn new(site: &str, kind: &str, name: &str, node: &str) -> Notice {
        Notice {
            channel: String::new(),
            site: site.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            node: node.to_string(),
        }
    }

    fn payload(&self) -> String {
        let Notice {
            site,
            kind,
            name,
            node,
            ..
        } = self;
        format!("{site}{SEP}{kind}{SEP}{name}{SEP}{node}")
    }

    fn parse(channel: &str, payload: &str) -> Option<Notice> {
        let mut parts = payload.splitn(4, SEP);
        Some(Notice {
            channel: channel.to_string(),
            site: parts.next()?.to_string(),
            kind: parts.next()?.to_string(),
            name: parts.next()?.to_string(),
            node: parts.next()?.to_string(),
        })
    }
}

/// A node as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub address: String,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub site: String,
    pub integration: String,
    pub owner: String,
    pub epoch: i64,
    pub expires_at: Millis,
    pub confirmed_at: Millis,
}

/// The cluster's shared tables, on a small pool of its own.
pub struct ClusterDb {
    pool: Pool,
    url: String,
}

impl ClusterDb {
    /// A pool for the database at `url` (the schema is brought up to date
    /// by the sites' stores).
    pub fn open(url: &str) -> Result<ClusterDb> {
        let pool = super::pool(url, 4)?;
        // No connection yet: the sites' stores, opened next, connect first
        // (and say which site could not), and bring the schema up to date.
        Ok(ClusterDb {
            pool,
            url: url.to_string(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// The database's clock now.
    pub async fn now(&self) -> Result<Millis> {
        let client = self.client().await?;
        let row = client.query_one(&format!("SELECT {DB_NOW}"), &[]).await?;
        get(&row, 0)
    }

    /// Registers this node (again): started now, its heartbeat now. Returns
    /// the heartbeat a node of the same name last gave, if one did.
    pub async fn register(&self, node: &str, address: &str) -> Result<Option<Millis>> {
        let client = self.client().await?;
        let before = client
            .query_opt(
                "SELECT heartbeat_at FROM sluice_nodes WHERE name = $1",
                &[&node],
            )
            .await?
            .map(|r| get::<Millis>(&r, 0))
            .transpose()?;
        client
            .execute(
                &format!(
                    "INSERT INTO sluice_nodes (name, address, started_at, heartbeat_at)
                     VALUES ($1, $2, {DB_NOW}, {DB_NOW})
                     ON CONFLICT (name) DO UPDATE SET address = excluded.address,
                       started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at"
                ),
                &[&node, &address],
            )
            .await?;
        Ok(before)
    }

    /// This node is alive: its heartbeat now.
    pub async fn heartbeat(&self, node: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE sluice_nodes SET heartbeat_at = {DB_NOW} WHERE name = $1"
            ))
            .await?;
        client.execute(&stmt, &[&node]).await?;
        Ok(())
    }

    /// Every registered node, by name, and the database's clock.
    pub async fn nodes(&self) -> Result<(Vec<NodeRow>, Millis)> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT name, address, started_at, heartbeat_at, {DB_NOW}
                       FROM sluice_nodes ORDER BY name"
                ),
                &[],
            )
            .await?;
        let mut now = 0;
        let mut out = Vec::new();
        for r in &rows {
            now = get(r, 4)?;
            out.push(NodeRow {
                name: get(r, 0)?,
                address: get(r, 1)?,
                started_at: get(r, 2)?,
                heartbeat_at: get(r, 3)?,
            });
        }
        if rows.is_empty() {
            now = self.now().await?;
        }
        Ok((out, now))
    }

    /// Removes the node from the registry (a clean shutdown), and lets its
    /// leases go at once.
    pub async fn deregister(&self, node: &str) -> Result<()> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        db.execute("DELETE FROM sluice_nodes WHERE name = $1", &[&node])
            .await?;
        db.execute(
            "UPDATE sluice_leases SET expires_at = 0 WHERE owner = $1",
            &[&node],
        )
        .await?;
        db.commit().await?;
        Ok(())
    }

    /// Every lease, by site and integration.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT site, integration, owner, epoch, expires_at, confirmed_at
                   FROM sluice_leases ORDER BY site, integration",
            )
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(lease_row)
            .collect()
    }

    /// One lease, if it was ever taken, and the database's clock.
    pub async fn lease(&self, site: &str, integration: &str) -> Result<(Option<LeaseRow>, Millis)> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT site, integration, owner, epoch, expires_at, confirmed_at, {DB_NOW}
                   FROM sluice_leases WHERE site = $1 AND integration = $2"
            ))
            .await?;
        match client.query_opt(&stmt, &[&site, &integration]).await? {
            Some(row) => Ok((Some(lease_row(&row)?), get(&row, 6)?)),
            None => Ok((None, self.now().await?)),
        }
    }

    /// Takes the lease of `site`/`integration` for `node` if nobody holds
    /// it (never taken, or expired): its new epoch, or `None`.
    pub async fn acquire(
        &self,
        site: &str,
        integration: &str,
        node: &str,
        lease: Duration,
    ) -> Result<Option<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "INSERT INTO sluice_leases (site, integration, owner, epoch, expires_at)
                 VALUES ($1, $2, $3, 1, {DB_NOW} + $4)
                 ON CONFLICT (site, integration) DO UPDATE
                 SET owner = excluded.owner, epoch = sluice_leases.epoch + 1,
                     expires_at = excluded.expires_at, confirmed_at = 0
                 WHERE sluice_leases.expires_at < {DB_NOW}
                 RETURNING epoch"
            ))
            .await?;
        let row = client
            .query_opt(&stmt, &[&site, &integration, &node, &millis(lease)])
            .await?;
        row.map(|r| get(&r, 0)).transpose()
    }

    /// Extends the leases `node` holds (site, integration, epoch) by
    /// `lease` from now; returns those it still held (the others were taken
    /// over after they expired).
    pub async fn renew(
        &self,
        node: &str,
        held: &[(String, String, i64)],
        lease: Duration,
    ) -> Result<Vec<(String, String, i64)>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let sites: Vec<&str> = held.iter().map(|h| h.0.as_str()).collect();
        let names: Vec<&str> = held.iter().map(|h| h.1.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|h| h.2).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE sluice_leases l SET expires_at = {DB_NOW} + $2
                   FROM unnest($3::text[], $4::text[], $5::bigint[]) AS h(site, integration, epoch)
                  WHERE l.site = h.site AND l.integration = h.integration
                    AND l.epoch = h.epoch AND l.owner = $1
                  RETURNING l.site, l.integration, l.epoch"
            ))
            .await?;
        client
            .query(&stmt, &[&node, &millis(lease), &sites, &names, &epochs])
            .await?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
            .collect()
    }

    /// Lets a lease go at once (to a node with fewer): it expires now.
    pub async fn release(
        &self,
        site: &str,
        integration: &str,
        node: &str,
        epoch: i64,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sluice_leases SET expires_at = 0
                  WHERE site = $1 AND integration = $2 AND owner = $3 AND epoch = $4",
                &[&site, &integration, &node, &epoch],
            )
            .await?;
        Ok(())
    }

    /// The holder has taken in every change stored before `at`.
    pub async fn confirm(
        &self,
        site: &str,
        integration: &str,
        node: &str,
        epoch: i64,
        at: Millis,
    ) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE sluice_leases SET confirmed_at = GREATEST(confirmed_at, $5)
                  WHERE site = $1 AND integration = $2 AND owner = $3 AND epoch = $4",
            )
            .await?;
        client
            .execute(&stmt, &[&site, &integration, &node, &epoch, &at])
            .await?;
        Ok(())
    }

    /// Sends a notification on `channel` now.
    pub async fn notify(&self, channel: &str, notice: &Notice) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&channel, &notice.payload()])
            .await?;
        Ok(())
    }

    /// A connection of its own that listens on [`CHANGED`] and [`QUEUED`]:
    /// the notifications come on the receiver, which ends when the
    /// connection does (the caller listens again, and reads the state it
    /// may have missed).
    pub async fn listen(&self) -> Result<mpsc::Receiver<Notice>> {
        let (client, mut connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| StoreError::Postgres(said(&e)))?;
        let (tx, rx) = mpsc::channel(1024);
        // The client must live as long as the connection listens: handed to
        // the task that drives the connection once LISTEN went through.
        let (hold, held) = tokio::sync::oneshot::channel::<tokio_postgres::Client>();
        tokio::spawn(async move {
            let mut held = held;
            let mut waiting = true;
            let mut _client = None;
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            loop {
                tokio::select! {
                    client = &mut held, if waiting => {
                        waiting = false;
                        _client = client.ok();
                    }
                    message = messages.next() => match message {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            if let Some(notice) = Notice::parse(n.channel(), n.payload()) {
                                // Full: the receiver is behind; the heartbeat
                                // reads the state again anyway.
                                let _dropped = tx.try_send(notice);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANGED}; LISTEN {QUEUED}"))
            .await?;
        let _listening = hold.send(client);
        Ok(rx)
    }
}

fn lease_row(r: &tokio_postgres::Row) -> Result<LeaseRow> {
    Ok(LeaseRow {
        site: get(r, 0)?,
        integration: get(r, 1)?,
        owner: get(r, 2)?,
        epoch: get(r, 3)?,
        expires_at: get(r, 4)?,
        confirmed_at: get(r, 5)?,
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
