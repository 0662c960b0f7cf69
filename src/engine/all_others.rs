//! The AllOthers worker (seed 000): sends queued transactions, one sender
//! per integration.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::sender::Sender;
use super::Site;
use crate::log::level;

pub async fn run(site: Arc<Site>, token: CancellationToken, ready: oneshot::Sender<()>) {
    site.log
        .write(level::INFO, "AllOthers thread started")
        .await;
    let _ready = ready.send(());
    let mut senders = JoinSet::new();
    for integration in site.integrations() {
        let mut routes = HashMap::new();
        for flow in &integration.config.flows {
            if let Ok(endpoint) = site.endpoint(&flow.target) {
                routes.insert(flow.name.clone(), endpoint.clone());
            }
        }
        let sender = Sender {
            site: site.name.clone(),
            integration: integration.clone(),
            store: site.store.clone(),
            routes,
            log: site.log.clone(),
            health: site.health.clone(),
            metrics: super::counters::SenderMetrics::new(
                &site.name,
                &integration.name,
                integration.tally.clone(),
            ),
        };
        senders.spawn(sender.run(token.clone()));
    }
    token.cancelled().await;
    while senders.join_next().await.is_some() {}
    site.log
        .write(level::INFO, "AllOthers thread stopped.")
        .await;
}
