//! What readers outside the engine (the API's answers, the metrics'
//! snapshot) read of a site's store, always through here: the store is the
//! engine's alone. A transaction is read as operators see it (Sending
//! while it is in flight), from the one rule that says so,
//! [`TxState::shown`].

use super::Site;
use crate::engine::{EngineError, Result};
use crate::model::{Millis, TxState};
use crate::store::{AuditEntry, FlowRecord, LogEntry, RunRecord, TxRecord};

impl Site {
    /// One transaction, as operators see it.
    pub async fn transaction(&self, integration: &str, seq: i64) -> Result<TxRecord> {
        let integ = self.integration(integration)?;
        let mut transaction = self
            .store
            .transaction(integration, seq)
            .await?
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "integration {integration} has no transaction {seq}"
                ))
            })?;
        transaction.state = transaction.state.shown(transaction.seq, integ.in_flight());
        Ok(transaction)
    }

    /// Transactions as operators see them, newest first: those in `state`
    /// if given (Sending: the Queued ones in flight), with `seq < before`
    /// if given, at most `limit`.
    pub async fn transactions(
        &self,
        integration: &str,
        state: Option<TxState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<TxRecord>> {
        let integ = self.integration(integration)?;
        let stored = self
            .store
            .transactions(integration, state.map(TxState::stored), before, limit)
            .await?;
        let in_flight = integ.in_flight();
        Ok(stored
            .into_iter()
            .map(|mut transaction| {
                transaction.state = transaction.state.shown(transaction.seq, in_flight);
                transaction
            })
            .filter(|transaction| state.is_none_or(|s| transaction.state == s))
            .collect())
    }

    /// Transactions of the integration waiting to be sent.
    pub async fn queued(&self, integration: &str) -> Result<i64> {
        Ok(self.store.queued_count(integration).await?)
    }

    /// A flow's stored status and checkpoint.
    pub async fn flow_record(&self, flow: &str) -> Result<FlowRecord> {
        Ok(self.store.flow(flow).await?)
    }

    /// The latest runs of a flow, newest first.
    pub async fn runs(&self, flow: &str, limit: usize) -> Result<Vec<RunRecord>> {
        Ok(self.store.runs(flow, limit).await?)
    }

    /// How many of the records a run of `integration` queued failed for
    /// good (are Error), counted now.
    pub async fn run_failures(&self, integration: &str, run: &RunRecord) -> Result<i64> {
        Ok(match run.seqs {
            Some((first, last)) => self.store.errors_between(integration, first, last).await?,
            None => 0,
        })
    }

    /// Log entries with `id > after`, `level <= max_level`, `ts >= since`,
    /// oldest first, at most `limit` (the newest `limit` when more match).
    pub async fn log_entries(
        &self,
        after: i64,
        since: Option<Millis>,
        max_level: u8,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        Ok(self.store.log(after, since, max_level, limit).await?)
    }

    /// The audit trail, newest first, at most `limit` entries.
    pub async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        Ok(self.store.audit(limit).await?)
    }
}

impl Site {
    /// The history of `integration` (of the whole site when `None`) from
    /// `since` on by `step`, the unfinished minute included: what was
    /// written, and what was counted since.
    pub async fn history(
        &self,
        integration: Option<&str>,
        since: Millis,
        step: crate::engine::history::Step,
    ) -> Result<Vec<crate::engine::history::Point>> {
        use crate::engine::history::{minute_of, points};
        let now = crate::model::now_millis();
        let integrations = match integration {
            Some(name) => vec![self.integration(name)?.clone()],
            None => self.integrations().cloned().collect(),
        };
        let mut rows: Vec<_> = self
            .store
            .history(integration, since - since.rem_euclid(step.millis()))
            .await?
            .into_iter()
            .map(|r| (r.integration, r.at, r.counts, r.depth))
            .collect();
        let minute = minute_of(now);
        for integ in integrations {
            let counts = integ.tally.peek();
            let depth = self.store.queued_count(&integ.name).await?;
            rows.push((integ.name.clone(), minute, counts, depth));
        }
        rows.sort_by_key(|r| r.1);
        Ok(points(&rows, since, now, step))
    }
}

impl Site {
    /// When the holds of `integration` (of every integration when `None`)
    /// were on, of those on at `since` or after, oldest first.
    pub async fn hold_periods(
        &self,
        integration: Option<&str>,
        since: Millis,
    ) -> Result<Vec<crate::store::HoldPeriod>> {
        if let Some(name) = integration {
            self.integration(name)?;
        }
        Ok(self.store.hold_periods(integration, since).await?)
    }
}
