//! The one retry decision: how an attempt ended, and whether the route's `retryOn` retries that.
//!
//! Envoy decides in two places of its retry state (envoy `source/common/router/retry_state_impl.cc`),
//! and so does this module: `wouldRetryFromHeaders` for an answer (the HTTP status and, for
//! gRPC, the `grpc-status` of a trailers-only answer), `wouldRetryFromReset` for an attempt with
//! no answer. In the latter, `5xx`, `gateway-error` and `reset` retry every kind of reset (a
//! connect failure, a refused stream, a reset after sending, and the per-try timeout, which the
//! router turns into a local reset); `connect-failure` and `refused-stream` only their own; the
//! gRPC tokens (`unavailable`, `cancelled`, ...) none, since they read a `grpc-status` that never
//! came. Router docs: `x-envoy-retry-on` and `x-envoy-retry-grpc-on`.

use std::sync::Arc;

use super::breaker::{Breaker, Retrying};
use crate::model::{RetryOn, RetryPolicy};

/// How one attempt at the upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    /// Response headers arrived.
    Response { status: u16, grpc_status: Option<i32> },
    /// No connection to the pod.
    ConnectFailure,
    /// The pod never processed the request: REFUSED_STREAM, a GOAWAY before it, or a request
    /// dropped before it was sent.
    Refused,
    /// The connection or stream was reset after the request was sent (the app crashed or closed).
    Reset,
    /// No response within the route's per-try timeout.
    PerTryTimeout,
}

/// Whether `policy` retries an attempt that ended as `end`; `grpc` says the call is gRPC.
pub(crate) fn should_retry(policy: &RetryPolicy, grpc: bool, end: AttemptEnd) -> bool {
    let on = |t: RetryOn| policy.retries_on(t);
    let any_reset = on(RetryOn::FiveXx) || on(RetryOn::GatewayError) || on(RetryOn::Reset);
    match end {
        AttemptEnd::Response { status, grpc_status } => retriable_response(policy, grpc, status, grpc_status),
        AttemptEnd::ConnectFailure => any_reset || on(RetryOn::ConnectFailure) || on(RetryOn::ResetBeforeRequest),
        AttemptEnd::Refused => any_reset || on(RetryOn::RefusedStream) || on(RetryOn::ResetBeforeRequest),
        // In a cluster the pod's own sidecar outlives a crashed app and answers the reset with a
        // 503 (gRPC: a trailers-only UNAVAILABLE), which the caller's `unavailable` or
        // `retriable-status-codes` tokens retry; locally there is no such sidecar, so its answer
        // is judged here.
        AttemptEnd::Reset => any_reset || sidecar_reply_is_retriable(policy, grpc),
        AttemptEnd::PerTryTimeout => any_reset,
    }
}

/// Envoy's `wouldRetryFromHeaders`: gRPC status tokens on a trailers-only answer, `5xx`,
/// `gateway-error`, `retriable-4xx` (409) and bare status codes.
fn retriable_response(policy: &RetryPolicy, grpc: bool, status: u16, grpc_status: Option<i32>) -> bool {
    if grpc
        && let Some(code) = grpc_status.and_then(crate::grpc::from_number)
        && policy.retry_on.iter().any(|r| r.grpc_code() == Some(code))
    {
        return true;
    }
    policy.retry_on.iter().any(|r| match r {
        RetryOn::FiveXx => status >= 500,
        RetryOn::GatewayError => matches!(status, 502..=504),
        RetryOn::Retriable4xx => status == 409,
        RetryOn::Status(s) => *s == status,
        _ => false,
    })
}

/// Whether the answer a destination sidecar gives for a reset by its app (503; for gRPC a
/// trailers-only UNAVAILABLE) is retried under `policy`.
fn sidecar_reply_is_retriable(policy: &RetryPolicy, grpc: bool) -> bool {
    if grpc {
        retriable_response(policy, true, 200, Some(14))
    } else {
        retriable_response(policy, false, 503, None)
    }
}

/// One request's retry budget: the endpoints tried, the retries left, and the retry in
/// progress, counted against the cluster's `maxRetries` until the next attempt ends.
pub(crate) struct Retries {
    pub tried: Vec<u64>,
    left: u32,
    in_progress: Option<Retrying>,
}

