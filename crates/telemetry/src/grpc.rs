//! The tower layer every gRPC server of the suite runs behind. Per call it:
//! continues the caller's trace (W3C or B3) in a server span; takes or makes
//! `x-request-id` and echoes it; adds `x-served-by` / `x-version`; counts and
//! times the call by method, status code and version; counts open streams;
//! refuses request messages above the size limit with RESOURCE_EXHAUSTED;
//! and, once shutdown starts, ends open streams with UNAVAILABLE.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{GrpcMetrics, Identity, propagation};

/// gRPC's own default receive limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub const SERVED_BY: &str = "x-served-by";
pub const VERSION: &str = "x-version";

#[derive(Clone)]
pub struct GrpcServerLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: GrpcMetrics,
    version: String,
    served_by: HeaderValue,
    version_header: HeaderValue,
    shutdown: CancellationToken,
    streaming: HashSet<String>,
    max_message_bytes: usize,
}

impl GrpcServerLayer {
    /// `shutdown` is the token whose cancellation ends open streams.
    pub fn new(identity: &Identity, metrics: GrpcMetrics, shutdown: CancellationToken) -> Self {
        let header = |v: &str| HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self {
            shared: Arc::new(Shared {
                metrics,
                version: identity.version.clone(),
                served_by: header(&identity.pod),
                version_header: header(&identity.version),
                shutdown,
                streaming: HashSet::new(),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            }),
        }
    }

    /// Full paths (`/pkg.Service/Method`) of streaming methods, counted in
    /// `grpc_server_open_streams`.
    pub fn with_streaming_methods<'a>(mut self, paths: impl IntoIterator<Item = &'a str>) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure the layer before cloning it");
        shared.streaming.extend(paths.into_iter().map(str::to_owned));
        self
    }

    pub fn with_max_message_bytes(mut self, n: usize) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure the layer before cloning it");
        shared.max_message_bytes = n;
        self
    }
}

impl<S> tower_layer::Layer<S> for GrpcServerLayer {
    type Service = GrpcServer<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcServer {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcServer<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ResBody> tower_service::Service<Request<tonic::body::Body>> for GrpcServer<S>
where
    S: tower_service::Service<Request<tonic::body::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        let path = req.uri().path().to_owned();
        let (service, method) = split_path(&path);

        let request_id = propagation::ensure_request_id(req.headers_mut());

        // Health probes (the kubelet's, localmesh's) are never traced: they would bury the real
        // traces under one-span traces, and Envoy does not trace health checks either.
        let span = if is_health_check(&path) {
            Span::none()
        } else {
            tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            request_id = %request_id,
            )
        };
        // Must happen before the span is entered or its context read.
        if !span.is_none() {
            let _ = span.set_parent(propagation::extract_http(req.headers()));
        }

        let guard = CallGuard::start(
            shared.clone(),
            service,
            method,
            span.clone(),
            shared.streaming.contains(&path),
        );
        let limit = shared.max_message_bytes;
        let req = req.map(|b| tonic::body::Body::new(LimitedBody::new(b, limit)));

        // Call the clone that poll_ready prepared, keep a fresh one for next time.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let mut res = fut.instrument(span).await?;
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                h.insert(propagation::REQUEST_ID, v);
            }
            h.insert(SERVED_BY, shared.served_by.clone());
            h.insert(VERSION, shared.version_header.clone());
            // Trailers-only response (an error before any message): done now.
            if let Some(code) = grpc_status(res.headers()) {
                guard.finish(code, grpc_message(res.headers()).as_deref());
                return Ok(res.map(|b| ObservedBody {
                    inner: b,
                    guard: None,
                    shutdown: None,
                    done: false,
                }));
            }
            let shutdown = Some(Box::pin(shared.shutdown.clone().cancelled_owned()));
            Ok(res.map(|b| ObservedBody {
                inner: b,
                guard: Some(guard),
                shutdown,
                done: false,
            }))
        })
    }
}

