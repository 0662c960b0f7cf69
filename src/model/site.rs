//! A site's lifecycle (seed 000): Stopped, Starting, Running, Stopping.
//!
//! The engine takes only states [`SiteState::apply`] returns: a person's
//! Start or Stop, then the engine's own Started, StartFailed or Stopped
//! as the start or stop is carried out.

use serde::{Deserialize, Serialize};

use super::Refusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum SiteState {
    Stopped,
    Starting,
    Running,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteEvent {
    /// A person (or the daemon at boot) asks the site to start.
    Start,
    /// The workers are up.
    Started,
    /// The start could not be carried out (its store refused it): the site
    /// is stopped, as it was.
    StartFailed,
    /// A person asks the site to stop; the reason is mandatory (seed 000's
    /// 'Confirm Service Stop' window).
    Stop { reason: String },
    /// The workers are down.
    Stopped,
}

impl SiteState {
    pub const ALL: &'static [SiteState] = <SiteState as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<SiteState> {
        s.parse().ok()
    }

    /// Only a running site transfers data.
    pub fn transfers_data(self) -> bool {
        self == SiteState::Running
    }

    pub fn apply(self, event: &SiteEvent) -> Result<SiteState, Refusal> {
        use SiteEvent as E;
        use SiteState as S;
        if let E::Stop { reason } = event {
            if reason.trim().is_empty() {
                return Err(Refusal::Invalid(
                    "a reason is required to stop a site".to_string(),
                ));
            }
            super::check_reason(reason)?;
        }
        match (self, event) {
            (S::Stopped, E::Start) => Ok(S::Starting),
            (S::Starting, E::Started) => Ok(S::Running),
            (S::Starting, E::StartFailed) => Ok(S::Stopped),
            (S::Running, E::Stop { .. }) => Ok(S::Stopping),
            (S::Stopping, E::Stopped) => Ok(S::Stopped),
            (state, E::Start) => Err(Refusal::Conflict(format!(
                "the site is {}; only a stopped site can be started",
                state.as_str()
            ))),
            (state, E::Stop { .. }) => Err(Refusal::Conflict(format!(
                "the site is {}; only a running site can be stopped",
                state.as_str()
            ))),
            (state, E::Started | E::StartFailed) => Err(Refusal::Conflict(format!(
                "the site is {}, not starting",
                state.as_str()
            ))),
            (state, E::Stopped) => Err(Refusal::Conflict(format!(
                "the site is {}, not stopping",
                state.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SiteState; 4] = [
        SiteState::Stopped,
        SiteState::Starting,
        SiteState::Running,
        SiteState::Stopping,
    ];

    fn stop(reason: &str) -> SiteEvent {
        SiteEvent::Stop {
            reason: reason.to_string(),
        }
    }

    #[test]
    fn every_state_and_event() {
        use SiteState::*;
        for state in ALL {
            let cases = [
                (SiteEvent::Start, (state == Stopped).then_some(Starting)),
                (SiteEvent::Started, (state == Starting).then_some(Running)),
                (
                    SiteEvent::StartFailed,
                    (state == Starting).then_some(Stopped),
                ),
                (stop("stocktake"), (state == Running).then_some(Stopping)),
                (SiteEvent::Stopped, (state == Stopping).then_some(Stopped)),
            ];
            for (event, expected) in cases {
                match (state.apply(&event), expected) {
                    (Ok(next), Some(want)) => assert_eq!(next, want, "{state:?} + {event:?}"),
                    (Err(Refusal::Conflict(msg)), None) => {
                        assert!(msg.contains(state.as_str()), "{msg} names the state")
                    }
                    (got, want) => panic!("{state:?} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn an_empty_reason_is_refused_in_every_state() {
        for state in ALL {
            for reason in ["", "   ", "\n\t"] {
                assert!(matches!(
                    state.apply(&stop(reason)),
                    Err(Refusal::Invalid(_))
                ));
            }
        }
    }

    #[test]
    fn a_reason_longer_than_the_limit_is_refused_in_every_state() {
        let long = "x".repeat(crate::model::MAX_REASON + 1);
        let longest = "x".repeat(crate::model::MAX_REASON);
        for state in ALL {
            assert!(matches!(
                state.apply(&stop(&long)),
                Err(Refusal::Invalid(m)) if m.contains("4097 bytes")
            ));
            assert!(!matches!(
                state.apply(&stop(&longest)),
                Err(Refusal::Invalid(_))
            ));
        }
    }

    #[test]
    fn names_round_trip() {
        for state in ALL {
            assert_eq!(SiteState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SiteState::parse("paused"), None);
    }
}
