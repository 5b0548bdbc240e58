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

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::identity::Identity;
use crate::model::ProxyTracing;
use crate::trace::span::{Kind, Process, Span, Tag, Value, now_unix_nanos};
use crate::trace::{self, SpanId, TraceId, Tracer};

/// Envoy's `max_path_tag_length` default: `http.url` is cut at 256 characters.
const MAX_PATH_TAG: usize = 256;

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
    operation: String,
    request_tags: Vec<Tag>,
    /// `outbound|<port>|<subset>|<host>`, once a backend is chosen.
    upstream_cluster: Option<String>,
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
    pub operation: String,
    /// `inbound|<target port>||`.
    pub cluster: String,
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
                operation: String::new(),
                request_tags: Vec::new(),
                upstream_cluster: None,
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
    pub fn describe(&mut self, req: &RequestInfo<'_>, operation: impl FnOnce() -> String) {
        if let Some(rec) = self.rec.as_mut() {
            rec.operation = operation();
            rec.request_tags = request_tags(req);
        }
    }

    pub fn set_upstream_cluster(&mut self, cluster: impl FnOnce() -> String) {
        if let Some(rec) = self.rec.as_mut() {
            rec.upstream_cluster = Some(cluster());
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

    /// Reports an attempt's inbound span as the destination's sidecar would.
    pub fn finish_attempt(&self, tracer: &Tracer, attempt: Attempt, to: &Inbound, outcome: &Outcome<'_>) {
        let Some(rec) = self.rec.as_ref() else {
            return;
        };
        if !to.tracing.report {
            return;
        }
        let mut tags = rec.request_tags.clone();
        outcome_tags(&mut tags, Some(&to.cluster), outcome);
        tracer.report(Span {
            trace_id: self.trace_id,
            span_id: attempt.span_id,
            parent: Some(self.span_id),
            name: to.operation.clone(),
            kind: Kind::Server,
            start_unix_nanos: attempt.start,
            duration_nanos: now_unix_nanos().saturating_sub(attempt.start),
            error: is_error(outcome),
            tags,
            events: Vec::new(),
            status_message: None,
            process: to.identity.process.clone(),
        });
    }

    /// Reports the hop span.
    pub fn finish(self, tracer: &Tracer, outcome: &Outcome<'_>) {
        let Some(rec) = self.rec else {
            return;
        };
        if !rec.reports {
            return;
        }
        let mut tags = rec.request_tags;
        outcome_tags(&mut tags, rec.upstream_cluster.as_deref(), outcome);
        tracer.report(Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            name: rec.operation,
            kind: Kind::Client,
            start_unix_nanos: rec.start,
            duration_nanos: now_unix_nanos().saturating_sub(rec.start),
            error: is_error(outcome),
            tags,
            events: Vec::new(),
            status_message: None,
            process: rec.process,
        });
    }
}

fn tag(k: &'static str, v: impl Into<Value>) -> Tag {
    (Cow::Borrowed(k), v.into())
}

fn header_or<'h>(h: &'h HeaderMap, name: &str, default: &'h str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or(default)
}

fn request_tags(r: &RequestInfo<'_>) -> Vec<Tag> {
    let mut url = format!("{}://{}{}", r.scheme, r.authority, r.path);
    if url.len() > MAX_PATH_TAG {
        let mut cut = MAX_PATH_TAG;
        while !url.is_char_boundary(cut) {
            cut -= 1;
        }
        url.truncate(cut);
    }
    let mut t = vec![
        tag("guid:x-request-id", r.request_id),
        tag("http.url", url),
        tag("http.method", r.method),
        tag(
            "downstream_cluster",
            header_or(r.headers, "x-envoy-downstream-service-cluster", "-"),
        ),
        tag("user_agent", header_or(r.headers, "user-agent", "-")),
        tag("http.protocol", r.protocol),
        tag("peer.address", r.peer),
    ];
    if let Some(id) = r.headers.get("x-client-trace-id").and_then(|v| v.to_str().ok()) {
        t.push(tag("guid:x-client-trace-id", id));
    }
    if r.grpc {
        t.push(tag("grpc.path", r.path));
        t.push(tag("grpc.authority", r.authority));
        t.push(tag("grpc.content_type", header_or(r.headers, "content-type", "")));
        if let Some(to) = r.headers.get("grpc-timeout").and_then(|v| v.to_str().ok()) {
            t.push(tag("grpc.timeout", to));
        }
    }
    t
}

fn is_error(o: &Outcome<'_>) -> bool {
    o.status == 0 || o.status >= 500 || o.grpc_status.is_some_and(crate::grpc::is_upstream_error)
}

