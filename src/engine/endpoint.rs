//! What is observed of an endpoint: reachable or not, since when, and the
//! last error. Observations come from deliveries (the sender) and from the
//! Monitor worker's probes; they never change what a person set.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::connectors::{EndpointKind, FailureClass, Source, Target};
use crate::model::{now_millis, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    Online,
    Offline,
    Unauthorized,
    Disabled,
}

impl EndpointState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Online => "online",
            EndpointState::Offline => "offline",
            EndpointState::Unauthorized => "unauthorized",
            EndpointState::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: EndpointState,
    pub since: Millis,
    pub last_error: Option<String>,
}

/// One configured endpoint, built once per daemon start.
pub struct Endpoint {
    pub name: String,
    pub kind: EndpointKind,
    pub source: Option<Arc<dyn Source>>,
    pub target: Option<Arc<dyn Target>>,
    health: Mutex<Health>,
}

impl Endpoint {
    pub fn new(name: &str, kind: EndpointKind, base: &std::path::Path) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            source: kind.source(base),
            target: kind.target(base),
            kind,
            health: Mutex::new(Health {
                state: EndpointState::Online,
                since: now_millis(),
                last_error: None,
            }),
        }
    }

    /// An endpoint delivering to a target built elsewhere (an in-process
    /// target when sluice is embedded, or in a benchmark).
    pub fn with_target(name: &str, kind: EndpointKind, target: Arc<dyn Target>) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            source: None,
            target: Some(target),
            kind,
            health: Mutex::new(Health {
                state: EndpointState::Online,
                since: now_millis(),
                last_error: None,
            }),
        }
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a success; returns the previous state if it changed.
    pub fn observe_ok(&self) -> Option<EndpointState> {
        self.set(EndpointState::Online, None)
    }

    /// Records a failure of the given class; returns the previous state if
    /// it changed. A rejected record says nothing about the endpoint's health.
    pub fn observe_failure(&self, class: FailureClass, error: &str) -> Option<EndpointState> {
        let state = match class {
            FailureClass::Intermittent => EndpointState::Offline,
            FailureClass::Unauthorized => EndpointState::Unauthorized,
            FailureClass::Rejected => return None,
        };
        self.set(state, Some(error.to_string()))
    }

    fn set(&self, state: EndpointState, error: Option<String>) -> Option<EndpointState> {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_some() {
            h.last_error = error;
        }
        if h.state == state {
            return None;
        }
        let before = h.state;
        h.state = state;
        h.since = now_millis();
        Some(before)
    }
}
