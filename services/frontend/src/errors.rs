//! One error type for every failure a request can meet, whichever hop it
//! came from, and its two faces: JSON for `/api` and a friendly HTML page.
//!
//! The detail of a backend failure is the gRPC status *message* only. The
//! status' `Display`/`Debug` (`status: Unavailable, message: ...`) is never
//! shown: users should read which hop failed and what to check, not a dump.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;

/// Where a failure happened, named as the Kubernetes Services are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    Frontend,
    Product,
    Order,
}

impl Hop {
    pub fn name(self) -> &'static str {
        match self {
            Hop::Frontend => "frontend",
            Hop::Product => "product-service",
            Hop::Order => "order-service",
        }
    }

    /// The variable that points the frontend at this hop.
    pub fn address_variable(self) -> Option<&'static str> {
        match self {
            Hop::Frontend => None,
            Hop::Product => Some("PRODUCT_SERVICE_ADDR"),
            Hop::Order => Some("ORDER_SERVICE_ADDR"),
        }
    }

    /// The pods to look at when this hop misbehaves.
    fn pods(self) -> &'static str {
        match self {
            Hop::Frontend => "frontend",
            Hop::Product => "product",
            Hop::Order => "order",
        }
    }
}

/// Backend messages end up in pages and logs; a misbehaving server must not
/// be able to flood them.
const MAX_DETAIL_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct AppError {
    pub hop: Hop,
    pub code: Code,
    /// What went wrong, in words a person can act on.
    pub detail: String,
}

impl AppError {
    /// A backend's answer. Only the status' message is kept (see module doc),
    /// plus, for a connection that failed in this process, its root cause
    /// ("tcp connect error" alone does not say refused or unreachable).
    pub fn from_status(hop: Hop, status: &tonic::Status) -> Self {
        let message = status.message();
        match root_cause(status) {
            Some(cause) if status.code() == Code::Unavailable && !message.contains(&cause) => {
                Self::new(hop, status.code(), &format!("{message}: {cause}"))
            }
            _ => Self::new(hop, status.code(), message),
        }
    }

    pub fn new(hop: Hop, code: Code, detail: &str) -> Self {
        let detail = detail.trim();
        let detail = if detail.is_empty() {
            format!("{} answered {} without a message", hop.name(), code_name(code))
        } else if detail.chars().count() > MAX_DETAIL_CHARS {
            let cut: String = detail.chars().take(MAX_DETAIL_CHARS).collect();
            format!("{cut}…")
        } else {
            detail.to_owned()
        };
        Self { hop, code, detail }
    }

    /// The caller sent something the frontend itself cannot use.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Hop::Frontend, Code::InvalidArgument, &detail.into())
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Hop::Frontend, Code::NotFound, &detail.into())
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(Hop::Frontend, Code::Internal, &detail.into())
    }

    /// A request body over `MAX_BODY_BYTES` (`limit`): 413, naming the limit and its setting.
    /// `RESOURCE_EXHAUSTED` is what gRPC answers a message over its size limit with.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            Hop::Frontend,
            Code::ResourceExhausted,
            &format!(
                "the request body is larger than the frontend's limit of {} (MAX_BODY_BYTES)",
                size_text(limit)
            ),
        )
    }

    /// The HTTP status for the gRPC code: the caller's fault is 4xx, a hop
    /// that is down or slow is 503/504, anything else a bad gateway.
    pub fn http_status(&self) -> StatusCode {
        match (self.hop, self.code) {
            (Hop::Frontend, Code::Internal) => return StatusCode::INTERNAL_SERVER_ERROR,
            (Hop::Frontend, Code::ResourceExhausted) => return StatusCode::PAYLOAD_TOO_LARGE,
            _ => {}
        }
        match self.code {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short name for the failure, e.g. "not found".
    pub fn summary(&self) -> String {
        if self.hop == Hop::Frontend && self.code == Code::ResourceExhausted {
            return "payload too large".to_owned();
        }
        code_name(self.code).replace('_', " ").to_ascii_lowercase()
    }

    /// One sentence saying which hop failed and what to check.
    pub fn advice(&self) -> String {
        let hop = self.hop.name();
        let pods = self.hop.pods();
        let var = self.hop.address_variable().unwrap_or("the frontend's configuration");
        match (self.hop, self.code) {
            (Hop::Frontend, Code::InvalidArgument) => format!("The request was not understood: {}.", self.detail),
            (Hop::Frontend, Code::NotFound) => "There is no page at this address.".to_owned(),
            (Hop::Frontend, Code::ResourceExhausted) => format!("The request is too large: {}.", self.detail),
            (Hop::Frontend, _) => format!("The frontend failed: {}. Check the frontend logs.", self.detail),
            (_, Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition) => {
                format!("{hop} refused the request: {}.", self.detail)
            }
            (_, Code::NotFound) => format!("{hop} does not know it: {}.", self.detail),
            (_, Code::AlreadyExists) => format!("{hop} refused a conflicting request: {}.", self.detail),
            (_, Code::Unavailable) => {
                format!("{hop} is unavailable: check the {pods} pods and the {var}.")
            }
            (_, Code::DeadlineExceeded) => format!(
                "{hop} did not answer in time: check the {pods} pods' latency (and any FAULT_DELAY_MS), \
                 and BACKEND_TIMEOUT_MS of the frontend."
            ),
            _ => format!(
                "{hop} failed with {}: check the {pods} pods' logs and the {var}.",
                code_name(self.code)
            ),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.summary(),
            detail: self.detail.clone(),
            hop: self.hop.name(),
            code: code_name(self.code),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.hop.name(), code_name(self.code), self.detail)
    }
}

/// The JSON shape of every error of the API.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub detail: String,
    pub hop: &'static str,
    /// The gRPC code, e.g. `NOT_FOUND`.
    pub code: &'static str,
}

