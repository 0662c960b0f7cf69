//! Prometheus metrics at `/metrics`.
//!
//! Counters and the latency histogram are kept by the engine as things
//! happen ([`crate::engine::counters`]; handles are made once per sender, so
//! a delivery costs an atomic add). Gauges that describe state — site and
//! integration states, queue depths, holds, endpoint states — are set at
//! scrape time from the engine's [`Snapshot`], read from the same state the
//! API's views read, so `/metrics` and the API never disagree.
//!
//! This module sits above the engine: it installs the process's recorder
//! and renders what the engine recorded; the engine does not know it.
//!
//! Names follow Prometheus conventions: `sluice_` prefix, `_total` for
//! counters, `_seconds` for durations; labels `site`, `integration`,
//! `endpoint`, and `state`/`hold`/`result` where a value is one of a set.

use std::sync::OnceLock;

use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::counters::{self, SEND_DURATION};
use crate::engine::endpoint::EndpointState;
use crate::engine::Snapshot;
use crate::model::{HoldKind, IntegrationState, SiteState};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds: from a fast in-process target to a slow remote one.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder (once; later calls do nothing).
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(SEND_DURATION.into()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("a metrics recorder was installed already");
                }
                describe();
                handle
            }
            Err(e) => {
                tracing::warn!("metrics are off: {e}");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    });
}

/// Describes every metric (their `# HELP` lines): the state gauges here,
/// the engine's counters in [`counters`].
fn describe() {
    use metrics::describe_gauge;
    describe_gauge!("sluice_site_up", "1 if the site is running, else 0.");
    describe_gauge!(
        "sluice_site_state",
        "1 for the site's current state (running, stopped, starting, stopping)."
    );
    describe_gauge!(
        "sluice_integration_state",
        "1 for the integration's lifecycle state (active, paused, stopped)."
    );
    describe_gauge!(
        "sluice_integration_queue_depth",
        "Transactions queued and not yet sent, as the API's `queued`."
    );
    describe_gauge!(
        "sluice_integration_held",
        "1 while the integration has a hold of this kind."
    );
    describe_gauge!("sluice_endpoint_up", "1 if the endpoint is Online, else 0.");
    describe_gauge!(
        "sluice_endpoint_state",
        "1 for the endpoint's state (online, offline, unauthorized, disabled)."
    );
    counters::describe();
}

/// 1.0 or 0.0.
fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// A gauge per value of a set, labelled `key`: 1 for the values that hold,
/// 0 for the others (so a state that ends reads 0, not stale 1).
fn one_hot<'a>(
    name: &'static str,
    labels: &[(&'static str, String)],
    key: &'static str,
    values: impl IntoIterator<Item = (&'a str, bool)>,
) {
    for (value, on) in values {
        let mut l = labels.to_vec();
        l.push((key, value.to_string()));
        gauge!(name, &l).set(flag(on));
    }
}

/// The exposition text: the state gauges as `snapshot` has them, then
/// everything recorded.
pub fn render(snapshot: &Snapshot) -> String {
    install();
    for site in &snapshot.sites {
        let site_labels = [("site", site.name.clone())];
        gauge!("sluice_site_up", &site_labels).set(flag(site.state == SiteState::Running));
        let states = SiteState::ALL
            .iter()
            .map(|&s| (s.as_str(), s == site.state));
        one_hot("sluice_site_state", &site_labels, "state", states);
        for integration in &site.integrations {
            let labels = [
                ("site", site.name.clone()),
                ("integration", integration.name.clone()),
            ];
            let states = IntegrationState::ALL
                .iter()
                .map(|&s| (s.as_str(), s == integration.state));
            one_hot("sluice_integration_state", &labels, "state", states);
            let holds = HoldKind::ALL
                .iter()
                .map(|&k| (k.as_str(), integration.holds.contains(&k)));
            one_hot("sluice_integration_held", &labels, "hold", holds);
            match &integration.queued {
                Ok(n) => gauge!("sluice_integration_queue_depth", &labels).set(*n as f64),
                Err(e) => tracing::warn!("metrics: cannot count the queue: {e}"),
            }
        }
        for endpoint in &site.endpoints {
            let labels = [
                ("site", site.name.clone()),
                ("endpoint", endpoint.name.clone()),
            ];
            gauge!("sluice_endpoint_up", &labels)
                .set(flag(endpoint.state == EndpointState::Online));
            let states = EndpointState::ALL
                .iter()
                .map(|&s| (s.as_str(), s == endpoint.state));
            one_hot("sluice_endpoint_state", &labels, "state", states);
        }
    }
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}
