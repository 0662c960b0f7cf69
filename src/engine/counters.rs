//! What the engine counts as it happens: deliveries sent, failed and
//! retried, their latency, and endpoint probes. Handles are made once (per
//! sender, per endpoint), so counting costs an atomic add. They record into
//! the process's `metrics` recorder, which must be installed before the
//! daemon opens: a handle made before then records nothing.

use std::sync::Arc;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

use super::history::Tally;

/// The delivery latency histogram: the exporter gives it its buckets.
pub const SEND_DURATION: &str = "sluice_send_duration_seconds";

/// Describes every counter and histogram here to the installed recorder
/// (their `# HELP` lines).
pub fn describe() {
    describe_counter!(
        "sluice_transactions_sent_total",
        "Transactions delivered to their target."
    );
    describe_counter!(
        "sluice_transactions_failed_total",
        "Transactions that failed for good (state Error)."
    );
    describe_counter!(
        "sluice_transactions_retried_total",
        "Deliveries that failed and will be tried again."
    );
    describe_histogram!(
        SEND_DURATION,
        Unit::Seconds,
        "How long one delivery (a record or a batch) took, failed ones included."
    );
    describe_counter!(
        "sluice_endpoint_probes_total",
        "Health probes and tests of an endpoint, by result (ok, failed)."
    );
}

/// One integration's delivery counters: the process's metrics, and the
/// integration's history ([`Tally`]).
pub struct SenderMetrics {
    sent: Counter,
    failed: Counter,
    retried: Counter,
    pub latency: Histogram,
    tally: Arc<Tally>,
}

impl SenderMetrics {
    pub fn new(site: &str, integration: &str, tally: Arc<Tally>) -> SenderMetrics {
        let labels = [
            ("site", site.to_string()),
            ("integration", integration.to_string()),
        ];
        SenderMetrics {
            sent: counter!("sluice_transactions_sent_total", &labels),
            failed: counter!("sluice_transactions_failed_total", &labels),
            retried: counter!("sluice_transactions_retried_total", &labels),
            latency: histogram!(SEND_DURATION, &labels),
            tally,
        }
    }

    /// `n` transactions delivered.
    pub fn sent(&self, n: usize) {
        self.sent.increment(n as u64);
        self.tally.delivered(n);
    }

    /// One transaction failed for good.
    pub fn failed(&self) {
        self.failed.increment(1);
        self.tally.failed(1);
    }

    /// `n` deliveries failed and will be tried again.
    pub fn retried(&self, n: usize) {
        self.retried.increment(n as u64);
        self.tally.retried(n);
    }
}

/// An endpoint's probe and test counters, by result.
pub struct ProbeMetrics {
    pub ok: Counter,
    pub failed: Counter,
}

impl ProbeMetrics {
    pub fn new(site: &str, endpoint: &str) -> ProbeMetrics {
        let labels = |result: &'static str| {
            [
                ("site", site.to_string()),
                ("endpoint", endpoint.to_string()),
                ("result", result.to_string()),
            ]
        };
        ProbeMetrics {
            ok: counter!("sluice_endpoint_probes_total", &labels("ok")),
            failed: counter!("sluice_endpoint_probes_total", &labels("failed")),
        }
    }

    /// Counts nothing (an endpoint outside a site, as in a benchmark).
    pub fn none() -> ProbeMetrics {
        ProbeMetrics {
            ok: Counter::noop(),
            failed: Counter::noop(),
        }
    }
}
