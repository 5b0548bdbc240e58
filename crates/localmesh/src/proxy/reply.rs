//! The answers the proxy makes itself, in one vocabulary: why (a [`LocalReply`]), and from that
//! the HTTP status, the gRPC code and Envoy's response flag, mapped here and nowhere else. A gRPC
//! caller gets a trailers-only answer (HTTP 200, `grpc-status`, a percent-encoded
//! `grpc-message`), an HTTP caller the status and the message as text, as Envoy's
//! `sendLocalReply` answers each.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tonic::Code;

use std::sync::Arc;

use super::endpoints::Endpoint;
use super::metrics::ServiceName;
use super::record::{Ctx, FinalAttempt, Record, Reply};
use super::{Proxy, ProxyBody};

/// Why the proxy answered instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalReply {
    /// No route matched (NR).
    NoRoute,
    /// A `:path` that is not relative; Envoy answers before routing.
    NotRelativePath,
    /// The route's backend is not a known Service (NR).
    UnknownService,
    /// Every backend of the route has weight 0.
    NoWeightedBackend,
    /// A fault injection abort (FI), with the status the route asks for.
    FaultAbort { http: u16, grpc: Code },
    /// The request body could not be read (the client went away: DC).
    BadRequestBody,
    /// No answer within the route's or per-try timeout (UT), or no connection in time.
    Timeout,
    /// A circuit breaker's limit (UO).
    Overflow,
    /// No healthy endpoint (UH).
    NoHealthyUpstream,
    /// The upstream connection failed (UF) or was reset (UR); `retried_out` adds URX.
    UpstreamFailure { connect: bool, retried_out: bool },
}

impl LocalReply {
    /// The HTTP status: what an HTTP caller gets, and what metrics and logs record.
    pub fn http(self) -> u16 {
        match self {
            LocalReply::NoRoute | LocalReply::NotRelativePath => 404,
            LocalReply::UnknownService | LocalReply::NoWeightedBackend => 500,
            LocalReply::FaultAbort { http, .. } => http,
            LocalReply::BadRequestBody => 400,
            LocalReply::Timeout => 504,
            LocalReply::Overflow | LocalReply::NoHealthyUpstream | LocalReply::UpstreamFailure { .. } => 503,
        }
    }

    /// The gRPC status a gRPC caller gets (Envoy maps its local replies' HTTP statuses as
    /// `Grpc::Utility::httpToGrpcStatus` does: 404 UNIMPLEMENTED, 5xx UNAVAILABLE).
    pub fn grpc(self) -> Code {
        match self {
            LocalReply::NoRoute | LocalReply::NotRelativePath => Code::Unimplemented,
            LocalReply::FaultAbort { grpc, .. } => grpc,
            LocalReply::BadRequestBody => Code::Internal,
            _ => Code::Unavailable,
        }
    }

    /// Envoy's response flags for the access log, metrics and spans.
    pub fn flags(self) -> &'static str {
        match self {
            LocalReply::NoRoute | LocalReply::UnknownService => "NR",
            LocalReply::NotRelativePath | LocalReply::NoWeightedBackend => "-",
            LocalReply::FaultAbort { .. } => "FI",
            LocalReply::BadRequestBody => "DC",
            LocalReply::Timeout => "UT",
            LocalReply::Overflow => "UO",
            LocalReply::NoHealthyUpstream => "UH",
            LocalReply::UpstreamFailure {
                connect: true,
                retried_out: false,
            } => "UF",
            LocalReply::UpstreamFailure {
                connect: true,
                retried_out: true,
            } => "UF,URX",
            LocalReply::UpstreamFailure {
                connect: false,
                retried_out: false,
            } => "UR",
            LocalReply::UpstreamFailure {
                connect: false,
                retried_out: true,
            } => "UR,URX",
        }
    }
}

/// The response for a local reply: trailers-only for gRPC, plain text for HTTP.
pub(crate) fn response(grpc: bool, http: u16, code: Code, msg: &str) -> Response<ProxyBody> {
    if grpc {
        // tonic writes the trailers-only answer: content-type, grpc-status, and grpc-message
        // percent-encoded as the gRPC HTTP/2 protocol asks.
        tonic::Status::new(code, msg).into_http()
    } else {
        let mut resp = Response::new(
            Full::new(Bytes::from(format!("{msg}\n")))
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        );
        *resp.status_mut() = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

impl Proxy {
    /// A reply the proxy makes itself, before any upstream answered.
    pub(crate) fn local(
        &self,
        ctx: Ctx,
        service: Option<Arc<ServiceName>>,
        ep: Option<Arc<Endpoint>>,
        why: LocalReply,
        msg: String,
    ) -> Response<ProxyBody> {
        self.local_after(ctx, service, ep, None, why, msg)
    }

    /// [`Proxy::local`] after a failed attempt on `ep`, so the metrics, access log and spans name
    /// the pod.
    pub(crate) fn local_after(
        &self,
        ctx: Ctx,
        service: Option<Arc<ServiceName>>,
        ep: Option<Arc<Endpoint>>,
        attempt: Option<FinalAttempt>,
        why: LocalReply,
        msg: String,
    ) -> Response<ProxyBody> {
        let code = why.grpc();
        let resp = response(ctx.grpc, why.http(), code, &msg);
        let reply = Reply {
            status: resp.status().as_u16(),
            grpc_status: ctx.grpc.then(|| (code as i32).to_string()),
            grpc_message: ctx.grpc.then_some(msg),
            flags: why.flags().to_string(),
        };
        let mut record = Record::new(self.recorder.clone(), ctx, service, ep, reply);
        record.attempt = attempt;
        record.done(None, None);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        for m in ["no route for /a 100%", "é", "tab\there"] {
            let resp = response(true, 503, Code::Unavailable, m);
            let raw = resp.headers()["grpc-message"].to_str().expect("ASCII");
            assert!(raw.is_ascii() && !raw.contains('\t'), "{raw:?}");
            let status = tonic::Status::from_header_map(resp.headers()).expect("a status");
            assert_eq!(
                (status.code(), status.message()),
                (Code::Unavailable, m),
                "as a client reads it"
            );
        }
    }

    #[test]
    fn every_reply_has_one_status_code_and_flag() {
        let r = LocalReply::UpstreamFailure {
            connect: false,
            retried_out: true,
        };
        assert_eq!((r.http(), r.grpc(), r.flags()), (503, Code::Unavailable, "UR,URX"));
        assert_eq!(
            (LocalReply::NoRoute.http(), LocalReply::NoRoute.grpc()),
            (404, Code::Unimplemented)
        );
        assert_eq!(LocalReply::Timeout.flags(), "UT");
        let abort = LocalReply::FaultAbort {
            http: 503,
            grpc: Code::ResourceExhausted,
        };
        assert_eq!(
            (abort.http(), abort.grpc(), abort.flags()),
            (503, Code::ResourceExhausted, "FI")
        );
    }

    #[test]
    fn grpc_replies_are_trailers_only() {
        let r = response(true, 503, Code::Unavailable, "no healthy upstream");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        let status = tonic::Status::from_header_map(r.headers()).expect("a status");
        assert_eq!(status.message(), "no healthy upstream");
        let r = response(false, 503, Code::Unavailable, "no healthy upstream");
        assert_eq!(r.status(), 503);
    }
}
