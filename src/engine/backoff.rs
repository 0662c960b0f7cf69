//! Waits that grow with each failure. The sender's retries and the probes
//! of an endpoint that is down use this one type, each with its own
//! parameters (see `engine::sender` and `engine::health`).
//!
//! # Rules
//! - The first wait after a [`Backoff::reset`] is `first`; each next one is
//!   twice the one before, at most `max`. (`first` is not capped: a probe
//!   pace shorter than the first probe still starts with the first probe.)
//! - With a short phase (`cap`, `lasting`): while the failures began less
//!   than `lasting` ago, no wait is longer than `cap`. The failures begin at
//!   the reset, or at the first wait if there was none.
//! - [`Backoff::longest`] gives `max` as the next wait (a patient pace); the
//!   doubling goes on from it.
//! - With jitter `f`, each wait is moved at random by up to `f` of itself
//!   either way, so that senders failing together do not retry in step. The
//!   doubling goes on from the wait before jitter.
//! - [`Backoff::next_wait_honouring`]: a wait the other side asked for (an HTTP
//!   `Retry-After`) is kept when it is longer, up to [`LONGEST_ASKED`].
//! - Time is `tokio::time`'s, which `tokio::time::pause()` drives in tests.
//! - The jitter comes from a small xorshift per back-off, each seeded from
//!   one seed per process taken from the operating system's random source,
//!   not from the clock: back-offs that fail at the same moment (many
//!   senders behind one target) would otherwise share it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The longest wait asked for by the other side that is honoured.
pub const LONGEST_ASKED: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// While the failures are younger than `.1`, no wait is longer than `.0`.
    short: Option<(Duration, Duration)>,
    /// The fraction of a wait it may be moved by either way (0: none).
    jitter: f64,
    /// The last wait given, before jitter; `None` since the last reset.
    last: Option<Duration>,
    /// When the failures began.
    since: Option<Instant>,
    rng: Xorshift,
}

impl Backoff {
    /// `first`, then doubling up to `max`; no short phase, no jitter.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            short: None,
            jitter: 0.0,
            last: None,
            since: None,
            rng: Xorshift(1),
        }
    }

    /// No wait longer than `cap` while the failures are younger than
    /// `lasting`.
    pub fn with_short_phase(mut self, cap: Duration, lasting: Duration) -> Backoff {
        self.short = Some((cap, lasting));
        self
    }

    /// Each wait moved at random by up to `fraction` of itself either way
    /// (kept within 0..=1).
    pub fn with_jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = fraction.clamp(0.0, 1.0);
        self.rng = Xorshift::seeded();
        self
    }

    /// A success, or a new run of failures: the next wait is `first` again,
    /// and the failures begin now.
    pub fn reset(&mut self) {
        self.last = None;
        self.since = Some(Instant::now());
    }

    /// The wait before the next try.
    pub fn next_wait(&mut self) -> Duration {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let wait = match self.last {
            None => self.first,
            Some(last) => {
                let doubled = last.saturating_mul(2).min(self.max);
                match self.short {
                    Some((cap, lasting)) if now.duration_since(since) < lasting => doubled.min(cap),
                    _ => doubled,
                }
            }
        };
        self.last = Some(wait);
        self.jittered(wait)
    }

    /// As [`Backoff::next_wait`], or the wait the other side asked for if that
    /// is longer (at most [`LONGEST_ASKED`]).
    pub fn next_wait_honouring(&mut self, asked: Option<Duration>) -> Duration {
        let wait = self.next_wait();
        match asked {
            Some(asked) if asked > wait => asked.min(LONGEST_ASKED),
            _ => wait,
        }
    }

    /// `max` as the next wait, at once: for failures that do not end by
    /// themselves within seconds. The doubling goes on from it.
    pub fn longest(&mut self) -> Duration {
        self.since.get_or_insert_with(Instant::now);
        self.last = Some(self.max);
        self.jittered(self.max)
    }

    fn jittered(&mut self, wait: Duration) -> Duration {
        if self.jitter == 0.0 {
            return wait;
        }
        // 53 random bits: a number in 0..1.
        let unit = (self.rng.step() >> 11) as f64 / (1u64 << 53) as f64;
        wait.mul_f64(1.0 - self.jitter + 2.0 * self.jitter * unit)
    }
}

