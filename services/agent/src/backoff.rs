//! Delays between reconnects: exponential from 200 ms to 30 s with jitter,
//! never giving up, back to the start after a stream that worked.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

pub const MIN_DELAY: Duration = Duration::from_millis(200);
pub const MAX_DELAY: Duration = Duration::from_secs(30);
const FACTOR: f32 = 2.0;

pub struct Backoff {
    builder: ExponentialBuilder,
    delays: <ExponentialBuilder as BackoffBuilder>::Backoff,
}

impl Backoff {
    pub fn new() -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(FACTOR)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
        }
    }

    /// The next delay. backon's jitter adds up to 100% on top of the
    /// exponential step; the result is capped at `MAX_DELAY` so no wait is
    /// longer than 30 s (agents keep the random phase of earlier retries).
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(MAX_DELAY).min(MAX_DELAY)
    }

    /// Starts again from `MIN_DELAY`.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!((MIN_DELAY..=MIN_DELAY * 2).contains(&first), "{first:?}");
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= MIN_DELAY && *d <= MAX_DELAY), "{delays:?}");
        // 200 ms doubled 8 times is 51 s: the tail sits at the cap.
        assert!(delays[10..].iter().all(|d| *d >= MAX_DELAY / 2), "{delays:?}");
        // Attempt n (from 0) waits at least 200 ms * 2^n, below the cap.
        assert!(delays[3] >= Duration::from_millis(3200), "{delays:?}");
        b.reset();
        let again = b.next_delay();
        assert!((MIN_DELAY..=MIN_DELAY * 2).contains(&again), "{again:?}");
    }
}
