//! When scheduled flows are due.
//!
//! An interval (`every 30s`) first fires one interval after the site starts;
//! a cron expression fires at its next match. A firing missed (because the
//! site was stopped, or a run was still going) is not made up: after firing,
//! the next time is computed from now.
//!
//! The clock is injected: every call takes `now`. The GetData worker passes
//! the wall clock (a cron expression matches calendar times); tests pass
//! the times they want.

use chrono::{DateTime, Utc};

use crate::config::Schedule;

struct Entry {
    flow: String,
    schedule: Schedule,
    next: Option<DateTime<Utc>>,
}

pub struct Scheduler {
    entries: Vec<Entry>,
}

impl Scheduler {
    /// `now` is the site's start.
    pub fn new(
        flows: impl IntoIterator<Item = (String, Schedule)>,
        now: DateTime<Utc>,
    ) -> Scheduler {
        Scheduler {
            entries: flows
                .into_iter()
                .map(|(flow, schedule)| Entry {
                    next: schedule.next_after(now),
                    flow,
                    schedule,
                })
                .collect(),
        }
    }

    /// The earliest next firing, if any flow is scheduled.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|e| e.next).min()
    }

    /// The flows due at `now`, each once; their next firing moves past `now`.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut due = Vec::new();
        for e in &mut self.entries {
            if e.next.is_some_and(|t| t <= now) {
                due.push(e.flow.clone());
                e.next = e.schedule.next_after(now);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s as i64)
    }

    #[test]
    fn an_interval_fires_one_interval_after_start_and_does_not_catch_up() {
        let mut s = Scheduler::new(
            [("f".to_string(), Schedule::Every(Duration::from_secs(30)))],
            t(0),
        );
        assert_eq!(s.next_due(), Some(t(30)));
        assert!(s.take_due(t(29)).is_empty());
        assert_eq!(s.take_due(t(30)), ["f"]);
        // Ten intervals missed: one firing, then the next interval from now.
        assert_eq!(s.take_due(t(400)), ["f"]);
        assert_eq!(s.next_due(), Some(t(430)));
    }

    #[test]
    fn cron_fires_at_its_next_match() {
        let cron = Schedule::parse("*/5 * * * *").unwrap();
        let mut s = Scheduler::new([("c".to_string(), cron)], t(10));
        assert_eq!(s.next_due(), Some(t(300)));
        assert_eq!(s.take_due(t(300)), ["c"]);
        assert_eq!(s.next_due(), Some(t(600)));
    }

    #[test]
    fn a_missed_cron_firing_is_not_made_up() {
        let cron = Schedule::parse("*/5 * * * *").unwrap();
        let mut s = Scheduler::new([("c".to_string(), cron)], t(0));
        assert_eq!(s.next_due(), Some(t(300)));
        // Looked at again only at 00:23 (the site was stopped, or a run
        // went on): the three firings missed are one, then the next match.
        assert_eq!(s.take_due(t(23 * 60)), ["c"]);
        assert!(s.take_due(t(23 * 60 + 1)).is_empty());
        assert_eq!(s.next_due(), Some(t(25 * 60)));
    }

    #[test]
    fn each_flow_keeps_its_own_schedule() {
        let mut s = Scheduler::new(
            [
                ("fast".to_string(), Schedule::Every(Duration::from_secs(10))),
                ("slow".to_string(), Schedule::Every(Duration::from_secs(25))),
            ],
            t(0),
        );
        assert_eq!(s.take_due(t(10)), ["fast"]);
        assert_eq!(s.next_due(), Some(t(20)));
        assert_eq!(s.take_due(t(20)), ["fast"]);
        assert_eq!(s.take_due(t(25)), ["slow"]);
        assert_eq!(s.take_due(t(30)), ["fast"]);
        assert_eq!(s.next_due(), Some(t(40)));
    }

    #[test]
    fn nothing_scheduled() {
        let s = Scheduler::new(Vec::new(), t(0));
        assert_eq!(s.next_due(), None);
    }
}
