//! A site's supervisor: its state (seed 000), its workers, its flows' run
//! requests and its webhook intake.
//!
//! # Invariants
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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::endpoint::Endpoint;
use super::health::Health;
use super::{all_others, get_data, monitor, trigger, EngineError, Integration, Result};
use crate::config::{FlowConfig, IntegrationConfig, SiteConfig};
use crate::connectors::Credentials;
use crate::log::{level, SiteLog};
use crate::model::{
    now_millis, FlowEvent, FlowStatus, Hold, HoldKind, Millis, Refusal, RunMode, RunResult,
    SiteEvent, SiteState, TxAction, TxState,
};
use crate::store::{AuditEntry, NewRecord, Store, TxRecord};

/// What a test of an endpoint found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointTest {
    pub ok: bool,
    pub latency_ms: f64,
    /// What it answered, or why it could not be reached.
    pub detail: String,
}

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
    }
}

/// A write that may wait for space: `None` if the disk is full (said once,
/// by the site log), any other error as it is.
fn tolerate_full<T, E: Into<EngineError>>(written: std::result::Result<T, E>) -> Result<Option<T>> {
    match written.map_err(Into::into) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_disk_full() => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a stop waits for workers to end before abandoning them.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

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
    pub store: Arc<dyn Store>,
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
}

impl Site {
    pub async fn open(
        config: SiteConfig,
        base_dir: &Path,
        store: Arc<dyn Store>,
        parent: CancellationToken,
    ) -> Result<Arc<Site>> {
        Site::open_with_log(config, base_dir, store, parent, None).await
    }

