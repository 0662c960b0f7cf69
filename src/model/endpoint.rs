//! What is observed of an endpoint: its state (seed 003), the classes of
//! failure a call to it can meet, and which observation moves it to which
//! state.
//!
//! The state is an observation, never what a person set: nothing here
//! touches an integration's lifecycle state. A down endpoint (Offline,
//! Unauthorized) has every integration delivering to it held, with the
//! hold [`EndpointState::hold`] names; the engine places and lifts it.
//! How soon a down endpoint is probed again, and how many requests without
//! an answer make it Offline within which window, is time: the engine's
//! (`engine::health`), which asks [`EndpointState::apply`] for the state.

use serde::Serialize;

use super::HoldKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum EndpointState {
    Online,
    Offline,
    Unauthorized,
    Disabled,
}

impl EndpointState {
    pub const ALL: &'static [EndpointState] = <EndpointState as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The hold a down endpoint places on every integration delivering to
    /// it; `None` for an endpoint that is not down.
    pub fn hold(self) -> Option<HoldKind> {
        match self {
            EndpointState::Offline => Some(HoldKind::EndpointOffline),
            EndpointState::Unauthorized => Some(HoldKind::Unauthorized),
            EndpointState::Online | EndpointState::Disabled => None,
        }
    }

    /// The state `event` says the endpoint is in, or `None` when it says
    /// nothing of it (the endpoint stays as it is; the engine keeps the
    /// error, and a down endpoint is probed again at its pace).
    ///
    /// - Reached (a delivery, a probe or a test that got through): Online.
    /// - A delivery that found no connection, or a certificate not trusted:
    ///   Offline at once; credentials refused: Unauthorized. A single
    ///   request without an answer says nothing, `NoAnswers` (enough of
    ///   them within the window) is Offline. An answer that is retried
    ///   (5xx, 429) or a record rejected says the endpoint is up: nothing.
    /// - A failed probe or test: credentials refused is Unauthorized; any
    ///   other failure makes an Online endpoint Offline and says nothing of
    ///   one already down.
    /// - After a restart, a stored hold of the endpoint's makes an Online
    ///   (not yet probed) endpoint down again until a probe says otherwise.
    /// - Disabled is switched off: nothing observed changes it.
    pub fn apply(self, event: EndpointEvent) -> Option<EndpointState> {
        use EndpointEvent as E;
        use EndpointState as S;
        use FailureClass as F;
        if self == S::Disabled {
            return None;
        }
        match event {
            E::Reached => Some(S::Online),
            E::DeliveryFailed(F::Unreachable | F::Untrusted) | E::NoAnswers => Some(S::Offline),
            E::DeliveryFailed(F::Unauthorized) | E::ProbeFailed(F::Unauthorized) => {
                Some(S::Unauthorized)
            }
            E::DeliveryFailed(F::NoAnswer | F::Intermittent | F::Rejected) => None,
            E::ProbeFailed(_) => (self == S::Online).then_some(S::Offline),
            E::HeldAtRestart(kind) => match (self, kind) {
                (S::Online, HoldKind::EndpointOffline) => Some(S::Offline),
                (S::Online, HoldKind::Unauthorized) => Some(S::Unauthorized),
                _ => None,
            },
        }
    }
}

/// What is observed of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A delivery went through, or a probe or a person's test reached it.
    Reached,
    /// A delivery failed, of this class. One request without an answer
    /// (`NoAnswer`) is not yet an outage: see [`EndpointEvent::NoAnswers`].
    DeliveryFailed(FailureClass),
    /// The endpoint's `offline_after` requests without an answer fell
    /// within its `offline_window` (the engine counts them).
    NoAnswers,
    /// A probe or a person's test failed, of this class.
    ProbeFailed(FailureClass),
    /// At the daemon's start, an integration delivering to the endpoint
    /// still carries this hold, stored when the endpoint went down.
    HeldAtRestart(HoldKind),
}

