//! What is observed of an endpoint: its state (seed 003) and the classes of
//! failure a call to it can meet.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    Online,
    Offline,
    Unauthorized,
    Disabled,
}

impl EndpointState {
    pub const ALL: [EndpointState; 4] = [
        EndpointState::Online,
        EndpointState::Offline,
        EndpointState::Unauthorized,
        EndpointState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Online => "online",
            EndpointState::Offline => "offline",
            EndpointState::Unauthorized => "unauthorized",
            EndpointState::Disabled => "disabled",
        }
    }
}

/// How a failed delivery should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
