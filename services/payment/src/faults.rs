//! Latency, declines and outages on purpose, changeable while the server
//! runs (tests make the provider slow, then fast again, without losing the
//! charges it holds).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    /// f64 bits of a percentage.
    failure_percent: AtomicU64,
    error_percent: AtomicU64,
}

/// What happens to one request, drawn once when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Proceed,
    Decline,
    Unavailable,
}

impl Faults {
    pub fn new(latency: Duration, failure_percent: f64, error_percent: f64) -> Self {
        let f = Self::default();
        f.set_latency(latency);
        f.set_failure_percent(failure_percent);
        f.set_error_percent(error_percent);
        f
    }

    pub fn set_latency(&self, d: Duration) {
        self.latency_ms
            .store(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn set_failure_percent(&self, p: f64) {
        self.failure_percent
            .store(p.clamp(0.0, 100.0).to_bits(), Ordering::Relaxed);
    }

    pub fn set_error_percent(&self, p: f64) {
        self.error_percent
            .store(p.clamp(0.0, 100.0).to_bits(), Ordering::Relaxed);
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    pub fn failure_percent(&self) -> f64 {
        f64::from_bits(self.failure_percent.load(Ordering::Relaxed))
    }

    pub fn error_percent(&self) -> f64 {
        f64::from_bits(self.error_percent.load(Ordering::Relaxed))
    }

    /// Outage first (nothing recorded), then decline, by their shares.
    pub fn draw(&self) -> Fate {
        if hit(self.error_percent()) {
            Fate::Unavailable
        } else if hit(self.failure_percent()) {
            Fate::Decline
        } else {
            Fate::Proceed
        }
    }
}

fn hit(percent: f64) -> bool {
    percent > 0.0 && rand::random::<f64>() * 100.0 < percent
}
