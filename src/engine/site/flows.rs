//! Runs of a site's flows: requested by a person, started by the schedule,
//! queued for an integration a person started (seed 001), and followed
//! while they run. A flow's status changes under the site's flow lock, so
//! a request and a scheduled start never both start a run.

use std::sync::Arc;
use std::time::Duration;

use super::{RunRequest, Site};
use crate::engine::{Integration, Result};
use crate::log::level;
use crate::model::actions::FlowFacts;
use crate::model::{FlowEvent, FlowStatus, Refusal, RunMode, RunResult, SiteState};

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
        let trigger = self.trigger.lock().clone();
        // A place in the Trigger's queue is taken before the status is
        // stored, and the request sent only after: a request the store
        // refuses (a full disk) is not run.
        let permit = match (&trigger, site_running) {
            (_, false) => None,
            (Some(trigger), true) => trigger.try_reserve().ok(),
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

    /// Records the end of a run in the flow's status.
    pub async fn end_run(&self, flow: &str, result: RunResult) -> Result<()> {
        let _flows = self.flow_control.lock().await;
        let current = self.store.flow(flow).await?.status;
        let next = current.apply(FlowEvent::Finished(result))?;
        self.store.set_flow_status(flow, next).await?;
        Ok(())
    }
}
