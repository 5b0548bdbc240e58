//! OTLP/gRPC both ways: a receiver for the pods' spans (into the [`Store`]) and an exporter of
//! localmesh's own spans to the user's collector (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. Jaeger's
//! all-in-one on :4317).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pb;
use prost::Message as _;
use tokio::net::TcpListener;

use super::context::{SpanId, TraceId};
use super::span::{Event, Kind, Process, Span, Tag, Tags, Value};
use super::store::Store;

/// `--otlp-max-message`: the largest OTLP request the receiver takes (gRPC's usual 4 MiB; a pod's
/// batch of 512 spans is far smaller). A larger one is refused with OUT_OF_RANGE naming its size
/// and the limit (tonic's answer).
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;
/// Spans per export request, and the longest a span waits before it is sent.
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

fn value(v: AnyValue) -> Option<Value> {
    Some(match v.value? {
        any_value::Value::StringValue(s) => Value::Str(s),
        any_value::Value::BoolValue(b) => Value::Bool(b),
        any_value::Value::IntValue(i) => Value::Int(i),
        any_value::Value::DoubleValue(f) => Value::Float(f),
        // Arrays, maps and bytes are shown as text, as Jaeger shows them.
        other => Value::Str(format!("{other:?}")),
    })
}

/// The keys are moved, not shared: a received span lives only until the store packs it.
fn tags(kvs: Vec<KeyValue>) -> Vec<Tag> {
    kvs.into_iter()
        .filter_map(|kv| Some((Cow::Owned(kv.key), value(kv.value?)?)))
        .collect()
}

fn any(v: &Value) -> AnyValue {
    AnyValue {
        value: Some(match v {
            Value::Str(s) => any_value::Value::StringValue(s.clone()),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::Int(i) => any_value::Value::IntValue(*i),
            Value::Float(f) => any_value::Value::DoubleValue(*f),
        }),
    }
}

fn key_values<'a>(t: impl Iterator<Item = &'a Tag>) -> Vec<KeyValue> {
    t.map(|(k, v)| KeyValue {
        key: k.to_string(),
        value: Some(any(v)),
        ..Default::default()
    })
    .collect()
}

fn kind(k: i32) -> Kind {
    match pb::span::SpanKind::try_from(k) {
        Ok(pb::span::SpanKind::Internal) => Kind::Internal,
        Ok(pb::span::SpanKind::Server) => Kind::Server,
        Ok(pb::span::SpanKind::Client) => Kind::Client,
        Ok(pb::span::SpanKind::Producer) => Kind::Producer,
        Ok(pb::span::SpanKind::Consumer) => Kind::Consumer,
        _ => Kind::Unspecified,
    }
}

fn kind_pb(k: Kind) -> pb::span::SpanKind {
    match k {
        Kind::Unspecified => pb::span::SpanKind::Unspecified,
        Kind::Internal => pb::span::SpanKind::Internal,
        Kind::Server => pb::span::SpanKind::Server,
        Kind::Client => pb::span::SpanKind::Client,
        Kind::Producer => pb::span::SpanKind::Producer,
        Kind::Consumer => pb::span::SpanKind::Consumer,
    }
}

/// Interns processes by their encoded resource, so the spans of one pod share one [`Process`].
#[derive(Debug, Default)]
struct Processes(Mutex<HashMap<Vec<u8>, Arc<Process>>>);

/// More distinct resources than this and the table starts over (pods come and go).
const MAX_PROCESSES: usize = 1024;

impl Processes {
    fn get(&self, r: Option<&Resource>) -> Arc<Process> {
        let key = r.map(|r| r.encode_to_vec()).unwrap_or_default();
        let mut map = crate::lock(&self.0);
        if let Some(p) = map.get(&key) {
            return p.clone();
        }
        let mut t = r.map(|r| tags(r.attributes.clone())).unwrap_or_default();
        let service = t
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| t.remove(i).1.as_text().into_owned())
            .unwrap_or_else(|| "unknown_service".into());
        let p = Arc::new(Process {
            service,
            tags: t,
            span_tags: Vec::new(),
        });
        if map.len() >= MAX_PROCESSES {
            map.clear();
        }
        map.insert(key, p.clone());
        p
    }
}

