//! The operators' tools on a site: pause, resume, start or stop an
//! integration (seeds 001, 002), test an endpoint, give it new
//! credentials, retry, replay or ignore a transaction (seed 002). Each is
//! one method here that does all of it, whoever calls (the API, the
//! dashboard and the CLI through it): the model's decision, the durable
//! change with its audit entry, the log line, what follows (an
//! integration's start-up). A request done, or refused by the state it
//! meets, is audited.

use std::sync::Arc;

use super::Site;
use crate::connectors::Credentials;
use crate::engine::Result;
use crate::log::level;
use crate::model::{IntegrationEvent, IntegrationRecord, Refusal, TxAction};
use crate::store::{NewRecord, TxRecord};

/// What a test of an endpoint found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointTest {
    pub ok: bool,
    pub latency_ms: f64,
    /// What it answered, or why it could not be reached.
    pub detail: String,
}

impl Site {
    /// A person pauses an integration: it is held (the operator's hold,
    /// with the reason) and records still queue. Returns once the pause is
    /// stored and audited and no delivery will start any more.
    pub async fn pause_integration(
        self: &Arc<Self>,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<IntegrationRecord> {
        self.integration_action(name, IntegrationEvent::Pause, actor, reason)
            .await
    }

    /// A person resumes a paused integration: the operator's hold is lifted
    /// and the queue drains in order (unless the system holds it).
    pub async fn resume_integration(
        self: &Arc<Self>,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<IntegrationRecord> {
        self.integration_action(name, IntegrationEvent::Resume, actor, reason)
            .await
    }

    /// A person starts a stopped integration: it is active again, and its
    /// start-up (a first run of its flows) is queued behind the ones before
    /// it (seed 001).
    pub async fn start_integration(
        self: &Arc<Self>,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<IntegrationRecord> {
        self.integration_action(name, IntegrationEvent::Start, actor, reason)
            .await
    }

    /// A person stops an integration: nothing is captured or sent. Returns
    /// once no delivery will start any more.
    pub async fn stop_integration(
        self: &Arc<Self>,
        name: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<IntegrationRecord> {
        self.integration_action(name, IntegrationEvent::Stop, actor, reason)
            .await
    }

    /// A person's event on an integration: refused (and audited) if the
    /// reason is too long or the event does not fit its state; else stored
    /// with its audit entry, in effect, logged, and for a start its
    /// start-up queued.
    async fn integration_action(
        self: &Arc<Self>,
        name: &str,
        event: IntegrationEvent,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<IntegrationRecord> {
        let integration = self.integration(name)?;
        let action = format!("integration.{}", event.verb());
        let subject = format!("integration/{name}");
        if let Err(refusal) = reason.map_or(Ok(()), crate::model::check_reason) {
            // Refused, and the over-long reason is not kept.
            return self.refused(actor, &action, &subject, None, refusal).await;
        }
        match integration.apply(event, actor, reason).await {
            Ok(record) => {
                if let (Some(cluster), false) = (&self.cluster, record.may_send()) {
                    // Another node may be sending it: the answer waits
                    // until that node has taken the change in.
                    cluster.await_holder(&self.name, name).await?;
                }
                if event == IntegrationEvent::Start {
                    self.queue_start(integration.clone());
                }
                // Its audit entry was stored with the change.
                self.log
                    .write(
                        level::INFO,
                        format!(
                            "Integration {name} {} by {actor}{}",
                            match event {
                                IntegrationEvent::Pause => "paused",
                                IntegrationEvent::Resume => "resumed",
                                IntegrationEvent::Start => "started",
                                IntegrationEvent::Stop => "stopped",
                            },
                            reason.map(|r| format!(": {r}")).unwrap_or_default()
                        ),
                    )
                    .await;
                Ok(record)
            }
            Err(e) => {
                self.audit(actor, &action, &subject, reason, &format!("refused: {e}"))
                    .await;
                Err(e)
            }
        }
    }

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
        if let Err(e) = endpoint.take_credentials(credentials) {
            let refusal = Refusal::Invalid(format!("endpoint {name}: {e}"));
            return self
                .refused(actor, "endpoint.reauthorize", &subject, None, refusal)
                .await;
        }
        let started = std::time::Instant::now();
        let result = endpoint.probe(&self.base_dir).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
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
        // As operators see it: Sending while in flight.
        let transaction = self.transaction(integration, seq).await?;
        let verb = format!("tx.{}", action.as_str());
        let subject = format!("integration/{integration}/tx/{seq}");
        let next = match transaction.state.apply(action) {
            Ok(next) => next,
            Err(refusal) => return self.refused(actor, &verb, &subject, None, refusal).await,
        };
        let shown_seq = match action {
            TxAction::Retry => {
                self.store
                    .settle_by_operator(integration, seq, next)
                    .await?;
                integ.rewind();
                seq
            }
            TxAction::Ignore => {
                self.store
                    .settle_by_operator(integration, seq, next)
                    .await?;
                integ.wake();
                seq
            }
            TxAction::Replay => {
                let copy = NewRecord {
                    key: transaction.key.clone(),
                    payload: transaction.record.to_string(),
                };
                let range = self
                    .store
                    .enqueue(integration, &transaction.flow, vec![copy], None, None)
                    .await?;
                integ.queued(1);
                if let Some(cluster) = &self.cluster {
                    cluster.queued(&self.name, integ).await;
                }
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
        self.transaction(integration, shown_seq).await
    }
}
