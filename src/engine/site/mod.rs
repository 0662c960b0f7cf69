//! A site's supervisor: its state (seed 000), its workers, its flows' run
//! requests and its webhook intake.
//!
//! # Files
//! - `mod.rs`: [`Site`], what it is made of, its lookups and its audit.
//! - `lifecycle.rs`: restore, start, stop and the workers.
//! - `flows.rs`: run requests, scheduled starts, integration start-ups and
//!   the runs' progress.
//! - `actions.rs`: the operators' tools, one method each that does all of
//!   it: an integration's pause, resume, start and stop, an endpoint's test
//!   and reauthorization, and retry, replay or ignore of a transaction.
//! - `errors.rs`: errors handled in bulk: an integration's transactions
//!   in Error grouped by cause, and a whole group retried or ignored (one
//!   method, as in `actions.rs`).
//! - `intake.rs`: records POSTed to a webhook flow.
//! - `reads.rs`: what the API and the metrics read of the site's store
//!   (which is the engine's alone): transactions as operators see them,
//!   flows' records, runs, queue depths, the log and the audit trail.
//!
//! # Invariants
//! - Every state the site takes is one the model returned
//!   ([`SiteState::apply`]); every change of an integration, a flow or a
//!   transaction is decided by the model too, then stored as decided.
//! - Start and stop are serialised by the site's control lock; a second
//!   request waits, then meets the new state and is refused with 409.
//! - A start or a stop is stored first, in one transaction with its holds
//!   and its audit entry, and only then carried out (workers started or
//!   halted, state and holds in memory). If the store refuses it (a full
//!   disk), nothing changes: the site goes on exactly as before, now and
//!   after a restart.
//! - Workers log their start before the site logs `Site X started
//!   successfully!`, and their stop before `Site X stopped successfully!`.
//! - Stopping cancels every worker: runs in progress halt at their next page
//!   boundary (a page is queued with its checkpoint atomically, so nothing is
//!   lost or repeated) and a delivery in flight is dropped unacknowledged (it
//!   is sent again, with the same idempotency key, after the next start).

mod actions;
mod errors;
mod flows;
mod intake;
mod lifecycle;
mod links;
mod reads;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::endpoint::Endpoint;
use super::health::Health;
use super::{EngineError, Integration, Result};
use crate::config::{FlowConfig, IntegrationConfig, SiteConfig};
use crate::log::SiteLog;
use crate::model::{now_millis, Millis, Refusal, RunMode, SiteState};
use crate::store::{AuditEntry, Store};

pub use actions::EndpointTest;
pub use errors::GroupActed;
pub use links::MAX_LINKS;

/// An audit entry made now.
fn audit_entry(
    actor: &str,
    action: &str,
    subject: &str,
    reason: Option<&str>,
    outcome: &str,
) -> AuditEntry {
    AuditEntry {
        id: 0,
        ts: now_millis(),
        actor: actor.to_string(),
        action: action.to_string(),
        subject: subject.to_string(),
        reason: reason.map(str::to_string),
        outcome: outcome.to_string(),
        node: None,
    }
}

/// The last stop of the site among `audit` (newest first).
fn last_stop(audit: &[AuditEntry]) -> Option<StopInfo> {
    audit
        .iter()
        .find(|a| a.action == "site.stop" && a.outcome == "ok")
        .map(|a| StopInfo {
            reason: a.reason.clone().unwrap_or_default(),
            by: a.actor.clone(),
            at: a.ts,
        })
}

/// A request for one run of a flow.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub flow: String,
    pub mode: RunMode,
}

/// Who stopped the site last, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopInfo {
    pub reason: String,
    pub by: String,
    pub at: Millis,
}

#[derive(Debug, Clone)]
pub struct SiteStatus {
    pub state: SiteState,
    pub since: Millis,
    pub last_stop: Option<StopInfo>,
}

struct Workers {
    token: CancellationToken,
    tasks: JoinSet<()>,
}

pub struct Site {
    pub name: String,
    pub config: SiteConfig,
    /// The engine's alone: readers outside it go through `reads.rs`, and
    /// every change through the engine's methods, which decide by the
    /// model.
    pub(in crate::engine) store: Arc<dyn Store>,
    pub log: Arc<SiteLog>,
    integrations: BTreeMap<String, Arc<Integration>>,
    endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// Endpoint health and the holds it places.
    pub health: Arc<Health>,
    status: Mutex<SiteStatus>,
    workers: tokio::sync::Mutex<Option<Workers>>,
    /// Ad-hoc run requests, to the Trigger worker while the site runs.
    trigger: Mutex<Option<mpsc::Sender<RunRequest>>>,
    /// Serialises flow status changes (requests, scheduled starts, ends).
    flow_control: tokio::sync::Mutex<()>,
    parent: CancellationToken,
    /// The configuration file's folder: relative paths resolve against it.
    base_dir: std::path::PathBuf,
    /// Runs in progress: when each last made progress, and what it is doing.
    runs: Mutex<std::collections::HashMap<String, (tokio::time::Instant, String)>>,
    /// Set while a reload replaces this site: its integrations show Server
    /// Reinitializing.
    reinitializing: std::sync::atomic::AtomicBool,
    /// Start-ups of integrations, one at a time in the order asked (seed
    /// 001: queued starts). Tokio's mutex is fair: first come, first served.
    start_queue: Arc<tokio::sync::Mutex<()>>,
    /// On a node of a cluster: the cluster. Its integrations are then sent
    /// (and their flows run) only while this node holds their leases.
    pub(in crate::engine) cluster: Option<Arc<crate::engine::cluster::Cluster>>,
}

