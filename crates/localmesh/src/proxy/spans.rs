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
use crate::trace::packed;
use crate::trace::span::{Kind, LazyTags, Process, Span, Tags, ValueRef, now_unix_nanos};
use crate::trace::store::{Packed, PackedSpan};
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

/// The request values the tags carry, in [`RequestTags`]' text.
#[derive(Debug, Clone, Copy)]
enum Field {
    RequestId,
    /// `<scheme>://<authority><path>`, cut at [`MAX_PATH_TAG`].
    Url,
    Method,
    Peer,
    DownstreamCluster,
    UserAgent,
    ClientTraceId,
    GrpcPath,
    GrpcAuthority,
    GrpcContentType,
    GrpcTimeout,
}

const FIELDS: usize = 11;

/// The tags every span of one request shares, made once per recorded request: the values back to
/// back in one string (one allocation instead of one per value).
#[derive(Debug, Default)]
pub(crate) struct RequestTags {
    text: String,
    /// Where each field's value starts and ends in `text`; `None` when the request has none.
    ranges: [Option<(u32, u32)>; FIELDS],
    protocol: &'static str,
    grpc: bool,
}

impl RequestTags {
    fn new(r: &RequestInfo<'_>) -> Self {
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
        let mut t = RequestTags {
            text: String::with_capacity(256),
            protocol: r.protocol,
            grpc: r.grpc,
            ..RequestTags::default()
        };
        t.push(Field::RequestId, &[r.request_id]);
        t.push(Field::Url, &[r.scheme, "://", r.authority, r.path]);
        t.push(Field::Method, &[r.method]);
        t.push(Field::Peer, &[r.peer]);
        if let Some(v) = header("x-envoy-downstream-service-cluster") {
            t.push(Field::DownstreamCluster, &[v]);
        }
        if let Some(v) = header("user-agent") {
            t.push(Field::UserAgent, &[v]);
        }
        if let Some(v) = header("x-client-trace-id") {
            t.push(Field::ClientTraceId, &[v]);
        }
        if r.grpc {
            t.push(Field::GrpcPath, &[r.path]);
            t.push(Field::GrpcAuthority, &[r.authority]);
            t.push(Field::GrpcContentType, &[header("content-type").unwrap_or_default()]);
            if let Some(v) = header("grpc-timeout") {
                t.push(Field::GrpcTimeout, &[v]);
            }
        }
        t
    }

    fn push(&mut self, f: Field, parts: &[&str]) {
        let start = self.text.len();
        for p in parts {
            self.text.push_str(p);
        }
        if let Field::Url = f {
            let mut cut = start + MAX_PATH_TAG;
            if self.text.len() > cut {
                while !self.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.text.truncate(cut);
            }
        }
        if let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(self.text.len())) {
            self.ranges[f as usize] = Some((a, b));
        }
    }

    fn get(&self, f: Field) -> Option<&str> {
        let (a, b) = self.ranges[f as usize]?;
        self.text.get(a as usize..b as usize)
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
        }
    }
}