impl Retries {
    pub(crate) fn new(attempts: u32) -> Self {
        Retries {
            tried: Vec::new(),
            left: attempts,
            in_progress: None,
        }
    }

    /// Takes a retry after a failed attempt on `endpoint`, if one is left and the cluster's
    /// `maxRetries` allows it (else Envoy counts `upstream_rq_retry_overflow` and answers with the
    /// failed attempt).
    pub(crate) fn take(&mut self, breaker: &Arc<Breaker>, endpoint: u64) -> bool {
        if self.left == 0 {
            return false;
        }
        let Some(r) = breaker.retry() else {
            return false;
        };
        self.in_progress = Some(r);
        self.left -= 1;
        self.tried.push(endpoint);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tokens: &[RetryOn]) -> RetryPolicy {
        RetryPolicy {
            retry_on: tokens.to_vec(),
            ..RetryPolicy::mesh_default()
        }
    }

    const ENDS: [AttemptEnd; 4] = [
        AttemptEnd::ConnectFailure,
        AttemptEnd::Refused,
        AttemptEnd::Reset,
        AttemptEnd::PerTryTimeout,
    ];

    /// The ends `tokens` retry, for a gRPC call, among [`ENDS`].
    fn retried(tokens: &[RetryOn]) -> Vec<AttemptEnd> {
        let p = policy(tokens);
        ENDS.into_iter().filter(|e| should_retry(&p, true, *e)).collect()
    }

    #[test]
    fn the_manifests_tokens_retry_what_envoy_retries() {
        use AttemptEnd::*;
        // payment-provider and order: a POST is retried only where it never reached the app.
        assert_eq!(
            retried(&[RetryOn::ConnectFailure, RetryOn::RefusedStream]),
            [ConnectFailure, Refused]
        );
        // product-vs: plus gRPC's unavailable and cancelled, which a crashed app's sidecar answers.
        let product = [
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
            RetryOn::Unavailable,
            RetryOn::Cancelled,
        ];
        assert_eq!(retried(&product), [ConnectFailure, Refused, Reset]);
        // A per-try timeout is retried only by 5xx, gateway-error or reset.
        for t in [RetryOn::FiveXx, RetryOn::GatewayError, RetryOn::Reset] {
            assert_eq!(retried(&[t]), ENDS, "{t:?} retries every reset");
        }
        assert_eq!(retried(&[RetryOn::ResetBeforeRequest]), [ConnectFailure, Refused]);
        assert!(retried(&[]).is_empty());
        assert!(retried(&[RetryOn::DeadlineExceeded]).is_empty(), "no grpc-status came");
    }

    #[test]
    fn answers_are_retried_by_their_status_and_grpc_status() {
        let on = |tokens: &[RetryOn], grpc: bool, status: u16, code: Option<i32>| {
            should_retry(
                &policy(tokens),
                grpc,
                AttemptEnd::Response {
                    status,
                    grpc_status: code,
                },
            )
        };
        let grpc_tokens = [RetryOn::Unavailable, RetryOn::Cancelled];
        assert!(on(&grpc_tokens, true, 200, Some(14)));
        assert!(on(&grpc_tokens, true, 200, Some(1)));
        assert!(!on(&grpc_tokens, true, 200, Some(5)), "NOT_FOUND");
        assert!(!on(&grpc_tokens, false, 200, Some(14)), "not a gRPC call");
        assert!(on(&[RetryOn::GatewayError], false, 503, None));
        assert!(!on(&[RetryOn::GatewayError], false, 500, None));
        assert!(on(&[RetryOn::FiveXx], false, 500, None));
        assert!(on(&[RetryOn::Retriable4xx], false, 409, None));
        assert!(on(&[RetryOn::Status(429)], false, 429, None));
        assert!(!on(&[], true, 200, Some(14)));
    }

    #[test]
    fn a_reset_by_the_app_is_retried_where_its_sidecars_answer_would_be() {
        assert!(should_retry(&policy(&[RetryOn::Unavailable]), true, AttemptEnd::Reset));
        assert!(should_retry(&policy(&[RetryOn::Status(503)]), false, AttemptEnd::Reset));
        assert!(!should_retry(
            &policy(&[RetryOn::Unavailable]),
            false,
            AttemptEnd::Reset
        ));
    }
}
