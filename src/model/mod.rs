//! Ids, states and their transitions: pure, no I/O.
//!
//! Every state machine here has one `apply` function that takes the current
//! state and an event and returns the next state or a typed [`Refusal`]. The
//! API, the CLI (through the API) and the engine all go through these
//! functions, so a 409 and an engine decision can never disagree.

pub mod actions;
pub mod flow;
pub mod integration;
pub mod role;
pub mod site;
pub mod status;
pub mod transaction;

pub use actions::Action;
pub use flow::{FlowEvent, FlowStatus, RunMode, RunResult};
pub use integration::{Hold, HoldKind, IntegrationEvent, IntegrationState};
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

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
