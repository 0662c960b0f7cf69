//! An integration's lifecycle (seeds 001, 002) and the holds that keep it
//! from sending.
//!
//! The lifecycle state is what a person set (the desired state) and survives
//! restarts. [`Holds`] are the reasons it does not send right now; it sends
//! only while it is Active and holds none. Their two rules live here and
//! nowhere else (not in a store's SQL, not in the engine):
//! - the system removes only the holds the system placed: an operator's
//!   pause is lifted by a person or not at all ([`Holds::lift_by_system`]);
//! - a person leaving Paused drops the operator's hold, and entering it
//!   places one ([`Holds::set_by_person`]).
//!
//! A decision is an [`IntegrationChange`]: the store stores it as it is and
//! the engine takes it into effect ([`IntegrationRecord::take`]).

use serde::{Deserialize, Serialize};

use super::{Millis, Refusal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
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
    pub const ALL: &'static [IntegrationState] =
        <IntegrationState as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<IntegrationState> {
        s.parse().ok()
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
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "kebab-case")]
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
    pub const ALL: &'static [HoldKind] = <HoldKind as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<HoldKind> {
        s.parse().ok()
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

/// What holds an integration from sending: at most one hold of each kind,
/// in the order they were placed. It sends only while this is empty (and it
/// is Active).
///
/// Holds change by kind, never as a whole set: each decision below puts or
/// removes the hold of one kind, so the system's holds (from endpoint
/// health, from a site's stop) and a person's pause may be decided and
/// stored at the same moment, in either order, and all of them stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds(Vec<Hold>);

impl Holds {
    pub fn new() -> Holds {
        Holds(Vec::new())
    }

    /// The hold of `kind`, if there is one.
    pub fn get(&self, kind: HoldKind) -> Option<&Hold> {
        self.0.iter().find(|h| h.kind == kind)
    }

    /// The system places `hold`: the change to store, or `None` for the
    /// operator's hold, which only a person's pause places.
    pub fn place_by_system(hold: Hold) -> Option<IntegrationChange> {
        hold.kind.placed_by_system().then(|| IntegrationChange {
            put: Some(hold),
            ..IntegrationChange::default()
        })
    }

    /// The system lifts the hold of `kind`: the change to store, or `None`
    /// for the operator's hold. The system lifts only the holds the system
    /// placed: what a person paused, a person resumes.
    pub fn lift_by_system(kind: HoldKind) -> Option<IntegrationChange> {
        kind.placed_by_system().then_some(IntegrationChange {
            remove: Some(kind),
            ..IntegrationChange::default()
        })
    }

    /// What a person (`by`, at `at`, for `reason`) setting the state `next`
    /// does to the holds: entering Paused places the operator's hold; any
    /// other state drops it (leaving Paused lifts it). The system's holds
    /// stay.
    pub fn set_by_person(
        next: IntegrationState,
        by: &str,
        at: Millis,
        reason: &str,
    ) -> IntegrationChange {
        if next == IntegrationState::Paused {
            IntegrationChange {
                state: Some(next),
                remove: None,
                put: Some(Hold {
                    kind: HoldKind::Operator,
                    by: by.to_string(),
                    since: at,
                    reason: reason.to_string(),
                }),
            }
        } else {
            IntegrationChange {
                state: Some(next),
                remove: Some(HoldKind::Operator),
                put: None,
            }
        }
    }

    /// Takes a decided change into effect: the hold of `remove`'s kind
    /// goes, then `put` replaces the one of its kind (and is the latest).
    fn take(&mut self, change: &IntegrationChange) {
        if let Some(kind) = change.remove {
            self.0.retain(|h| h.kind != kind);
        }
        if let Some(hold) = &change.put {
            self.0.retain(|h| h.kind != hold.kind);
            self.0.push(hold.clone());
        }
    }
}

/// The holds as stored: a later hold of a kind replaces an earlier one.
impl FromIterator<Hold> for Holds {
    fn from_iter<I: IntoIterator<Item = Hold>>(holds: I) -> Holds {
        let mut set = Holds::new();
        for hold in holds {
            set.take(&IntegrationChange {
                put: Some(hold),
                ..IntegrationChange::default()
            });
        }
        set
    }
}

