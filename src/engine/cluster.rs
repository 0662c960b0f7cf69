//! A node of a cluster: several `sluice serve` on one PostgreSQL store,
//! each integration sent by one node at a time, the holder of its lease.
//!
//! # Design constraints
//! - **One sender per integration.** A node sends an integration only while
//!   it holds its lease ([`Integration::set_lease`]), by its own clock a
//!   tenth of the lease before the lease runs out in the database: a node
//!   that cannot renew (frozen, cut off) has stopped sending before another
//!   may take the lease over.
//! - **Fencing.** What the sender records (acks, failed attempts,
//!   settlements) and what a run queues with its checkpoint is written only
//!   under the lease at the epoch this node was given (`store::postgres::
//!   cluster`). A node that wakes after its lease was taken over finds its
//!   writes refused, and stops sending that integration.
//! - **Heartbeat.** Every third of the lease: the node's heartbeat, its
//!   leases renewed, the leases balanced (each live node holds about as
//!   many as the others: a node takes free or expired leases up to its
//!   share, and lets go of those beyond it once another node can take
//!   them), and every integration's state read again in case a
//!   notification was missed.
//! - **Changes reach the sender at once.** A change of state stored by any
//!   node is notified (`LISTEN/NOTIFY`): the holder reads it, waits until
//!   no delivery will start if it forbids sending, and confirms
//!   (`confirmed_at`). A pause asked on another node answers only then, or
//!   once the lease has expired.
//! - **The database's clock** decides expiry; this node's clock only when
//!   it stops sending early.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Daemon, EngineError, Integration, Result, Site};
use crate::log::level;
use crate::model::{FlowStatus, Millis};
use crate::store::postgres::cluster::{
    ClusterDb, Fences, LeaseRow, NodeRow, Notice, CHANGED, QUEUED,
};

/// The lease when the configuration sets none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// How long a pause waits for the holder's confirmation, in leases: the
/// holder confirms at its next heartbeat at the latest, and a holder that
/// cannot has lost the lease by then.
const CONFIRM_LEASES: u32 = 3;

/// A node of a cluster.
pub struct Cluster {
    /// This node's name (`--node`).
    pub node: String,
    pub lease: Duration,
    db: ClusterDb,
    /// The leases this node holds, shared with its stores.
    fences: Arc<Fences>,
    /// Every lease as last read, and the database's clock then: what the
    /// API shows of the integrations' owners.
    leases: Mutex<(Vec<LeaseRow>, Millis)>,
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    pub name: String,
    /// Where its API listens.
    pub address: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: its last heartbeat.
    pub heartbeat_at: String,
    /// Whether its heartbeat is recent (within one lease).
    pub alive: bool,
    /// `SITE/INTEGRATION` of each integration whose lease it holds.
    pub integrations: Vec<String>,
}

/// Who sends an integration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OwnerView {
    pub node: String,
    pub epoch: i64,
    /// RFC 3339: when the lease runs out unless renewed.
    pub expires_at: String,
}

pub(crate) use crate::model::rfc3339;

impl Cluster {
    pub fn new(node: &str, lease: Duration, db: ClusterDb, fences: Arc<Fences>) -> Arc<Cluster> {
        Arc::new(Cluster {
            node: node.to_string(),
            lease,
            db,
            fences,
            leases: Mutex::new((Vec::new(), 0)),
        })
    }

    fn ms(d: Duration) -> Millis {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    }

    /// Until when this node may send under a lease renewed at `asked`.
    fn valid_until(&self, asked: Instant) -> Instant {
        asked + self.lease - self.lease / 10
    }

