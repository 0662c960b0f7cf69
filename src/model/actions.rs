//! What a person may do now: the actions an answer about a site,
//! integration, flow, endpoint or transaction carries (`"actions"`), from
//! its state and the caller's role. The dashboard and the CLI show these and
//! decide nothing themselves.
//!
//! # Invariants
//! - An action is offered only when the entity's state machine takes it
//!   now (the same `apply` the engine goes through) and the role may take
//!   it: an offered action is answered neither 409 nor 403, unless the
//!   state changes in between.
//! - The role an action needs is [`Action::role`], here and nowhere else:
//!   the API's route table asks the route that performs an action for this
//!   role (`api::routes`), and a test there holds every action to its
//!   route.
//! - An action's [`Action::name`] is the word of the route that performs it
//!   (`…/pause`, `…/transactions/{seq}/retry`, `…/errors/{group}/retry`),
//!   or its mode (`run-all`, `run-changed` for `…/run {"mode"}`).

use super::{
    FlowEvent, FlowStatus, IntegrationEvent, IntegrationState, Refusal, Role, RunMode, SiteEvent,
    SiteState, TxAction, TxState,
};

/// Everything a person can do through the API that changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray)]
pub enum Action {
    SiteStart,
    SiteStop,
    SiteReload,
    IntegrationPause,
    IntegrationResume,
    IntegrationStart,
    IntegrationStop,
    /// 'Send All'.
    FlowRunAll,
    /// 'Send Changed'.
    FlowRunChanged,
    /// What a record becomes through the flow's mapping (`…/try`). It
    /// changes nothing but may read the source, which is more than a viewer
    /// may do. Not offered in answers: it is there whenever the flow is.
    FlowTry,
    EndpointTest,
    EndpointReauthorize,
    TxRetry,
    TxReplay,
    TxIgnore,
    /// Set or delete a record link by hand (a repair).
    LinkEdit,
    /// List, create and revoke the API's tokens.
    ManageTokens,
    /// Send a test alert to an alert channel.
    AlertTest,
}

impl Action {
    /// A site's actions, in the order they are shown.
    pub const SITE: [Action; 3] = [Action::SiteStart, Action::SiteStop, Action::SiteReload];
    pub const INTEGRATION: [Action; 4] = [
        Action::IntegrationPause,
        Action::IntegrationResume,
        Action::IntegrationStart,
        Action::IntegrationStop,
    ];
    pub const FLOW: [Action; 3] = [Action::FlowRunAll, Action::FlowRunChanged, Action::FlowTry];
    pub const ENDPOINT: [Action; 2] = [Action::EndpointTest, Action::EndpointReauthorize];
    pub const TRANSACTION: [Action; 3] = [Action::TxRetry, Action::TxReplay, Action::TxIgnore];
    /// A flow's record links: offered by no answer (a repair a person
    /// chooses), taken by operators.
    pub const LINK: [Action; 1] = [Action::LinkEdit];
    /// What concerns the daemon as a whole, not one of its sites.
    pub const DAEMON: [Action; 2] = [Action::ManageTokens, Action::AlertTest];

    pub const ALL: &'static [Action] = <Action as strum::VariantArray>::VARIANTS;

    /// The least role that may take it. A viewer reads and takes none; an
    /// operator keeps things moving (pause, resume, run, test, and the
    /// transactions' error suite); an admin changes what runs at all
    /// (sites and integrations started and stopped, reloads, credentials,
    /// tokens).
    pub fn role(self) -> Role {
        use Action::*;
        match self {
            IntegrationPause | IntegrationResume | FlowRunAll | FlowRunChanged | FlowTry
            | EndpointTest | TxRetry | TxReplay | TxIgnore | LinkEdit | AlertTest => Role::Operator,
            SiteStart | SiteStop | SiteReload | IntegrationStart | IntegrationStop
            | EndpointReauthorize | ManageTokens => Role::Admin,
        }
    }

