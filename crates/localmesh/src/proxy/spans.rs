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
use crate::trace::span::{Kind, LazyTags, Process, Span, Tag, Tags, Value, now_unix_nanos, string_bytes};
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
    request: Arc<RequestTags>,
    /// `outbound|<port>|<subset>|<host>`, once a backend is chosen.
    upstream_cluster: Option<Arc<str>>,
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
                operation: String::new(),
                request: Arc::default(),
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
            rec.request = Arc::new(RequestTags::new(req));
        }
    }

    pub fn set_upstream_cluster(&mut self, cluster: impl FnOnce() -> String) {
        if let Some(rec) = self.rec.as_mut() {
            rec.upstream_cluster = Some(Arc::from(cluster()));
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
        let tags = ProxyTags::new(&rec.request, Some(&to.cluster), outcome);
        tracer.report(Span {
            trace_id: self.trace_id,
            span_id: attempt.span_id,
            parent: Some(self.span_id),
            name: to.operation.clone(),
            kind: Kind::Server,
            start_unix_nanos: attempt.start,
            duration_nanos: now_unix_nanos().saturating_sub(attempt.start),
            error: is_error(outcome),
            tags: Tags::Lazy(Arc::new(tags)),
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
        let tags = ProxyTags::new(&rec.request, rec.upstream_cluster.as_ref(), outcome);
        tracer.report(Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            name: rec.operation,
            kind: Kind::Client,
            start_unix_nanos: rec.start,
            duration_nanos: now_unix_nanos().saturating_sub(rec.start),
            error: is_error(outcome),
            tags: Tags::Lazy(Arc::new(tags)),
            events: Vec::new(),
            status_message: None,
            process: rec.process,
        });
    }
}

fn tag(k: &'static str, v: impl Into<Value>) -> Tag {
    (Cow::Borrowed(k), v.into())
}

fn header(h: &HeaderMap, name: &str) -> Option<Box<str>> {
    h.get(name).and_then(|v| v.to_str().ok()).map(Box::from)
}

/// The tags every span of one request shares, made once per recorded request.
#[derive(Debug, Default)]
pub(crate) struct RequestTags {
    request_id: Box<str>,
    /// `<scheme>://<authority><path>`, cut at [`MAX_PATH_TAG`].
    url: Box<str>,
    method: Box<str>,
    protocol: &'static str,
    downstream_cluster: Option<Box<str>>,
    user_agent: Option<Box<str>>,
    peer: Box<str>,
    client_trace_id: Option<Box<str>>,
    /// `grpc.path`, `grpc.authority`, `grpc.content_type`, `grpc.timeout`, for gRPC requests.
    grpc: Option<Box<GrpcRequestTags>>,
}

#[derive(Debug)]
struct GrpcRequestTags {
    path: Box<str>,
    authority: Box<str>,
    content_type: Box<str>,
    timeout: Option<Box<str>>,
}

impl RequestTags {
    fn new(r: &RequestInfo<'_>) -> Self {
        let mut url = format!("{}://{}{}", r.scheme, r.authority, r.path);
        if url.len() > MAX_PATH_TAG {
            let mut cut = MAX_PATH_TAG;
            while !url.is_char_boundary(cut) {
                cut -= 1;
            }
            url.truncate(cut);
        }
        RequestTags {
            request_id: r.request_id.into(),
            url: url.into(),
            method: r.method.into(),
            protocol: r.protocol,
            downstream_cluster: header(r.headers, "x-envoy-downstream-service-cluster"),
            user_agent: header(r.headers, "user-agent"),
            peer: r.peer.into(),
            client_trace_id: header(r.headers, "x-client-trace-id"),
            grpc: r.grpc.then(|| {
                Box::new(GrpcRequestTags {
                    path: r.path.into(),
                    authority: r.authority.into(),
                    content_type: header(r.headers, "content-type").unwrap_or_default(),
                    timeout: header(r.headers, "grpc-timeout"),
                })
            }),
        }
    }

    fn bytes(&self) -> usize {
        let opt = |o: &Option<Box<str>>| o.as_deref().map_or(0, string_bytes);
        std::mem::size_of::<Self>()
            + [&self.request_id, &self.url, &self.method, &self.peer]
                .iter()
                .map(|s| string_bytes(s))
                .sum::<usize>()
            + opt(&self.downstream_cluster)
            + opt(&self.user_agent)
            + opt(&self.client_trace_id)
            + self.grpc.as_ref().map_or(0, |g| {
                std::mem::size_of::<GrpcRequestTags>()
                    + string_bytes(&g.path)
                    + string_bytes(&g.authority)
                    + string_bytes(&g.content_type)
                    + opt(&g.timeout)
            })
    }
}

/// gRPC status codes as tag values, without an allocation for the common ones.
const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

fn shared(s: &str, table: &[&'static str]) -> Cow<'static, str> {
    match table.iter().find(|t| **t == s) {
        Some(t) => Cow::Borrowed(t),
        None => Cow::Owned(s.to_string()),
    }
}

/// One proxy span's tags, written out as Envoy writes them only when read.
#[derive(Debug)]
struct ProxyTags {
    request: Arc<RequestTags>,
    upstream_cluster: Option<Arc<str>>,
    status: u16,
    grpc_status: Option<Cow<'static, str>>,
    grpc_message: Option<Box<str>>,
    flags: Cow<'static, str>,
    request_bytes: u64,
    response_bytes: u64,
    error: bool,
}

impl ProxyTags {
    fn new(request: &Arc<RequestTags>, cluster: Option<&Arc<str>>, o: &Outcome<'_>) -> Self {
        ProxyTags {
            request: request.clone(),
            upstream_cluster: cluster.cloned(),
            status: o.status,
            grpc_status: o.grpc_status.map(|g| shared(g, &GRPC_CODES)),
            grpc_message: o.grpc_message.map(Box::from),
            flags: shared(
                o.flags,
                &["-", "UC", "UT", "UF", "UR", "UH", "UO", "NR", "FI", "DC", "URX"],
            ),
            request_bytes: o.request_bytes,
            response_bytes: o.response_bytes,
            error: is_error(o),
        }
    }
}

impl LazyTags for ProxyTags {
    fn tags(&self) -> Vec<Tag> {
        let r = &*self.request;
        let mut t = vec![
            tag("guid:x-request-id", &*r.request_id),
            tag("http.url", &*r.url),
            tag("http.method", &*r.method),
            tag("downstream_cluster", r.downstream_cluster.as_deref().unwrap_or("-")),
            tag("user_agent", r.user_agent.as_deref().unwrap_or("-")),
            tag("http.protocol", r.protocol),
            tag("peer.address", &*r.peer),
        ];
        if let Some(id) = &r.client_trace_id {
            t.push(tag("guid:x-client-trace-id", &**id));
        }
        if let Some(g) = &r.grpc {
            t.push(tag("grpc.path", &*g.path));
            t.push(tag("grpc.authority", &*g.authority));
            t.push(tag("grpc.content_type", &*g.content_type));
            if let Some(to) = &g.timeout {
                t.push(tag("grpc.timeout", &**to));
            }
        }
        t.push(tag("request_size", self.request_bytes.to_string()));
        t.push(tag("response_size", self.response_bytes.to_string()));
        if let Some(c) = &self.upstream_cluster {
            t.push(tag("upstream_cluster", &**c));
            t.push(tag("upstream_cluster.name", &**c));
        }
        t.push(tag("http.status_code", self.status.to_string()));
        t.push(tag("response_flags", &*self.flags));
        if let Some(code) = &self.grpc_status {
            t.push(tag("grpc.status_code", &**code));
            if let Some(m) = &self.grpc_message {
                t.push(tag("grpc.message", &**m));
            }
        }
        if self.error {
            t.push(tag("error", "true"));
        }
        t
    }

    fn get(&self, key: &str) -> Option<Value> {
        // The tags searches use most, without writing out the rest.
        match key {
            "guid:x-request-id" => Some(Value::from(&*self.request.request_id)),
            "http.status_code" => Some(Value::Str(self.status.to_string())),
            "response_flags" => Some(Value::from(&*self.flags)),
            "upstream_cluster" => self.upstream_cluster.as_deref().map(Value::from),
            "grpc.status_code" => self.grpc_status.as_deref().map(Value::from),
            "error" => self.error.then(|| Value::from("true")),
            _ => self.tags().into_iter().find(|(k, _)| k == key).map(|(_, v)| v),
        }
    }

    fn bytes(&self) -> usize {
        // The request's tags are shared with the request's other spans; each counts them, which
        // keeps the estimate on the safe side.
        std::mem::size_of::<Self>()
            + 16
            + self.request.bytes()
            + match &self.grpc_status {
                Some(Cow::Owned(s)) => string_bytes(s),
                _ => 0,
            }
            + self.grpc_message.as_deref().map_or(0, string_bytes)
            + match &self.flags {
                Cow::Owned(s) => string_bytes(s),
                Cow::Borrowed(_) => 0,
            }
    }
}

fn is_error(o: &Outcome<'_>) -> bool {
    o.status == 0 || o.status >= 500 || o.grpc_status.is_some_and(crate::grpc::is_upstream_error)
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

    fn tracer() -> (Tracer, Arc<crate::trace::store::Store>) {
        let store = Arc::new(crate::trace::store::Store::new(crate::trace::store::Limits::default()));
        let tracer = Tracer::new(
            &prometheus::Registry::new(),
            crate::trace::Sink::Store(store.clone()),
            16,
        )
        .unwrap();
        (tracer, store)
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
        let (tracer, store) = tracer();
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
            cluster: Arc::from("inbound|50051||"),
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
        std::thread::sleep(std::time::Duration::from_millis(2));
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

        let trace = store
            .find(&crate::trace::store::Query::default())
            .pop()
            .expect("one trace");
        assert_eq!(trace.spans.len(), 3);
        let by_id = |id: SpanId| trace.spans.iter().find(|s| s.span_id == id).expect("span").clone();
        let hop = by_id(hop_id);
        let mut attempts: Vec<_> = trace.spans.iter().filter(|s| s.span_id != hop_id).cloned().collect();
        attempts.sort_by_key(|s| s.start_unix_nanos);
        let (a1, a2) = (&attempts[0], &attempts[1]);
        assert_eq!(hop.parent, None);
        assert_eq!((a1.parent, a2.parent), (Some(hop_id), Some(hop_id)));
        assert_eq!((hop.kind, a1.kind), (Kind::Client, Kind::Server));
        assert_eq!(hop.process.service, "public-api-gateway-istio.gateway");
        assert_eq!(a1.process.service, "product-service.default");
        assert!(a1.is_error() && !a2.is_error(), "UNAVAILABLE is an upstream error");
        assert_eq!(a1.tag_text("response_flags").as_deref(), Some("UC"));
        assert_eq!(hop.tag_text("grpc.status_code").as_deref(), Some("0"));
        assert_eq!(
            hop.tag_text("http.url").as_deref(),
            Some("https://sit-gateway.tcex.com.vn/product.ProductService/GetProduct")
        );
        assert_eq!(hop.tag_text("guid:x-request-id").as_deref(), Some("r-1"));
        assert_eq!(
            hop.tag_text("upstream_cluster").as_deref(),
            Some("outbound|50051||product-service-v1.default.svc.cluster.local")
        );
        // Written out, the tags are Envoy's, in its order.
        let keys: Vec<String> = hop.all_tags().iter().map(|(k, _)| k.to_string()).collect();
        for k in [
            "guid:x-request-id",
            "http.url",
            "http.method",
            "downstream_cluster",
            "user_agent",
            "http.protocol",
            "peer.address",
            "grpc.path",
            "grpc.authority",
            "grpc.content_type",
            "request_size",
            "response_size",
            "upstream_cluster",
            "upstream_cluster.name",
            "http.status_code",
            "response_flags",
            "grpc.status_code",
            "node_id",
            "zone",
            "component",
            "istio.canonical_service",
            "istio.canonical_revision",
            "istio.namespace",
            "istio.mesh_id",
            "istio.cluster_id",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        assert!(!keys.iter().any(|x| x == "error"), "no error on an OK answer");
        assert_eq!(a1.tag_text("error").as_deref(), Some("true"));
        assert_eq!(a2.tag_text("upstream_cluster").as_deref(), Some("inbound|50051||"));
        assert_eq!(
            hop.tag_text("istio.canonical_service").as_deref(),
            Some("public-api-gateway-istio")
        );
        assert_eq!(a2.tag_text("istio.canonical_revision").as_deref(), Some("v1"));
    }

    #[test]
    fn a_proxy_that_does_not_report_sends_no_span_but_keeps_the_context() {
        let (tracer, store) = tracer();
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
        assert_eq!(store.stats().spans, 0);
    }
}
