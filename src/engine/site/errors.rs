//! Errors handled in bulk: an integration's transactions in Error grouped
//! by cause (what a cause is: [`crate::engine::errors`]), and a person's
//! retry or ignore of a whole group.
//!
//! # Invariants
//! - A group's action is the model's rule for one transaction in Error
//!   ([`TxState::apply`]), taken by each transaction of the group in
//!   sequence order; one that is no longer in Error when its turn comes
//!   (another person acted meanwhile) is left as it is and counted as
//!   skipped. The store checks that in the same write as the change.
//! - One log line and one audit entry (`errors.retry` / `errors.ignore`,
//!   subject `integration/NAME/errors/GROUP`, the count in its outcome) for
//!   the whole group, however large.
//! - The store is read page by page, and written a chunk at a time: a large
//!   group neither fills memory with records nor holds the store's writer
//!   for long.

use std::collections::HashMap;

use super::Site;
use crate::engine::errors::{is_group_id, Cause, ErrorGroup, Grouping};
use crate::engine::{EngineError, Integration, Result};
use crate::log::level;
use crate::model::{Refusal, TxAction, TxState};
use crate::store::ErrorTx;

/// Transactions in Error read from the store at a time.
const PAGE: usize = 1000;

/// Transactions settled by one write of the store.
const CHUNK: usize = 500;

/// What a person's retry or ignore of a group did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupActed {
    pub group: String,
    pub action: TxAction,
    /// Transactions of the group in Error when the action began.
    pub count: usize,
    /// Those retried (or ignored), in sequence order.
    pub done: usize,
    /// Those no longer in Error when their turn came: left as they are.
    pub skipped: usize,
}

impl Site {
    /// The integration's transactions in Error, grouped by cause, the
    /// largest group first.
    pub async fn error_groups(&self, integration: &str) -> Result<Vec<ErrorGroup>> {
        let integ = self.integration(integration)?;
        let mut grouping = Grouping::default();
        self.each_error(integ, |endpoint, tx| grouping.add(endpoint, tx))
            .await?;
        Ok(grouping.into_groups())
    }

    /// Retry or ignore every transaction of one group (replay is refused:
    /// a copy of each is a person's choice, one at a time). Unknown group
    /// (or none of it in Error any more): not found.
    pub async fn act_on_error_group(
        &self,
        integration: &str,
        group: &str,
        action: TxAction,
        actor: &str,
    ) -> Result<GroupActed> {
        let integ = self.integration(integration)?;
        let verb = format!("errors.{}", action.as_str());
        let subject = format!("integration/{integration}/errors/{group}");
        // Every transaction of a group is in Error: the model's rule for
        // one in Error decides what each becomes.
        let next = match action {
            TxAction::Replay => Err(Refusal::Invalid(
                "a group of errors is retried or ignored; replay its transactions one by one"
                    .into(),
            )),
            _ => TxState::Error.apply(action),
        };
        let next = match next {
            Ok(next) => next,
            Err(refusal) => return self.refused(actor, &verb, &subject, None, refusal).await,
        };
        let unknown = || {
            EngineError::NotFound(format!(
                "integration {integration} has no transactions in Error of group {group}"
            ))
        };
        if !is_group_id(group) {
            return Err(unknown());
        }
        let mut seqs = Vec::new();
        self.each_error(integ, |endpoint, tx| {
            let cause = Cause::of(endpoint, tx.last_error.as_deref().unwrap_or(""));
            if cause.group() == group {
                seqs.push(tx.seq);
            }
        })
        .await?;
        if seqs.is_empty() {
            return Err(unknown());
        }
        // In sequence order (as read), a chunk per write.
        let mut done = 0;
        let mut failure = None;
        for chunk in seqs.chunks(CHUNK) {
            match self
                .store
                .settle_many_by_operator(integration, chunk.to_vec(), TxState::Error, next)
                .await
            {
                Ok(n) => done += n,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if done > 0 {
            match action {
                // Behind the sender's position: it reads the queue again.
                TxAction::Retry => integ.rewind(),
                _ => integ.wake(),
            }
        }
        let past = match action {
            TxAction::Retry => "retried",
            _ => "ignored",
        };
        if let Some(e) = failure {
            self.audit(
                actor,
                &verb,
                &subject,
                None,
                &format!("failed after {done} {past}: {e}"),
            )
            .await;
            return Err(e.into());
        }
        let skipped = seqs.len() - done;
        let left = match skipped {
            0 => String::new(),
            n => format!(", {n} no longer in Error"),
        };
        self.log
            .write(
                level::INFO,
                format!(
                    "{done} transactions of {integration} {past} by {actor} \
                     (error group {group}{left})"
                ),
            )
            .await;
        self.audit(
            actor,
            &verb,
            &subject,
            None,
            &format!("ok: {done} {past}{left}"),
        )
        .await;
        Ok(GroupActed {
            group: group.to_string(),
            action,
            count: seqs.len(),
            done,
            skipped,
        })
    }

    /// Every transaction of the integration in Error, in sequence order,
    /// with the endpoint it failed at (its flow's target; none for a flow
    /// no longer configured), read a page at a time.
    async fn each_error(
        &self,
        integ: &Integration,
        mut each: impl FnMut(Option<&str>, &ErrorTx),
    ) -> Result<()> {
        let targets: HashMap<&str, &str> = integ
            .config
            .flows
            .iter()
            .map(|f| (f.name.as_str(), f.target.as_str()))
            .collect();
        let mut after = i64::MIN;
        loop {
            let page = self.store.errors(&integ.name, after, PAGE).await?;
            for tx in &page {
                each(targets.get(tx.flow.as_str()).copied(), tx);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = last.seq,
                _ => return Ok(()),
            }
        }
    }
}