    /// How an answer's `actions` names it, among the actions of its entity.
    pub fn name(self) -> &'static str {
        use Action::*;
        match self {
            SiteStart | IntegrationStart => "start",
            SiteStop | IntegrationStop => "stop",
            SiteReload => "reload",
            IntegrationPause => "pause",
            IntegrationResume => "resume",
            FlowRunAll => "run-all",
            FlowRunChanged => "run-changed",
            FlowTry => "try",
            EndpointTest => "test",
            EndpointReauthorize => "reauthorize",
            TxRetry => "retry",
            TxReplay => "replay",
            TxIgnore => "ignore",
            LinkEdit => "link",
            ManageTokens => "manage-tokens",
            AlertTest => "test-alert",
        }
    }
}

/// The names of `actions`, as answers carry them.
pub fn names(actions: &[Action]) -> Vec<String> {
    actions.iter().map(|a| a.name().to_string()).collect()
}

/// Those of `candidates` that `role` may take and `fits` lets through.
fn offered(candidates: &[Action], role: Role, fits: impl Fn(Action) -> bool) -> Vec<Action> {
    candidates
        .iter()
        .copied()
        .filter(|a| role.may(a.role()) && fits(*a))
        .collect()
}

/// A site's: start while it is stopped, stop while it runs (not while it
/// is starting or stopping), reload in any state.
pub fn site(state: SiteState, role: Role) -> Vec<Action> {
    offered(&Action::SITE, role, |action| match action {
        Action::SiteStart => state.apply(&SiteEvent::Start).is_ok(),
        // The reason comes with the request; the state alone decides
        // whether a stop is offered.
        Action::SiteStop => state
            .apply(&SiteEvent::Stop {
                reason: "offered".into(),
            })
            .is_ok(),
        _ => true,
    })
}

/// An integration's: what its lifecycle takes from where it is.
pub fn integration(state: IntegrationState, role: Role) -> Vec<Action> {
    offered(&Action::INTEGRATION, role, |action| {
        let event = match action {
            Action::IntegrationPause => IntegrationEvent::Pause,
            Action::IntegrationResume => IntegrationEvent::Resume,
            Action::IntegrationStart => IntegrationEvent::Start,
            _ => IntegrationEvent::Stop,
        };
        state.apply(event).is_ok()
    })
}

/// What decides whether a flow may be run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFacts {
    pub status: FlowStatus,
    /// Its source is read by a run; a webhook's records arrive by
    /// themselves and there is nothing to run.
    pub pull: bool,
    /// A disabled flow is not scheduled, and not offered to run either.
    pub enabled: bool,
    /// Its integration captures records (it is not stopped).
    pub captures: bool,
    /// A request while the site is stopped is kept as Pending.
    pub site_running: bool,
}

impl FlowFacts {
    /// A run of `mode` of flow `flow` (of integration `integration`) asked
    /// for now: the flow's next status, or why not. The engine decides a
    /// request with this, and the answers offer what it allows.
    pub fn request(
        &self,
        flow: &str,
        integration: &str,
        mode: RunMode,
    ) -> Result<FlowStatus, Refusal> {
        if !self.pull {
            return Err(Refusal::Invalid(format!(
                "flow {flow} receives its records by themselves (a webhook, or a broker \
                 consumed while the site runs); there is nothing to run"
            )));
        }
        if !self.captures {
            return Err(Refusal::Conflict(format!(
                "integration {integration} is stopped; start it to run its flows"
            )));
        }
        self.status.apply(FlowEvent::Requested {
            mode,
            site_running: self.site_running,
        })
    }
}

/// A flow's: 'Send All' and 'Send Changed', when a request would be taken
/// ([`FlowFacts::request`]); a disabled flow is not offered (it may still be
/// run by name).
pub fn flow(facts: FlowFacts, role: Role) -> Vec<Action> {
    if !facts.enabled {
        return Vec::new();
    }
    offered(&Action::FLOW, role, |action| {
        let mode = match action {
            Action::FlowRunAll => RunMode::All,
            Action::FlowRunChanged => RunMode::Changed,
            // Not offered (see `Action::FlowTry`).
            _ => return false,
        };
        facts.request("", "", mode).is_ok()
    })
}

