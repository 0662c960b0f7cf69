//! The back-off of the sender's retries.

use std::time::Duration;

/// Exponential backoff with jitter: 100 ms, doubling, at most 30 s; a
/// `Retry-After` from the target is honoured when it asks for longer.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = Self::FIRST.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let base = exp.min(Self::MAX);
        // ±20 % jitter, from the clock's nanoseconds: enough to keep many
        // senders from retrying in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
        let wait = base.mul_f64(jitter);
        match retry_after {
            Some(asked) if asked > wait => asked.min(Duration::from_secs(3600)),
            _ => wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_honours_retry_after() {
        let mut b = Backoff::default();
        let first = b.next(None);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for _ in 0..20 {
            let d = b.next(None);
            assert!(d <= Backoff::MAX.mul_f64(1.2));
        }
        assert!(b.next(None) >= Backoff::MAX.mul_f64(0.8));
        assert_eq!(
            b.next(Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        b.reset();
        assert!(b.next(None) <= Duration::from_millis(120));
    }
}