impl Site {
    pub async fn open(
        config: SiteConfig,
        base_dir: &Path,
        store: Arc<dyn Store>,
        parent: CancellationToken,
        cluster: Option<Arc<crate::engine::cluster::Cluster>>,
    ) -> Result<Arc<Site>> {
        Site::open_with_log(config, base_dir, store, parent, None, cluster).await
    }

    /// As [`Site::open`], keeping an existing log (a reload: whoever follows
    /// the log keeps following it).
    pub async fn open_with_log(
        config: SiteConfig,
        base_dir: &Path,
        store: Arc<dyn Store>,
        parent: CancellationToken,
        log: Option<Arc<SiteLog>>,
        cluster: Option<Arc<crate::engine::cluster::Cluster>>,
    ) -> Result<Arc<Site>> {
        let log = log.unwrap_or_else(|| {
            let log = Arc::new(SiteLog::open(
                &config.name,
                config.log_level,
                store.clone(),
                &config.log_file,
            ));
            log.follow_space();
            log
        });
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    Arc::new(
                        Endpoint::new(&e.name, e.kind.clone(), base_dir).counted_in(&config.name),
                    ),
                )
            })
            .collect();
        let mut integrations = BTreeMap::new();
        for ic in &config.integrations {
            let integration = Integration::open(ic.clone(), store.clone()).await?;
            if cluster.is_some() {
                // Sent once this node holds its lease.
                integration.unowned();
            }
            integrations.insert(ic.name.clone(), integration);
        }
        let last_stop = last_stop(&store.audit(200).await?);
        let health = Arc::new(Health::new(log.clone(), &endpoints, &integrations));
        Ok(Arc::new(Site {
            name: config.name.clone(),
            config,
            store,
            log,
            integrations,
            endpoints,
            health,
            status: Mutex::new(SiteStatus {
                state: SiteState::Stopped,
                since: now_millis(),
                last_stop,
            }),
            workers: tokio::sync::Mutex::new(None),
            trigger: Mutex::new(None),
            flow_control: tokio::sync::Mutex::new(()),
            parent,
            base_dir: base_dir.to_path_buf(),
            runs: Mutex::new(std::collections::HashMap::new()),
            reinitializing: std::sync::atomic::AtomicBool::new(false),
            start_queue: Arc::new(tokio::sync::Mutex::new(())),
            cluster,
        }))
    }

    pub fn status(&self) -> SiteStatus {
        self.status.lock().clone()
    }

    pub fn state(&self) -> SiteState {
        self.status().state
    }

    /// Takes a state the model returned (and, with a stop, who stopped
    /// it), from now on.
    fn set_state(&self, state: SiteState, stop: Option<StopInfo>) {
        let mut s = self.status.lock();
        s.state = state;
        s.since = now_millis();
        if stop.is_some() {
            s.last_stop = stop;
        }
    }

    /// Puts a status back as it was (a start the store refused: back to the
    /// state the model returned, which is the one it had, since then).
    fn put_status(&self, status: SiteStatus) {
        *self.status.lock() = status;
    }

    pub fn set_reinitializing(&self, on: bool) {
        self.reinitializing
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn reinitializing(&self) -> bool {
        self.reinitializing
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The configuration file's folder: relative paths resolve against it.
    pub fn config_dir(&self) -> &Path {
        &self.base_dir
    }

    pub fn integrations(&self) -> impl Iterator<Item = &Arc<Integration>> {
        self.integrations.values()
    }

    pub fn integration(&self, name: &str) -> Result<&Arc<Integration>> {
        self.integrations.get(name).ok_or_else(|| {
            EngineError::NotFound(format!("site {} has no integration '{name}'", self.name))
        })
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    pub fn endpoint(&self, name: &str) -> Result<&Arc<Endpoint>> {
        self.endpoints.get(name).ok_or_else(|| {
            EngineError::NotFound(format!("site {} has no endpoint '{name}'", self.name))
        })
    }

    /// Every flow with its integration, in configuration order.
    pub fn flows(&self) -> impl Iterator<Item = (&IntegrationConfig, &FlowConfig)> {
        self.config
            .integrations
            .iter()
            .flat_map(|i| i.flows.iter().map(move |f| (i, f)))
    }

    pub fn flow(&self, name: &str) -> Result<(&IntegrationConfig, &FlowConfig)> {
        self.config.flow(name).ok_or_else(|| {
            EngineError::NotFound(format!("site {} has no flow '{name}'", self.name))
        })
    }

    /// Appends to the audit trail. Best effort: on a full disk the entry is
    /// lost (the full disk is said once, by the site log); a change that
    /// must be audited stores its entry with the change itself.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        reason: Option<&str>,
        outcome: &str,
    ) {
        let entry = audit_entry(actor, action, subject, reason, outcome);
        match self.store.append_audit(entry).await {
            Ok(_) => {}
            Err(e) if e.is_disk_full() => {}
            Err(e) => tracing::error!(site = %self.name, "cannot write the audit trail: {e}"),
        }
    }

    /// Records a refused request in the audit trail and hands the refusal on.
    async fn refused<T>(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        reason: Option<&str>,
        refusal: Refusal,
    ) -> Result<T> {
        self.audit(
            actor,
            action,
            subject,
            reason,
            &format!("refused: {refusal}"),
        )
        .await;
        Err(refusal.into())
    }
}
