//! Broker sources: one consumer per flow whose source is a broker's queue,
//! stream or topic, while the site runs.
//!
//! # Rules
//! - A flow consumes while its integration captures (not Stopped) and, on a
//!   cluster, only on the node that sends the integration (its lease), so
//!   the records of one integration keep the broker's order. A pause does
//!   not stop it (records queue); a stop closes the subscription, and what
//!   was received but not queued stays with the broker.
//! - What is received is queued durably first (one store transaction for
//!   all that arrived together) and only then acknowledged to the broker.
//!   A crash in between leaves it unacknowledged: the broker delivers it
//!   again marked redelivered, and such a message is dropped (acknowledged
//!   without queueing) when its flow queued the same key with the same
//!   payload among the integration's last [`REDELIVERY_WINDOW`]
//!   transactions, or among what it is queued with (a message the broker
//!   sent again while the first copy still waited to be queued).
//! - A store that refuses the write (a full disk) keeps the messages
//!   unacknowledged: the write is tried again, nothing is acknowledged
//!   before it is stored.
//! - A lost or refused connection is the source endpoint's failure (Offline,
//!   probed by the Monitor); the consumer connects again once it is back
//!   (or after a back-off, for a failure that does not take it down).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::endpoint::{Endpoint, EndpointState};
use super::{Integration, Site};
use crate::config::FlowConfig;
use crate::connectors::broker::{Received, Subscribe, Subscription};
use crate::connectors::DeliveryError;
use crate::log::level;
use crate::store::NewRecord;

/// How far back (in transactions of the integration) a redelivered message
/// is looked for before it is queued again.
pub const REDELIVERY_WINDOW: i64 = 10_000;

/// Messages queued in one store transaction at most.
const MAX_TAKE: usize = 1000;

/// How often a consumer looks whether its integration still captures.
const LOOK: Duration = Duration::from_millis(250);

/// Starts a consumer for every enabled flow whose source is a broker; they
/// end with `token`.
pub fn run(site: &Arc<Site>, token: &CancellationToken, tasks: &mut JoinSet<()>) {
    for integration in site.integrations() {
        for flow in integration.config.flows.iter().filter(|f| f.enabled) {
            let Ok(endpoint) = site.endpoint(&flow.source) else {
                continue;
            };
            let Some(subscriber) = endpoint.subscriber.clone() else {
                continue;
            };
            let consumer = Consumer {
                site: site.clone(),
                integration: integration.clone(),
                flow: flow.clone(),
                endpoint: endpoint.clone(),
                subscriber,
            };
            tasks.spawn(consumer.run(token.clone()));
        }
    }
}

/// `SLUICE_TEST_STALL_BEFORE_ACK=1`: a test's hook that makes a consumer
/// wait before acknowledging what it queued, so that the test can kill
/// the daemon between the two.
fn stall_before_ack() -> bool {
    static STALL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STALL.get_or_init(|| std::env::var_os("SLUICE_TEST_STALL_BEFORE_ACK").is_some())
}

struct Consumer {
    site: Arc<Site>,
    integration: Arc<Integration>,
    flow: FlowConfig,
    endpoint: Arc<Endpoint>,
    subscriber: Arc<dyn Subscribe>,
}

/// Why a subscription ended.
enum Ended {
    Cancelled,
    /// The integration stopped capturing, or this node no longer sends it.
    NotCapturing,
    Failed(DeliveryError),
}

impl Consumer {
    fn captures(&self) -> bool {
        self.integration.captures() && self.integration.owned()
    }