/// An endpoint's: a test in any state; new credentials for a kind that
/// takes them.
pub fn endpoint(takes_credentials: bool, role: Role) -> Vec<Action> {
    offered(&Action::ENDPOINT, role, |action| {
        action != Action::EndpointReauthorize || takes_credentials
    })
}

/// A transaction's, in the state it is shown in (Sending while it is in
/// flight): what the error suite takes from there.
pub fn transaction(state: TxState, role: Role) -> Vec<Action> {
    offered(&Action::TRANSACTION, role, |action| {
        let action = match action {
            Action::TxRetry => TxAction::Retry,
            Action::TxReplay => TxAction::Replay,
            _ => TxAction::Ignore,
        };
        state.apply(action).is_ok()
    })
}

/// A group of errors' (an integration's transactions in Error of one
/// cause): retry and ignore, which the error suite takes from Error, for
/// all of them at once. Replay stays one transaction at a time.
pub fn error_group(role: Role) -> Vec<Action> {
    offered(&[Action::TxRetry, Action::TxIgnore], role, |action| {
        let action = match action {
            Action::TxRetry => TxAction::Retry,
            _ => TxAction::Ignore,
        };
        TxState::Error.apply(action).is_ok()
    })
}

/// What concerns the daemon as a whole: its tokens.
pub fn daemon(role: Role) -> Vec<Action> {
    offered(&Action::DAEMON, role, |_| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunResult, TxAction};
    use Role::{Admin, Operator, Viewer};

    fn named(actions: Vec<Action>) -> Vec<&'static str> {
        actions.into_iter().map(Action::name).collect()
    }

    #[test]
    fn every_action_belongs_to_one_entity_and_names_are_unique_in_it() {
        let groups = [
            &Action::SITE[..],
            &Action::INTEGRATION,
            &Action::FLOW,
            &Action::ENDPOINT,
            &Action::TRANSACTION,
            &Action::LINK,
            &Action::DAEMON,
        ];
        let mut all: Vec<Action> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        for group in groups {
            let mut names: Vec<&str> = group.iter().map(|a| a.name()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), group.len(), "{group:?}");
        }
        all.sort();
        let mut every = Action::ALL.to_vec();
        every.sort();
        assert_eq!(all, every);
    }

    #[test]
    fn a_viewer_is_offered_nothing() {
        for &state in SiteState::ALL {
            assert!(site(state, Viewer).is_empty());
        }
        for &state in IntegrationState::ALL {
            assert!(integration(state, Viewer).is_empty());
        }
        for &state in TxState::ALL {
            assert!(transaction(state, Viewer).is_empty());
        }
        assert!(endpoint(true, Viewer).is_empty());
        assert!(daemon(Viewer).is_empty());
    }

    /// Stop is offered only while the site runs: not while it starts,
    /// which the model refuses (409).
    #[test]
    fn a_site_in_each_state() {
        use SiteState::*;
        let cases = [
            (Stopped, vec!["start", "reload"]),
            (Starting, vec!["reload"]),
            (Running, vec!["stop", "reload"]),
            (Stopping, vec!["reload"]),
        ];
        for (state, want) in cases {
            assert_eq!(named(site(state, Admin)), want, "{state:?}");
            assert!(site(state, Operator).is_empty(), "{state:?}");
        }
    }

    #[test]
    fn an_integration_in_each_state() {
        use IntegrationState::*;
        let cases = [
            (Active, vec!["pause", "stop"], vec!["pause"]),
            (Paused, vec!["resume", "stop"], vec!["resume"]),
            (Stopped, vec!["start"], vec![]),
        ];
        for (state, admin, operator) in cases {
            assert_eq!(named(integration(state, Admin)), admin, "{state:?}");
            assert_eq!(named(integration(state, Operator)), operator, "{state:?}");
        }
    }

    /// What is offered is exactly what the state machine takes, for every
    /// state and role.
    #[test]
    fn offers_agree_with_the_state_machines() {
        for &role in Role::ALL {
            for &state in TxState::ALL {
                let offered = transaction(state, role);
                for (action, verb) in [
                    (Action::TxRetry, TxAction::Retry),
                    (Action::TxReplay, TxAction::Replay),
                    (Action::TxIgnore, TxAction::Ignore),
                ] {
                    assert_eq!(
                        offered.contains(&action),
                        role.may(Operator) && state.apply(verb).is_ok(),
                        "{role:?} {state:?} {action:?}"
                    );
                }
            }
            for &state in IntegrationState::ALL {
                let offered = integration(state, role);
                for (action, event) in [
                    (Action::IntegrationPause, IntegrationEvent::Pause),
                    (Action::IntegrationResume, IntegrationEvent::Resume),
                    (Action::IntegrationStart, IntegrationEvent::Start),
                    (Action::IntegrationStop, IntegrationEvent::Stop),
                ] {
                    assert_eq!(
                        offered.contains(&action),
                        role.may(action.role()) && state.apply(event).is_ok(),
                        "{role:?} {state:?} {action:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_transaction_in_each_state() {
        use TxState::*;
        let cases = [
            (Queued, vec!["ignore"]),
            (Sending, vec![]),
            (Sent, vec!["replay"]),
            (Error, vec!["retry", "replay", "ignore"]),
            (Ignored, vec!["replay"]),
        ];
        for (state, want) in cases {
            assert_eq!(named(transaction(state, Operator)), want, "{state:?}");
        }
    }

    #[test]
    fn a_group_of_errors_is_retried_or_ignored() {
        assert_eq!(named(error_group(Operator)), ["retry", "ignore"]);
        assert_eq!(named(error_group(Admin)), ["retry", "ignore"]);
        assert!(error_group(Viewer).is_empty());
        // What one transaction in Error is offered, but replay.
        let one: Vec<Action> = transaction(TxState::Error, Operator)
            .into_iter()
            .filter(|a| *a != Action::TxReplay)
            .collect();
        assert_eq!(error_group(Operator), one);
    }

    #[test]
    fn a_flow_runs_unless_it_runs_already_or_cannot_run() {
        let idle = FlowFacts {
            status: FlowStatus::Done(RunResult::Success),
            pull: true,
            enabled: true,
            captures: true,
            site_running: true,
        };
        assert_eq!(named(flow(idle, Operator)), ["run-all", "run-changed"]);
        assert!(flow(idle, Viewer).is_empty());
        // While the site is stopped a request is kept as Pending: offered.
        let stopped_site = FlowFacts {
            site_running: false,
            status: FlowStatus::Pending(RunMode::All),
            ..idle
        };
        assert_eq!(flow(stopped_site, Operator).len(), 2);
        for not_now in [
            FlowFacts {
                status: FlowStatus::Running(RunMode::Changed),
                ..idle
            },
            FlowFacts {
                pull: false,
                ..idle
            },
            FlowFacts {
                enabled: false,
                ..idle
            },
            FlowFacts {
                captures: false,
                ..idle
            },
        ] {
            assert!(flow(not_now, Admin).is_empty(), "{not_now:?}");
        }
    }

    #[test]
    fn endpoints_and_tokens() {
        assert_eq!(named(endpoint(true, Admin)), ["test", "reauthorize"]);
        assert_eq!(named(endpoint(false, Admin)), ["test"]);
        assert_eq!(named(endpoint(true, Operator)), ["test"]);
        assert_eq!(named(daemon(Admin)), ["manage-tokens", "test-alert"]);
        assert_eq!(named(daemon(Operator)), ["test-alert"]);
        assert!(daemon(Viewer).is_empty());
    }
}