/// An [`AppError`] answered as JSON, for `/api` and `/readyz`.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        e.0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0.http_status(), Json(self.0.body())).into_response()
    }
}

/// A byte count as people write limits: `2 MiB`, `64 KiB`, else `1500 bytes`.
pub fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The innermost error under a locally made status (an io::Error such as
/// "Connection refused (os error 111)"); none for statuses from the wire.
fn root_cause(status: &tonic::Status) -> Option<String> {
    let mut cause = std::error::Error::source(status)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string()).filter(|c| !c.is_empty())
}

/// The canonical name of a gRPC code, as grpcurl and the gRPC docs spell it.
pub use telemetry::grpc::name_of as code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let status = |code| AppError::new(Hop::Product, code, "x").http_status().as_u16();
        assert_eq!(status(Code::InvalidArgument), 400);
        assert_eq!(status(Code::OutOfRange), 400);
        assert_eq!(status(Code::FailedPrecondition), 400);
        assert_eq!(status(Code::NotFound), 404);
        assert_eq!(status(Code::AlreadyExists), 409);
        assert_eq!(status(Code::Unavailable), 503);
        assert_eq!(status(Code::DeadlineExceeded), 504);
        assert_eq!(status(Code::Internal), 502);
        assert_eq!(status(Code::Unknown), 502);
        assert_eq!(status(Code::PermissionDenied), 502);
        assert_eq!(
            status(Code::ResourceExhausted),
            502,
            "a backend's: not the caller's body"
        );
        assert_eq!(AppError::payload_too_large(1 << 20).http_status(), 413);
    }

    #[test]
    fn a_body_over_the_limit_names_the_limit() {
        let e = AppError::payload_too_large(2 << 20);
        assert_eq!(e.summary(), "payload too large");
        assert_eq!(
            e.detail,
            "the request body is larger than the frontend's limit of 2 MiB (MAX_BODY_BYTES)"
        );
        assert_eq!(e.body().code, "RESOURCE_EXHAUSTED");
        assert_eq!(size_text(64 << 10), "64 KiB");
        assert_eq!(size_text(1500), "1500 bytes");
        assert_eq!(size_text((1 << 20) + 1024), "1025 KiB");
    }

    #[test]
    fn only_the_message_of_a_status_is_shown() {
        let st = tonic::Status::unavailable("tcp connect error");
        let e = AppError::from_status(Hop::Product, &st);
        let json = serde_json::to_string(&e.body()).unwrap();
        assert!(!json.contains("status:") && !json.contains("message:"), "{json}");
        assert_eq!(e.detail, "tcp connect error");
        assert_eq!(
            e.advice(),
            "product-service is unavailable: check the product pods and the PRODUCT_SERVICE_ADDR."
        );
        let empty = AppError::from_status(Hop::Order, &tonic::Status::internal(""));
        assert_eq!(empty.detail, "order-service answered INTERNAL without a message");
    }
}