/// The spans of an OTLP request; spans with invalid ids are dropped (and counted).
fn decode(req: ExportTraceServiceRequest, processes: &Processes) -> (Vec<Span>, usize) {
    let mut out = Vec::new();
    let mut rejected = 0;
    for rs in req.resource_spans {
        let process = processes.get(rs.resource.as_ref());
        for ss in rs.scope_spans {
            for s in ss.spans {
                let (Ok(trace), Ok(span)) = (
                    <[u8; 16]>::try_from(s.trace_id.as_slice()),
                    <[u8; 8]>::try_from(s.span_id.as_slice()),
                ) else {
                    rejected += 1;
                    continue;
                };
                let parent = <[u8; 8]>::try_from(s.parent_span_id.as_slice())
                    .ok()
                    .filter(|p| *p != [0; 8])
                    .map(SpanId);
                let status = s.status.unwrap_or_default();
                let error = status.code == pb::status::StatusCode::Error as i32;
                out.push(Span {
                    trace_id: TraceId(trace),
                    span_id: SpanId(span),
                    parent,
                    kind: kind(s.kind),
                    start_unix_nanos: s.start_time_unix_nano,
                    duration_nanos: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                    tags: Tags::Owned(tags(s.attributes)),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| Event {
                            time_unix_nanos: e.time_unix_nano,
                            name: e.name,
                            tags: tags(e.attributes),
                        })
                        .collect(),
                    error,
                    status_message: (!status.message.is_empty()).then_some(status.message),
                    name: s.name,
                    process: process.clone(),
                });
            }
        }
    }
    (out, rejected)
}

/// Spans as one OTLP request, one resource per process.
pub fn encode(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<Process>, Vec<pb::Span>)> = Vec::new();
    for s in spans {
        let span = pb::Span {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: kind_pb(s.kind) as i32,
            start_time_unix_nano: s.start_unix_nanos,
            end_time_unix_nano: s.end_unix_nanos(),
            attributes: key_values(s.all_tags().iter()),
            events: s
                .events
                .iter()
                .map(|e| pb::span::Event {
                    time_unix_nano: e.time_unix_nanos,
                    name: e.name.clone(),
                    attributes: key_values(e.tags.iter()),
                    dropped_attributes_count: 0,
                })
                .collect(),
            status: Some(pb::Status {
                code: if s.error {
                    pb::status::StatusCode::Error as i32
                } else {
                    pb::status::StatusCode::Unset as i32
                },
                message: s.status_message.clone().unwrap_or_default(),
            }),
            flags: 0x100 | 1,
            ..Default::default()
        };
        match groups.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &s.process)) {
            Some((_, v)) => v.push(span),
            None => groups.push((s.process.clone(), vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(p, spans)| {
                let mut attrs = vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(any(&Value::Str(p.service.clone()))),
                    ..Default::default()
                }];
                attrs.extend(key_values(p.tags.iter()));
                pb::ResourceSpans {
                    resource: Some(Resource {
                        attributes: attrs,
                        ..Default::default()
                    }),
                    scope_spans: vec![pb::ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "localmesh".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }
            })
            .collect(),
    }
}

struct Receiver {
    store: Arc<Store>,
    processes: Processes,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (spans, rejected) = decode(request.into_inner(), &self.processes);
        self.store.insert(spans);
        let partial =
            (rejected > 0).then(
                || opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                    error_message: "trace_id must be 16 bytes and span_id 8 bytes".into(),
                },
            );
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: partial,
        }))
    }
}

/// Serves OTLP/gRPC on `tcp` until the task is aborted; every span goes into `store`.
pub fn serve_receiver(
    store: Arc<Store>,
    tcp: TcpListener,
    max_message: usize,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = tcp.local_addr()?;
    let svc = TraceServiceServer::new(Receiver {
        store,
        processes: Processes::default(),
    })
    .max_decoding_message_size(max_message);
    let incoming = tonic::transport::server::TcpIncoming::from(tcp).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::warn!(error = %e, "the OTLP receiver stopped");
        }
    });
    Ok((addr, task))
}

/// Proxy spans waiting for the exporter, at most `cap` of them.
#[derive(Debug)]
pub struct Outbox {
    spans: Mutex<Vec<Span>>,
    cap: usize,
    full: tokio::sync::Notify,
}