    /// As [`Site::open`], keeping an existing log (a reload: whoever follows
    /// the log keeps following it).
    pub async fn open_with_log(
        config: SiteConfig,
        base_dir: &Path,
        store: Arc<dyn Store>,
        parent: CancellationToken,
        log: Option<Arc<SiteLog>>,
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
            integrations.insert(
                ic.name.clone(),
                Integration::open(ic.clone(), store.clone()).await?,
            );
        }
        let last_stop = store
            .audit(200)
            .await?
            .into_iter()
            .find(|a| a.action == "site.stop" && a.outcome == "ok")
            .map(|a| StopInfo {
                reason: a.reason.unwrap_or_default(),
                by: a.actor,
                at: a.ts,
            });
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
        }))
    }

    /// Brings the site up as it was last left: stopped stays stopped,
    /// anything else (or never seen) starts.
    ///
    /// On a full disk it still comes up as it was left: what it would only
    /// tidy in the store (runs cut off, the start's audit entry) waits for
    /// space; nothing it needs is missing, since a stop is stored with its
    /// holds.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        let abandoned = tolerate_full(self.store.close_abandoned_runs().await)?.unwrap_or(0);
        if abandoned > 0 {
            self.log
                .write(
                    level::INFO,
                    format!("{abandoned} run(s) cut off by the last shutdown marked Halted"),
                )
                .await;
        }
        for (_, flow) in self.flows() {
            let record = self.store.flow(&flow.name).await?;
            if let FlowStatus::Running(_) = record.status {
                tolerate_full(
                    self.store
                        .set_flow_status(&flow.name, FlowStatus::Done(RunResult::Halted))
                        .await,
                )?;
            }
        }
        match self.store.site_state().await? {
            Some(SiteState::Stopped) => {
                let reason = self
                    .status()
                    .last_stop
                    .map(|s| s.reason)
                    .unwrap_or_default();
                let hold = Hold {
                    kind: HoldKind::SiteStopped,
                    by: "sluice".into(),
                    since: now_millis(),
                    reason: reason.clone(),
                };
                // Stored with the stop; placed here only for a data file
                // written before that was so.
                for integration in self.integrations.values() {
                    let held = integration
                        .record()
                        .holds
                        .iter()
                        .any(|h| h.kind == HoldKind::SiteStopped);
                    if !held && tolerate_full(integration.place_hold(hold.clone()).await)?.is_none()
                    {
                        integration.hold_placed(hold.clone());
                    }
                }
                self.log
                    .write(
                        level::INFO,
                        format!("Site {} is stopped, as it was left: {reason}", self.name),
                    )
                    .await;
                Ok(())
            }
            _ => self.start_as("sluice", true).await,
        }
    }

    pub fn status(&self) -> SiteStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn state(&self) -> SiteState {
        self.status().state
    }

    fn set_state(&self, state: SiteState, stop: Option<StopInfo>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state;
        s.since = now_millis();
        if stop.is_some() {
            s.last_stop = stop;
        }
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

    // ----- start and stop -----

    pub async fn start(self: &Arc<Self>, actor: &str) -> Result<()> {
        self.start_as(actor, false).await
    }

    /// A start; `restoring` at the daemon's start, for a site left running:
    /// it then runs even if the start cannot be recorded (the store says
    /// running already).
    async fn start_as(self: &Arc<Self>, actor: &str, restoring: bool) -> Result<()> {
        let mut workers = self.workers.lock().await;
        if let Err(refusal) = self.state().apply(&SiteEvent::Start) {
            return self
                .refused(actor, "site.start", &self.name, None, refusal)
                .await;
        }
        // Stored first, with its audit entry; carried out only then.
        let audit = audit_entry(actor, "site.start", &self.name, None, "ok");
        let discarded = match self.store.set_site_running(audit).await {
            Ok(discarded) => discarded,
            Err(e) if restoring && e.is_disk_full() => Vec::new(),
            Err(e) => {
                let e = EngineError::from(e);
                self.log
                    .write(
                        level::ERROR,
                        format!("Site {} failed to start: {e}", self.name),
                    )
                    .await;
                self.audit(
                    actor,
                    "site.start",
                    &self.name,
                    None,
                    &format!("failed: {e}"),
                )
                .await;
                return Err(e);
            }
        };
        self.set_state(SiteState::Starting, None);
        self.bring_up(&mut workers, discarded).await;
        self.set_state(SiteState::Running, None);
        self.log
            .write(
                level::INFO,
                format!("Site {} started successfully!", self.name),
            )
            .await;
        Ok(())
    }

    /// Carries out a start that is stored: the flows' discarded requests
    /// are logged, the holds lifted, the workers started.
    async fn bring_up(
        self: &Arc<Self>,
        workers: &mut Option<Workers>,
        discarded: Vec<(String, FlowStatus)>,
    ) {
        for (flow, status) in discarded {
            self.log
                .write(
                    level::INFO,
                    format!(
                        "Request '{}' of flow {flow} was made while the site was stopped; \
                         it is not commenced",
                        match status {
                            FlowStatus::Pending(mode) => mode.label(),
                            _ => "run",
                        }
                    ),
                )
                .await;
        }
        for integration in self.integrations.values() {
            integration.hold_lifted(HoldKind::SiteStopped);
        }
        *workers = Some(self.spawn_workers().await);
    }

    /// Starts the four workers of seed 000 and waits until each has logged
    /// its start.
    async fn spawn_workers(self: &Arc<Self>) -> Workers {
        let token = self.parent.child_token();
        let mut tasks = JoinSet::new();
        let (trigger_tx, trigger_rx) = mpsc::channel(64);
        let (run_tx, run_rx) = mpsc::channel(64);
        let mut ready = Vec::new();
        let mut ready_signal = || {
            let (tx, rx) = oneshot::channel::<()>();
            ready.push(rx);
            tx
        };
        tasks.spawn(all_others::run(self.clone(), token.clone(), ready_signal()));
        tasks.spawn(get_data::run(
            self.clone(),
            run_rx,
            token.clone(),
            ready_signal(),
        ));
        tasks.spawn(trigger::run(
            self.clone(),
            trigger_rx,
            run_tx,
            token.clone(),
            ready_signal(),
        ));
        tasks.spawn(monitor::run(self.clone(), token.clone(), ready_signal()));
        for rx in ready {
            let _started = rx.await;
        }
        *self.trigger.lock().unwrap_or_else(|p| p.into_inner()) = Some(trigger_tx);
        Workers { token, tasks }
    }

    pub async fn stop(self: &Arc<Self>, reason: &str, actor: &str) -> Result<()> {
        let mut workers = self.workers.lock().await;
        let event = SiteEvent::Stop {
            reason: reason.to_string(),
        };
        if let Err(refusal) = self.state().apply(&event) {
            // An over-long reason is not kept, not even in the refusal.
            let kept = Some(reason).filter(|r| r.len() <= crate::model::MAX_REASON);
            return self
                .refused(actor, "site.stop", &self.name, kept, refusal)
                .await;
        }
        let reason = reason.trim();
        let hold = Hold {
            kind: HoldKind::SiteStopped,
            by: actor.to_string(),
            since: now_millis(),
            reason: reason.to_string(),
        };
        // Stored first, in one transaction with its holds and its audit
        // entry; carried out only then. Refused, the site runs on as before.
        let audit = audit_entry(actor, "site.stop", &self.name, Some(reason), "ok");
        let names = self.integrations.keys().cloned().collect();
        if let Err(e) = self
            .store
            .set_site_stopped(hold.clone(), names, audit)
            .await
        {
            let e = EngineError::from(e);
            self.log
                .write(
                    level::ERROR,
                    format!("Site {} not stopped ({actor}): {e}", self.name),
                )
                .await;
            self.audit(
                actor,
                "site.stop",
                &self.name,
                Some(reason),
                &format!("refused: {e}"),
            )
            .await;
            return Err(e);
        }
        self.set_state(SiteState::Stopping, None);
        self.log
            .write(
                level::INFO,
                format!("Stopping site {} ({actor}): {reason}", self.name),
            )
            .await;
        for integration in self.integrations.values() {
            integration.hold_placed(hold.clone());
        }
        if let Some(w) = workers.take() {
            self.halt(w).await;
        }
        let stop = StopInfo {
            reason: reason.to_string(),
            by: actor.to_string(),
            at: hold.since,
        };
        self.set_state(SiteState::Stopped, Some(stop));
        self.log
            .write(
                level::INFO,
                format!("Site {} stopped successfully!", self.name),
            )
            .await;
        self.log.write(level::INFO, "=====").await;
        Ok(())
    }

    /// Cancels the workers and waits for them (bounded).
    async fn halt(&self, mut workers: Workers) {
        *self.trigger.lock().unwrap_or_else(|p| p.into_inner()) = None;
        workers.token.cancel();
        let all_done = async { while workers.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_DEADLINE, all_done).await.is_err() {
            self.log
                .write(
                    level::ERROR,
                    format!(
                        "Workers of site {} did not stop within {}s; abandoned",
                        self.name,
                        STOP_DEADLINE.as_secs()
                    ),
                )
                .await;
            workers.tasks.abort_all();
        }
    }

    /// Stops the workers without recording a stop (daemon shutdown).
    pub async fn halt_workers(&self) {
        let taken = self.workers.lock().await.take();
        if let Some(w) = taken {
            self.halt(w).await;
        }
    }

    // ----- flows -----

    /// 'Send All' / 'Send Changed' asked for by a person. While the site is
    /// stopped the flow becomes `Pending …` and does not run (seed 000).
    pub async fn request_run(&self, flow: &str, mode: RunMode, actor: &str) -> Result<FlowStatus> {
        let action = "flow.run";
        let subject = format!("flow/{flow}");
        let (ic, fc) = self.flow(flow)?;
        let source = self.endpoint(&fc.source)?;
        if !source.kind.is_pull_source() {
            let refusal = Refusal::Invalid(format!(
                "flow {flow} receives its records by webhook; there is nothing to run"
            ));
            return self.refused(actor, action, &subject, None, refusal).await;
        }
        let integration = self.integration(&ic.name)?;
        if !integration.captures() {
            let refusal = Refusal::Conflict(format!(
                "integration {} is stopped; start it to run its flows",
                ic.name
            ));
            return self.refused(actor, action, &subject, None, refusal).await;
        }
        let _flows = self.flow_control.lock().await;
        let site_running = self.state() == SiteState::Running;
        let current = self.store.flow(flow).await?.status;
        let next = match current.apply(FlowEvent::Requested { mode, site_running }) {
            Ok(next) => next,
            Err(refusal) => return self.refused(actor, action, &subject, None, refusal).await,
        };
        let trigger = self
            .trigger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // A place in the Trigger's queue is taken before the status is
        // stored, and the request sent only after: a request the store
        // refuses (a full disk) is not run.
        let permit = match (&trigger, site_running) {
            (_, false) => None,
            (Some(tx), true) => tx.try_reserve().ok(),
            (None, true) => None,
        };
        if site_running && permit.is_none() {
            let refusal =
                Refusal::Conflict("the site is busy stopping or starting; try again".into());
            return self.refused(actor, action, &subject, None, refusal).await;
        }
        self.store.set_flow_status(flow, next).await?;
        if let Some(permit) = permit {
            permit.send(RunRequest {
                flow: flow.to_string(),
                mode,
            });
        }
        if !site_running {
            self.log
                .write(
                    level::INFO,
                    format!(
                        "'{}' of flow {flow} requested while site {} is stopped: {}, not run",
                        mode.label(),
                        self.name,
                        next.label()
                    ),
                )
                .await;
        }
        self.audit(actor, action, &subject, Some(mode.label()), "ok")
            .await;
        Ok(next)
    }

    /// Marks a scheduled run as started; `false` if it may not run now
    /// (a run of the flow is in progress, or its integration is stopped):
    /// a missed firing is not made up later.
    pub async fn begin_scheduled_run(&self, flow: &str) -> Result<bool> {
        let (ic, _) = self.flow(flow)?;
        if !self.integration(&ic.name)?.captures() {
            return Ok(false);
        }
        let _flows = self.flow_control.lock().await;
        let current = self.store.flow(flow).await?.status;
        match current.apply(FlowEvent::Requested {
            mode: RunMode::Changed,
            site_running: true,
        }) {
            Ok(next) => {
                self.store.set_flow_status(flow, next).await?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Queues the start-up of an integration a person just started: a
    /// first 'Send Changed' run of each of its enabled pull flows, one
    /// integration at a time, each after the one before it is Running or
    /// Failed (seed 001). Until then its status is Restarting.
    pub fn queue_start(self: &Arc<Self>, integration: Arc<Integration>) {
        integration.set_starting(true);
        let site = self.clone();
        // Take the place in the queue now, in the order of the requests.
        let queue = self.start_queue.clone();
        tokio::spawn(async move {
            let _turn = queue.lock().await;
            let flows: Vec<String> = integration
                .config
                .flows
                .iter()
                .filter(|f| f.enabled)
                .filter(|f| {
                    site.endpoint(&f.source)
                        .is_ok_and(|e| e.kind.is_pull_source())
                })
                .map(|f| f.name.clone())
                .collect();
            for flow in &flows {
                if site
                    .request_run(flow, RunMode::Changed, "sluice")
                    .await
                    .is_err()
                {
                    continue;
                }
                // Until the run is over (halted by a stop counts as over).
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    match site.store.flow(flow).await {
                        Ok(f) if matches!(f.status, FlowStatus::Running(_)) => {}
                        _ => break,
                    }
                }
            }
            integration.set_starting(false);
            site.log
                .write(
                    level::DETAIL,
                    format!("Start-up of integration {} done", integration.name),
                )
                .await;
        });
    }

    /// A run of `flow` made progress (or started, or ended with `None`).
    pub fn note_run(&self, flow: &str, doing: Option<String>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        match doing {
            Some(doing) => {
                runs.insert(flow.to_string(), (tokio::time::Instant::now(), doing));
            }
            None => {
                runs.remove(flow);
            }
        }
    }

    /// Why a run of `flow` is stalled: no progress for the site's
    /// `stall_after`.
    pub fn run_stalled(&self, flow: &str) -> Option<String> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let (since, doing) = runs.get(flow)?;
        (since.elapsed() >= self.config.stall_after).then(|| {
            format!(
                "no progress for {}s while {doing}",
                since.elapsed().as_secs()
            )
        })
    }

    /// Records the end of a run in the flow's status.
    pub async fn end_run(&self, flow: &str, result: RunResult) -> Result<()> {
        let _flows = self.flow_control.lock().await;
        let current = self.store.flow(flow).await?.status;
        let next = current.apply(FlowEvent::Finished(result))?;
        self.store.set_flow_status(flow, next).await?;
        Ok(())
    }

    // ----- operators' tools -----

    /// Calls the endpoint now and records what is observed of it (which
    /// may place or lift the system's holds).
    pub async fn test_endpoint(&self, name: &str, actor: &str) -> Result<EndpointTest> {
        let endpoint = self.endpoint(name)?;
        let started = std::time::Instant::now();
        let result = endpoint.probe(&self.base_dir).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.health.probed(endpoint, &result).await;
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(e) => (false, e.message),
        };
        let outcome = if ok {
            "ok".to_string()
        } else {
            format!("failed: {detail}")
        };
        self.audit(
            actor,
            "endpoint.test",
            &format!("endpoint/{name}"),
            None,
            &outcome,
        )
        .await;
        Ok(EndpointTest {
            ok,
            latency_ms,
            detail,
        })
    }

    /// New credentials for an endpoint, tested at once: on success it is
    /// Online and the system's holds are lifted; on failure it is refused
    /// (and stays as it was). The credentials are never logged or shown.
    pub async fn reauthorize(
        &self,
        name: &str,
        credentials: Credentials,
        actor: &str,
    ) -> Result<EndpointTest> {
        let endpoint = self.endpoint(name)?;
        let subject = format!("endpoint/{name}");
        let Some(target) = endpoint.target.as_ref() else {
            let refusal = Refusal::Invalid(format!("endpoint {name} takes no credentials"));
            return self
                .refused(actor, "endpoint.reauthorize", &subject, None, refusal)
                .await;
        };
        if let Err(e) = target.set_credentials(credentials) {
            let refusal = Refusal::Invalid(format!("endpoint {name}: {e}"));
            return self
                .refused(actor, "endpoint.reauthorize", &subject, None, refusal)
                .await;
        }
        let started = std::time::Instant::now();
        let result = target.probe().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        endpoint.note_test(&result);
        self.health.probed(endpoint, &result).await;
        match result {
            Ok(detail) => {
                self.log
                    .write(
                        level::INFO,
                        format!("Endpoint {name} reauthorized by {actor}"),
                    )
                    .await;
                self.audit(actor, "endpoint.reauthorize", &subject, None, "ok")
                    .await;
                Ok(EndpointTest {
                    ok: true,
                    latency_ms,
                    detail,
                })
            }
            Err(e) => {
                let refusal = Refusal::Conflict(format!(
                    "the new credentials for {name} did not work: {}",
                    e.message
                ));
                self.refused(actor, "endpoint.reauthorize", &subject, None, refusal)
                    .await
            }
        }
    }

    /// Retry, replay or ignore one transaction (seed 002). Returns the
    /// transaction as it now is (for a replay: the new copy).
    pub async fn act_on_transaction(
        &self,
        integration: &str,
        seq: i64,
        action: TxAction,
        actor: &str,
    ) -> Result<TxRecord> {
        let integ = self.integration(integration)?;
        let not_found = || {
            EngineError::NotFound(format!(
                "integration {integration} has no transaction {seq}"
            ))
        };
        let tx = self
            .store
            .transaction(integration, seq)
            .await?
            .ok_or_else(not_found)?;
        let sending = integ.in_flight().is_some_and(|(a, b)| a <= seq && seq <= b);
        let current = if tx.state == TxState::Queued && sending {
            TxState::Sending
        } else {
            tx.state
        };
        let verb = format!("tx.{}", action.as_str());
        let subject = format!("integration/{integration}/tx/{seq}");
        let next = match current.apply(action) {
            Ok(next) => next,
            Err(refusal) => return self.refused(actor, &verb, &subject, None, refusal).await,
        };
        let shown_seq = match action {
            TxAction::Retry => {
                self.store.settle(integration, seq, next, None).await?;
                integ.rewind();
                seq
            }
            TxAction::Ignore => {
                self.store.settle(integration, seq, next, None).await?;
                integ.wake();
                seq
            }
            TxAction::Replay => {
                let copy = NewRecord {
                    key: tx.key.clone(),
                    payload: tx.record.to_string(),
                };
                let range = self
                    .store
                    .enqueue(integration, &tx.flow, vec![copy], None, None)
                    .await?;
                integ.wake();
                range.map_or(seq, |(first, _)| first)
            }
        };
        self.log
            .write(
                level::INFO,
                match action {
                    TxAction::Replay => format!(
                        "Transaction {seq} of {integration} replayed by {actor} as {shown_seq}"
                    ),
                    TxAction::Retry => {
                        format!("Transaction {seq} of {integration} retried by {actor}")
                    }
                    TxAction::Ignore => {
                        format!("Transaction {seq} of {integration} ignored by {actor}")
                    }
                },
            )
            .await;
        self.audit(actor, &verb, &subject, None, "ok").await;
        self.store
            .transaction(integration, shown_seq)
            .await?
            .ok_or_else(not_found)
    }

    // ----- webhook intake -----

    /// Queues records POSTed to a webhook flow. Returns the first and last
    /// sequence numbers once they are durably queued.
    pub async fn accept_pushed(
        &self,
        integration: &str,
        flow: &str,
        records: Vec<Value>,
    ) -> Result<Option<(i64, i64)>> {
        let integ = self.integration(integration)?;
        let fc = integ
            .config
            .flows
            .iter()
            .find(|f| f.name == flow)
            .ok_or_else(|| {
                EngineError::NotFound(format!("integration {integration} has no flow '{flow}'"))
            })?;
        if !self.endpoint(&fc.source)?.kind.is_push_source() {
            return Err(EngineError::NotFound(format!(
                "flow {flow} does not take records by webhook (its source is {})",
                fc.source
            )));
        }
        let state = self.state();
        if state != SiteState::Running {
            return Err(EngineError::Unavailable {
                message: format!(
                    "site {} is {}; records are not taken",
                    self.name,
                    state.as_str()
                ),
                retry_after: Duration::from_secs(30),
            });
        }
        if !integ.captures() {
            return Err(EngineError::Unavailable {
                message: format!("integration {integration} is stopped; records are not taken"),
                retry_after: Duration::from_secs(60),
            });
        }
        let key_field = fc.key.as_deref();
        let records = records
            .into_iter()
            .map(|record| NewRecord {
                key: key_field.and_then(|k| record.get(k)).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }),
                payload: record.to_string(),
            })
            .collect();
        let range = self
            .store
            .enqueue(integration, flow, records, None, None)
            .await?;
        integ.wake();
        Ok(range)
    }
}
