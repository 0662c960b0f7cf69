//! When a flow runs by itself: `every DURATION` or a cron expression of 5
//! or 6 fields, checked when the file is read (a pattern that never fires
//! is refused then, not left silently unscheduled).

use std::time::Duration;

use crate::duration::parse_duration;

/// When a flow runs by itself.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `every 30s`: first one interval after the site starts.
    Every(Duration),
    /// A cron expression, at its next match (in UTC).
    Cron {
        /// As written in the file.
        expr: String,
        /// Boxed: a parsed pattern is far larger than an interval.
        cron: Box<croner::Cron>,
    },
}

/// Two schedules are equal when they are written the same way.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron { expr: a, .. }, Schedule::Cron { expr: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// What `schedule` accepts, for the messages that refuse one.
const SCHEDULE_FORMATS: &str = "use 'every DURATION' (e.g. 'every 30s'; units ms, s, m, h, d) \
     or a cron expression of 5 fields (minute hour day month weekday, e.g. '*/5 * * * *') \
     or 6 (seconds first)";

impl Schedule {
    /// `every 30s` (durations as [`parse_duration`] reads them, above zero)
    /// or a cron expression of 5 or 6 fields that matches some date.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        let mut words = s.split_whitespace();
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("every"))
        {
            let interval: String = words.collect();
            return match parse_duration(&interval) {
                Some(d) if !d.is_zero() => Ok(Schedule::Every(d)),
                _ => Err(format!(
                    "'{s}': the interval must be a duration above zero, \
                     e.g. 'every 30s' or 'every 5m' (units ms, s, m, h, d)"
                )),
            };
        }
        if s.is_empty() {
            return Err(format!("empty: {SCHEDULE_FORMATS}"));
        }
        let cron = croner::Cron::new(s)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("'{s}' is not a schedule ({e}): {SCHEDULE_FORMATS}"))?;
        // A pattern such as "0 0 30 2 *" parses but never fires: say so now
        // rather than leave the flow silently unscheduled.
        let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(format!("'{s}' matches no date"));
        }
        Ok(Schedule::Cron {
            expr: s.to_string(),
            cron: Box::new(cron),
        })
    }

    /// The next firing strictly after `after` (Every: `after` + interval);
    /// None if there is none a calendar can hold.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| after.checked_add_signed(d)),
            Schedule::Cron { cron, .. } => cron.find_next_occurrence(&after, false).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn schedules() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap();
        let at = |h, m, s| chrono::Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).unwrap();

        let every = Schedule::parse("every 30s").unwrap();
        assert_eq!(every, Schedule::Every(Duration::from_secs(30)));
        assert_eq!(every.next_after(t), Some(at(0, 0, 40)));
        assert_eq!(
            Schedule::parse(" Every 1m30s ").unwrap(),
            Schedule::Every(Duration::from_secs(90))
        );

        let cron = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(cron.next_after(t), Some(at(0, 5, 0)));
        // Strictly after: a firing time itself is not the next one.
        assert_eq!(cron.next_after(at(0, 5, 0)), Some(at(0, 10, 0)));
        let seconds = Schedule::parse("*/20 * * * * *").unwrap();
        assert_eq!(seconds.next_after(t), Some(at(0, 0, 20)));
        assert!(matches!(&cron, Schedule::Cron { expr, .. } if expr == "*/5 * * * *"));

        for (bad, part) in [
            ("every 0s", "above zero"),
            ("every", "above zero"),
            ("every 5 minutes", "above zero"),
            ("", "empty: use 'every DURATION'"),
            ("whenever", "'whenever' is not a schedule"),
            ("* * *", "or 6 (seconds first)"),
            ("0 0 30 2 *", "'0 0 30 2 *' matches no date"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(part), "{bad}: {e}");
        }
    }
}
