//! Ids, states and their transitions: pure, no I/O.
//!
//! Every state machine here has one `apply` function that takes the current
//! state and an event and returns the next state or a typed [`Refusal`]. The
//! API, the CLI (through the API) and the engine all go through these
//! functions, so a 409 and an engine decision can never disagree. (An
//! endpoint's state is observed, not asked for: its `apply` refuses
//! nothing, it says which state an observation means.)
//!
//! This is the only home of state rules. The store stores what was decided
//! here (an [`IntegrationChange`], a flow's next [`FlowStatus`]) and the
//! engine takes it into effect; neither decides by itself.

pub mod actions;
pub mod alert;
pub mod endpoint;
pub mod flow;
pub mod integration;
pub mod role;
pub mod site;
pub mod status;
pub mod transaction;

pub use actions::Action;
pub use endpoint::{EndpointEvent, EndpointState, FailureClass};
pub use flow::{FlowEvent, FlowStatus, RunMode, RunResult};
pub use integration::{
    Hold, HoldKind, Holds, IntegrationChange, IntegrationEvent, IntegrationRecord, IntegrationState,
};
pub use role::Role;
pub use site::{SiteEvent, SiteState};
pub use status::{derive_status, ConnectionStatus, FlowRunOutcome};
pub use transaction::{TxAction, TxState};

/// Why a transition was refused. `Conflict` is a request that does not fit the
/// current state (HTTP 409); `Invalid` is a request that is wrong whatever the
/// state (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// The longest reason a person may give for a stop or a pause, in bytes:
/// a paragraph. A reason is kept and shown with every answer about its site
/// or integration, so one pasted log file must not make each of them huge.
pub const MAX_REASON: usize = 4096;

/// Refuses a reason longer than [`MAX_REASON`].
pub fn check_reason(reason: &str) -> Result<(), Refusal> {
    if reason.len() > MAX_REASON {
        return Err(Refusal::Invalid(format!(
            "the reason has {} bytes; give at most {MAX_REASON}",
            reason.len()
        )));
    }
    Ok(())
}

/// The idempotency key of a transaction: `{site}:{integration}:{seq}`. It is
/// the same on every attempt, so a target that honours it applies a record
/// once however often a crash makes sluice send it.
pub fn idempotency_key(site: &str, integration: &str, seq: i64) -> String {
    format!("{site}:{integration}:{seq}")
}

/// Milliseconds since the Unix epoch: the one clock stored everywhere.
pub type Millis = i64;

/// `ms` as RFC 3339 in UTC with milliseconds, as answers and alerts give
/// times (the epoch for a time out of range).
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod names {
    use super::*;

    /// Every state's name, as stored, shown by the CLI and written in the
    /// JSON answers, is one name: strum's and serde's agree.
    fn one_name<T>(all: &[T])
    where
        T: Copy
            + serde::Serialize
            + Into<&'static str>
            + std::str::FromStr
            + PartialEq
            + std::fmt::Debug,
    {
        for &value in all {
            let name: &'static str = value.into();
            assert_eq!(serde_json::to_value(value).unwrap(), name, "{value:?}");
            assert_eq!(name.parse::<T>().ok(), Some(value), "{name}");
        }
    }

    #[test]
    fn names_are_one_in_the_store_the_cli_and_the_answers() {
        one_name(SiteState::ALL);
        one_name(IntegrationState::ALL);
        one_name(HoldKind::ALL);
        one_name(TxState::ALL);
        one_name(EndpointState::ALL);
        one_name(Role::ALL);
        one_name(<RunMode as strum::VariantArray>::VARIANTS);
        one_name(<RunResult as strum::VariantArray>::VARIANTS);
        one_name(<status::ConnectionStatus as strum::VariantArray>::VARIANTS);
    }
}
