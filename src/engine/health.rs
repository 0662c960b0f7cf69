//! Endpoint health: what deliveries and tests observe, the holds the system
//! places when an endpoint goes down, and the probes that bring it back
//! (seed 003, done faster).
//!
//! Which observation makes which state is the model's
//! ([`EndpointState::apply`]: a refused connection or an untrusted
//! certificate is Offline at once, 401/403 Unauthorized, an answer even 5xx
//! or 429 is no outage) and so is the hold a down endpoint places
//! ([`EndpointState::hold`]). What is time is here.
//!
//! # Rules
//! - Requests without an answer (time-outs, resets) make the endpoint
//!   Offline when `offline_after` of them fall within `offline_window`:
//!   counted here, then told to the model as one observation.
//! - Offline or Unauthorized, every integration delivering to it gets the
//!   `endpoint-offline` or `unauthorized` hold, placed by `sluice`.
//! - An Offline endpoint is probed first after [`PROBE_FIRST`], then at
//!   most [`PROBE_SHORT`] apart while the outage is younger than
//!   [`SHORT_OUTAGE`], then with the wait doubling up to its `probe_every`
//!   (default an hour): a [`Backoff`] with these parameters, the type the
//!   sender's retries use too. An Unauthorized one, or one whose certificate is
//!   not trusted, only every `probe_every` ([`Pace::Patient`]): neither
//!   fixes itself in seconds, and asking sooner would only be a storm of
//!   requests. A person's test checks again at once.
//! - Why the short phase: sluice sees a target only through its probes, so
//!   a target that flaps (down a second, up a second, down again) looks
//!   like one long outage. Were the wait to double from the start, the
//!   probes would soon be seconds apart and fall in the down-windows, and
//!   the target's up-windows would go by unused; kept short, a probe lands
//!   in every up-window longer than [`PROBE_SHORT`].
//! - When a probe, a test or a delivery succeeds, it is Online again and the
//!   system lifts its holds from each integration whose endpoints are all
//!   Online. A person's hold (`operator`) is never touched here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::endpoint::{Endpoint, EndpointState};
use super::Integration;
use crate::connectors::{DeliveryError, EndpointKind, FailureClass};
use crate::log::{level, SiteLog};
use crate::model::{now_millis, EndpointEvent, Hold, HoldKind};

/// The first probe of an endpoint that just went Offline.
pub const PROBE_FIRST: Duration = Duration::from_millis(250);

/// The longest wait between probes while an outage is short: a target back
/// for this long is seen to be back.
pub const PROBE_SHORT: Duration = Duration::from_millis(500);

/// How long an outage counts as short (probed every [`PROBE_SHORT`]); after
/// it, the wait doubles up to the endpoint's `probe_every`.
pub const SHORT_OUTAGE: Duration = Duration::from_secs(60);

/// How soon a down endpoint is probed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// From [`PROBE_FIRST`], the wait doubling up to `probe_every`: an
    /// outage may end at any moment.
    BackOff,
    /// Every `probe_every`: refused credentials and untrusted certificates
    /// wait for a person.
    Patient,
}

impl Pace {
    /// The pace for an endpoint in `state` after a failure of `class`.
    pub fn of(state: EndpointState, class: FailureClass) -> Pace {
        match (state, class) {
            (EndpointState::Unauthorized, _)
            | (_, FailureClass::Unauthorized | FailureClass::Untrusted) => Pace::Patient,
            _ => Pace::BackOff,
        }
    }
}

struct Policy {
    offline_after: usize,
    window: Duration,
    probe_every: Duration,
}

fn policy(kind: &EndpointKind) -> Policy {
    match kind {
        EndpointKind::Http(c) => Policy {
            offline_after: c.offline_after.max(1) as usize,
            window: c.offline_window(),
            probe_every: c.probe_every(),
        },
        _ => Policy {
            offline_after: 3,
            window: Duration::from_secs(30),
            probe_every: Duration::from_secs(3600),
        },
    }
}

struct Watch {
    /// Recent requests that got no answer.
    no_answer: VecDeque<Instant>,
    /// When to probe next, while the endpoint is down.
    next_probe: Option<Instant>,
    /// The waits between probes. Its failures begin when the endpoint goes
    /// down (an outage, as far as sluice saw, starts then and ends when it
    /// is Online again); the watch goes when it is back.
    probes: Backoff,
}