/// Marsaglia's xorshift64: plenty for spreading retries, and no state shared
/// between back-offs.
#[derive(Debug, Clone)]
struct Xorshift(u64);

impl Xorshift {
    /// A stream of its own: the process's seed mixed (splitmix64) with how
    /// many streams were seeded before.
    fn seeded() -> Xorshift {
        static SEED: OnceLock<u64> = OnceLock::new();
        static STREAMS: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(|| {
            let mut bytes = [0u8; 8];
            // Without a random source (it does not fail on the systems we
            // run on) the streams still differ from one another.
            match getrandom::fill(&mut bytes) {
                Ok(()) => u64::from_le_bytes(bytes),
                Err(_) => 0x5EED_5EED_5EED_5EED,
            }
        });
        let n = STREAMS.fetch_add(1, Ordering::Relaxed);
        let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // Never zero: xorshift would stay at zero.
        Xorshift((z ^ (z >> 31)) | 1)
    }

    fn step(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    /// The sender's: 100 ms doubling to 30 s, ±20 %.
    fn retries() -> Backoff {
        Backoff::new(FIRST, MAX).with_jitter(0.2)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_to_its_cap_and_honours_retry_after() {
        let mut b = retries();
        let first = b.next_wait_honouring(None);
        assert!(first >= ms(80) && first <= ms(120));
        for _ in 0..20 {
            let d = b.next_wait_honouring(None);
            assert!(d <= MAX.mul_f64(1.2));
        }
        assert!(b.next_wait_honouring(None) >= MAX.mul_f64(0.8));
        assert_eq!(
            b.next_wait_honouring(Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            b.next_wait_honouring(Some(Duration::from_secs(86_400))),
            LONGEST_ASKED
        );
        b.reset();
        assert!(b.next_wait_honouring(None) <= ms(120));
    }

    #[tokio::test(start_paused = true)]
    async fn without_jitter_each_wait_doubles_up_to_the_cap() {
        let mut b = Backoff::new(FIRST, Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|_| b.next_wait()).collect();
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        b.reset();
        assert_eq!(b.next_wait(), FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_its_bounds_and_keeps_the_doubling() {
        let mut b = retries();
        for step in 0..12u32 {
            let base = FIRST.saturating_mul(1 << step).min(MAX);
            let d = b.next_wait();
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "wait {step}: {d:?} for {base:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn back_offs_failing_at_the_same_moment_do_not_wait_in_step() {
        // The clock stands still: whatever spreads them is not the clock.
        let firsts: Vec<Duration> = (0..50).map(|_| retries().next_wait()).collect();
        let mut distinct = firsts.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40, "{firsts:?}");
        assert!(firsts.iter().all(|d| *d >= ms(80) && *d <= ms(120)));
        assert!(firsts.iter().any(|d| *d < ms(95)) && firsts.iter().any(|d| *d > ms(105)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_phase_caps_the_waits_until_the_failures_are_old() {
        let (cap, lasting) = (ms(500), Duration::from_secs(60));
        let mut b = Backoff::new(ms(250), Duration::from_secs(3600)).with_short_phase(cap, lasting);
        let start = Instant::now();
        b.reset();
        let mut waits = Vec::new();
        while start.elapsed() < lasting {
            let wait = b.next_wait();
            waits.push(wait);
            tokio::time::advance(wait).await;
        }
        assert_eq!(waits[0], ms(250));
        assert!(waits[1..].iter().all(|w| *w == cap), "{waits:?}");
        // Past the short phase the wait doubles from the cap.
        assert_eq!(b.next_wait(), ms(1000));
        assert_eq!(b.next_wait(), ms(2000));
        for _ in 0..20 {
            b.next_wait();
        }
        assert_eq!(b.next_wait(), Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_wait_at_once_and_the_doubling_goes_on_from_it() {
        let mut b = Backoff::new(ms(250), Duration::from_secs(10));
        assert_eq!(b.longest(), Duration::from_secs(10));
        assert_eq!(b.next_wait(), Duration::from_secs(10));
        b.reset();
        assert_eq!(b.next_wait(), ms(250));
    }

    #[test]
    fn the_first_wait_is_not_capped() {
        let mut b = Backoff::new(ms(250), ms(100));
        // Outside a runtime too: tokio's clock is the real one then.
        assert_eq!(b.next_wait(), ms(250));
        assert_eq!(b.next_wait(), ms(100));
    }
}
