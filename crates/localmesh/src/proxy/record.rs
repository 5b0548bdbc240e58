//! The last stage of a request: once it ends (a local reply, or the response body's end), its
//! metrics, access-log line, spans and tap event are written, once.

use std::sync::Arc;

use http::HeaderMap;
use tokio::time::Instant;

use super::breaker;
use super::endpoints::{Endpoint, InFlight};
use super::metrics::{Labels, ProxyMetrics, Reporter, ServiceName};
use super::spans::{Attempt, Inbound, Outcome, RequestTrace};
use crate::identity::Identity;
use crate::tap::{Tap, TapEvent};
use crate::trace::Tracer;

/// Where finished requests are written.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub metrics: ProxyMetrics,
    pub tracer: Tracer,
    pub tap: Tap,
}

/// The request facts the record needs, gathered as the request arrives.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub start: Instant,
    /// `gateway` or `sidecar`.
    pub hop: &'static str,
    pub source: Arc<Identity>,
    pub authority: String,
    pub path: String,
    pub method: String,
    pub grpc: bool,
    pub request_id: String,
    pub trace: RequestTrace,
    /// The matched route, for tap (empty when nobody taps).
    pub route: String,
    /// The request headers, kept only while someone taps (for `--header` filters).
    pub tap_headers: Option<HeaderMap>,
    /// Whether the proxy the request entered writes its access log and reports metrics.
    pub access_log: bool,
    pub metrics: bool,
}

/// An attempt whose span ends with the response.
#[derive(Debug)]
pub(crate) struct FinalAttempt {
    pub attempt: Attempt,
    pub inbound: Option<Inbound>,
    /// Whether the destination pod's sidecar reports metrics.
    pub reports_metrics: bool,
}

/// What the record keeps of the attempt that answered: the endpoint's and the cluster's counts
/// it holds until the response ends, the attempt's span, the response flags so far, and the
/// request's size (or its counter, for a streamed body).
#[derive(Debug)]
pub(crate) struct Answered {
    pub held: (InFlight, breaker::Admitted),
    pub attempt: FinalAttempt,
    pub flags: &'static str,
    pub request_bytes: u64,
    pub request_counter: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// The answer as the proxy first sees it: the response head (or its own reply).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    /// From the response headers (a trailers-only answer, or the proxy's own).
    pub grpc_status: Option<String>,
    pub grpc_message: Option<String>,
    /// Envoy's response flags so far (`-` for none).
    pub flags: String,
}

/// One request's outcome so far; [`Record::done`] writes it.
#[derive(Debug)]
pub(crate) struct Record {
    out: Arc<Recorder>,
    ctx: Ctx,
    service: Option<Arc<ServiceName>>,
    endpoint: Option<Arc<Endpoint>>,
    status: u16,
    /// From the response headers (trailers-only), replaced by the trailers' value.
    grpc_status: Option<String>,
    grpc_message: Option<String>,
    flags: String,
    /// The endpoint's and the cluster's count of open requests, released with the response.
    pub held: Option<(InFlight, breaker::Admitted)>,
    pub attempt: Option<FinalAttempt>,
    pub request_bytes: u64,
    /// Counts a streamed request body as it is sent (`request_bytes` then is read at the end).
    pub request_counter: Option<Arc<std::sync::atomic::AtomicU64>>,
    pub response_bytes: u64,
}

impl Record {
    pub(crate) fn new(
        out: Arc<Recorder>,
        ctx: Ctx,
        service: Option<Arc<ServiceName>>,
        endpoint: Option<Arc<Endpoint>>,
        reply: Reply,
    ) -> Self {
        Record {
            out,
            ctx,
            service,
            endpoint,
            status: reply.status,
            grpc_status: reply.grpc_status,
            grpc_message: reply.grpc_message,
            flags: reply.flags,
            held: None,
            attempt: None,
            request_bytes: 0,
            request_counter: None,
            response_bytes: 0,
        }
    }

