//! What is observed of an endpoint: reachable or not, since when, and the
//! last error. The model says which observation makes which state
//! ([`EndpointState::apply`]); `engine::health` tells it what deliveries,
//! tests and probes found and sets what it says. Nothing here changes what
//! a person set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::connectors::{Credentials, DeliveryError, EndpointKind, FailureClass, Source, Target};
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
    /// How many times it was given new credentials (see
    /// [`Endpoint::refused_replaced`]).
    credentials_given: AtomicU64,
}

/// Which credentials a call went out with: taken before it, given to
/// [`Endpoint::refused_replaced`] after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialsSeen(u64);

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
            credentials_given: AtomicU64::new(0),
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
            credentials_given: AtomicU64::new(0),
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

    /// New credentials for what it calls with any: its target and its
    /// subscriber (a broker endpoint may be both; the subscriber uses them
    /// from its next connection). An error names what they do not fit.
    pub fn take_credentials(&self, credentials: Credentials) -> Result<(), String> {
        if self.target.is_none() && self.subscriber.is_none() {
            return Err("this endpoint takes no credentials".into());
        }
        if let Some(target) = &self.target {
            target.set_credentials(credentials.clone())?;
        }
        if let Some(subscriber) = &self.subscriber {
            subscriber.set_credentials(credentials)?;
        }
        self.credentials_given.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The credentials a call about to go out is made with.
    pub fn credentials_seen(&self) -> CredentialsSeen {
        CredentialsSeen(self.credentials_given.load(Ordering::SeqCst))
    }

    /// Whether `error` refused the credentials a call went out with
    /// (`seen`) after new ones were given: the refusal says nothing of the
    /// endpoint as it now is, and the call is made again.
    pub fn refused_replaced(&self, seen: CredentialsSeen, error: &DeliveryError) -> bool {
        error.class == FailureClass::Unauthorized && self.credentials_seen() != seen
    }

    /// A real call to the endpoint: its target's or its subscriber's probe
    /// (with their credentials), or for a source the kind's own check. A
    /// probe that refused credentials replaced while it was on its way is
    /// made again with the new ones.
    pub async fn probe(&self, base: &std::path::Path) -> Result<String, DeliveryError> {
        loop {
            let seen = self.credentials_seen();
            let result = match (&self.target, &self.subscriber) {
                (Some(target), _) => target.probe().await,
                (None, Some(subscriber)) => subscriber.probe().await,
                (None, None) => self.kind.probe(base).await,
            };
            if let Err(e) = &result {
                if self.refused_replaced(seen, e) {
                    continue;
                }
            }
            self.note_test(&result);
            return result;
        }
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