/// How a failed delivery should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray)]
pub enum FailureClass {
    /// No connection could be made (refused, unreachable, DNS): the
    /// endpoint is down. Tried again later.
    Unreachable,
    /// The request got no answer (time-out, reset): tried again later;
    /// several in a short window mean the endpoint is down.
    NoAnswer,
    /// The endpoint answered, busy (5xx, 429, 408): tried again later,
    /// honouring `Retry-After`.
    Intermittent,
    /// 401/403: the credentials are refused.
    Unauthorized,
    /// TLS with the endpoint cannot be established: its certificate is not
    /// trusted (unknown issuer, another name, expired), it refuses ours, or
    /// our TLS files cannot be used. Nothing of this fixes itself in
    /// seconds: the endpoint is Offline and tested again at its
    /// `probe_every` (or at once by a person's test), never a retry storm.
    Untrusted,
    /// Another 4xx: the target rejects this data.
    Rejected,
}

impl FailureClass {
    pub const ALL: &'static [FailureClass] = <FailureClass as strum::VariantArray>::VARIANTS;
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndpointEvent as E;
    use EndpointState as S;
    use FailureClass as F;

    /// What each observation says, in each state the system may leave an
    /// endpoint in (Disabled: below).
    #[test]
    fn every_state_and_observation() {
        let up = [S::Online];
        let down = [S::Offline, S::Unauthorized];
        for state in up.into_iter().chain(down) {
            let is_up = state == S::Online;
            let cases = [
                (E::Reached, Some(S::Online)),
                (E::DeliveryFailed(F::Unreachable), Some(S::Offline)),
                (E::DeliveryFailed(F::Untrusted), Some(S::Offline)),
                (E::DeliveryFailed(F::Unauthorized), Some(S::Unauthorized)),
                (E::DeliveryFailed(F::NoAnswer), None),
                (E::DeliveryFailed(F::Intermittent), None),
                (E::DeliveryFailed(F::Rejected), None),
                (E::NoAnswers, Some(S::Offline)),
                (E::ProbeFailed(F::Unauthorized), Some(S::Unauthorized)),
                (E::ProbeFailed(F::Unreachable), is_up.then_some(S::Offline)),
                (E::ProbeFailed(F::NoAnswer), is_up.then_some(S::Offline)),
                (E::ProbeFailed(F::Intermittent), is_up.then_some(S::Offline)),
                (E::ProbeFailed(F::Untrusted), is_up.then_some(S::Offline)),
                (E::ProbeFailed(F::Rejected), is_up.then_some(S::Offline)),
                (
                    E::HeldAtRestart(HoldKind::EndpointOffline),
                    is_up.then_some(S::Offline),
                ),
                (
                    E::HeldAtRestart(HoldKind::Unauthorized),
                    is_up.then_some(S::Unauthorized),
                ),
                (E::HeldAtRestart(HoldKind::Operator), None),
                (E::HeldAtRestart(HoldKind::SiteStopped), None),
            ];
            for (event, want) in cases {
                assert_eq!(state.apply(event), want, "{state:?} + {event:?}");
            }
        }
    }

    #[test]
    fn every_failure_class_is_covered_for_deliveries_and_probes() {
        for &state in S::ALL {
            for &class in F::ALL {
                // Nothing observed ever says Disabled, and nothing of a
                // failure says Online.
                for event in [E::DeliveryFailed(class), E::ProbeFailed(class)] {
                    let got = state.apply(event);
                    assert!(
                        !matches!(got, Some(S::Online | S::Disabled)),
                        "{state:?} + {event:?}: {got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_observed_changes_a_disabled_endpoint() {
        let mut events = vec![E::Reached, E::NoAnswers];
        for &class in F::ALL {
            events.push(E::DeliveryFailed(class));
            events.push(E::ProbeFailed(class));
        }
        for &kind in HoldKind::ALL {
            events.push(E::HeldAtRestart(kind));
        }
        for event in events {
            assert_eq!(S::Disabled.apply(event), None, "{event:?}");
        }
    }

    #[test]
    fn a_down_endpoint_holds_with_its_own_kind() {
        assert_eq!(S::Online.hold(), None);
        assert_eq!(S::Offline.hold(), Some(HoldKind::EndpointOffline));
        assert_eq!(S::Unauthorized.hold(), Some(HoldKind::Unauthorized));
        assert_eq!(S::Disabled.hold(), None);
        // A hold found at a restart puts the endpoint back in the state
        // that placed it.
        for &state in S::ALL {
            if let Some(kind) = state.hold() {
                assert_eq!(S::Online.apply(E::HeldAtRestart(kind)), Some(state));
            }
        }
    }
}