impl LazyTags for ProxyTags {
    fn visit(&self, f: &mut dyn FnMut(&str, ValueRef<'_>)) {
        let outcome = Outcome {
            status: self.status,
            grpc_status: self.grpc_status.as_deref(),
            grpc_message: self.grpc_message.as_deref(),
            flags: &self.flags,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        };
        visit_tags(&self.request, self.upstream_cluster.as_deref(), &outcome, f);
    }
}

/// A proxy span's tags, in the order Envoy writes them.
fn visit_tags(r: &RequestTags, cluster: Option<&str>, o: &Outcome<'_>, f: &mut dyn FnMut(&str, ValueRef<'_>)) {
    let mut put = |k: &str, v: &str| f(k, ValueRef::Str(v));
    put("guid:x-request-id", r.get(Field::RequestId).unwrap_or_default());
    put("http.url", r.get(Field::Url).unwrap_or_default());
    put("http.method", r.get(Field::Method).unwrap_or_default());
    put("downstream_cluster", r.get(Field::DownstreamCluster).unwrap_or("-"));
    put("user_agent", r.get(Field::UserAgent).unwrap_or("-"));
    put("http.protocol", r.protocol);
    put("peer.address", r.get(Field::Peer).unwrap_or_default());
    if let Some(id) = r.get(Field::ClientTraceId) {
        put("guid:x-client-trace-id", id);
    }
    if r.grpc {
        put("grpc.path", r.get(Field::GrpcPath).unwrap_or_default());
        put("grpc.authority", r.get(Field::GrpcAuthority).unwrap_or_default());
        put("grpc.content_type", r.get(Field::GrpcContentType).unwrap_or_default());
        if let Some(to) = r.get(Field::GrpcTimeout) {
            put("grpc.timeout", to);
        }
    }
    // Envoy writes sizes and the status as strings.
    let mut n = itoa::Buffer::new();
    put("request_size", n.format(o.request_bytes));
    put("response_size", n.format(o.response_bytes));
    if let Some(c) = cluster {
        put("upstream_cluster", c);
        put("upstream_cluster.name", c);
    }
    put("http.status_code", n.format(o.status));
    put("response_flags", o.flags);
    if let Some(code) = o.grpc_status {
        put("grpc.status_code", code);
        if let Some(m) = o.grpc_message {
            put("grpc.message", m);
        }
    }
    if is_error(o) {
        put("error", "true");
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

    /// The store's packed spans and the exported spans' lazy tags are written by one function;
    /// this keeps the two paths from drifting apart.
    #[test]
    fn packed_and_exported_proxy_spans_carry_the_same_tags() {
        let (tracer, store) = tracer();
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static("grpcurl/1.8.6"));
        h.insert("grpc-timeout", HeaderValue::from_static("5S"));
        let on = ProxyTracing {
            sampling: 100.0,
            report: true,
        };
        let cluster = "outbound|50051|v2|product-service.default.svc.cluster.local";
        let mut t = RequestTrace::start(&HeaderMap::new(), &gateway(), on, false);
        t.describe(&info(&h), || "op".into());
        t.set_upstream_cluster(cluster.into());
        let failed = Outcome {
            status: 200,
            grpc_status: Some("14"),
            grpc_message: Some("upstream connect error"),
            flags: "URX",
            request_bytes: 12,
            response_bytes: 0,
        };
        t.finish(&tracer, &failed);
        let packed = store
            .find(&crate::trace::store::Query::default())
            .pop()
            .expect("one trace");
        let lazy = ProxyTags::new(
            &Arc::new(RequestTags::new(&info(&h))),
            Some(&Arc::from(cluster)),
            &failed,
        );
        let want = lazy.tags();
        let Tags::Owned(got) = &packed.spans[0].tags else {
            panic!("the store gives spans as read");
        };
        assert_eq!(got, &want);
        let text = |key: &str| packed.spans[0].tag_text(key);
        assert_eq!(text("grpc.message").as_deref(), Some("upstream connect error"));
        assert_eq!(text("user_agent").as_deref(), Some("grpcurl/1.8.6"));
        assert_eq!(text("error").as_deref(), Some("true"), "UNAVAILABLE is an error");
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
        t.set_upstream_cluster("outbound|50051||product-service-v1.default.svc.cluster.local".into());
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
    fn an_attempt_of_a_request_dropped_before_its_end_is_still_reported() {
        let (tracer, store) = tracer();
        let h = HeaderMap::new();
        let on = ProxyTracing {
            sampling: 100.0,
            report: true,
        };
        let mut t = RequestTrace::start(&h, &gateway(), on, false);
        t.describe(&info(&h), || "op".into());
        let to = Inbound {
            identity: Arc::new(gateway()),
            tracing: on,
            operation: "product-service.default.svc.cluster.local:50051/*".into(),
            cluster: Arc::from("inbound|50051||"),
        };
        let attempt = t.attempt();
        let id = attempt.span_id;
        t.finish_attempt(&tracer, attempt, &to, &Outcome::default());
        assert_eq!(store.stats().spans, 0, "held until the hop span ends");
        drop(t);
        let trace = store
            .find(&crate::trace::store::Query::default())
            .pop()
            .expect("one trace");
        assert_eq!(trace.spans.iter().map(|s| s.span_id).collect::<Vec<_>>(), [id]);
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
