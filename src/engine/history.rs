//! Each integration's history, for charts: what was queued, delivered,
//! failed and retried each minute, and the queue's depth at its end.
//!
//! Counting is an atomic add on a [`Tally`] the integration owns (the
//! sender counts its deliveries into it beside its metrics, and whatever
//! queues records counts them through [`Integration::queued`]). The History
//! worker takes every tally once a minute is over and writes one row per
//! integration that had anything to count or a queue, in one write
//! ([`Store::add_history`]); once an hour it rolls minutes older than
//! [`MINUTES_KEPT`] into hours and deletes what is older than the site's
//! `keep_history`. A stop writes the unfinished minute. What a crash takes
//! is the unfinished minute's counts, never a transaction.
//!
//! [`Integration::queued`]: super::Integration::queued
//! [`Store::add_history`]: crate::store::Store::add_history

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Site;
use crate::log::level;
use crate::model::{now_millis, Millis};
use crate::store::{Activity, HOUR, MINUTE};

/// Minutes are kept this long before they are rolled into hours.
pub const MINUTES_KEPT: Millis = 48 * HOUR;

/// An integration's counts since its tally was last taken.
#[derive(Debug, Default)]
pub struct Tally {
    queued: AtomicI64,
    delivered: AtomicI64,
    failed: AtomicI64,
    retried: AtomicI64,
    /// Failed deliveries of the last hour by second (its start, how many),
    /// oldest first: an alert channel's `failing` counts them.
    recent_failures: parking_lot::Mutex<std::collections::VecDeque<(Millis, u64)>>,
}

/// How long failures are kept for `failing` alerts: the longest window.
const FAILURES_KEPT: Millis = HOUR;

impl Tally {
    pub fn queued(&self, n: usize) {
        self.queued.fetch_add(n as i64, Ordering::Relaxed);
    }

    pub fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as i64, Ordering::Relaxed);
    }

    pub fn failed(&self, n: usize) {
        self.failed.fetch_add(n as i64, Ordering::Relaxed);
        self.note_failures(n);
    }

    pub fn retried(&self, n: usize) {
        self.retried.fetch_add(n as i64, Ordering::Relaxed);
        self.note_failures(n);
    }

    fn note_failures(&self, n: usize) {
        let now = now_millis();
        let second = now - now.rem_euclid(1000);
        let mut recent = self.recent_failures.lock();
        match recent.back_mut() {
            Some((at, count)) if *at == second => *count += n as u64,
            _ => recent.push_back((second, n as u64)),
        }
        while recent
            .front()
            .is_some_and(|(at, _)| *at < now - FAILURES_KEPT)
        {
            recent.pop_front();
        }
    }

    /// Failed deliveries (retried or for good) of the last hour by second,
    /// oldest first.
    pub fn recent_failures(&self) -> Vec<(Millis, u64)> {
        self.recent_failures.lock().iter().copied().collect()
    }

    /// The counts so far, the tally left as it is.
    pub fn peek(&self) -> Activity {
        Activity {
            queued: self.queued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }

    /// The counts so far; the tally starts again from zero.
    pub fn take(&self) -> Activity {
        Activity {
            queued: self.queued.swap(0, Ordering::Relaxed),
            delivered: self.delivered.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
            retried: self.retried.swap(0, Ordering::Relaxed),
        }
    }

    /// Gives back counts taken but not written (a failed write): they go
    /// into the next minute rather than nowhere.
    fn give_back(&self, counts: Activity) {
        self.queued.fetch_add(counts.queued, Ordering::Relaxed);
        self.delivered
            .fetch_add(counts.delivered, Ordering::Relaxed);
        self.failed.fetch_add(counts.failed, Ordering::Relaxed);
        self.retried.fetch_add(counts.retried, Ordering::Relaxed);
    }
}

/// The start of the minute `at` falls in.
pub fn minute_of(at: Millis) -> Millis {
    at - at.rem_euclid(MINUTE)
}

/// How long until the next minute starts, by the wall clock.
fn until_next_minute() -> Duration {
    let now = now_millis();
    Duration::from_millis((minute_of(now) + MINUTE - now).max(1) as u64)
}

/// The History worker: writes each minute once it is over, until the site
/// stops; then the unfinished one.
pub async fn run(site: Arc<Site>, token: CancellationToken, ready: oneshot::Sender<()>) {
    let _ready = ready.send(());
    if site.config.keep_history.is_zero() {
        return;
    }
    let mut minute = minute_of(now_millis());
    let mut next_roll = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stopping = tokio::select! {
            _ = token.cancelled() => true,
            _ = tokio::time::sleep(until_next_minute()) => false,
        };
        write(&site, minute).await;
        if stopping {
            return;
        }
        minute = minute_of(now_millis());
        if tokio::time::Instant::now() >= next_roll {
            next_roll += Duration::from_secs(3600);
            roll(&site).await;
        }
    }
}

