//! A site's start, stop and restore, and its workers (seed 000).
//!
//! A start or a stop is stored first, with its holds and its audit entry,
//! and only then carried out; see the invariants in `site/mod.rs`. Every
//! state the site takes is one [`SiteState::apply`] returned: Start then
//! Started (or StartFailed, back to Stopped, when the store refuses the
//! start), Stop then Stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{audit_entry, last_stop, Site, StopInfo, Workers};
use crate::engine::{
    all_others, consume, get_data, history, monitor, trigger, EngineError, Result,
};
use crate::log::level;
use crate::model::{
    now_millis, FlowEvent, FlowStatus, Hold, HoldKind, RunMode, RunResult, SiteEvent, SiteState,
};
use crate::store::AuditEntry;

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

impl Site {
    /// Brings the site up as it was last left: stopped stays stopped,
    /// anything else (or never seen) starts.
    ///
    /// On a full disk it still comes up as it was left: what it would only
    /// tidy in the store (runs cut off, the start's audit entry) waits for
    /// space; nothing it needs is missing, since a stop is stored with its
    /// holds.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        if self.cluster.is_none() {
            self.close_cut_off_runs().await?;
        }
        // (On a node of a cluster, runs belong to the node that sends their
        // integration: the one that takes its lease over closes them.)
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
                        .get(HoldKind::SiteStopped)
                        .is_some();
                    if !held {
                        tolerate_full(integration.place_hold(hold.clone()).await)?;
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
            Some(_) if self.cluster.is_some() => {
                // Running on the other nodes: this one joins in, without
                // storing a start of its own.
                let mut workers = self.workers.lock().await;
                self.run_as_stored(&mut workers, "started successfully!")
                    .await;
                Ok(())
            }
            _ => self.start_as("sluice", true).await,
        }
    }

    /// At a single node's start: the runs the last shutdown cut off ended
    /// as a stop ends them, halted.
    async fn close_cut_off_runs(&self) -> Result<()> {
        let abandoned = self
            .store
            .close_abandoned_runs(RunResult::Halted, "the daemon stopped during the run")
            .await;
        let abandoned = tolerate_full(abandoned)?.unwrap_or(0);
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
                let halted = record
                    .status
                    .apply(FlowEvent::Finished(RunResult::Halted))?;
                tolerate_full(self.store.set_flow_status(&flow.name, halted).await)?;
            }
        }
        Ok(())
    }

    pub async fn start(self: &Arc<Self>, actor: &str) -> Result<()> {
        self.start_as(actor, false).await
    }

    /// A start; `restoring` at the daemon's start, for a site left running:
    /// it then runs even if the start cannot be recorded (the store says
    /// running already).
    async fn start_as(self: &Arc<Self>, actor: &str, restoring: bool) -> Result<()> {
        let mut workers = self.workers.lock().await;
        let before = self.status();
        let starting = match before.state.apply(&SiteEvent::Start) {
            Ok(starting) => starting,
            Err(refusal) => {
                return self
                    .refused(actor, "site.start", &self.name, None, refusal)
                    .await
            }
        };
        // Every state this start may take, decided before anything is done.
        let running = starting.apply(&SiteEvent::Started)?;
        let failed = starting.apply(&SiteEvent::StartFailed)?;
        self.set_state(starting, None);
        // Stored first, with its audit entry; carried out only then.
        let audit = audit_entry(actor, "site.start", &self.name, None, "ok");
        let discarded = match self.store_start(audit).await {
            Ok(discarded) => discarded,
            Err(e) if restoring && e.is_disk_full() => Vec::new(),
            Err(e) => {
                // Refused by the store: the site is exactly as it was.
                self.put_status(super::SiteStatus {
                    state: failed,
                    ..before
                });
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
        self.bring_up(&mut workers, discarded).await;
        self.set_state(running, None);
        self.log
            .write(
                level::INFO,
                format!("Site {} started successfully!", self.name),
            )
            .await;
        Ok(())
    }

    /// Stores a start, in one transaction with `audit`: Running, the
    /// `site-stopped` holds lifted, and every flow's status as a site start
    /// leaves it (the model's [`FlowEvent::SiteStarted`]: blank). Returns
    /// the requests made while the site was stopped, which the start
    /// thereby discards. Under the flow lock, so that no request falls
    /// between the statuses read and the ones stored.
    async fn store_start(&self, audit: AuditEntry) -> Result<Vec<(String, RunMode)>> {
        let _flows = self.flow_control.lock().await;
        let mut statuses = Vec::new();
        let mut discarded = Vec::new();
        for (flow, status) in self.store.flow_statuses().await? {
            let next = status.apply(FlowEvent::SiteStarted)?;
            if next != status {
                statuses.push((flow.clone(), next));
            }
            if let Some(mode) = status.discarded_by_start() {
                discarded.push((flow, mode));
            }
        }
        self.store
            .set_site_running(HoldKind::SiteStopped, statuses, audit)
            .await?;
        Ok(discarded)
    }

    /// Carries out a start that is stored: the flows' discarded requests
    /// are logged, the holds lifted, the workers started.
    async fn bring_up(
        self: &Arc<Self>,
        workers: &mut Option<Workers>,
        discarded: Vec<(String, RunMode)>,
    ) {
        for (flow, mode) in discarded {
            self.log
                .write(
                    level::INFO,
                    format!(
                        "Request '{}' of flow {flow} was made while the site was stopped; \
                         it is not commenced",
                        mode.label()
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
        let (trigger, trigger_requests) = mpsc::channel(64);
        let (runs, run_requests) = mpsc::channel(64);
        let mut ready = Vec::new();
        let mut ready_signal = || {
            let (started, heard) = oneshot::channel::<()>();
            ready.push(heard);
            started
        };
        tasks.spawn(all_others::run(self.clone(), token.clone(), ready_signal()));
        tasks.spawn(get_data::run(
            self.clone(),
            run_requests,
            token.clone(),
            ready_signal(),
        ));
        tasks.spawn(trigger::run(
            self.clone(),
            trigger_requests,
            runs,
            token.clone(),
            ready_signal(),
        ));
        tasks.spawn(monitor::run(self.clone(), token.clone(), ready_signal()));
        tasks.spawn(history::run(self.clone(), token.clone(), ready_signal()));
        consume::run(self, &token, &mut tasks);
        for rx in ready {
            let _started = rx.await;
        }
        *self.trigger.lock() = Some(trigger);
        Workers { token, tasks }
    }

    pub async fn stop(self: &Arc<Self>, reason: &str, actor: &str) -> Result<()> {
        let mut workers = self.workers.lock().await;
        let event = SiteEvent::Stop {
            reason: reason.to_string(),
        };
        let stopping = match self.state().apply(&event) {
            Ok(stopping) => stopping,
            Err(refusal) => {
                // An over-long reason is not kept, not even in the refusal.
                let kept = Some(reason).filter(|r| r.len() <= crate::model::MAX_REASON);
                return self
                    .refused(actor, "site.stop", &self.name, kept, refusal)
                    .await;
            }
        };
        let stopped = stopping.apply(&SiteEvent::Stopped)?;
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
        self.set_state(stopping, None);
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
        if let Some(cluster) = &self.cluster {
            // Other nodes send some of its integrations: stopped once each
            // has taken the stop in (or its lease ran out).
            for integration in self.integrations.values() {
                if let Err(e) = cluster.await_holder(&self.name, &integration.name).await {
                    self.log.write(level::ERROR, e.to_string()).await;
                }
            }
        }
        let stop = StopInfo {
            reason: reason.to_string(),
            by: actor.to_string(),
            at: hold.since,
        };
        self.set_state(stopped, Some(stop));
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
        *self.trigger.lock() = None;
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
        // Requests the Trigger had not handed on are not run.
        self.runs.lock().clear();
    }

    /// On a node of a cluster: takes in a start or a stop another node
    /// stored (its holds are read again with it), without storing anything.
    pub(crate) async fn follow_store(self: &Arc<Self>) -> Result<()> {
        let mut workers = self.workers.lock().await;
        let stored = self.store.site_state().await?;
        let now = self.state();
        match stored {
            Some(SiteState::Stopped) if now == SiteState::Running => {
                for integration in self.integrations.values() {
                    integration.refresh().await?;
                }
                if let Some(w) = workers.take() {
                    self.halt(w).await;
                }
                let stop = last_stop(&self.store.audit(200).await?);
                let said = stop
                    .as_ref()
                    .map(|s| format!(" ({}): {}", s.by, s.reason))
                    .unwrap_or_default();
                self.set_state(SiteState::Stopped, stop);
                self.log
                    .write(
                        level::INFO,
                        format!("Site {} stopped on another node{said}", self.name),
                    )
                    .await;
            }
            Some(SiteState::Running) if now == SiteState::Stopped => {
                for integration in self.integrations.values() {
                    integration.refresh().await?;
                }
                self.run_as_stored(&mut workers, "started on another node")
                    .await;
            }
            _ => {}
        }
        Ok(())
    }

    /// On a node of a cluster: runs a site another node started (or left
    /// running), storing nothing; logs `Site NAME {said}`.
    async fn run_as_stored(self: &Arc<Self>, workers: &mut Option<Workers>, said: &str) {
        self.bring_up(workers, Vec::new()).await;
        self.set_state(SiteState::Running, None);
        self.log
            .write(level::INFO, format!("Site {} {said}", self.name))
            .await;
    }

    /// Stops the workers without recording a stop (daemon shutdown).
    pub async fn halt_workers(&self) {
        let taken = self.workers.lock().await.take();
        if let Some(w) = taken {
            self.halt(w).await;
        }
    }
}
