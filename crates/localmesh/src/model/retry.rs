//! Envoy retry policies and the `retryOn` tokens they retry on.

use std::fmt;
use std::time::Duration;

/// Envoy retry policy. `attempts` counts retries after the first try (Envoy's `num_retries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::mesh_default()
    }
}

impl RetryPolicy {
    /// What Istio applies when a route sets no `retries` (and at a Gateway-API gateway, where
    /// `HTTPRoute.retry` is experimental): 2 retries on connect failures, refused streams, gRPC
    /// `unavailable`/`cancelled`, and HTTP 503 (`pilot/pkg/networking/core/route/retry`).
    pub fn mesh_default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Unavailable,
                RetryOn::Cancelled,
                RetryOn::RetriableStatusCodes,
                RetryOn::Status(503),
            ],
        }
    }

    /// `retries: {attempts: 0}`.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            retry_on: Vec::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.attempts > 0
    }

    pub fn retries_on(&self, cond: RetryOn) -> bool {
        self.retry_on.contains(&cond)
    }
}

/// A `retryOn` token (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    FiveXx,
    GatewayError,
    Reset,
    ResetBeforeRequest,
    ConnectFailure,
    Retriable4xx,
    RefusedStream,
    RetriableStatusCodes,
    RetriableHeaders,
    EnvoyRateLimited,
    Http3PostConnectFailure,
    /// gRPC status `CANCELLED` in the response headers.
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
    /// A bare HTTP status (Istio adds `retriable-status-codes`).
    Status(u16),
}

impl RetryOn {
    const NAMED: [(&'static str, RetryOn); 16] = [
        ("5xx", RetryOn::FiveXx),
        ("gateway-error", RetryOn::GatewayError),
        ("reset", RetryOn::Reset),
        ("reset-before-request", RetryOn::ResetBeforeRequest),
        ("connect-failure", RetryOn::ConnectFailure),
        ("retriable-4xx", RetryOn::Retriable4xx),
        ("refused-stream", RetryOn::RefusedStream),
        ("retriable-status-codes", RetryOn::RetriableStatusCodes),
        ("retriable-headers", RetryOn::RetriableHeaders),
        ("envoy-ratelimited", RetryOn::EnvoyRateLimited),
        ("http3-post-connect-failure", RetryOn::Http3PostConnectFailure),
        ("cancelled", RetryOn::Cancelled),
        ("deadline-exceeded", RetryOn::DeadlineExceeded),
        ("internal", RetryOn::Internal),
        ("resource-exhausted", RetryOn::ResourceExhausted),
        ("unavailable", RetryOn::Unavailable),
    ];

    /// One token, exactly as Istio's validator accepts it (no surrounding spaces).
    pub fn parse(token: &str) -> Option<RetryOn> {
        if let Some((_, v)) = Self::NAMED.iter().find(|(n, _)| *n == token) {
            return Some(*v);
        }
        token
            .parse::<u16>()
            .ok()
            .filter(|c| (100..600).contains(c))
            .map(RetryOn::Status)
    }

    /// The gRPC status this token retries on, if it is a gRPC token.
    pub fn grpc_code(self) -> Option<tonic::Code> {
        use tonic::Code;
        Some(match self {
            RetryOn::Cancelled => Code::Cancelled,
            RetryOn::DeadlineExceeded => Code::DeadlineExceeded,
            RetryOn::Internal => Code::Internal,
            RetryOn::ResourceExhausted => Code::ResourceExhausted,
            RetryOn::Unavailable => Code::Unavailable,
            _ => return None,
        })
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let RetryOn::Status(c) = self {
            return write!(f, "{c}");
        }
        let name = Self::NAMED.iter().find(|(_, v)| v == self).map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}
