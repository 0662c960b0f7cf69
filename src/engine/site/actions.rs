//! The operators' tools on a site: test an endpoint, give it new
//! credentials, retry, replay or ignore a transaction (seed 002). A request
//! done, or refused by the state it meets, is audited.

use super::Site;
use crate::connectors::Credentials;
use crate::engine::Result;
use crate::log::level;
use crate::model::{Refusal, TxAction};
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
        // As operators see it: Sending while in flight.
        let tx = self.transaction(integration, seq).await?;
        let verb = format!("tx.{}", action.as_str());
        let subject = format!("integration/{integration}/tx/{seq}");
        let next = match tx.state.apply(action) {
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
        self.transaction(integration, shown_seq).await
    }
}
