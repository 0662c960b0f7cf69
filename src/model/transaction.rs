//! A transaction: one record to deliver, in the queue of its integration.

use serde::{Deserialize, Serialize};

/// Queued → Sending → Sent | Error | Ignored.
///
/// `Sending` is never written to the store: a transaction is Sending while it
/// belongs to the batch in flight, and a crash turns it back into Queued, to
/// be sent again with the same idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum TxState {
    Queued,
    Sending,
    Sent,
    Error,
    Ignored,
}

impl TxState {
    pub const ALL: &'static [TxState] = <TxState as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<TxState> {
        s.parse().ok()
    }

    /// The small integer stored for a state.
    pub fn code(self) -> i64 {
        match self {
            TxState::Queued => 0,
            TxState::Sending => 1,
            TxState::Sent => 2,
            TxState::Error => 3,
            TxState::Ignored => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<TxState> {
        TxState::ALL.iter().copied().find(|t| t.code() == code)
    }

    /// The state operators see for a stored one: a Queued transaction is
    /// Sending while it belongs to the batch in flight (`in_flight`: the
    /// first and last sequence numbers of that batch, if one is).
    pub fn shown(self, seq: i64, in_flight: Option<(i64, i64)>) -> TxState {
        let sending = in_flight.is_some_and(|(first, last)| first <= seq && seq <= last);
        if self == TxState::Queued && sending {
            TxState::Sending
        } else {
            self
        }
    }

    /// The state stored for one shown: Sending is stored as Queued.
    pub fn stored(self) -> TxState {
        match self {
            TxState::Sending => TxState::Queued,
            other => other,
        }
    }

    /// Whether the transaction still waits to be delivered.
    pub fn is_pending(self) -> bool {
        matches!(self, TxState::Queued | TxState::Sending)
    }
}

/// What an operator can do to one transaction (seed 002's error suite).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::VariantArray,
)]
#[strum(serialize_all = "lowercase")]
pub enum TxAction {
    /// Send a failed transaction again, in its place in the queue.
    Retry,
    /// Queue a copy as a new transaction at the end of the queue.
    Replay,
    /// Give up on it: the queue moves on without sending it.
    Ignore,
}

impl TxAction {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl TxState {
    /// The state the transaction takes (for Replay: stays in, while a copy
    /// is queued), or why the action does not fit its state.
    pub fn apply(self, action: TxAction) -> Result<TxState, super::Refusal> {
        use TxAction as A;
        use TxState as S;
        match (self, action) {
            (S::Error, A::Retry) => Ok(S::Queued),
            (S::Queued | S::Error, A::Ignore) => Ok(S::Ignored),
            (S::Sent | S::Error | S::Ignored, A::Replay) => Ok(self),
            (S::Sending, _) => Err(super::Refusal::Conflict(
                "the transaction is sending right now; try again when it is settled".into(),
            )),
            (state, action) => Err(super::Refusal::Conflict(format!(
                "the transaction is {}; cannot {} it",
                state.as_str(),
                action.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_actions_in_every_state() {
        use TxAction::*;
        use TxState::*;
        let table = [
            (Queued, Retry, None),
            (Queued, Replay, None),
            (Queued, Ignore, Some(Ignored)),
            (Sending, Retry, None),
            (Sending, Replay, None),
            (Sending, Ignore, None),
            (Sent, Retry, None),
            (Sent, Replay, Some(Sent)),
            (Sent, Ignore, None),
            (Error, Retry, Some(Queued)),
            (Error, Replay, Some(Error)),
            (Error, Ignore, Some(Ignored)),
            (Ignored, Retry, None),
            (Ignored, Replay, Some(Ignored)),
            (Ignored, Ignore, None),
        ];
        for (state, action, want) in table {
            match (state.apply(action), want) {
                (Ok(next), Some(want)) => assert_eq!(next, want),
                (Err(super::super::Refusal::Conflict(m)), None) => {
                    assert!(m.contains(state.as_str()), "{m}")
                }
                (got, want) => panic!("{state:?} {action:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn queued_is_sending_while_in_flight() {
        use TxState::*;
        let batch = Some((10, 12));
        for &stored in TxState::ALL {
            if stored == Sending {
                continue; // never stored
            }
            for (seq, in_flight, sending) in [
                (9, batch, false),
                (10, batch, true),
                (11, batch, true),
                (12, batch, true),
                (13, batch, false),
                (11, None, false),
            ] {
                let want = if stored == Queued && sending {
                    Sending
                } else {
                    stored
                };
                assert_eq!(stored.shown(seq, in_flight), want, "{stored:?} {seq}");
                assert_eq!(want.stored(), stored);
            }
        }
    }

    #[test]
    fn names_and_codes_round_trip() {
        for &s in TxState::ALL {
            assert_eq!(TxState::parse(s.as_str()), Some(s));
            assert_eq!(TxState::from_code(s.code()), Some(s));
        }
        assert_eq!(TxState::parse("done"), None);
        assert_eq!(TxState::from_code(9), None);
    }
}
