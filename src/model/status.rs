//! The seven connection statuses of seed 001, derived from what is observed.
//!
//! Running when the latest completed result of every flow is success; Failed
//! when the latest completed result of one or more flows is failure; an
//! ongoing run does not count. A halted run (cut off by a stop) is not a
//! completed one either.

use serde::{Deserialize, Serialize};

use super::{IntegrationState, RunResult};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
pub enum ConnectionStatus {
    Disabled,
    Failed,
    Idle,
    Restarting,
    Running,
    #[serde(rename = "Server Reinitializing")]
    #[strum(serialize = "Server Reinitializing")]
    ServerReinitializing,
    Unknown,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What is known of one enabled flow for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowRunOutcome {
    /// Records arrive by themselves (a webhook): nothing to run, nothing to fail.
    Push,
    /// The latest completed run (success or failure), if any ended yet.
    Completed(Option<RunResult>),
}

impl FlowRunOutcome {
    /// A pull flow's outcome from the results of its latest runs, newest
    /// first: the latest *completed* one (success or failure) counts; an
    /// ongoing run (no result yet) or a halted one (cut off by a stop) does
    /// not (seed 001's three cases).
    pub fn of_runs(newest_first: impl IntoIterator<Item = Option<RunResult>>) -> FlowRunOutcome {
        FlowRunOutcome::Completed(
            newest_first
                .into_iter()
                .flatten()
                .find(|r| matches!(r, RunResult::Success | RunResult::Failed)),
        )
    }
}

/// `starting`: a person started it and its start-up (a first run of its
/// flows, queued behind the integrations started before it) is not over.
pub fn derive_status(
    state: IntegrationState,
    reinitializing: bool,
    starting: bool,
    flows: &[FlowRunOutcome],
) -> ConnectionStatus {
    if reinitializing {
        return ConnectionStatus::ServerReinitializing;
    }
    if state == IntegrationState::Stopped {
        return ConnectionStatus::Disabled;
    }
    if flows.is_empty() {
        return ConnectionStatus::Idle;
    }
    if starting {
        return ConnectionStatus::Restarting;
    }
    let mut any_unfinished = false;
    for flow in flows {
        match flow {
            FlowRunOutcome::Push => {}
            FlowRunOutcome::Completed(Some(RunResult::Failed)) => return ConnectionStatus::Failed,
            FlowRunOutcome::Completed(Some(RunResult::Success)) => {}
            // A halted run did not complete: as if none had.
            FlowRunOutcome::Completed(Some(RunResult::Halted) | None) => any_unfinished = true,
        }
    }
    if any_unfinished {
        ConnectionStatus::Restarting
    } else {
        ConnectionStatus::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_completed_run_counts() {
        use RunResult::*;
        let of = |runs: &[Option<RunResult>]| FlowRunOutcome::of_runs(runs.iter().copied());
        assert_eq!(of(&[]), FlowRunOutcome::Completed(None));
        // Ongoing, then halted, then the last completed: the failure counts.
        assert_eq!(
            of(&[None, Some(Halted), Some(Failed), Some(Success)]),
            FlowRunOutcome::Completed(Some(Failed))
        );
        assert_eq!(
            of(&[Some(Success), Some(Failed)]),
            FlowRunOutcome::Completed(Some(Success))
        );
        assert_eq!(of(&[Some(Halted)]), FlowRunOutcome::Completed(None));
    }
    use FlowRunOutcome::*;
    use RunResult::*;

    const ACTIVE: IntegrationState = IntegrationState::Active;

    /// Seed 001's three cases, reduced to the latest completed result per
    /// sync-set (an ongoing run does not count).
    #[test]
    fn the_three_cases_of_seed_001() {
        // Case 1: iteration 2 all success; iteration 3 ss1 ongoing.
        let case1 = [Completed(Some(Success)); 3];
        assert_eq!(
            derive_status(ACTIVE, false, false, &case1),
            ConnectionStatus::Running
        );
        // Case 2: iteration 2 ss1 failed; iteration 3 ss1 ongoing.
        let case2 = [
            Completed(Some(Failed)),
            Completed(Some(Success)),
            Completed(Some(Success)),
        ];
        assert_eq!(
            derive_status(ACTIVE, false, false, &case2),
            ConnectionStatus::Failed
        );
        // Case 3: iteration 3 ss1 success, ss2 ongoing.
        let case3 = [Completed(Some(Success)); 3];
        assert_eq!(
            derive_status(ACTIVE, false, false, &case3),
            ConnectionStatus::Running
        );
    }

    #[test]
    fn other_statuses() {
        assert_eq!(
            derive_status(ACTIVE, false, false, &[]),
            ConnectionStatus::Idle
        );
        assert_eq!(
            derive_status(ACTIVE, false, true, &[Completed(Some(Success))]),
            ConnectionStatus::Restarting
        );
        assert_eq!(
            derive_status(IntegrationState::Stopped, false, false, &[Push]),
            ConnectionStatus::Disabled
        );
        assert_eq!(
            derive_status(ACTIVE, true, false, &[Push]),
            ConnectionStatus::ServerReinitializing
        );
        assert_eq!(
            derive_status(ACTIVE, false, false, &[Push, Completed(None)]),
            ConnectionStatus::Restarting
        );
        assert_eq!(
            derive_status(IntegrationState::Paused, false, false, &[Push]),
            ConnectionStatus::Running
        );
    }
}
