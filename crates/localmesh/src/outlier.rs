//! Outlier detection as a pure state machine over time, with Envoy's rules: consecutive 5xx (and,
//! separately, gateway errors 502/503/504) eject a host for `baseEjectionTime × times ejected`, and no
//! ejection may take the ejected share above `maxEjectionPercent`. Time is passed in, never read.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::model::OutlierConfig;

/// Envoy's `max_ejection_time` default: repeated ejections grow no longer than this.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// What one request to a host returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Http(u16),
    /// A gRPC status code seen in the response headers (trailers-only), e.g. 14 for UNAVAILABLE.
    Grpc(i32),
    /// Connect failure or reset before a response: Envoy maps it to 503.
    ConnectFailure,
    /// No response within the per-try or the route timeout. Envoy's router reports
    /// `Result::LocalOriginTimeout` to the host's detector on both (`onPerTryTimeout`,
    /// `onResponseTimeout`), and without `split_external_local_origin_errors` (Istio never sets
    /// it) `DetectorHostMonitorImpl::resultToHttpCode` counts that as a 504: a gateway error, so a
    /// hung pod is ejected like a crashed one (envoy `source/common/upstream/outlier_detection_impl.cc`).
    Timeout,
}

impl Outcome {
    /// The HTTP status Envoy counts for outlier detection (gRPC mapped as `grpcToHttpStatus` does).
    pub fn http_status(self) -> u16 {
        match self {
            Outcome::Http(s) => s,
            Outcome::ConnectFailure => 503,
            Outcome::Timeout => 504,
            // Envoy's `Grpc::Utility::grpcToHttpStatus` (envoy `source/common/grpc/status.cc`).
            Outcome::Grpc(code) => match crate::grpc::from_number(code) {
                Some(Code::Ok) => 200,
                Some(Code::Cancelled) => 499,
                Some(Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange) => 400,
                Some(Code::DeadlineExceeded) => 504,
                Some(Code::NotFound) => 404,
                Some(Code::AlreadyExists | Code::Aborted) => 409,
                Some(Code::PermissionDenied) => 403,
                Some(Code::ResourceExhausted) => 429,
                Some(Code::Unimplemented) => 501,
                Some(Code::Unavailable) => 503,
                Some(Code::Unauthenticated) => 401,
                _ => 500,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
}

/// A host was ejected until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub host: usize,
    pub until: Instant,
    pub reason: Reason,
}

#[derive(Debug, Clone, Default)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

/// Outlier state of one cluster's hosts (indexes `0..hosts`).
#[derive(Debug, Clone)]
pub struct Outlier {
    config: OutlierConfig,
    hosts: Vec<Host>,
}

impl Outlier {
    pub fn new(config: OutlierConfig, hosts: usize) -> Self {
        Outlier {
            config,
            hosts: vec![Host::default(); hosts],
        }
    }

    pub fn is_ejected(&self, host: usize, now: Instant) -> bool {
        self.hosts
            .get(host)
            .and_then(|h| h.ejected_until)
            .is_some_and(|until| now < until)
    }

    /// The hosts a balancer may pick from at `now`.
    pub fn healthy(&self, now: Instant) -> Vec<usize> {
        (0..self.hosts.len()).filter(|&h| !self.is_ejected(h, now)).collect()
    }

    fn ejected_count(&self, now: Instant) -> usize {
        (0..self.hosts.len()).filter(|&h| self.is_ejected(h, now)).count()
    }

    /// Records a response; returns the ejection it caused, if any.
    pub fn record(&mut self, host: usize, outcome: Outcome, now: Instant) -> Option<Ejection> {
        let status = outcome.http_status();
        let cfg = self.config;
        let h = self.hosts.get_mut(host)?;
        if status < 500 {
            h.consecutive_5xx = 0;
            h.consecutive_gateway = 0;
            return None;
        }
        h.consecutive_5xx += 1;
        if matches!(status, 502..=504) {
            h.consecutive_gateway += 1;
        } else {
            h.consecutive_gateway = 0;
        }
        let reason = if cfg.consecutive_gateway > 0 && h.consecutive_gateway >= cfg.consecutive_gateway {
            Reason::ConsecutiveGatewayErrors
        } else if cfg.consecutive_5xx > 0 && h.consecutive_5xx >= cfg.consecutive_5xx {
            Reason::Consecutive5xx
        } else {
            return None;
        };
        // Envoy resets the counter whether or not the ejection is allowed.
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        if self.is_ejected(host, now) || !self.may_eject_one_more(now) {
            return None;
        }
        let h = &mut self.hosts[host];
        h.times_ejected += 1;
        let time = cfg
            .base_ejection
            .saturating_mul(h.times_ejected)
            .min(MAX_EJECTION.max(cfg.base_ejection));
        let until = now + time;
        h.ejected_until = Some(until);
        Some(Ejection { host, until, reason })
    }

    /// Envoy: eject only if `(ejected + 1) / hosts` stays within `maxEjectionPercent`.
    fn may_eject_one_more(&self, now: Instant) -> bool {
        let n = self.hosts.len() as u64;
        let after = self.ejected_count(now) as u64 + 1;
        n > 0 && after * 100 <= u64::from(self.config.max_ejection_percent) * n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_pct: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway: 3,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: max_pct,
        }
    }

    #[test]
    fn consecutive_gateway_errors_eject_until_the_ejection_time_passes() {
        let t0 = Instant::now();
        let mut o = Outlier::new(config(50), 2);
        assert_eq!(o.record(0, Outcome::Grpc(14), t0), None);
        assert_eq!(o.record(0, Outcome::Http(503), t0), None);
        let e = o
            .record(0, Outcome::ConnectFailure, t0)
            .expect("third gateway error ejects");
        assert_eq!(e.reason, Reason::ConsecutiveGatewayErrors);
        assert_eq!(e.until, t0 + Duration::from_secs(30));
        assert!(o.is_ejected(0, t0 + Duration::from_secs(29)));
        assert_eq!(o.healthy(t0 + Duration::from_secs(29)), vec![1]);
        assert!(!o.is_ejected(0, t0 + Duration::from_secs(30)));
        assert_eq!(o.healthy(t0 + Duration::from_secs(30)), vec![0, 1]);
    }

    #[test]
    fn timeouts_are_gateway_errors_and_eject_a_hung_host() {
        let mut o = Outlier::new(config(100), 2);
        let t0 = Instant::now();
        assert_eq!(o.record(1, Outcome::Timeout, t0), None);
        assert_eq!(o.record(1, Outcome::Timeout, t0), None);
        let e = o.record(1, Outcome::Timeout, t0).expect("the third timeout ejects");
        assert_eq!((e.host, e.reason), (1, Reason::ConsecutiveGatewayErrors));
        assert!(o.is_ejected(1, t0) && !o.is_ejected(0, t0));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut o = Outlier::new(config(50), 2);
        for _ in 0..2 {
            o.record(0, Outcome::Http(502), t0);
        }
        o.record(0, Outcome::Grpc(0), t0);
        assert_eq!(o.record(0, Outcome::Http(502), t0), None);
        assert_eq!(o.record(0, Outcome::Http(502), t0), None);
        assert!(o.record(0, Outcome::Http(502), t0).is_some());
    }

    #[test]
    fn plain_5xx_use_the_5xx_threshold_and_break_gateway_streaks() {
        let t0 = Instant::now();
        let mut o = Outlier::new(config(50), 2);
        for i in 0..4 {
            // 500 / 503 alternate: never 3 gateway errors in a row, but 5 5xx in a row.
            let s = if i % 2 == 0 { 500 } else { 503 };
            assert_eq!(o.record(0, Outcome::Http(s), t0), None);
        }
        let e = o.record(0, Outcome::Http(500), t0).expect("fifth 5xx ejects");
        assert_eq!(e.reason, Reason::Consecutive5xx);
        // gRPC INVALID_ARGUMENT is a 400: client errors never count.
        assert_eq!(Outcome::Grpc(3).http_status(), 400);
    }

    #[test]
    fn repeated_ejections_last_longer() {
        let t0 = Instant::now();
        let mut o = Outlier::new(config(100), 1);
        for _ in 0..3 {
            o.record(0, Outcome::Http(503), t0);
        }
        let t1 = t0 + Duration::from_secs(31);
        for _ in 0..2 {
            o.record(0, Outcome::Http(503), t1);
        }
        let e = o.record(0, Outcome::Http(503), t1).expect("ejected again");
        assert_eq!(e.until, t1 + Duration::from_secs(60));
    }

    #[test]
    fn max_ejection_percent_is_respected() {
        let t0 = Instant::now();
        let mut o = Outlier::new(config(50), 3);
        let fail = |o: &mut Outlier, h| (0..3).filter_map(|_| o.record(h, Outcome::Http(503), t0)).count();
        assert_eq!(fail(&mut o, 0), 1, "1 of 3 = 33% <= 50%");
        assert_eq!(fail(&mut o, 1), 0, "2 of 3 = 67% > 50%");
        assert_eq!(o.healthy(t0), vec![1, 2]);
        // Once host 0 returns, host 1 may go.
        let later = t0 + Duration::from_secs(30);
        let again = (0..3).filter_map(|_| o.record(1, Outcome::Http(503), later)).count();
        assert_eq!(again, 1);
        // Istio's default 10% never ejects from a 3-host cluster (Envoy's rule, always_eject_one_host unset).
        let mut small = Outlier::new(config(10), 3);
        assert_eq!(fail(&mut small, 0), 0);
    }
}