fn outcome_tags(t: &mut Vec<Tag>, cluster: Option<&str>, o: &Outcome<'_>) {
    t.push(tag("request_size", o.request_bytes.to_string()));
    t.push(tag("response_size", o.response_bytes.to_string()));
    if let Some(c) = cluster {
        t.push(tag("upstream_cluster", c));
        t.push(tag("upstream_cluster.name", c));
    }
    t.push(tag("http.status_code", o.status.to_string()));
    t.push(tag("response_flags", o.flags));
    if let Some(code) = o.grpc_status {
        t.push(tag("grpc.status_code", code));
        if let Some(m) = o.grpc_message {
            t.push(tag("grpc.message", m));
        }
    }
    if is_error(o) {
        t.push(tag("error", "true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Key;

    fn info<'a>(h: &'a HeaderMap) -> RequestInfo<'a> {
        RequestInfo {
            headers: h,
            method: "POST",
            scheme: "https",
            authority: "sit-gateway.tcex.com.vn",
            path: "/product.ProductService/GetProduct",
            protocol: "HTTP/2",
            peer: "127.0.0.1",
            request_id: "r-1",
            grpc: true,
        }
    }

    fn gateway() -> Identity {
        Identity::gateway(&Key::new("gateway", "public-api-gateway"), "gw-0")
    }

    #[test]
    fn a_sampled_caller_is_continued_and_an_unsampled_one_is_not_recorded() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
        );
        let off = ProxyTracing {
            sampling: 100.0,
            report: true,
        };
        let t = RequestTrace::start(&h, &gateway(), off, false);
        assert_eq!(t.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert!(!t.sampled && !t.recording(), "the caller's 00 flag wins over 100 %");

        let t = RequestTrace::start(&HeaderMap::new(), &gateway(), off, false);
        assert!(t.sampled && t.recording(), "a new trace at 100 %");
        let none = ProxyTracing {
            sampling: 0.0,
            report: true,
        };
        assert!(!RequestTrace::start(&HeaderMap::new(), &gateway(), none, false).sampled);
        assert!(
            !RequestTrace::start(&HeaderMap::new(), &gateway(), off, true).sampled,
            "health checks are never traced"
        );
    }

    #[test]
    fn hop_and_attempt_spans_chain_and_carry_envoys_tags() {
        let registry = prometheus::Registry::new();
        let (tracer, mut rx) = Tracer::new(&registry, 16).unwrap();
        let h = HeaderMap::new();
        let on = ProxyTracing {
            sampling: 100.0,
            report: true,
        };
        let gw = gateway();
        let mut t = RequestTrace::start(&h, &gw, on, false);
        t.describe(&info(&h), || "op".into());
        t.set_upstream_cluster(|| "outbound|50051||product-service-v1.default.svc.cluster.local".into());
        let labels = [
            ("app".to_string(), "product-service".to_string()),
            ("version".into(), "v1".into()),
        ]
        .into_iter()
        .collect();
        let pod = Identity::sidecar(&Key::new("default", "product-v1"), "product-v1-a", &labels);
        let to = Inbound {
            identity: Arc::new(pod),
            tracing: on,
            operation: "product-service-v1.default.svc.cluster.local:50051/*".into(),
            cluster: "inbound|50051||".into(),
        };
        let failed = t.attempt();
        let mut up = HeaderMap::new();
        t.inject(&failed, &mut up);
        assert!(
            up["traceparent"]
                .to_str()
                .unwrap()
                .contains(&failed.span_id.to_string()),
            "the pod's parent is the attempt span"
        );
        let reset = Outcome {
            status: 200,
            grpc_status: Some("14"),
            flags: "UC",
            ..Outcome::default()
        };
        t.finish_attempt(&tracer, failed, &to, &reset);
        let ok = t.attempt();
        let good = Outcome {
            status: 200,
            grpc_status: Some("0"),
            flags: "-",
            ..Outcome::default()
        };
        t.finish_attempt(&tracer, ok, &to, &good);
        let hop_id = t.span_id;
        t.finish(&tracer, &good);

        let spans: Vec<Span> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(spans.len(), 3);
        let (a1, a2, hop) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(hop.parent, None);
        assert_eq!((a1.parent, a2.parent), (Some(hop_id), Some(hop_id)));
        assert_eq!((hop.kind, a1.kind), (Kind::Client, Kind::Server));
        assert_eq!(hop.process.service, "public-api-gateway-istio.gateway");
        assert_eq!(a1.process.service, "product-service.default");
        assert!(a1.is_error() && !a2.is_error(), "UNAVAILABLE is an upstream error");
        assert_eq!(a1.tag_str("response_flags"), Some("UC"));
        assert_eq!(hop.tag_str("grpc.status_code"), Some("0"));
        assert_eq!(
            hop.tag_str("http.url"),
            Some("https://sit-gateway.tcex.com.vn/product.ProductService/GetProduct")
        );
        assert_eq!(hop.tag_str("guid:x-request-id"), Some("r-1"));
        assert_eq!(
            hop.tag_str("upstream_cluster"),
            Some("outbound|50051||product-service-v1.default.svc.cluster.local")
        );
        assert_eq!(a2.tag_str("upstream_cluster"), Some("inbound|50051||"));
        assert_eq!(hop.tag_str("istio.canonical_service"), Some("public-api-gateway-istio"));
        assert_eq!(a2.tag_str("istio.canonical_revision"), Some("v1"));
    }

    #[test]
    fn a_proxy_that_does_not_report_sends_no_span_but_keeps_the_context() {
        let registry = prometheus::Registry::new();
        let (tracer, mut rx) = Tracer::new(&registry, 16).unwrap();
        let quiet = ProxyTracing {
            sampling: 100.0,
            report: false,
        };
        let t = RequestTrace::start(&HeaderMap::new(), &gateway(), quiet, false);
        assert!(t.sampled);
        let mut up = HeaderMap::new();
        t.inject(&t.attempt(), &mut up);
        assert!(up["traceparent"].to_str().unwrap().ends_with("-01"));
        t.finish(&tracer, &Outcome::default());
        assert!(rx.try_recv().is_err());
    }
}