    /// Registers the node (its API at `address`) and runs its heartbeat
    /// and its listener until `token` is cancelled; then lets its leases
    /// go.
    pub async fn run(
        self: Arc<Self>,
        daemon: Arc<Daemon>,
        address: String,
        token: CancellationToken,
    ) {
        match self.db.register(&self.node, &address).await {
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => tracing::error!(node = %self.node, "cannot register the node: {e}"),
        }
        tracing::info!(node = %self.node, lease_ms = Cluster::ms(self.lease), "node of a cluster");
        let listener = tokio::spawn(self.clone().listen(daemon.clone(), token.clone()));
        let every = self.lease / 3;
        loop {
            self.tick(&daemon).await;
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        listener.abort();
    }

    /// A clean shutdown: the node leaves the registry and its leases expire
    /// at once, for the other nodes to take over without waiting.
    pub async fn leave(&self) {
        for (site, integration, _) in self.fences.all() {
            self.fences.release(&site, &integration);
        }
        if let Err(e) = self.db.deregister(&self.node).await {
            tracing::warn!(node = %self.node, "cannot deregister the node: {e}");
        }
    }

    /// One heartbeat: alive, leases renewed, balanced, state read again.
    async fn tick(&self, daemon: &Daemon) {
        let bound = self.lease / 3;
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(bound, self.db.heartbeat(&self.node))
            .await
            .map_err(|_| crate::store::StoreError::Postgres("timed out".into()))
        {
            tracing::warn!(node = %self.node, "heartbeat: {e}");
        }
        self.renew(daemon).await;
        if let Err(e) = self.balance(daemon).await {
            tracing::warn!(node = %self.node, "cannot balance the leases: {e}");
        }
        for site in daemon.sites() {
            if let Err(e) = site.follow_store().await {
                tracing::warn!(site = %site.name, "cannot read the site's state: {e}");
            }
            for integration in site.integrations() {
                self.sync(&site, integration).await;
            }
        }
    }

    /// Renews every lease held; those taken over (or run out, when the
    /// database cannot be reached) stop being sent here.
    async fn renew(&self, daemon: &Daemon) {
        let held = self.fences.all();
        if held.is_empty() {
            return;
        }
        let asked = Instant::now();
        // A renewal that answers late is still good while the leases it
        // renews are: waited for up to then.
        let bound = self
            .valid_until(asked)
            .saturating_duration_since(Instant::now());
        let renewed =
            tokio::time::timeout(bound, self.db.renew(&self.node, &held, self.lease)).await;
        match renewed {
            Ok(Ok(kept)) => {
                let until = self.valid_until(asked);
                for (site, integration, epoch) in held {
                    let Some(i) = find(daemon, &site, &integration) else {
                        self.fences.release(&site, &integration);
                        continue;
                    };
                    if kept
                        .iter()
                        .any(|k| k.0 == site && k.1 == integration && k.2 == epoch)
                    {
                        i.1.set_lease(Some(until));
                    } else {
                        self.lose(
                            &i.0,
                            &i.1,
                            "its lease was taken over by another node after it ran out",
                        )
                        .await;
                    }
                }
            }
            Ok(Err(e)) => self.unrenewed(daemon, &held, &e.to_string()).await,
            Err(_) => {
                self.unrenewed(daemon, &held, "the database did not answer in time")
                    .await
            }
        }
    }

    /// The leases could not be renewed: those run out by this node's clock
    /// are let go (the sender stopped already: see `Integration::owned`).
    async fn unrenewed(&self, daemon: &Daemon, held: &[(String, String, i64)], why: &str) {
        tracing::warn!(node = %self.node, "cannot renew the leases: {why}");
        for (site, integration, _) in held {
            if let Some((site, i)) = find(daemon, site, integration) {
                if !i.owned() {
                    self.lose(&site, &i, &format!("its lease ran out unrenewed ({why})"))
                        .await;
                }
            }
        }
    }

    /// This node no longer sends `integration`.
    async fn lose(&self, site: &Site, integration: &Integration, why: &str) {
        self.fences.release(&site.name, &integration.name);
        integration.set_lease(None);
        site.log
            .write(
                level::ERROR,
                format!(
                    "Node {} stops sending integration {}: {why}",
                    self.node, integration.name
                ),
            )
            .await;
    }

    /// Takes free leases up to this node's share, or lets go of those
    /// beyond it.
    async fn balance(&self, daemon: &Daemon) -> crate::store::Result<()> {
        let (nodes, now) = self.db.nodes().await?;
        let leases = self.db.leases().await?;
        *self.leases.lock() = (leases.clone(), now);
        let live = nodes
            .iter()
            .filter(|n| n.heartbeat_at >= now - Cluster::ms(self.lease) || n.name == self.node)
            .count()
            .max(1);
        let all: Vec<(Arc<Site>, Arc<Integration>)> = daemon
            .sites()
            .into_iter()
            .flat_map(|s| {
                s.integrations()
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(move |i| (s.clone(), i))
            })
            .collect();
        let share = all.len().div_ceil(live);
        let mut mine = self.fences.all().len();
        if mine < share {
            // Free ones first in an order of this node's own, so that nodes
            // starting together do not all reach for the same one.
            let mut free: Vec<&(Arc<Site>, Arc<Integration>)> = all
                .iter()
                .filter(|(s, i)| {
                    self.fences.epoch(&s.name, &i.name).is_none()
                        && leases
                            .iter()
                            .find(|l| l.site == s.name && l.integration == i.name)
                            .is_none_or(|l| l.expires_at < now)
                })
                .collect();
            let salt = self
                .node
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            free.sort_by_key(|(s, i)| {
                format!("{}/{}", s.name, i.name)
                    .bytes()
                    .fold(salt, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)))
            });
            for (site, integration) in free {
                if mine >= share {
                    break;
                }
                let asked = Instant::now();
                if let Some(epoch) = self
                    .db
                    .acquire(&site.name, &integration.name, &self.node, self.lease)
                    .await?
                {
                    mine += 1;
                    self.take(site, integration, epoch, self.valid_until(asked))
                        .await;
                }
            }
        } else if mine > share && live > 1 {
            let mut held = self.fences.all();
            held.sort();
            for (site, integration, epoch) in held.into_iter().rev().take(mine - share) {
                if let Some((site, i)) = find(daemon, &site, &integration) {
                    self.hand_over(&site, &i, epoch).await?;
                }
            }
        }
        Ok(())
    }

    /// This node has just taken the lease of `integration`: it reads its
    /// state, finds what the node before it left (runs cut off, requests
    /// not yet run, endpoints down), and sends it from now on.
    async fn take(
        &self,
        site: &Arc<Site>,
        integration: &Arc<Integration>,
        epoch: i64,
        until: Instant,
    ) {
        self.fences.hold(&site.name, &integration.name, epoch);
        let at = self.db.now().await.unwrap_or(0);
        if let Err(e) = integration.refresh().await {
            tracing::warn!(site = %site.name, integration = %integration.name, "cannot read its state: {e}");
        }
        site.health.restore().await;
        integration.set_lease(Some(until));
        self.confirm(site, integration, at).await;
        site.log
            .write(
                level::INFO,
                format!(
                    "Node {} sends integration {} from now on (lease epoch {epoch})",
                    self.node, integration.name
                ),
            )
            .await;
        site.adopt_runs(integration, &self.node).await;
    }

    /// Lets another node send `integration`: no delivery starts here any
    /// more, the one in flight ends, then the lease expires at once.
    async fn hand_over(
        &self,
        site: &Site,
        integration: &Integration,
        epoch: i64,
    ) -> crate::store::Result<()> {
        integration.set_lease(None);
        integration.wait_in_flight().await;
        self.db
            .release(&site.name, &integration.name, &self.node, epoch)
            .await?;
        self.fences.release(&site.name, &integration.name);
        site.log
            .write(
                level::INFO,
                format!(
                    "Node {} hands integration {} over to a node with fewer",
                    self.node, integration.name
                ),
            )
            .await;
        Ok(())
    }

    /// Reads the integration's state again; as its holder, confirms that
    /// every change stored before now is in effect.
    async fn sync(&self, site: &Site, integration: &Integration) {
        let at = if integration.owned() {
            self.db.now().await.ok()
        } else {
            None
        };
        if let Err(e) = integration.refresh().await {
            tracing::warn!(site = %site.name, integration = %integration.name, "cannot read its state: {e}");
            return;
        }
        if let Some(at) = at {
            self.confirm(site, integration, at).await;
        }
    }

    async fn confirm(&self, site: &Site, integration: &Integration, at: Millis) {
        let Some(epoch) = self.fences.epoch(&site.name, &integration.name) else {
            return;
        };
        if let Err(e) = self
            .db
            .confirm(&site.name, &integration.name, &self.node, epoch, at)
            .await
        {
            tracing::warn!(site = %site.name, integration = %integration.name, "cannot confirm: {e}");
        }
    }

    /// Follows the notifications of the other nodes; after a cut, reads
    /// everything again.
    async fn listen(self: Arc<Self>, daemon: Arc<Daemon>, token: CancellationToken) {
        loop {
            match self.db.listen().await {
                Ok(mut notices) => {
                    self.tick(&daemon).await;
                    loop {
                        let notice = tokio::select! {
                            _ = token.cancelled() => return,
                            notice = notices.recv() => notice,
                        };
                        let Some(notice) = notice else { break };
                        self.on_notice(&daemon, notice).await;
                    }
                    tracing::warn!(node = %self.node, "the notifications' connection ended; listening again");
                }
                Err(e) => tracing::warn!(node = %self.node, "cannot listen for notifications: {e}"),
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn on_notice(&self, daemon: &Daemon, notice: Notice) {
        let Ok(site) = daemon.site(&notice.site) else {
            return;
        };
        if notice.channel == QUEUED {
            if let Ok(i) = site.integration(&notice.name) {
                i.wake();
            }
            return;
        }
        if notice.channel != CHANGED || notice.node == self.node {
            return;
        }
        match notice.kind.as_str() {
            "site" => {
                if let Err(e) = site.follow_store().await {
                    tracing::warn!(site = %site.name, "cannot read the site's state: {e}");
                }
                for integration in site.integrations() {
                    self.sync(&site, integration).await;
                }
            }
            "integration" => {
                if let Ok(integration) = site.integration(&notice.name) {
                    self.sync(&site, integration).await;
                    if integration.owned() {
                        // A person's retry or ignore: the queue is read again.
                        integration.rewind();
                    }
                }
            }
            "reload" => daemon.follow_reload(&site.name, &notice.node).await,
            "flow" => {
                if let Ok((ic, _)) = site.flow(&notice.name) {
                    let owned = site.integration(&ic.name).is_ok_and(|i| i.owned());
                    if owned {
                        site.run_requested(&notice.name).await;
                    }
                }
            }
            _ => {}
        }
    }

    /// The site's configuration was reloaded here: the other nodes read
    /// the file again too.
    pub async fn reloaded(&self, site: &str) {
        let notice = Notice::new(site, "reload", site, &self.node);
        if let Err(e) = self.db.notify(CHANGED, &notice).await {
            tracing::warn!(site, "cannot tell the other nodes of the reload: {e}");
        }
    }

    /// Records queued here for an integration another node sends: that
    /// node is told.
    pub async fn queued(&self, site: &str, integration: &Integration) {
        if integration.owned() {
            return;
        }
        let notice = Notice::new(site, "integration", &integration.name, &self.node);
        if let Err(e) = self.db.notify(QUEUED, &notice).await {
            // Its heartbeat finds them.
            tracing::debug!(site, integration = %integration.name, "cannot notify: {e}");
        }
    }

    /// After a change stored here that forbids sending: waits until the
    /// node that sends `integration` has taken it in (no delivery starts
    /// there any more), or until no node holds its lease.
    pub async fn await_holder(&self, site: &str, integration: &str) -> Result<()> {
        let since = self.db.now().await?;
        // A notification sent after `since`: the holder reads the state
        // after it, and confirms a time past it.
        let notice = Notice::new(site, "integration", integration, &self.node);
        self.db.notify(CHANGED, &notice).await?;
        let deadline = Instant::now() + self.lease * CONFIRM_LEASES;
        loop {
            let (lease, now) = self.db.lease(site, integration).await?;
            let done = match &lease {
                None => true,
                Some(l) => {
                    (l.owner == self.node && self.fences.epoch(site, integration) == Some(l.epoch))
                        || l.expires_at < now
                        || l.confirmed_at >= since
                }
            };
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let holder = lease.map(|l| l.owner).unwrap_or_default();
                return Err(EngineError::Unavailable {
                    message: format!(
                        "the change of {integration} is stored, but node {holder}, which sends \
                         it, has not confirmed it yet; it takes effect there when it does"
                    ),
                    retry_after: Duration::from_secs(1),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Who sends `site`/`integration`, as last read.
    pub fn owner(&self, site: &str, integration: &str) -> Option<OwnerView> {
        let leases = self.leases.lock();
        let (rows, now) = &*leases;
        rows.iter()
            .find(|l| l.site == site && l.integration == integration && l.expires_at >= *now)
            .map(|l| OwnerView {
                node: l.owner.clone(),
                epoch: l.epoch,
                expires_at: rfc3339(l.expires_at),
            })
    }

    /// Every node of the cluster with the integrations it holds.
    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let (nodes, now) = self.db.nodes().await?;
        let leases = self.db.leases().await?;
        Ok(nodes
            .into_iter()
            .map(|n: NodeRow| {
                let integrations = leases
                    .iter()
                    .filter(|l| l.owner == n.name && l.expires_at >= now)
                    .map(|l| format!("{}/{}", l.site, l.integration))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                NodeView {
                    alive: n.heartbeat_at >= now - Cluster::ms(self.lease),
                    name: n.name,
                    address: n.address,
                    started_at: rfc3339(n.started_at),
                    heartbeat_at: rfc3339(n.heartbeat_at),
                    integrations,
                }
            })
            .collect())
    }
}

/// The site and integration of that name, if configured.
fn find(daemon: &Daemon, site: &str, integration: &str) -> Option<(Arc<Site>, Arc<Integration>)> {
    let site = daemon.site(site).ok()?;
    let integration = site.integration(integration).ok()?.clone();
    Some((site, integration))
}

impl Site {
    /// Who sends `integration`, on a cluster.
    pub fn owner(&self, integration: &str) -> Option<OwnerView> {
        self.cluster.as_ref()?.owner(&self.name, integration)
    }

    /// The flow's status says a run was asked for on another node: it
    /// runs here (this node sends its integration), unless it runs here
    /// already.
    pub(crate) async fn run_requested(&self, flow: &str) {
        let Ok(record) = self.store.flow(flow).await else {
            return;
        };
        if let FlowStatus::Running(mode) = record.status {
            if !self.run_in_progress(flow) {
                self.dispatch_run(flow, mode);
            }
        }
    }
}
