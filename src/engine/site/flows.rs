//! Runs of a site's flows: requested by a person, started by the schedule,
//! queued for an integration a person started (seed 001), and followed
//! while they run. A flow's status changes under the site's flow lock, so
//! a request and a scheduled start never both start a run.

use std::sync::Arc;
use std::time::Duration;

use super::{RunRequest, Site};
use crate::engine::{EngineError, Integration, Result};
use crate::log::level;
use crate::model::actions::FlowFacts;
use crate::model::{FlowEvent, FlowStatus, Refusal, RunMode, RunResult, SiteState};

/// `SLUICE_TEST_STALL_UNLEASED_REQUEST=MS`: a test's hook that holds a run
/// request that found this node without its integration's lease for MS
/// milliseconds before the request is stored, so that a test can have the
/// lease taken in between (see [`Site::adopt_runs`]).
fn stall_unleased_request() -> Option<Duration> {
    static STALL: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *STALL.get_or_init(|| {
        std::env::var("SLUICE_TEST_STALL_UNLEASED_REQUEST")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    })
}

impl Site {
    /// 'Send All' / 'Send Changed' asked for by a person. While the site is
    /// stopped the flow becomes `Pending …` and does not run (seed 000).
    /// What decides whether `flow`, in `status`, may run now (and what its
    /// answer offers): that status, its source, its integration, the site.
    pub fn flow_facts(&self, flow: &str, status: FlowStatus) -> Result<FlowFacts> {
        let (ic, fc) = self.flow(flow)?;
        Ok(FlowFacts {
            status,
            pull: self.endpoint(&fc.source)?.kind.is_pull_source(),
            enabled: fc.enabled,
            captures: self.integration(&ic.name)?.captures(),
            site_running: self.state() == SiteState::Running,
        })
    }