    pub(crate) fn done(mut self, trailers: Option<&HeaderMap>, flag: Option<&str>) {
        if let Some(t) = trailers {
            if let Some(s) = t.get("grpc-status").and_then(|v| v.to_str().ok()) {
                self.grpc_status = Some(s.to_string());
            }
            if let Some(m) = t.get("grpc-message").and_then(|v| v.to_str().ok()) {
                self.grpc_message = Some(m.to_string());
            }
        }
        if let Some(f) = flag {
            if self.flags == "-" {
                self.flags = f.to_string();
            } else {
                self.flags = format!("{},{f}", self.flags);
            }
        }
        if !self.ctx.grpc {
            self.grpc_status = None;
        }
        if let Some(c) = &self.request_counter {
            self.request_bytes = c.load(std::sync::atomic::Ordering::Relaxed);
        }
        let ctx = &self.ctx;
        let duration_ms = ctx.start.elapsed().as_secs_f64() * 1000.0;
        let mut labels = Labels {
            reporter: Reporter::Source,
            source: ctx.source.clone(),
            destination: self.endpoint.as_ref().map(|e| e.identity.clone()),
            service: self.service.clone(),
            grpc: ctx.grpc,
            response_code: self.status,
            grpc_response_status: self.grpc_status.clone(),
            response_flags: self.flags.clone(),
        };
        if self.ctx.metrics {
            self.out.metrics.record(&labels, duration_ms);
        }
        let outcome = Outcome {
            status: self.status,
            grpc_status: self.grpc_status.as_deref(),
            grpc_message: self.grpc_message.as_deref(),
            flags: &self.flags,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        };
        if let Some(fa) = self.attempt.take() {
            if self.endpoint.is_some() && fa.reports_metrics {
                // The destination sidecar's own report of the answer it passed back.
                labels.reporter = Reporter::Destination;
                labels.response_flags = destination_flags(&self.flags);
                self.out.metrics.record(&labels, fa.attempt.elapsed_ms());
            }
            if let Some(inbound) = &fa.inbound {
                self.ctx
                    .trace
                    .finish_attempt(&self.out.tracer, fa.attempt, inbound, &outcome);
            }
        }
        let ctx = &self.ctx;
        let (pod, version) = self
            .endpoint
            .as_ref()
            .map_or(("-", "-"), |e| (e.pod.as_str(), e.version()));
        let destination = self.service.as_ref().map_or("-", |s| s.fqdn.as_str());
        if ctx.access_log {
            tracing::info!(
                target: crate::logs::ACCESS_TARGET,
                hop = ctx.hop,
                method = %ctx.method,
                authority = %ctx.authority,
                path = %ctx.path,
                protocol = if ctx.grpc { "grpc" } else { "http" },
                response_code = self.status,
                grpc_status = %self.grpc_status.as_deref().unwrap_or("-"),
                response_flags = %self.flags,
                upstream_pod = %pod,
                upstream_version = %version,
                destination_service = %destination,
                duration_ms = duration_ms as u64,
                request_id = %ctx.request_id,
                trace_id = %ctx.trace.trace_id,
                "access"
            );
        }
        // Only requests that began while someone tapped: they carry their route and headers (one
        // already in flight when the tap started would show with neither, and escape `--header`).
        if ctx.tap_headers.is_some() && self.out.tap.active() {
            self.out.tap.publish(TapEvent {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                proxy: ctx.hop.to_string(),
                source: if ctx.source.router {
                    ctx.source.workload.clone()
                } else {
                    ctx.source.pod.clone()
                },
                route: if ctx.route.is_empty() {
                    "-".into()
                } else {
                    ctx.route.clone()
                },
                method: ctx.method.clone(),
                authority: ctx.authority.clone(),
                path: ctx.path.clone(),
                destination: destination.to_string(),
                upstream_pod: pod.to_string(),
                upstream_version: version.to_string(),
                status: self.status,
                grpc_status: self.grpc_status.clone(),
                response_flags: self.flags.clone(),
                latency_ms: (duration_ms * 1000.0).round() / 1000.0,
                request_id: ctx.request_id.clone(),
                trace_id: ctx.trace.trace_id.to_string(),
                headers: ctx
                    .tap_headers
                    .iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                    .collect(),
            });
        }
        self.held.take();
        self.ctx.trace.finish(&self.out.tracer, &outcome);
    }
}

/// What the destination's sidecar would flag: it saw the caller go away (`DC`) where the source
/// timed out or was cut; retry flags are the source's own.
fn destination_flags(source: &str) -> String {
    let flags: Vec<&str> = source
        .split(',')
        .filter_map(|f| match f {
            "URX" | "UF" | "UH" | "UO" | "NR" => None,
            "UT" => Some("DC"),
            f => Some(f),
        })
        .collect();
    if flags.is_empty() { "-".into() } else { flags.join(",") }
}