/// Read as a list, in the order the holds were placed.
impl std::ops::Deref for Holds {
    type Target = [Hold];

    fn deref(&self) -> &[Hold] {
        &self.0
    }
}

/// A change of an integration, as the model decided it: what the store
/// stores (in one transaction) and the engine then takes into effect. It
/// names the hold kinds it touches; it never replaces the whole set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationChange {
    /// The lifecycle state a person set; `None`: unchanged.
    pub state: Option<IntegrationState>,
    /// The kind of hold removed (before `put` is put).
    pub remove: Option<HoldKind>,
    /// A hold put, replacing the one of its kind.
    pub put: Option<Hold>,
}

/// The stored state of an integration: the lifecycle state a person set and
/// its holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub state: IntegrationState,
    pub holds: Holds,
}

impl IntegrationRecord {
    /// A new integration: Active, held by nothing.
    pub fn new() -> IntegrationRecord {
        IntegrationRecord {
            state: IntegrationState::Active,
            holds: Holds::new(),
        }
    }

    /// Whether it sends: Active, and nothing holds it.
    pub fn may_send(&self) -> bool {
        self.state == IntegrationState::Active && self.holds.is_empty()
    }

    /// A person's Pause, Resume, Start or Stop, by `by` at `at`: the change
    /// to store, or why the event does not fit the state. A pause's hold
    /// carries the person's reason (or says that a person paused it).
    pub fn apply(
        &self,
        event: IntegrationEvent,
        by: &str,
        reason: Option<&str>,
        at: Millis,
    ) -> Result<IntegrationChange, Refusal> {
        let next = self.state.apply(event)?;
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or("paused by a person");
        Ok(Holds::set_by_person(next, by, at, reason))
    }

    /// Takes a change that is stored into effect.
    pub fn take(&mut self, change: &IntegrationChange) {
        if let Some(state) = change.state {
            self.state = state;
        }
        self.holds.take(change);
    }
}

impl Default for IntegrationRecord {
    fn default() -> IntegrationRecord {
        IntegrationRecord::new()
    }
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

    fn hold(kind: HoldKind) -> Hold {
        Hold {
            kind,
            by: "sluice".into(),
            since: 1,
            reason: format!("{} for a test", kind.as_str()),
        }
    }

    fn kinds(holds: &Holds) -> Vec<HoldKind> {
        holds.iter().map(|h| h.kind).collect()
    }

    /// Every set of holds the system may have placed.
    fn system_sets() -> Vec<Vec<HoldKind>> {
        let system = [
            HoldKind::EndpointOffline,
            HoldKind::Unauthorized,
            HoldKind::SiteStopped,
        ];
        (0..8u8)
            .map(|bits| {
                (0..3)
                    .filter(|i| bits & (1 << i) != 0)
                    .map(|i| system[i])
                    .collect()
            })
            .collect()
    }

    /// A person's event in every state, whatever the system holds: the
    /// state the lifecycle table says; the operator's hold placed when it
    /// enters Paused and gone in every other state; the system's holds
    /// untouched.
    #[test]
    fn a_persons_event_in_every_state_changes_only_the_operators_hold() {
        let events = [E::Pause, E::Resume, E::Start, E::Stop];
        for &state in S::ALL {
            for system in system_sets() {
                let mut holds: Holds = system.iter().map(|k| hold(*k)).collect();
                if state == S::Paused {
                    holds = holds
                        .iter()
                        .cloned()
                        .chain([hold(HoldKind::Operator)])
                        .collect();
                }
                let record = IntegrationRecord { state, holds };
                for event in events {
                    let got = record.apply(event, "ann", Some("stocktake"), 7);
                    let Ok(next) = state.apply(event) else {
                        assert_eq!(got, Err(state.apply(event).unwrap_err()));
                        continue;
                    };
                    let change = got.unwrap();
                    let mut after = record.clone();
                    after.take(&change);
                    assert_eq!(after.state, next, "{state:?} + {event:?}");
                    let operator = after.holds.get(HoldKind::Operator);
                    assert_eq!(
                        operator.is_some(),
                        next == S::Paused,
                        "{state:?} + {event:?}: the operator's hold goes with Paused"
                    );
                    let theirs: Vec<_> = kinds(&after.holds)
                        .into_iter()
                        .filter(|k| k.placed_by_system())
                        .collect();
                    assert_eq!(theirs, system, "{state:?} + {event:?}: the system's stay");
                }
            }
        }
    }