    pub async fn request_run(&self, flow: &str, mode: RunMode, actor: &str) -> Result<FlowStatus> {
        let action = "flow.run";
        let subject = format!("flow/{flow}");
        let (ic, _) = self.flow(flow)?;
        let _flows = self.flow_control.lock().await;
        let facts = self.flow_facts(flow, self.store.flow(flow).await?.status)?;
        let site_running = facts.site_running;
        let next = match facts.request(flow, &ic.name, mode) {
            Ok(next) => next,
            Err(refusal) => return self.refused(actor, action, &subject, None, refusal).await,
        };
        // On a node of a cluster that does not send the integration, the
        // stored status is the request: the node that does runs it.
        let here = self.integration(&ic.name)?.owned();
        let trigger = self.trigger.lock().clone();
        // A place in the Trigger's queue is taken before the status is
        // stored, and the request sent only after: a request the store
        // refuses (a full disk) is not run.
        let permit = match (&trigger, site_running && here) {
            (_, false) => None,
            (Some(trigger), true) => trigger.try_reserve().ok(),
            (None, true) => None,
        };
        if site_running && here && permit.is_none() {
            let refusal =
                Refusal::Conflict("the site is busy stopping or starting; try again".into());
            return self.refused(actor, action, &subject, None, refusal).await;
        }
        if !here {
            if let Some(stall) = stall_unleased_request() {
                tokio::time::sleep(stall).await;
            }
        }
        if permit.is_some() {
            // In progress from now on: a cluster's take-over of the
            // integration meanwhile does not start it a second time.
            self.note_run(flow, Some("starting".to_string()));
        }
        if let Err(e) = self.store.set_flow_status(flow, next).await {
            if permit.is_some() {
                self.note_run(flow, None);
            }
            return Err(e.into());
        }
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

    /// Whether a run of `flow` is in progress here (or handed to the
    /// Trigger).
    pub(crate) fn run_in_progress(&self, flow: &str) -> bool {
        self.runs.lock().contains_key(flow)
    }

    /// Hands a run whose status is stored already to the Trigger (a
    /// request made on another node of a cluster).
    pub(crate) fn dispatch_run(&self, flow: &str, mode: RunMode) {
        let Some(trigger) = self.trigger.lock().clone() else {
            return;
        };
        self.note_run(flow, Some("starting".to_string()));
        let request = RunRequest {
            flow: flow.to_string(),
            mode,
        };
        if trigger.try_send(request).is_err() {
            self.note_run(flow, None);
        }
    }

    /// On a node of a cluster that has just taken `integration`'s lease:
    /// a run the node before left open ends as halted (as a restart ends
    /// it); a run asked for while no node sent the integration runs now.
    ///
    /// Each flow is looked at under the flow lock [`Site::request_run`]
    /// holds: a request that found this node without the lease has stored
    /// its status before (and is dispatched here), or comes after and finds
    /// the lease (and dispatches itself). Without the lock a request could
    /// store its status just after this look, and nobody would run it.
    pub(crate) async fn adopt_runs(&self, integration: &Integration, node: &str) {
        for flow in &integration.config.flows {
            let _flows = self.flow_control.lock().await;
            let Ok(record) = self.store.flow(&flow.name).await else {
                continue;
            };
            let FlowStatus::Running(mode) = record.status else {
                continue;
            };
            if self.run_in_progress(&flow.name) {
                continue;
            }
            let open = match self.store.runs(&flow.name, 1).await {
                Ok(runs) => runs.into_iter().next().filter(|r| r.finished_at.is_none()),
                Err(_) => continue,
            };
            match open {
                Some(run) => {
                    let why =
                        format!("the node that ran it stopped; {node} sends the integration now");
                    let closed = Some((run.id, Some(why.clone())));
                    let _ended = self
                        .end_run_locked(&flow.name, RunResult::Halted, closed)
                        .await;
                    self.log
                        .write(
                            level::INFO,
                            format!("Flow {}: '{}' halted: {why}", flow.name, mode.label()),
                        )
                        .await;
                }
                None => self.dispatch_run(&flow.name, mode),
            }
        }
    }

    /// A run of `flow` made progress (or started, or ended with `None`).
    pub fn note_run(&self, flow: &str, doing: Option<String>) {
        let mut runs = self.runs.lock();
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
        let runs = self.runs.lock();
        let (since, doing) = runs.get(flow)?;
        (since.elapsed() >= self.config.stall_after).then(|| {
            format!(
                "no progress for {}s while {doing}",
                since.elapsed().as_secs()
            )
        })
    }

    /// Records the end of a run: the run (id and error, if it was recorded)
    /// and the flow's status, in one store transaction, so that a run seen
    /// over is never of a flow still Running (a run asked for next is not
    /// refused).
    pub async fn end_run(
        &self,
        flow: &str,
        result: RunResult,
        run: Option<(i64, Option<String>)>,
    ) -> Result<()> {
        let _flows = self.flow_control.lock().await;
        self.end_run_locked(flow, result, run).await
    }

    /// [`Site::end_run`] with the flow lock held by the caller.
    async fn end_run_locked(
        &self,
        flow: &str,
        result: RunResult,
        run: Option<(i64, Option<String>)>,
    ) -> Result<()> {
        let next = match self.store.flow(flow).await {
            Ok(record) => record
                .status
                .apply(FlowEvent::Finished(result))
                .map_err(EngineError::from),
            Err(e) => Err(e.into()),
        };
        match (run, next) {
            (Some((id, error)), Ok(next)) => {
                let status = Some((flow, next));
                Ok(self.store.finish_run(id, result, error, status).await?)
            }
            // The run is over whatever the flow's status says.
            (Some((id, error)), Err(e)) => {
                self.store.finish_run(id, result, error, None).await?;
                Err(e)
            }
            (None, Ok(next)) => Ok(self.store.set_flow_status(flow, next).await?),
            (None, Err(e)) => Err(e),
        }
    }
}
