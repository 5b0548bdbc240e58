//! A request's spans, as the two Envoys on each hop of a mesh make them:
//! - the hop span of the proxy the request entered: the gateway, or the caller's sidecar. Istio
//!   gives both an OUTBOUND listener, so Envoy names the span as egress (kind CLIENT) and the
//!   route's decorator renames it (`GetRouteOperation`: `<host>:<port><path>`, or the
//!   VirtualService's name when the route splits across several clusters);
//! - one span per attempt from the destination pod's inbound sidecar (ingress, kind SERVER, named
//!   `<service host>:<port>/*`), child of the hop span. The pod receives the attempt span as its
//!   parent, so the app's spans hang under it, and a retried call shows one span per attempt.
//!
//! Tags as Envoy's `HttpTracerUtility::finalizeDownstreamSpan` / `setCommonTags` write them
//! (envoy `source/common/tracing/http_tracer_impl.cc`), plus the node and Istio tags every span of
//! a proxy carries (`node_id`, `zone`, `component`, `istio.*`, on the proxy's [`Process`]).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

mod tags;

use tags::{ProxyTags, RequestTags, is_error, visit_tags};

use crate::identity::Identity;
use crate::model::ProxyTracing;
use crate::trace::packed;
use crate::trace::span::{Kind, Process, Span, Tags, now_unix_nanos};
use crate::trace::store::{Packed, PackedSpan};
use crate::trace::{self, SpanId, TraceId, Tracer};

/// How an exchange with the upstream (or a local reply) ended, for the span tags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome<'a> {
    /// 0 when no response came.
    pub status: u16,
    pub grpc_status: Option<&'a str>,
    pub grpc_message: Option<&'a str>,
    pub flags: &'a str,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl<'a> Outcome<'a> {
    /// A retried attempt as its destination sidecar reports it: a status, no body read.
    pub fn retried(status: u16, grpc_status: Option<&'a str>, flags: &'a str, request_bytes: u64) -> Self {
        Outcome {
            status,
            grpc_status,
            flags,
            request_bytes,
            ..Outcome::default()
        }
    }
}

/// What the request looked like when it arrived, for the tags of all its spans.
pub(crate) struct RequestInfo<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: &'static str,
    pub peer: &'a str,
    pub request_id: &'a str,
    pub grpc: bool,
}

/// One request's trace context and, when sampled, what its spans need.
#[derive(Debug)]
pub(crate) struct RequestTrace {
    pub trace_id: TraceId,
    /// The hop span's id (sent upstream as the B3 parent of the attempt spans).
    pub span_id: SpanId,
    parent: Option<SpanId>,
    pub sampled: bool,
    tracestate: Option<HeaderValue>,
    rec: Option<Box<Recording>>,
}

#[derive(Debug)]
struct Recording {
    start: u64,
    process: Arc<Process>,
    /// The hop proxy reports spans (its Telemetry may disable it while others report).
    reports: bool,
    operation: Arc<str>,
    request: Arc<RequestTags>,
    /// `outbound|<port>|<subset>|<host>`, once a backend is chosen.
    upstream_cluster: Option<Arc<str>>,
    /// Finished attempt spans, reported with the hop span in one batch (one store insert per
    /// request); a request dropped before its end still reports them.
    finished: Finished,
    tracer: Option<Tracer>,
}

/// A request's finished spans. Into the store they go packed as they end (no span value, no tag
/// object, no name copy on the request's path); to an OTLP collector as spans.
#[derive(Debug, Default)]
struct Finished {
    packed: Option<Packed>,
    spans: Vec<Span>,
}

impl Finished {
    fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.packed.as_ref().is_none_or(|p| p.spans.is_empty())
    }

    fn report(&mut self, tracer: &Tracer) {
        if let Some(p) = self.packed.take().filter(|p| !p.spans.is_empty()) {
            tracer.report_packed(p);
        }
        if !self.spans.is_empty() {
            tracer.report_all(std::mem::take(&mut self.spans));
        }
    }
}

/// One proxy span as it ends.
struct Ended<'a> {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    kind: Kind,
    name: &'a str,
    start: u64,
    process: &'a Arc<Process>,
    cluster: Option<&'a Arc<str>>,
}

impl Recording {
    fn end(&mut self, tracer: &Tracer, e: Ended<'_>, outcome: &Outcome<'_>) {
        let Recording {
            request,
            finished,
            tracer: held,
            ..
        } = self;
        held.get_or_insert_with(|| tracer.clone());
        let duration = now_unix_nanos().saturating_sub(e.start);
        if tracer.packs() {
            let batch = finished.packed.get_or_insert_with(|| Packed::with_capacity(2));
            let at = batch.bytes.len();
            let header = packed::Header {
                span_id: e.span_id,
                parent: e.parent,
                kind: e.kind,
                error: is_error(outcome),
                start_unix_nanos: e.start,
                duration_nanos: duration,
                name: e.name,
                status_message: None,
            };
            packed::pack_parts(
                &mut batch.bytes,
                &header,
                |out| {
                    visit_tags(request, e.cluster.map(|c| &**c), outcome, &mut |k, v| {
                        packed::put_tag(out, k, v)
                    })
                },
                |_| {},
            );
            batch.spans.push(PackedSpan {
                trace: e.trace_id,
                process: e.process.clone(),
                start: e.start,
                range: at..batch.bytes.len(),
            });
        } else {
            finished.spans.push(Span {
                trace_id: e.trace_id,
                span_id: e.span_id,
                parent: e.parent,
                name: e.name.to_string(),
                kind: e.kind,
                start_unix_nanos: e.start,
                duration_nanos: duration,
                error: is_error(outcome),
                tags: Tags::Lazy(Arc::new(ProxyTags::new(request, e.cluster, outcome))),
                events: Vec::new(),
                status_message: None,
                process: e.process.clone(),
            });
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take()
            && !self.finished.is_empty()
        {
            self.finished.report(&t);
        }
    }
}

/// One attempt at the upstream: its inbound span's id and start.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub span_id: SpanId,
    started: tokio::time::Instant,
    /// Unix nanoseconds, when recording.
    start: u64,
}