impl Outbox {
    pub fn new(cap: usize) -> Self {
        Outbox {
            spans: Mutex::new(Vec::new()),
            cap,
            full: tokio::sync::Notify::new(),
        }
    }

    /// Queues a span; `false` when the queue is full (the span is dropped). The exporter is woken
    /// only when a batch is ready, not per span.
    pub fn push(&self, span: Span) -> bool {
        let mut spans = crate::lock(&self.spans);
        if spans.len() >= self.cap {
            return false;
        }
        spans.push(span);
        if spans.len() == BATCH {
            self.full.notify_one();
        }
        true
    }
}

/// Sends the outbox to an OTLP/gRPC collector every [`FLUSH_EVERY`], or as soon as [`BATCH`]
/// spans wait, until the task is aborted; what a collector that is down cannot take is dropped
/// (with a warning at most every 30 s), as Envoy does.
pub async fn export(outbox: Arc<Outbox>, endpoint: String) {
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.timeout(EXPORT_TIMEOUT).connect_lazy(),
        Err(e) => {
            tracing::error!(endpoint, error = %e, "not an OTLP endpoint URL; spans are dropped");
            return;
        }
    };
    let mut client = TraceServiceClient::new(channel);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = outbox.full.notified() => {}
            () = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        let spans = super::take_all(&outbox.spans);
        for batch in spans.chunks(BATCH) {
            if let Err(e) = client.export(encode(batch)).await
                && warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30))
            {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(endpoint, error = %e, "exporting spans failed; they are dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_survives_encoding_and_decoding() {
        let p = Arc::new(Process {
            service: "frontend.default".into(),
            tags: vec![("k8s.pod.name".into(), Value::from("frontend-0"))],
            span_tags: vec![("component".into(), Value::from("proxy"))],
        });
        let s = Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            parent: Some(SpanId([3; 8])),
            name: "frontend.default.svc.cluster.local:8080/*".into(),
            kind: Kind::Server,
            start_unix_nanos: 1_000,
            duration_nanos: 500,
            tags: Tags::Owned(vec![("http.status_code".into(), Value::from("200"))]),
            events: Vec::new(),
            error: true,
            status_message: None,
            process: p,
        };
        let (back, rejected) = decode(encode(std::slice::from_ref(&s)), &Processes::default());
        assert_eq!(rejected, 0);
        let b = &back[0];
        assert_eq!((b.trace_id, b.span_id, b.parent), (s.trace_id, s.span_id, s.parent));
        assert_eq!((b.kind, b.duration_nanos, b.error), (Kind::Server, 500, true));
        assert_eq!(b.process.service, "frontend.default");
        assert_eq!(
            b.tag_text("component").as_deref(),
            Some("proxy"),
            "per-process span tags go on each span"
        );
        assert_eq!(b.process.tag("k8s.pod.name"), Some(&Value::from("frontend-0")));
    }

    #[test]
    fn spans_with_bad_ids_are_rejected() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![pb::ResourceSpans {
                scope_spans: vec![pb::ScopeSpans {
                    spans: vec![pb::Span {
                        trace_id: vec![1; 3],
                        span_id: vec![2; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (spans, rejected) = decode(req, &Processes::default());
        assert!(spans.is_empty());
        assert_eq!(rejected, 1);
    }

    #[tokio::test]
    async fn the_receiver_stores_spans_and_refuses_a_request_over_its_limit() {
        let store = Arc::new(Store::default());
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, task) = serve_receiver(store.clone(), tcp, 1 << 20).expect("receiver");
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let request = |note: &str| {
            let mut span = pb::Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "GetProduct".into(),
                ..Default::default()
            };
            span.attributes.push(KeyValue {
                key: "note".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(note.into())),
                }),
                ..Default::default()
            });
            ExportTraceServiceRequest {
                resource_spans: vec![pb::ResourceSpans {
                    scope_spans: vec![pb::ScopeSpans {
                        spans: vec![span],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
        };
        client.export(request("small")).await.expect("a small export");
        assert_eq!(store.stats().spans, 1);
        let err = client
            .export(request(&"x".repeat(2 << 20)))
            .await
            .expect_err("2 MiB over a 1 MiB limit");
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
        assert!(err.message().contains("limit"), "says the limit: {err}");
        assert_eq!(store.stats().spans, 1, "nothing of the refused request is kept");
        task.abort();
    }
}
