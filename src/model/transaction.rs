//! A transaction: one record to deliver, in the queue of its integration.

use serde::{Deserialize, Serialize};

/// Queued → Sending → Sent | Error | Ignored.
///
/// `Sending` is never written to the store: a transaction is Sending while it
/// belongs to the batch in flight, and a crash turns it back into Queued, to
/// be sent again with the same idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    Queued,
    Sending,
    Sent,
    Error,
    Ignored,
}

impl TxState {
    pub const ALL: [TxState; 5] = [
        TxState::Queued,
        TxState::Sending,
        TxState::Sent,
        TxState::Error,
        TxState::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Queued => "queued",
            TxState::Sending => "sending",
            TxState::Sent => "sent",
            TxState::Error => "error",
            TxState::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<TxState> {
        TxState::ALL.into_iter().find(|t| t.as_str() == s)
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
        TxState::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether the transaction still waits to be delivered.
    pub fn is_pending(self) -> bool {
        matches!(self, TxState::Queued | TxState::Sending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for s in TxState::ALL {
            assert_eq!(TxState::parse(s.as_str()), Some(s));
            assert_eq!(TxState::from_code(s.code()), Some(s));
        }
        assert_eq!(TxState::parse("done"), None);
        assert_eq!(TxState::from_code(9), None);
    }
}