impl Attempt {
    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

/// The destination of an attempt: its pod's sidecar and the inbound route it matched.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub identity: Arc<Identity>,
    pub tracing: ProxyTracing,
    /// `<service FQDN>:<service port>/*`.
    pub operation: Arc<str>,
    /// `inbound|<target port>||`.
    pub cluster: Arc<str>,
}

impl RequestTrace {
    /// Continues the caller's context (respecting its sampled flag) or starts a trace sampled at
    /// this proxy's percentage; the hop span is recorded when sampled. Health checks are never
    /// traced (Envoy's `TracerUtility::shouldTraceRequest`), and the callee is told so.
    pub fn start(headers: &HeaderMap, proxy: &Identity, tracing: ProxyTracing, health_check: bool) -> Self {
        let parent = trace::context::extract(headers);
        let sampled = !health_check
            && parent
                .as_ref()
                .and_then(|p| p.sampled)
                .unwrap_or_else(|| trace::sample(tracing.sampling));
        let rec = sampled.then(|| {
            Box::new(Recording {
                start: now_unix_nanos(),
                process: proxy.process.clone(),
                reports: tracing.report,
                operation: Arc::from(""),
                request: Arc::default(),
                upstream_cluster: None,
                finished: Finished::default(),
                tracer: None,
            })
        });
        RequestTrace {
            trace_id: parent.as_ref().map_or_else(TraceId::random, |p| p.trace_id),
            span_id: SpanId::random(),
            parent: parent.as_ref().map(|p| p.span_id),
            sampled,
            tracestate: parent.and_then(|p| p.tracestate),
            rec,
        }
    }

    /// Whether the request's spans are being recorded (so tags are worth computing).
    pub fn recording(&self) -> bool {
        self.rec.is_some()
    }

    /// Sets the request tags and the operation name, computed only when recording.
    pub fn describe(&mut self, req: &RequestInfo<'_>, operation: impl FnOnce() -> Arc<str>) {
        if let Some(rec) = self.rec.as_mut() {
            rec.operation = operation();
            rec.request = Arc::new(RequestTags::new(req));
        }
    }

    pub fn set_upstream_cluster(&mut self, cluster: Arc<str>) {
        if let Some(rec) = self.rec.as_mut() {
            rec.upstream_cluster = Some(cluster);
        }
    }

    pub fn attempt(&self) -> Attempt {
        Attempt {
            span_id: SpanId::random(),
            started: tokio::time::Instant::now(),
            start: if self.rec.is_some() { now_unix_nanos() } else { 0 },
        }
    }

    /// The upstream request's trace headers for one attempt: the attempt span as the parent.
    pub fn inject(&self, attempt: &Attempt, headers: &mut HeaderMap) {
        trace::context::inject(
            headers,
            self.trace_id,
            attempt.span_id,
            Some(self.span_id),
            self.sampled,
            self.tracestate.as_ref(),
        );
    }

    /// Ends an attempt's inbound span, as the destination's sidecar would report it; it is
    /// reported with the hop span.
    pub fn finish_attempt(&mut self, tracer: &Tracer, attempt: Attempt, to: &Inbound, outcome: &Outcome<'_>) {
        let Some(rec) = self.rec.as_mut() else {
            return;
        };
        if !to.tracing.report {
            return;
        }
        let ended = Ended {
            trace_id: self.trace_id,
            span_id: attempt.span_id,
            parent: Some(self.span_id),
            kind: Kind::Server,
            name: &to.operation,
            start: attempt.start,
            process: &to.identity.process,
            cluster: Some(&to.cluster),
        };
        rec.end(tracer, ended, outcome);
    }

    /// Reports the hop span and the attempts' spans.
    pub fn finish(self, tracer: &Tracer, outcome: &Outcome<'_>) {
        let Some(mut rec) = self.rec else {
            return;
        };
        if rec.reports {
            let operation = rec.operation.clone();
            let process = rec.process.clone();
            let cluster = rec.upstream_cluster.clone();
            let ended = Ended {
                trace_id: self.trace_id,
                span_id: self.span_id,
                parent: self.parent,
                kind: Kind::Client,
                name: &operation,
                start: rec.start,
                process: &process,
                cluster: cluster.as_ref(),
            };
            rec.end(tracer, ended, outcome);
        }
        rec.finished.report(tracer);
    }
}

#[cfg(test)]
mod tests;