    #[test]
    fn a_pause_holds_with_the_persons_reason_or_says_a_person_paused() {
        let active = IntegrationRecord::new();
        let change = active.apply(E::Pause, "ann", Some("stocktake"), 7).unwrap();
        assert_eq!(
            change.put,
            Some(Hold {
                kind: HoldKind::Operator,
                by: "ann".into(),
                since: 7,
                reason: "stocktake".into(),
            })
        );
        for blank in [None, Some(""), Some("  ")] {
            let change = active.apply(E::Pause, "ann", blank, 7).unwrap();
            assert_eq!(change.put.unwrap().reason, "paused by a person");
        }
    }

    #[test]
    fn the_system_places_and_lifts_only_its_own_holds() {
        for &kind in HoldKind::ALL {
            let mine = kind.placed_by_system();
            assert_eq!(Holds::place_by_system(hold(kind)).is_some(), mine);
            assert_eq!(Holds::lift_by_system(kind).is_some(), mine);
        }
        // Whatever the system lifts, a person's pause stays.
        let mut paused = IntegrationRecord::new();
        paused.take(&paused.apply(E::Pause, "ann", None, 1).unwrap());
        for &kind in HoldKind::ALL {
            if let Some(change) = Holds::place_by_system(hold(kind)) {
                paused.take(&change);
            }
        }
        for &kind in HoldKind::ALL {
            if let Some(change) = Holds::lift_by_system(kind) {
                paused.take(&change);
            }
        }
        assert_eq!(kinds(&paused.holds), [HoldKind::Operator]);
        assert!(!paused.may_send());
    }

    /// The system's decisions and a person's commute: stored in either
    /// order, the same holds result (by kind), so neither needs a lock on
    /// the other.
    #[test]
    fn system_and_person_changes_commute() {
        let mut systems = Vec::new();
        for &kind in HoldKind::ALL {
            systems.extend(Holds::place_by_system(hold(kind)));
            systems.extend(Holds::lift_by_system(kind));
        }
        for &state in S::ALL {
            for event in [E::Pause, E::Resume, E::Start, E::Stop] {
                let start = IntegrationRecord {
                    state,
                    holds: Holds::new(),
                };
                let Ok(person) = start.apply(event, "ann", None, 1) else {
                    continue;
                };
                for system in &systems {
                    let mut one = start.clone();
                    one.take(&person);
                    one.take(system);
                    let mut other = start.clone();
                    other.take(system);
                    other.take(&person);
                    let mut a = kinds(&one.holds);
                    let mut b = kinds(&other.holds);
                    a.sort();
                    b.sort();
                    assert_eq!(a, b, "{state:?} + {event:?} and {system:?}");
                    assert_eq!(one.state, other.state);
                }
            }
        }
    }

    #[test]
    fn one_hold_of_each_kind_the_latest_last() {
        let later = Hold {
            since: 9,
            ..hold(HoldKind::EndpointOffline)
        };
        let holds: Holds = [
            hold(HoldKind::EndpointOffline),
            hold(HoldKind::SiteStopped),
            later.clone(),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            kinds(&holds),
            [HoldKind::SiteStopped, HoldKind::EndpointOffline]
        );
        assert_eq!(holds.get(HoldKind::EndpointOffline), Some(&later));
        assert_eq!(holds.get(HoldKind::Unauthorized), None);
    }

    #[test]
    fn it_sends_only_active_and_unheld() {
        for &state in S::ALL {
            let free = IntegrationRecord {
                state,
                holds: Holds::new(),
            };
            assert_eq!(free.may_send(), state == S::Active);
            let held = IntegrationRecord {
                state,
                holds: [hold(HoldKind::SiteStopped)].into_iter().collect(),
            };
            assert!(!held.may_send());
        }
    }
}
