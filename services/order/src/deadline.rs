//! Deadlines of the hops a call makes, and the one answer when a hop runs
//! out of time: DEADLINE_EXCEEDED naming the hop and the time it was given.
//!
//! tonic reports an expired `grpc-timeout` as CANCELLED ("Timeout
//! expired"), on the server (which drops the handler at the caller's
//! deadline) and on the client (its own timer). So the order service works
//! to its caller's deadline less a small reserve: a hop that is still
//! waiting then ends here, and the answer reaches the caller before either
//! tonic timer fires. (Envoy's `grpc_timeout_header_offset` does the same.)
//! Steps with no timer of their own (database queries) are stopped by
//! [`within`], halfway through the reserve.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tonic::{Status, metadata::MetadataMap};

/// The most kept back from the caller's deadline to send the answer (the
/// trip back, and a busy node's scheduling); half of deadlines below 200 ms.
pub const MAX_RESERVE: Duration = Duration::from_millis(100);

/// No hop is given more than this, whatever its own bound says.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// The caller's deadline as the order service works to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerDeadline {
    /// The caller's `grpc-timeout`.
    pub timeout: Duration,
    /// When hops stop waiting: `timeout` less the reserve after the call arrived.
    pub at: Instant,
    /// When the call answers at the latest: halfway through the reserve.
    pub last: Instant,
}

impl CallerDeadline {
    /// From the caller's `grpc-timeout`; None without one, or with one
    /// unusable (malformed, or too far away to be a deadline).
    pub fn from_metadata(md: &MetadataMap, received: Instant) -> Option<Self> {
        let timeout = telemetry::propagation::grpc_timeout(md)?;
        let reserve = (timeout / 2).min(MAX_RESERVE);
        let at = received.checked_add(timeout - reserve)?;
        let last = received.checked_add(timeout - reserve / 2)?;
        Some(Self { timeout, at, last })
    }
}

/// The time one hop has: its own bound, cut short by the caller's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub deadline: Instant,
    /// What the hop was given when the budget was made.
    pub given: Duration,
    /// The caller's deadline when it is what set the budget.
    pub caller: Option<CallerDeadline>,
}

impl Budget {
    /// From `now`: `own` at most, and no later than the caller's deadline.
    pub fn new(now: Instant, own: Duration, caller: Option<CallerDeadline>) -> Self {
        let own = own.min(LONGEST);
        let own_end = now.checked_add(own);
        match (caller, own_end) {
            (Some(c), Some(end)) if c.at < end => Self::until(now, c),
            (Some(c), None) => Self::until(now, c),
            (_, Some(end)) => Self {
                deadline: end,
                given: own,
                caller: None,
            },
            // `now + a day` overflowing: a clock this odd gets no time at all.
            (None, None) => Self {
                deadline: now,
                given: Duration::ZERO,
                caller: None,
            },
        }
    }