/// Writes what every integration counted since the last write into the
/// minute `at`.
pub async fn write(site: &Site, at: Millis) {
    let mut rows = Vec::new();
    for integration in site.integrations() {
        let counts = integration.tally.take();
        let depth = match site.store.queued_count(&integration.name).await {
            Ok(depth) => depth,
            Err(_) => {
                integration.tally.give_back(counts);
                continue;
            }
        };
        if counts.is_empty() && depth == 0 {
            continue;
        }
        rows.push((integration.name.clone(), counts, depth));
    }
    if let Err(e) = site.store.add_history(at, rows.clone()).await {
        for (name, counts, _) in rows {
            if let Ok(integration) = site.integration(&name) {
                integration.tally.give_back(counts);
            }
        }
        site.log
            .write(level::DETAIL, format!("Cannot write the history: {e}"))
            .await;
    }
}

async fn roll(site: &Site) {
    let now = now_millis();
    let keep = i64::try_from(site.config.keep_history.as_millis()).unwrap_or(i64::MAX);
    let hours_before = (now - MINUTES_KEPT) - (now - MINUTES_KEPT).rem_euclid(HOUR);
    if let Err(e) = site
        .store
        .roll_history(hours_before, now.saturating_sub(keep))
        .await
    {
        site.log
            .write(level::DETAIL, format!("Cannot roll up the history: {e}"))
            .await;
    }
}

/// The steps a history is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minute,
    Hour,
    Day,
}

impl Step {
    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "1m" => Some(Step::Minute),
            "1h" => Some(Step::Hour),
            "1d" => Some(Step::Day),
            _ => None,
        }
    }

    pub fn millis(self) -> Millis {
        match self {
            Step::Minute => MINUTE,
            Step::Hour => HOUR,
            Step::Day => 24 * HOUR,
        }
    }
}

/// One step of a history as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The step's start (UTC-aligned).
    pub at: Millis,
    pub counts: Activity,
    /// Transactions Queued at the end of the step's last period written;
    /// carried over a step with none (the site was stopped); `None` before
    /// the first.
    pub depth: Option<i64>,
}

/// A history answers at most this many steps: a longer one is asked for
/// with a larger step.
pub const MAX_POINTS: i64 = 20_000;

/// Sums `rows` (periods of one or more integrations, oldest first) into a
/// point per `step` from the step `since` falls in to the one `now` falls
/// in, every step present. A period counts whole in the step it starts in
/// (an hour asked for by the minute counts in its first minute). The depth
/// of a step is the sum of each integration's last depth in it.
pub fn points(
    rows: &[(String, Millis, Activity, i64)],
    since: Millis,
    now: Millis,
    step: Step,
) -> Vec<Point> {
    let step = step.millis();
    let first = since - since.rem_euclid(step);
    let last = now - now.rem_euclid(step);
    let mut out: Vec<Point> = Vec::new();
    let mut depths: std::collections::BTreeMap<&str, i64> = Default::default();
    let mut rows = rows.iter().peekable();
    let mut at = first;
    while at <= last {
        let mut counts = Activity::default();
        let mut seen = false;
        while let Some((name, _, c, depth)) = rows.next_if(|(_, t, _, _)| *t < at + step) {
            counts += *c;
            depths.insert(name, *depth);
            seen = true;
        }
        let depth = if seen || !depths.is_empty() {
            Some(depths.values().sum())
        } else {
            None
        };
        out.push(Point { at, counts, depth });
        at += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(queued: i64, delivered: i64) -> Activity {
        Activity {
            queued,
            delivered,
            ..Activity::default()
        }
    }

    #[test]
    fn points_fill_every_step_and_carry_the_depth() {
        let t = 100 * HOUR;
        let rows = vec![
            ("a".to_string(), t + MINUTE, activity(5, 0), 5),
            ("b".to_string(), t + MINUTE, activity(2, 1), 1),
            ("a".to_string(), t + 3 * MINUTE, activity(0, 4), 1),
        ];
        let p = points(&rows, t + 30_000, t + 4 * MINUTE + 1, Step::Minute);
        let seen: Vec<_> = p.iter().map(|p| (p.at - t, p.counts, p.depth)).collect();
        assert_eq!(
            seen,
            [
                (0, activity(0, 0), None),
                (MINUTE, activity(7, 1), Some(6)),
                (2 * MINUTE, activity(0, 0), Some(6)),
                (3 * MINUTE, activity(0, 4), Some(2)),
                (4 * MINUTE, activity(0, 0), Some(2)),
            ]
        );
        let p = points(&rows, t, t + 4 * MINUTE, Step::Hour);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].at, p[0].counts, p[0].depth),
            (t, activity(7, 5), Some(2))
        );
    }

    #[test]
    fn a_tally_taken_starts_again_from_zero() {
        let tally = Tally::default();
        tally.queued(3);
        tally.delivered(2);
        tally.failed(1);
        tally.retried(4);
        let taken = tally.take();
        assert_eq!(
            taken,
            Activity {
                queued: 3,
                delivered: 2,
                failed: 1,
                retried: 4
            }
        );
        assert!(tally.peek().is_empty());
        tally.give_back(taken);
        assert_eq!(tally.peek(), taken);
    }
}