/// `grpc.health.v1.Health` calls: probes, not traffic.
pub fn is_health_check(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

fn split_path(path: &str) -> (String, String) {
    let mut it = path.trim_start_matches('/').splitn(2, '/');
    let service = it.next().unwrap_or_default();
    let method = it.next().unwrap_or_default();
    (service.to_owned(), method.to_owned())
}

fn grpc_status(h: &HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn grpc_message(h: &HeaderMap) -> Option<String> {
    let raw = h.get("grpc-message")?.to_str().ok()?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The canonical name of a status code, as the gRPC specification writes it (`UNAVAILABLE`):
/// the one table of names in the workspace.
pub fn name_of(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A status code by its canonical name, exactly ([`name_of`]'s inverse); `None` for anything else.
pub fn code_from_name(name: &str) -> Option<tonic::Code> {
    (0..=16).map(tonic::Code::from_i32).find(|c| name_of(*c) == name)
}

/// The go-grpc-prometheus names of the status codes, for the `grpc_code` label.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Codes that mean the server failed, per the OpenTelemetry gRPC conventions.
fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// One call in flight. Finishing records the outcome once; dropping an
/// unfinished call (the client went away) records CANCELLED.
struct CallGuard {
    shared: Arc<Shared>,
    service: String,
    method: String,
    span: Span,
    start: Instant,
    streaming: bool,
    finished: bool,
}

impl CallGuard {
    fn start(shared: Arc<Shared>, service: String, method: String, span: Span, streaming: bool) -> Self {
        let m = &shared.metrics;
        m.started.with_label_values(&[&service, &method, &shared.version]).inc();
        if streaming {
            m.open_streams
                .with_label_values(&[&service, &method, &shared.version])
                .inc();
        }
        Self {
            shared,
            service,
            method,
            span,
            start: Instant::now(),
            streaming,
            finished: false,
        }
    }

    fn finish(mut self, code: i32, message: Option<&str>) {
        self.record(code, message);
    }

    fn record(&mut self, code: i32, message: Option<&str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed = self.start.elapsed();
        let (m, v) = (&self.shared.metrics, self.shared.version.as_str());
        let name = code_name(code);
        m.handled
            .with_label_values(&[&self.service, &self.method, name, v])
            .inc();
        m.handling_seconds
            .with_label_values(&[&self.service, &self.method, name, v])
            .observe(elapsed.as_secs_f64());
        if self.streaming {
            m.open_streams
                .with_label_values(&[&self.service, &self.method, v])
                .dec();
        }
        self.span.record("rpc.grpc.status_code", code);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let message = message.unwrap_or("");
        tracing::info!(
            parent: &self.span,
            grpc.code = name,
            grpc.message = message,
            duration_ms,
            "{}/{} finished",
            self.service,
            self.method
        );
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.record(1, Some("cancelled by the client"));
    }
}

pin_project_lite::pin_project! {
    /// Response body that reports the final status and ends streams on shutdown.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        guard: Option<CallGuard>,
        shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        done: bool,
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let span = this.guard.as_ref().map(|g| g.span.clone()).unwrap_or_else(Span::none);
        let _entered = span.enter();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(g) = this.guard.take()
                {
                    g.finish(grpc_status(trailers).unwrap_or(2), grpc_message(trailers).as_deref());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(g) = this.guard.take() {
                    g.finish(13, Some("response body failed"));
                }
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some(g) = this.guard.take() {
                    g.finish(2, Some("response ended without a status"));
                }
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Nothing more to send now: if shutdown has begun, end the stream
                // with a status the client can act on (reconnect elsewhere).
                if let Some(wait) = this.shutdown.as_mut()
                    && wait.as_mut().poll(cx).is_ready()
                {
                    let msg = "server is shutting down; reconnect";
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("14"));
                    trailers.insert(
                        "grpc-message",
                        HeaderValue::from_static("server%20is%20shutting%20down%3B%20reconnect"),
                    );
                    if let Some(g) = this.guard.take() {
                        g.finish(14, Some(msg));
                    }
                    *this.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

pin_project_lite::pin_project! {
    /// Request body that reads the 5-byte gRPC frame headers as they pass and
    /// fails with RESOURCE_EXHAUSTED before an oversized message is buffered.
    struct LimitedBody<B> {
        #[pin]
        inner: B,
        scan: FrameScan,
    }
}

impl<B> LimitedBody<B> {
    fn new(inner: B, limit: usize) -> Self {
        Self {
            inner,
            scan: FrameScan {
                limit,
                header: [0; 5],
                have: 0,
                remaining: 0,
            },
        }
    }
}

struct FrameScan {
    limit: usize,
    header: [u8; 5],
    have: usize,
    remaining: usize,
}

impl FrameScan {
    /// Err(length) on the first message above the limit.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), usize> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                if len > self.limit {
                    return Err(len);
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes, Error = Status>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
            && let Err(len) = this.scan.scan(data.chunk())
        {
            return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                "request message is {len} bytes, above the limit of {} bytes",
                this.scan.limit
            )))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    #[test]
    fn frame_scan_accepts_messages_up_to_the_limit_across_chunks() {
        let mut s = FrameScan {
            limit: 10,
            header: [0; 5],
            have: 0,
            remaining: 0,
        };
        let mut bytes = frame(10);
        bytes.extend(frame(3));
        for chunk in bytes.chunks(2) {
            assert!(s.scan(chunk).is_ok());
        }
        assert_eq!((s.have, s.remaining), (0, 0));
    }

    #[test]
    fn frame_scan_rejects_the_first_oversized_header_even_when_split() {
        let mut s = FrameScan {
            limit: 10,
            header: [0; 5],
            have: 0,
            remaining: 0,
        };
        let bytes = frame(11);
        assert!(s.scan(&bytes[..3]).is_ok());
        assert_eq!(s.scan(&bytes[3..6]), Err(11));
    }

    #[test]
    fn paths_and_codes() {
        assert_eq!(
            split_path("/product.ProductService/GetProduct"),
            ("product.ProductService".into(), "GetProduct".into())
        );
        assert_eq!(code_name(5), "NotFound");
        let msg = |raw: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-message", http::HeaderValue::from_static(raw));
            grpc_message(&h)
        };
        assert_eq!(msg("a%20b%3B").as_deref(), Some("a b;"));
        assert_eq!(msg("100%").as_deref(), Some("100%"));
    }
}