    fn until(now: Instant, c: CallerDeadline) -> Self {
        Self {
            deadline: c.at,
            given: c.at.saturating_duration_since(now),
            caller: Some(c),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn is_spent(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// A hop that ran out of its budget: DEADLINE_EXCEEDED naming the hop (as
/// `"product-service (http://…)"`), the time it had and whose limit that was,
/// then `consequence` (what was and was not done).
pub fn exceeded(hop: &str, budget: &Budget, consequence: &str) -> Status {
    let ms = budget.given.as_millis();
    let what = match budget.caller {
        Some(c) if budget.given.is_zero() => format!(
            "not called: the caller's deadline (grpc-timeout {} ms) left no time for it",
            c.timeout.as_millis()
        ),
        Some(c) => format!(
            "no answer within {ms} ms, all that the caller's deadline (grpc-timeout {} ms) left",
            c.timeout.as_millis()
        ),
        None => format!("no answer within {ms} ms"),
    };
    Status::deadline_exceeded(format!("{hop}: {what}; {consequence}"))
}

/// Runs a call's `work` within its caller's deadline: what is still running
/// at [`CallerDeadline::last`] (a hop has its own, earlier timer; a database
/// query does not) is dropped, and the answer is DEADLINE_EXCEEDED saying
/// what was `unfinished`.
pub async fn within<T>(
    caller: Option<CallerDeadline>,
    unfinished: &str,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(c) = caller else {
        return work.await;
    };
    match tokio::time::timeout_at(c.last.into(), work).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the caller's deadline (grpc-timeout {} ms) ran out before {unfinished}",
            c.timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, metadata::MetadataValue};

    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", MetadataValue::try_from(v).unwrap());
        m
    }

    #[test]
    fn the_caller_deadline_keeps_a_reserve_for_the_answer() {
        let t0 = Instant::now();
        let c = CallerDeadline::from_metadata(&md("100m"), t0).unwrap();
        assert_eq!(
            (c.timeout, c.at, c.last),
            (
                Duration::from_millis(100),
                t0 + Duration::from_millis(50),
                t0 + Duration::from_millis(75)
            )
        );
        let c = CallerDeadline::from_metadata(&md("5S"), t0).unwrap();
        assert_eq!(
            (c.at, c.last),
            (t0 + Duration::from_millis(4900), t0 + Duration::from_millis(4950))
        );
        let c = CallerDeadline::from_metadata(&md("0n"), t0).unwrap();
        assert_eq!(c.at, t0);
        // Malformed or absent: no deadline, and no panic.
        for bad in ["", "m", "-5m", "10x", "999999999S", "1.5S"] {
            assert_eq!(CallerDeadline::from_metadata(&md(bad), t0), None, "{bad:?}");
        }
        assert_eq!(CallerDeadline::from_metadata(&MetadataMap::new(), t0), None);
        // The largest the header can say (about 11 400 years) is a deadline or none, never a panic.
        let _ = CallerDeadline::from_metadata(&md("99999999H"), t0);
    }

    #[test]
    fn a_budget_is_the_hop_bound_or_the_caller_deadline_whichever_comes_first() {
        let t0 = Instant::now();
        let own = Duration::from_secs(5);
        let b = Budget::new(t0, own, None);
        assert_eq!((b.deadline, b.given, b.caller), (t0 + own, own, None));

        let near = CallerDeadline::from_metadata(&md("300m"), t0).unwrap();
        let b = Budget::new(t0, own, Some(near));
        assert_eq!(
            (b.deadline, b.given, b.caller),
            (near.at, Duration::from_millis(200), Some(near))
        );

        let far = CallerDeadline::from_metadata(&md("60S"), t0).unwrap();
        assert_eq!(Budget::new(t0, own, Some(far)).caller, None);

        // Made after the caller's deadline: nothing given.
        let b = Budget::new(t0 + Duration::from_secs(1), own, Some(near));
        assert_eq!((b.given, b.caller), (Duration::ZERO, Some(near)));
        // A caller deadline already past: spent at once.
        let past = CallerDeadline::from_metadata(&md("0n"), t0);
        assert!(Budget::new(t0, own, past).is_spent());
        assert!(!Budget::new(Instant::now(), own, None).is_spent());
        // Absurd own bounds are capped, not overflowed.
        assert_eq!(Budget::new(t0, Duration::MAX, None).given, LONGEST);
    }

    #[test]
    fn an_expired_hop_is_deadline_exceeded_naming_the_hop_and_its_budget() {
        let t0 = Instant::now();
        let hop = "product-service (http://p:50051)";
        let own = exceeded(
            hop,
            &Budget::new(t0, Duration::from_millis(200), None),
            "nothing was stored",
        );
        assert_eq!(own.code(), Code::DeadlineExceeded);
        assert_eq!(
            own.message(),
            "product-service (http://p:50051): no answer within 200 ms; nothing was stored"
        );

        let c = CallerDeadline::from_metadata(&md("300m"), t0);
        let callers = exceeded(hop, &Budget::new(t0, Duration::from_secs(5), c), "nothing was stored");
        assert_eq!(callers.code(), Code::DeadlineExceeded);
        assert_eq!(
            callers.message(),
            "product-service (http://p:50051): no answer within 200 ms, all that the caller's deadline \
             (grpc-timeout 300 ms) left; nothing was stored"
        );

        let late = Budget::new(t0 + Duration::from_secs(1), Duration::from_secs(5), c);
        assert!(
            exceeded(hop, &late, "x")
                .message()
                .contains("not called: the caller's deadline")
        );
    }

    #[tokio::test]
    async fn work_still_running_at_the_callers_deadline_ends_as_deadline_exceeded() {
        let t0 = Instant::now();
        let c = CallerDeadline::from_metadata(&md("100m"), t0);
        let stuck = std::future::pending::<Result<(), Status>>();
        let e = within(c, "the order was read", stuck).await.unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(75), "{:?}", t0.elapsed());
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert_eq!(
            e.message(),
            "the caller's deadline (grpc-timeout 100 ms) ran out before the order was read"
        );
        // Finished in time, or no deadline at all: the work's own answer.
        assert_eq!(within(c, "x", async { Ok(7) }).await.unwrap(), 7);
        let own = within(None, "x", async { Err::<(), _>(Status::not_found("no")) }).await;
        assert_eq!(own.unwrap_err().code(), Code::NotFound);
    }
}