    async fn run(self, token: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            // Wait until it captures here, and its endpoint is not known
            // to be down (the Monitor's probes bring it back).
            while !self.captures() || self.endpoint.state() != EndpointState::Online {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(LOOK) => {}
                }
            }
            let seen = self.endpoint.credentials_seen();
            let subscription = tokio::select! {
                _ = token.cancelled() => return,
                s = self.subscriber.subscribe() => s,
            };
            let ended = match subscription {
                Ok(subscription) => {
                    self.site.health.delivered(&self.endpoint).await;
                    backoff.reset();
                    self.site
                        .log
                        .write(
                            level::INFO,
                            format!(
                                "Flow {} consumes from endpoint {}",
                                self.flow.name, self.endpoint.name
                            ),
                        )
                        .await;
                    self.consume(subscription, &token).await
                }
                Err(e) => Ended::Failed(e),
            };
            match ended {
                Ended::Cancelled => return,
                Ended::NotCapturing => continue,
                // Refused what was replaced while it connected: connects
                // again at once with the new credentials.
                Ended::Failed(e) if self.endpoint.refused_replaced(seen, &e) => continue,
                Ended::Failed(e) => {
                    self.site
                        .log
                        .write(
                            level::ERROR,
                            format!(
                                "Flow {} cannot consume from endpoint {}: {}",
                                self.flow.name, self.endpoint.name, e.message
                            ),
                        )
                        .await;
                    self.site.health.failed(&self.endpoint, &e).await;
                    // Down: the probes say when it is back. Else (a refusal
                    // that does not take it down) after a back-off.
                    if self.endpoint.state() == EndpointState::Online {
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next_wait()) => {}
                        }
                    }
                }
            }
        }
    }

    /// Receives, queues and acknowledges until the subscription fails or
    /// the integration stops capturing here.
    async fn consume(
        &self,
        mut subscription: Box<dyn Subscription>,
        token: &CancellationToken,
    ) -> Ended {
        loop {
            let received = tokio::select! {
                _ = token.cancelled() => return Ended::Cancelled,
                r = subscription.receive(MAX_TAKE) => r,
                _ = tokio::time::sleep(LOOK), if !self.captures() => {
                    return Ended::NotCapturing
                }
            };
            let received = match received {
                Ok(r) => r,
                Err(e) => return Ended::Failed(e),
            };
            if !self.captures() {
                // Not queued, not acknowledged: the broker keeps them.
                return Ended::NotCapturing;
            }
            match self.queue(received, token).await {
                Ok(()) => {}
                Err(ended) => return ended,
            }
            if stall_before_ack() {
                // A test's crash between queueing and acknowledging: it
                // kills the daemon here.
                self.site
                    .log
                    .write(level::INFO, "Stalled before the acknowledgement (test)")
                    .await;
                token.cancelled().await;
                return Ended::Cancelled;
            }
            if let Err(e) = subscription.ack().await {
                // Queued but not acknowledged: they come again, redelivered,
                // and are recognised.
                return Ended::Failed(e);
            }
        }
    }

    /// Queues what was received (dropping what a redelivery repeats), until
    /// the store has taken it.
    async fn queue(&self, received: Vec<Received>, token: &CancellationToken) -> Result<(), Ended> {
        let integration = &self.integration.name;
        let mut records = Vec::with_capacity(received.len());
        let mut repeated = 0usize;
        for message in received {
            let key = self.flow.key.as_deref().and_then(|k| {
                serde_json::from_str::<serde_json::Value>(&message.payload)
                    .ok()
                    .and_then(|v| v.get(k).and_then(crate::connectors::key_text))
            });
            if message.redelivered {
                // Received twice before either was queued: the broker's
                // wait for the acknowledgement ran out while the first
                // copy waited (JetStream's `ack_wait`, behind a slow or
                // full store) and it sent the message again.
                let twice = records
                    .iter()
                    .any(|r: &NewRecord| r.key == key && r.payload == message.payload);
                if twice {
                    repeated += 1;
                    continue;
                }
                let seen = self
                    .site
                    .store
                    .queued_recently(
                        integration,
                        &self.flow.name,
                        key.as_deref(),
                        &message.payload,
                        REDELIVERY_WINDOW,
                    )
                    .await;
                match seen {
                    Ok(true) => {
                        repeated += 1;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err(Ended::Failed(DeliveryError {
                            class: crate::model::FailureClass::Intermittent,
                            message: format!("the queue cannot be read: {e}"),
                            retry_after: None,
                        }))
                    }
                }
            }
            records.push(NewRecord {
                key,
                payload: message.payload,
            });
        }
        if repeated > 0 {
            self.site
                .log
                .write(
                    level::INFO,
                    format!(
                        "Flow {}: {repeated} message(s) delivered again by endpoint {} were \
                         queued already and are not queued twice",
                        self.flow.name, self.endpoint.name
                    ),
                )
                .await;
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            match self
                .site
                .store
                .enqueue(integration, &self.flow.name, records.clone(), None, None)
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    // Nothing is acknowledged before it is stored: wait
                    // (a full disk) and write again.
                    tracing::warn!(flow = %self.flow.name, "cannot queue what was received: {e}");
                    tokio::select! {
                        _ = token.cancelled() => return Err(Ended::Cancelled),
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
        self.integration.queued(records.len());
        if let Some(cluster) = &self.site.cluster {
            cluster.queued(&self.site.name, &self.integration).await;
        }
        Ok(())
    }
}