impl Watch {
    fn new(policy: &Policy) -> Watch {
        Watch {
            no_answer: VecDeque::new(),
            next_probe: None,
            probes: Backoff::new(PROBE_FIRST, policy.probe_every)
                .with_short_phase(PROBE_SHORT, SHORT_OUTAGE),
        }
    }
}

pub struct Health {
    log: Arc<SiteLog>,
    endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// Endpoint → the integrations that deliver to it.
    users: BTreeMap<String, Vec<Arc<Integration>>>,
    /// Integration → the endpoints it delivers to.
    targets: BTreeMap<String, Vec<Arc<Endpoint>>>,
    watches: Mutex<HashMap<String, Watch>>,
    /// Rung when a probe is scheduled, so the Monitor looks again.
    changed: Notify,
}

impl Health {
    pub fn new(
        log: Arc<SiteLog>,
        endpoints: &BTreeMap<String, Arc<Endpoint>>,
        integrations: &BTreeMap<String, Arc<Integration>>,
    ) -> Health {
        let mut users: BTreeMap<String, Vec<Arc<Integration>>> = BTreeMap::new();
        let mut targets: BTreeMap<String, Vec<Arc<Endpoint>>> = BTreeMap::new();
        for integration in integrations.values() {
            for flow in &integration.config.flows {
                let Some(endpoint) = endpoints.get(&flow.target) else {
                    continue;
                };
                let list = users.entry(endpoint.name.clone()).or_default();
                if !list.iter().any(|i| Arc::ptr_eq(i, integration)) {
                    list.push(integration.clone());
                }
                let list = targets.entry(integration.name.clone()).or_default();
                if !list.iter().any(|e| Arc::ptr_eq(e, endpoint)) {
                    list.push(endpoint.clone());
                }
            }
        }
        Health {
            log,
            endpoints: endpoints.clone(),
            users,
            targets,
            watches: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    fn watches(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Watch>> {
        self.watches.lock()
    }

    /// Runs `f` on the endpoint's watch, made if there is none.
    fn with_watch<T>(&self, endpoint: &Endpoint, f: impl FnOnce(&mut Watch) -> T) -> T {
        let mut watches = self.watches();
        let watch = watches
            .entry(endpoint.name.clone())
            .or_insert_with(|| Watch::new(&policy(&endpoint.kind)));
        f(watch)
    }

    /// A delivery went through.
    pub async fn delivered(&self, endpoint: &Endpoint) {
        let before = endpoint.state();
        match before.apply(EndpointEvent::Reached) {
            Some(next) if next != before => self.go_up(endpoint, next).await,
            _ => {}
        }
    }

    /// A delivery failed.
    pub async fn failed(&self, endpoint: &Endpoint, error: &DeliveryError) {
        let event = match error.class {
            FailureClass::NoAnswer if self.no_answers(endpoint) => EndpointEvent::NoAnswers,
            class => EndpointEvent::DeliveryFailed(class),
        };
        match endpoint.state().apply(event) {
            Some(down) if down.hold().is_some() => {
                let pace = Pace::of(down, error.class);
                self.go_down(endpoint, down, &error.message, pace).await
            }
            _ => endpoint.note_error(&error.message),
        }
    }

    /// Counts a request without an answer; whether the endpoint's
    /// `offline_after` of them now fall within its `offline_window`.
    fn no_answers(&self, endpoint: &Endpoint) -> bool {
        let policy = policy(&endpoint.kind);
        self.with_watch(endpoint, |watch| {
            let now = Instant::now();
            watch.no_answer.push_back(now);
            while watch
                .no_answer
                .front()
                .is_some_and(|t| now.duration_since(*t) > policy.window)
            {
                watch.no_answer.pop_front();
            }
            watch.no_answer.len() >= policy.offline_after
        })
    }

    /// What a probe or a test found.
    pub async fn probed(&self, endpoint: &Endpoint, result: &Result<String, DeliveryError>) {
        let before = endpoint.state();
        match result {
            Ok(_) => {
                let next = before.apply(EndpointEvent::Reached).unwrap_or(before);
                self.go_up(endpoint, next).await
            }
            Err(e) => match before.apply(EndpointEvent::ProbeFailed(e.class)) {
                Some(down) if down.hold().is_some() => {
                    let pace = Pace::of(down, e.class);
                    self.go_down(endpoint, down, &e.message, pace).await
                }
                // Still down as it was: probed again at its pace.
                _ => {
                    endpoint.note_error(&e.message);
                    self.schedule(endpoint, Pace::of(before, e.class));
                }
            },
        }
    }

    /// When the next probe is due, if any endpoint is down.
    pub fn next_probe(&self) -> Option<Instant> {
        self.watches().values().filter_map(|w| w.next_probe).min()
    }

    /// The endpoints whose probe is due now (each taken off the schedule
    /// until its result is known).
    pub fn due(&self) -> Vec<Arc<Endpoint>> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (name, watch) in self.watches().iter_mut() {
            if watch.next_probe.is_some_and(|t| t <= now) {
                watch.next_probe = None;
                if let Some(e) = self.endpoints.get(name) {
                    due.push(e.clone());
                }
            }
        }
        due
    }

    /// Waits until a probe is scheduled or rescheduled.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// After a restart: endpoints whose integrations still carry a hold the
    /// system placed are down until a probe says otherwise.
    pub async fn restore(&self) {
        for (integration, endpoints) in &self.targets {
            let Some(holder) = self
                .users
                .values()
                .flatten()
                .find(|i| &i.name == integration)
            else {
                continue;
            };
            let holds = holder.record().holds;
            for &kind in HoldKind::ALL {
                let Some(hold) = holds.get(kind) else {
                    continue;
                };
                for endpoint in endpoints {
                    let held = EndpointEvent::HeldAtRestart(kind);
                    if let Some(down) = endpoint.state().apply(held) {
                        endpoint.set(down, Some(hold.reason.clone()));
                        // From the first probe, whatever the hold.
                        self.schedule(endpoint, Pace::BackOff);
                    }
                }
            }
        }
    }

    /// Schedules the next probe of a down endpoint, at `pace`.
    fn schedule(&self, endpoint: &Endpoint, pace: Pace) {
        self.with_watch(endpoint, |watch| {
            let wait = match pace {
                Pace::Patient => watch.probes.longest(),
                Pace::BackOff => watch.probes.next_wait(),
            };
            watch.next_probe = Some(Instant::now() + wait);
        });
        self.changed.notify_one();
    }

    /// The endpoint is down (`state`, as the model said): its users are
    /// held, and a probe is scheduled at `pace`.
    async fn go_down(&self, endpoint: &Endpoint, state: EndpointState, reason: &str, pace: Pace) {
        let Some(kind) = state.hold() else {
            return;
        };
        let before = endpoint.set(state, Some(reason.to_string()));
        if before.is_none() {
            // Already so: make sure a probe is coming.
            if self
                .watches()
                .get(&endpoint.name)
                .is_none_or(|w| w.next_probe.is_none())
            {
                self.schedule(endpoint, pace);
            }
            return;
        }
        self.with_watch(endpoint, |watch| {
            watch.probes.reset();
            watch.no_answer.clear();
        });
        let users = self.users.get(&endpoint.name).cloned().unwrap_or_default();
        let hold = Hold {
            kind,
            by: "sluice".into(),
            since: now_millis(),
            reason: format!("endpoint {} is {}: {reason}", endpoint.name, state.as_str()),
        };
        for integration in &users {
            // Held all the same while the daemon runs; the disk being full
            // is said once by the site log.
            match integration.place_hold(hold.clone()).await {
                Err(e) if !e.is_disk_full() => {
                    tracing::error!("cannot store a hold of {}: {e}", integration.name)
                }
                _ => {}
            }
        }
        let names: Vec<&str> = users.iter().map(|i| i.name.as_str()).collect();
        self.log
            .write(
                level::ERROR,
                format!(
                    "Endpoint {} is {}: {reason}; sending held for {}",
                    endpoint.name,
                    state.as_str(),
                    if names.is_empty() {
                        "no integration".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
            .await;
        self.schedule(endpoint, pace);
    }

    /// The endpoint is reachable (`state`, as the model said: Online): the
    /// system's holds are lifted from each integration whose endpoints are
    /// all Online.
    async fn go_up(&self, endpoint: &Endpoint, state: EndpointState) {
        self.watches().remove(&endpoint.name);
        if endpoint.set(state, None).is_none() {
            return;
        }
        let users = self.users.get(&endpoint.name).cloned().unwrap_or_default();
        let mut released = Vec::new();
        for integration in &users {
            let all_up = self
                .targets
                .get(&integration.name)
                .is_none_or(|eps| eps.iter().all(|e| e.state() == EndpointState::Online));
            if !all_up {
                continue;
            }
            for kind in [HoldKind::EndpointOffline, HoldKind::Unauthorized] {
                match integration.lift_hold(kind).await {
                    Ok(true) => released.push(integration.name.clone()),
                    Ok(false) => {}
                    // Lifted all the same while the daemon runs; after a
                    // restart the stored hold has the endpoint probed again.
                    Err(e) if e.is_disk_full() => {
                        if integration.record().holds.get(kind).is_some() {
                            integration.hold_lifted(kind);
                            released.push(integration.name.clone());
                        }
                    }
                    Err(e) => tracing::error!("cannot lift a hold of {}: {e}", integration.name),
                }
            }
        }
        released.dedup();
        let tail = if released.is_empty() {
            String::new()
        } else {
            format!("; sending again for {}", released.join(", "))
        };
        self.log
            .write(
                level::INFO,
                format!("Connection to {} established{tail}", endpoint.name),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::http::HttpConfig;

    /// An http endpoint watched by a `Health` with no integration (the
    /// schedule is under test, not the holds), and the folder it lives in.
    fn watched() -> (Health, Arc<Endpoint>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap());
        // Level 0 keeps no line.
        let log = Arc::new(SiteLog::open("T", 0, store, &dir.path().join("t.log")));
        let config: HttpConfig = toml::from_str("url = \"http://127.0.0.1:9/records\"").unwrap();
        let endpoint = Arc::new(Endpoint::new("crm", EndpointKind::Http(config), dir.path()));
        let endpoints = BTreeMap::from([("crm".to_string(), endpoint.clone())]);
        let health = Health::new(log, &endpoints, &BTreeMap::new());
        (health, endpoint, dir)
    }

    fn error(class: FailureClass, message: &str) -> DeliveryError {
        DeliveryError {
            class,
            message: message.into(),
            retry_after: None,
        }
    }

    fn refused() -> DeliveryError {
        error(FailureClass::Unreachable, "connection refused")
    }

    fn untrusted() -> DeliveryError {
        error(
            FailureClass::Untrusted,
            "POST https://127.0.0.1:9/x: the certificate is not trusted",
        )
    }

    /// Seconds until the next probe.
    fn next_probe_in(h: &Health) -> u64 {
        h.next_probe()
            .expect("a probe is scheduled")
            .saturating_duration_since(Instant::now())
            .as_secs()
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_probed_at_probe_every_not_backed_off() {
        let (h, crm, _dir) = watched();
        h.failed(&crm, &untrusted()).await;
        assert_eq!(crm.state(), EndpointState::Offline);
        assert!(crm.observed().last_error.unwrap().contains("not trusted"));
        assert!(next_probe_in(&h) > 3000, "the next probe in an hour");
        // A probe that finds it still untrusted keeps the slow pace.
        h.due();
        h.probed(&crm, &Err(untrusted())).await;
        assert!(next_probe_in(&h) > 3000);
        // Trusted again: Online, nothing scheduled.
        h.probed(&crm, &Ok("GET: 200 OK".into())).await;
        assert_eq!(crm.state(), EndpointState::Online);
        assert!(h.next_probe().is_none());
        // An outage, by contrast, is probed again within a second.
        h.failed(&crm, &refused()).await;
        assert_eq!(next_probe_in(&h), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_are_probed_at_probe_every_and_an_outage_after_from_the_first_probe(
    ) {
        let (h, crm, _dir) = watched();
        let hour = Duration::from_secs(3600);
        let denied = || error(FailureClass::Unauthorized, "POST: 401 Unauthorized");
        let at = Instant::now();
        h.failed(&crm, &denied()).await;
        assert_eq!(crm.state(), EndpointState::Unauthorized);
        assert_eq!(
            h.next_probe(),
            Some(at + hour),
            "not backed off from 250 ms"
        );
        // Refused again when probed: the same pace, not a storm.
        advance_to(at + hour).await;
        assert_eq!(h.due().len(), 1);
        h.probed(&crm, &Err(denied())).await;
        assert_eq!(h.next_probe(), Some(at + 2 * hour));
        // A delivery refused meanwhile does not bring the probe forward.
        h.failed(&crm, &denied()).await;
        assert_eq!(h.next_probe(), Some(at + 2 * hour));
        // Fixed, then down for another reason: probed from the first probe.
        h.probed(&crm, &Ok("GET: 200 OK".into())).await;
        assert_eq!(crm.state(), EndpointState::Online);
        assert_eq!(h.next_probe(), None);
        let again = Instant::now();
        h.failed(&crm, &refused()).await;
        assert_eq!(h.next_probe(), Some(again + PROBE_FIRST));
    }

    async fn advance_to(at: Instant) {
        tokio::time::advance(at.saturating_duration_since(Instant::now())).await;
    }

    /// Plays the Monitor against a target that goes down and up by
    /// `windows` (down for .0, then up for .1, and again), starting now. The
    /// sender delivers all the time, so it tells `health` at once when the
    /// target goes down; the Monitor probes whenever a probe is due. Returns,
    /// for each up-window, how long after it began the endpoint was seen
    /// Online again, or `None` if the window went by unseen.
    async fn play(
        health: &Health,
        endpoint: &Endpoint,
        windows: &[(Duration, Duration)],
    ) -> Vec<Option<Duration>> {
        let mut seen = Vec::new();
        let mut at = Instant::now();
        for &(down, up) in windows {
            advance_to(at).await;
            if endpoint.state() == EndpointState::Online {
                health.failed(endpoint, &refused()).await;
            }
            let (up_at, down_again) = (at + down, at + down + up);
            let mut caught = None;
            while let Some(next) = health.next_probe() {
                if next >= down_again {
                    break;
                }
                advance_to(next).await;
                for due in health.due() {
                    let result = if next >= up_at {
                        Ok("200 OK".to_string())
                    } else {
                        Err(refused())
                    };
                    health.probed(&due, &result).await;
                }
                if endpoint.state() == EndpointState::Online {
                    caught = Some(next - up_at);
                    break;
                }
            }
            seen.push(caught);
            at = down_again;
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_target_is_seen_back_in_every_up_window() {
        let (health, endpoint, _dir) = watched();
        // The outage benchmark's flapping pattern: down 0.2–2 s, up 0.3–2 s,
        // thirty times, from a fixed seed.
        let mut state = 0x5EED_F1A9_u64;
        let mut between = |low: u64, high: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            Duration::from_millis(low + state.wrapping_mul(0x2545_F491_4F6C_DD1D) % (high - low))
        };
        let windows: Vec<_> = (0..30)
            .map(|_| (between(200, 2000), between(300, 2000)))
            .collect();
        let seen = play(&health, &endpoint, &windows).await;
        for (i, ((down, up), caught)) in windows.iter().zip(&seen).enumerate() {
            if *up < PROBE_SHORT {
                continue;
            }
            let Some(after) = caught else {
                panic!(
                    "up-window {i} ({up:?}, after {down:?} down) went by unseen; \
                     seen: {seen:?}"
                );
            };
            assert!(
                *after <= PROBE_SHORT,
                "up-window {i}: seen back after {after:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_outage_is_probed_ever_less_often() {
        let (health, endpoint, _dir) = watched();
        let start = Instant::now();
        health.failed(&endpoint, &refused()).await;
        let mut probes = Vec::new();
        while let Some(next) = health.next_probe() {
            if next - start > Duration::from_secs(3 * 3600) {
                break;
            }
            advance_to(next).await;
            for due in health.due() {
                health.probed(&due, &Err(refused())).await;
            }
            probes.push(next - start);
        }
        assert_eq!(probes[0], PROBE_FIRST);
        for pair in probes.windows(2) {
            let gap = pair[1] - pair[0];
            if pair[0] < SHORT_OUTAGE {
                assert!(gap <= PROBE_SHORT, "{gap:?} apart at {:?}", pair[0]);
            } else {
                assert!(gap >= PROBE_SHORT, "{gap:?} apart at {:?}", pair[0]);
            }
        }
        // The short phase is a minute of probes; then the wait doubles to
        // `probe_every` (an hour), as seed 003 asks.
        let last_gap = probes[probes.len() - 1] - probes[probes.len() - 2];
        assert_eq!(last_gap, Duration::from_secs(3600));
        assert!(probes.len() < 150, "{} probes in 3 h", probes.len());
        // And once it is back, the next outage starts over.
        advance_to(start + Duration::from_secs(3 * 3600)).await;
        health.probed(&endpoint, &Ok("200 OK".into())).await;
        assert_eq!(endpoint.state(), EndpointState::Online);
        let again = Instant::now();
        health.failed(&endpoint, &refused()).await;
        assert_eq!(health.next_probe(), Some(again + PROBE_FIRST));
    }
}
