//! What is observed of an endpoint: reachable or not, since when, and the
//! last error. The model says which observation makes which state
//! ([`EndpointState::apply`]); `engine::health` tells it what deliveries,
//! tests and probes found and sets what it says. Nothing here changes what
//! a person set.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::connectors::{DeliveryError, EndpointKind, Source, Target};
pub use crate::model::EndpointState;
use crate::model::{now_millis, Millis};

/// What is observed of an endpoint now (not to be confused with
/// `engine::health::Health`, which decides it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: EndpointState,
    pub since: Millis,
    pub last_error: Option<String>,
    /// The latest probe or test: when, whether it reached the endpoint, and
    /// what it said.
    pub last_test: Option<LastTest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTest {
    pub at: Millis,
    pub ok: bool,
    pub detail: String,
}

/// One configured endpoint, built once per daemon start.
pub struct Endpoint {
    pub name: String,
    pub kind: EndpointKind,
    pub source: Option<Arc<dyn Source>>,
    pub target: Option<Arc<dyn Target>>,
    /// What consumes from it, for a broker source.
    pub subscriber: Option<Arc<dyn crate::connectors::broker::Subscribe>>,
    observed: Mutex<Observed>,
    /// Every probe and test is counted here, by result (`/metrics`).
    probes: super::counters::ProbeMetrics,
}

impl Endpoint {
    pub fn new(name: &str, kind: EndpointKind, base: &std::path::Path) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            source: kind.source(base),
            target: kind.target(base),
            subscriber: kind.subscriber(base),
            kind,
            observed: Mutex::new(Observed {
                state: EndpointState::Online,
                since: now_millis(),
                last_error: None,
                last_test: None,
            }),
            probes: super::counters::ProbeMetrics::none(),
        }
    }

    /// An endpoint delivering to a target built elsewhere (an in-process
    /// target when sluice is embedded, or in a benchmark).
    pub fn with_target(name: &str, kind: EndpointKind, target: Arc<dyn Target>) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            source: None,
            target: Some(target),
            subscriber: None,
            kind,
            observed: Mutex::new(Observed {
                state: EndpointState::Online,
                since: now_millis(),
                last_error: None,
                last_test: None,
            }),
            probes: super::counters::ProbeMetrics::none(),
        }
    }

    /// Counts its probes and tests under its site's name.
    pub fn counted_in(mut self, site: &str) -> Endpoint {
        self.probes = super::counters::ProbeMetrics::new(site, &self.name);
        self
    }

    /// The state alone (cheap: no copy of the last error).
    pub fn state(&self) -> EndpointState {
        self.observed.lock().state
    }

    pub fn observed(&self) -> Observed {
        self.observed.lock().clone()
    }

    /// Keeps the error of a failed call without changing the state.
    pub fn note_error(&self, error: &str) {
        self.observed.lock().last_error = Some(error.to_string());
    }

    /// A real call to the endpoint: its target's or its subscriber's probe
    /// (with their credentials), or for a source the kind's own check.
    pub async fn probe(&self, base: &std::path::Path) -> Result<String, DeliveryError> {
        let result = match (&self.target, &self.subscriber) {
            (Some(target), _) => target.probe().await,
            (None, Some(subscriber)) => subscriber.probe().await,
            (None, None) => self.kind.probe(base).await,
        };
        self.note_test(&result);
        result
    }

    /// Keeps what a probe or a test found (shown as the last test) and
    /// counts it.
    pub fn note_test(&self, result: &Result<String, DeliveryError>) {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail.clone()),
            Err(e) => (false, e.message.clone()),
        };
        if ok {
            self.probes.ok.increment(1);
        } else {
            self.probes.failed.increment(1);
        }
        self.observed.lock().last_test = Some(LastTest {
            at: now_millis(),
            ok,
            detail,
        });
    }

    /// Sets the state (and the last error, if given); returns the previous
    /// state if it changed.
    pub fn set(&self, state: EndpointState, error: Option<String>) -> Option<EndpointState> {
        let mut h = self.observed.lock();
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
