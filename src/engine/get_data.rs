//! The GetData worker (seed 000): runs flows, when their schedule is due
//! and when the Trigger worker hands it a request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::scheduler::Scheduler;
use super::site::RunRequest;
use super::{flow_run, Site};
use crate::log::level;
use crate::model::RunMode;

pub async fn run(
    site: Arc<Site>,
    mut requests: mpsc::Receiver<RunRequest>,
    token: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    site.log.write(level::INFO, "GetData thread started").await;
    let _ready = ready.send(());
    let scheduled = site.flows().filter_map(|(_, f)| {
        let pull = site
            .endpoint(&f.source)
            .is_ok_and(|e| e.kind.is_pull_source());
        match (&f.schedule, f.enabled && pull) {
            (Some(schedule), true) => Some((f.name.clone(), schedule.clone())),
            _ => None,
        }
    });
    let mut scheduler = Scheduler::new(scheduled.collect::<Vec<_>>(), chrono::Utc::now());
    let mut runs = JoinSet::new();
    loop {
        let wait = scheduler
            .next_due()
            .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = token.cancelled() => break,
            request = requests.recv() => {
                let Some(request) = request else { break };
                runs.spawn(flow_run::run(site.clone(), request.flow, request.mode, token.clone()));
            }
            _ = tokio::time::sleep(wait) => {
                for flow in scheduler.take_due(chrono::Utc::now()) {
                    // On a cluster, the node that sends the integration
                    // runs its schedule: once per cluster.
                    let here = site
                        .flow(&flow)
                        .ok()
                        .and_then(|(ic, _)| site.integration(&ic.name).ok())
                        .is_some_and(|i| i.owned());
                    if !here {
                        continue;
                    }
                    match site.begin_scheduled_run(&flow).await {
                        Ok(true) => {
                            runs.spawn(flow_run::run(site.clone(), flow, RunMode::Changed, token.clone()));
                        }
                        Ok(false) => {
                            site.log
                                .write(level::DETAIL, format!("Scheduled run of flow {flow} skipped"))
                                .await;
                        }
                        Err(e) => {
                            // A full disk is said once by the log itself,
                            // not at every firing it costs.
                            let level = if e.is_disk_full() { level::DETAIL } else { level::ERROR };
                            site.log
                                .write(level, format!("Scheduled run of flow {flow}: {e}"))
                                .await;
                        }
                    }
                }
            }
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
        }
    }
    // Runs see the same token and halt at their next page boundary.
    while runs.join_next().await.is_some() {}
    site.log.write(level::INFO, "GetData thread stopped.").await;
}
