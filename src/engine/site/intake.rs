//! Records POSTed to a webhook flow: queued durably before the answer, and
//! refused with a retry-after while the site or the integration does not
//! take them.

use std::time::Duration;

use serde_json::Value;

use super::Site;
use crate::engine::{EngineError, Result};
use crate::model::SiteState;
use crate::store::NewRecord;

impl Site {
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
        integ.queued(range.map_or(0, |(first, last)| (last - first + 1) as usize));
        if let Some(cluster) = &self.cluster {
            cluster.queued(&self.name, integ).await;
        }
        Ok(range)
    }
}
