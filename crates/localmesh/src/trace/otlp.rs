//! OTLP/gRPC out: the exporter of localmesh's own spans to the user's collector
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. Jaeger's all-in-one on :4317). The pods' spans come in
//! through [`super::receive`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pb;

use super::span::{Process, Span, Tag, Value};

/// `--otlp-max-message`: the largest OTLP request the receiver takes (gRPC's usual 4 MiB; a pod's
/// batch of 512 spans is far smaller). A larger one is refused with OUT_OF_RANGE naming its size
/// and the limit (tonic's answer).
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;
/// Spans per export request, and the longest a span waits before it is sent.
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// An attribute value as a tag value.
pub(crate) fn value(v: any_value::Value) -> Value {
    match v {
        any_value::Value::StringValue(s) => Value::Str(s),
        any_value::Value::BoolValue(b) => Value::Bool(b),
        any_value::Value::IntValue(i) => Value::Int(i),
        any_value::Value::DoubleValue(f) => Value::Float(f),
        // Arrays, maps and bytes are shown as text, as Jaeger shows them.
        other => Value::Str(format!("{other:?}")),
    }
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

/// Spans as one OTLP request, one resource per process.
pub fn encode(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<Process>, Vec<pb::Span>)> = Vec::new();
    for s in spans {
        let span = pb::Span {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: i32::from(s.kind as u8),
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
