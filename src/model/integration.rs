//! An integration's lifecycle (seeds 001, 002) and the holds that keep it
//! from sending.
//!
//! The lifecycle state is what a person set (the desired state) and survives
//! restarts. Holds are the reasons it does not send right now; it sends only
//! while it is Active and holds none. The system removes only the holds the
//! system placed: an operator's pause is lifted by a person or not at all.

use serde::{Deserialize, Serialize};

use super::{Millis, Refusal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationState {
    /// Captures and sends.
    Active,
    /// Captures; transactions queue in creation order; nothing is sent.
    Paused,
    /// Deactivated: nothing is captured and nothing is sent.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrationEvent {
    Pause,
    Resume,
    Start,
    Stop,
}

impl IntegrationEvent {
    pub fn verb(self) -> &'static str {
        match self {
            IntegrationEvent::Pause => "pause",
            IntegrationEvent::Resume => "resume",
            IntegrationEvent::Start => "start",
            IntegrationEvent::Stop => "stop",
        }
    }
}

impl IntegrationState {
    pub const ALL: [IntegrationState; 3] = [
        IntegrationState::Active,
        IntegrationState::Paused,
        IntegrationState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationState::Active => "active",
            IntegrationState::Paused => "paused",
            IntegrationState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<IntegrationState> {
        Some(match s {
            "active" => IntegrationState::Active,
            "paused" => IntegrationState::Paused,
            "stopped" => IntegrationState::Stopped,
            _ => return None,
        })
    }

    /// Whether flows of the integration capture records.
    pub fn captures(self) -> bool {
        self != IntegrationState::Stopped
    }

    /// Seed 002: pause if Active, resume if Paused. Pause is not
    /// deactivation: Stop and Start are their own events.
    pub fn apply(self, event: IntegrationEvent) -> Result<IntegrationState, Refusal> {
        use IntegrationEvent as E;
        use IntegrationState as S;
        match (self, event) {
            (S::Active, E::Pause) => Ok(S::Paused),
            (S::Paused, E::Resume) => Ok(S::Active),
            (S::Active | S::Paused, E::Stop) => Ok(S::Stopped),
            (S::Stopped, E::Start) => Ok(S::Active),
            (S::Paused, E::Start) => Err(Refusal::Conflict(
                "the integration is paused; resume it to send again".into(),
            )),
            (S::Stopped, E::Pause | E::Resume) => Err(Refusal::Conflict(format!(
                "the integration is stopped; only an {} integration can be {}d",
                if event == E::Pause {
                    "active"
                } else {
                    "paused"
                },
                event.verb()
            ))),
            (state, event) => Err(Refusal::Conflict(format!(
                "the integration is already {}; cannot {} it",
                state.as_str(),
                event.verb()
            ))),
        }
    }
}

/// Why an integration is held from sending.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum HoldKind {
    /// A person paused it. Only a person lifts it.
    Operator,
    /// An endpoint it uses stopped answering.
    EndpointOffline,
    /// An endpoint it uses refused its credentials.
    Unauthorized,
    /// Its site is stopped.
    SiteStopped,
}

impl HoldKind {
    pub const ALL: [HoldKind; 4] = [
        HoldKind::Operator,
        HoldKind::EndpointOffline,
        HoldKind::Unauthorized,
        HoldKind::SiteStopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Operator => "operator",
            HoldKind::EndpointOffline => "endpoint-offline",
            HoldKind::Unauthorized => "unauthorized",
            HoldKind::SiteStopped => "site-stopped",
        }
    }

    pub fn parse(s: &str) -> Option<HoldKind> {
        Some(match s {
            "operator" => HoldKind::Operator,
            "endpoint-offline" => HoldKind::EndpointOffline,
            "unauthorized" => HoldKind::Unauthorized,
            "site-stopped" => HoldKind::SiteStopped,
            _ => return None,
        })
    }

    /// Holds the system places and therefore may remove by itself.
    pub fn placed_by_system(self) -> bool {
        self != HoldKind::Operator
    }
}

/// One reason an integration is not sending, with who placed it, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub kind: HoldKind,
    pub by: String,
    /// Milliseconds since the epoch.
    pub since: Millis,
    pub reason: String,
}

/// The stored state of an integration: the lifecycle state a person set and
/// its holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub state: IntegrationState,
    pub holds: Vec<Hold>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use IntegrationEvent as E;
    use IntegrationState as S;

    #[test]
    fn every_state_and_event() {
        let table = [
            (S::Active, E::Pause, Some(S::Paused)),
            (S::Active, E::Resume, None),
            (S::Active, E::Start, None),
            (S::Active, E::Stop, Some(S::Stopped)),
            (S::Paused, E::Pause, None),
            (S::Paused, E::Resume, Some(S::Active)),
            (S::Paused, E::Start, None),
            (S::Paused, E::Stop, Some(S::Stopped)),
            (S::Stopped, E::Pause, None),
            (S::Stopped, E::Resume, None),
            (S::Stopped, E::Start, Some(S::Active)),
            (S::Stopped, E::Stop, None),
        ];
        for (state, event, want) in table {
            match (state.apply(event), want) {
                (Ok(next), Some(want)) => assert_eq!(next, want),
                (Err(Refusal::Conflict(msg)), None) => assert!(
                    msg.contains(state.as_str()),
                    "{state:?} + {event:?}: '{msg}' names the current state"
                ),
                (got, want) => panic!("{state:?} + {event:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn only_stopped_does_not_capture() {
        assert!(S::Active.captures());
        assert!(S::Paused.captures());
        assert!(!S::Stopped.captures());
    }

    #[test]
    fn the_operator_hold_is_never_the_systems() {
        for kind in [
            HoldKind::Operator,
            HoldKind::EndpointOffline,
            HoldKind::Unauthorized,
            HoldKind::SiteStopped,
        ] {
            assert_eq!(kind.placed_by_system(), kind != HoldKind::Operator);
            assert_eq!(HoldKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [S::Active, S::Paused, S::Stopped] {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
    }
}
