//! The pods' span exporter: OTLP/gRPC `TraceService/Export`, encoded straight from the SDK's
//! `SpanData`.
//!
//! opentelemetry-otlp's exporter deep-copies every batch (kept for its retries), converts it into
//! the generated protobuf types (a `String` per attribute key and value) and then encodes those:
//! three copies of every span. At 100 % sampling that memory churn cost a pod more than recording
//! the spans did. This exporter writes the same protobuf message (the OTLP schema,
//! `opentelemetry/proto/trace/v1/trace.proto`) from the batch in place into one reused buffer
//! and sends it on a tonic channel as bytes, retrying what the OTLP specification calls
//! retryable within the export timeout, as opentelemetry-otlp does.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends encoded `ExportTraceServiceRequest`s to one OTLP/gRPC receiver.
#[derive(Debug)]
pub struct OtlpExporter {
    channel: Channel,
    timeout: Duration,
    /// The encoded `Resource` message (set by the provider before the first export).
    resource: Vec<u8>,
    schema_url: Option<String>,
    /// Reused between batches: the request, and one span while it is written.
    buffers: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl OtlpExporter {
    /// A lazily connecting exporter (call inside a Tokio runtime, as tonic's channel needs).
    pub fn new(endpoint: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut ep = Endpoint::from_shared(endpoint.to_string())?.timeout(timeout);
        if endpoint.starts_with("https://") {
            // A collector behind a public certificate (the web PKI's roots).
            ep = ep.tls_config(ClientTlsConfig::new().with_webpki_roots())?;
        }
        let channel = ep.connect_lazy();
        Ok(OtlpExporter {
            channel,
            timeout,
            resource: Vec::new(),
            schema_url: None,
            buffers: Mutex::default(),
        })
    }

    /// `ExportTraceServiceRequest { resource_spans: [ResourceSpans { resource, scope_spans }] }`,
    /// one `ScopeSpans` per instrumentation scope in order of first appearance. Each scope's spans
    /// are written once; the enclosing messages' lengths are computed, not copied around.
    fn encode(&self, batch: &[SpanData]) -> Bytes {
        let mut bufs = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let (request, scratch) = &mut *bufs;
        let mut groups: Vec<(Vec<u8>, Vec<u8>, Option<&str>)> = Vec::new();
        let mut done = vec![false; batch.len()];
        for first in 0..batch.len() {
            if done[first] {
                continue;
            }
            let scope = &batch[first].instrumentation_scope;
            let mut spans = Vec::with_capacity(256 * (batch.len() - first));
            for (i, span) in batch.iter().enumerate().skip(first) {
                if !done[i] && span.instrumentation_scope == *scope {
                    done[i] = true;
                    encode_span(span, scratch);
                    message(&mut spans, 2, scratch);
                }
            }
            let mut head = Vec::new();
            string(&mut head, 1, scope.name());
            if let Some(v) = scope.version() {
                string(&mut head, 2, v);
            }
            for kv in scope.attributes() {
                key_value(&mut head, 3, kv);
            }
            groups.push((head, spans, scope.schema_url()));
        }
        let scope_len = |(head, spans, url): &(Vec<u8>, Vec<u8>, Option<&str>)| {
            field_len(1, head.len()) + spans.len() + url.map_or(0, |u| field_len(3, u.len()))
        };
        let resource_len = field_len(1, self.resource.len())
            + groups.iter().map(|g| field_len(2, scope_len(g))).sum::<usize>()
            + self.schema_url.as_ref().map_or(0, |u| field_len(3, u.len()));
        request.clear();
        request.reserve(field_len(1, resource_len));
        length_delimited(request, 1, resource_len);
        message(request, 1, &self.resource);
        for g in &groups {
            length_delimited(request, 2, scope_len(g));
            message(request, 1, &g.0);
            request.extend_from_slice(&g.1);
            if let Some(url) = g.2 {
                string(request, 3, url);
            }
        }
        if let Some(url) = &self.schema_url {
            string(request, 3, url);
        }
        Bytes::copy_from_slice(request)
    }
}

impl OtlpExporter {
    async fn send(&self, body: Bytes) -> Result<(), tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("OTLP receiver not reachable: {e}")))?;
        let mut req = tonic::Request::new(body);
        req.set_timeout(self.timeout);
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        grpc.unary(req, path, RawCodec).await.map(drop)
    }
}

/// Codes after which the same request may succeed (the OTLP specification's "Failures":
/// <https://opentelemetry.io/docs/specs/otlp/#failures>). RESOURCE_EXHAUSTED is retryable only
/// with a server's RetryInfo, which this exporter does not read: it is treated as final.
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss
    )
}

/// The first backoff after a retryable failure; it doubles, within the export timeout.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RETRIES: u32 = 3;

/// The SDK's batch processor runs exports on its own thread, outside Tokio: a Tokio sleep would
/// have no timer there.
async fn backoff(d: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(d).await;
    } else {
        std::thread::sleep(d);
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let body = self.encode(&batch);
        drop(batch);
        let deadline = Instant::now() + self.timeout;
        let mut delay = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            match self.send(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(status) => {
                    let fail = || {
                        OTelSdkError::InternalFailure(format!(
                            "OTLP export failed after {} retries: {:?}: {}",
                            retries,
                            status.code(),
                            status.message()
                        ))
                    };
                    if !retryable(status.code()) || retries >= MAX_RETRIES || Instant::now() + delay >= deadline {
                        return Err(fail());
                    }
                    backoff(delay).await;
                    delay *= 2;
                    retries += 1;
                }
            }
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource.clear();
        for (k, v) in resource.iter() {
            key_value(&mut self.resource, 1, &KeyValue::new(k.clone(), v.clone()));
        }
        self.schema_url = resource.schema_url().map(str::to_string);
    }
}

/// Request bodies already encoded; the response's bytes are not needed.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// The encoded size of a length-delimited field whose body is `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field; its body follows.
fn length_delimited(buf: &mut impl BufMut, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn message(buf: &mut impl BufMut, tag: u32, body: &[u8]) {
    length_delimited(buf, tag, body.len());
    buf.put_slice(body);
}

fn string(buf: &mut impl BufMut, tag: u32, s: &str) {
    message(buf, tag, s.as_bytes());
}

fn fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.put_u64_le(v);
}

fn varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A `Span` message's fields into `b` (cleared first).
fn encode_span(s: &SpanData, b: &mut Vec<u8>) {
    b.clear();
    let b = &mut *b;
    let ctx = &s.span_context;
    message(b, 1, &ctx.trace_id().to_bytes());
    message(b, 2, &ctx.span_id().to_bytes());
    let state = ctx.trace_state().header();
    if !state.is_empty() {
        string(b, 3, &state);
    }
    if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        message(b, 4, &s.parent_span_id.to_bytes());
    }
    string(b, 5, &s.name);
    let kind = match s.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    varint(b, 6, kind);
    fixed64(b, 7, unix_nanos(s.start_time));
    fixed64(b, 8, unix_nanos(s.end_time));
    for kv in &s.attributes {
        key_value(b, 9, kv);
    }
    varint(b, 10, u64::from(s.dropped_attributes_count));
    for e in s.events.iter() {
        let mut m = Vec::new();
        fixed64(&mut m, 1, unix_nanos(e.timestamp));
        string(&mut m, 2, &e.name);
        for kv in &e.attributes {
            key_value(&mut m, 3, kv);
        }
        varint(&mut m, 4, u64::from(e.dropped_attributes_count));
        message(b, 11, &m);
    }
    varint(b, 12, u64::from(s.events.dropped_count));
    for l in s.links.iter() {
        let mut m = Vec::new();
        message(&mut m, 1, &l.span_context.trace_id().to_bytes());
        message(&mut m, 2, &l.span_context.span_id().to_bytes());
        let state = l.span_context.trace_state().header();
        if !state.is_empty() {
            string(&mut m, 3, &state);
        }
        for kv in &l.attributes {
            key_value(&mut m, 4, kv);
        }
        varint(&mut m, 5, u64::from(l.dropped_attributes_count));
        encode_key(6, WireType::ThirtyTwoBit, &mut m);
        m.put_u32_le(span_flags(&l.span_context, l.span_context.is_remote()));
        message(b, 13, &m);
    }
    varint(b, 14, u64::from(s.links.dropped_count));
    let (code, description) = match &s.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    // Always present, as opentelemetry-proto writes it (an unset status is an empty message).
    let mut m = Vec::new();
    if !description.is_empty() {
        string(&mut m, 2, description);
    }
    varint(&mut m, 3, code);
    message(b, 15, &m);
    encode_key(16, WireType::ThirtyTwoBit, b);
    b.put_u32_le(span_flags(ctx, s.parent_span_is_remote));
}

/// OTLP's `SpanFlags`: the W3C trace flags, and whether the parent (or linked) context is remote,
/// as opentelemetry-proto's `build_span_flags` writes them.
fn span_flags(ctx: &opentelemetry::trace::SpanContext, remote: bool) -> u32 {
    let has_is_remote = 0x100;
    let is_remote = 0x200;
    u32::from(ctx.trace_flags().to_u8()) | has_is_remote | if remote { is_remote } else { 0 }
}

fn key_value(buf: &mut Vec<u8>, tag: u32, kv: &KeyValue) {
    let key = kv.key.as_str();
    let value_len = |n: usize| field_len(1, key.len()) + field_len(2, n);
    match &kv.value {
        // Scalars' sizes are known: no scratch buffer.
        Value::String(v) => {
            let v = v.as_str();
            length_delimited(buf, tag, value_len(field_len(1, v.len())));
            string(buf, 1, key);
            length_delimited(buf, 2, field_len(1, v.len()));
            string(buf, 1, v);
        }
        Value::I64(_) | Value::Bool(_) | Value::F64(_) => {
            let mut v = [0u8; 11];
            let mut w = &mut v[..];
            any_value(&mut w, &kv.value);
            let n = 11 - w.len();
            length_delimited(buf, tag, value_len(n));
            string(buf, 1, key);
            message(buf, 2, &v[..n]);
        }
        other => {
            let mut v = Vec::new();
            any_value(&mut v, other);
            length_delimited(buf, tag, value_len(v.len()));
            string(buf, 1, key);
            message(buf, 2, &v);
        }
    }
}

/// `AnyValue`'s fields (without its own length).
fn any_value(buf: &mut impl BufMut, v: &Value) {
    match v {
        Value::String(s) => string(buf, 1, s.as_str()),
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            encode_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.put_f64_le(*f);
        }
        Value::Array(a) => {
            let mut values = Vec::new();
            let mut item = |v: Value| {
                let mut m = Vec::new();
                any_value(&mut m, &v);
                message(&mut values, 1, &m);
            };
            match a {
                Array::Bool(xs) => xs.iter().for_each(|x| item(Value::Bool(*x))),
                Array::I64(xs) => xs.iter().for_each(|x| item(Value::I64(*x))),
                Array::F64(xs) => xs.iter().for_each(|x| item(Value::F64(*x))),
                Array::String(xs) => xs.iter().for_each(|x| item(Value::String(x.clone()))),
                _ => {}
            }
            message(buf, 5, &values);
        }
        _ => string(buf, 1, &v.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn span(n: u8, scope: &InstrumentationScope) -> SpanData {
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        let ctx = SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            if n.is_multiple_of(2) { state } else { TraceState::NONE },
        );
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        if n == 1 {
            events.events.push(opentelemetry::trace::Event::new(
                "retrying",
                UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
                vec![KeyValue::new("attempt", 2)],
                1,
            ));
            events.dropped_count = 3;
            links.links.push(opentelemetry::trace::Link::new(
                SpanContext::new(
                    TraceId::from_bytes([9; 16]),
                    SpanId::from_bytes([9; 8]),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::NONE,
                ),
                vec![KeyValue::new("kind", "follows")],
                0,
            ));
        }
        SpanData {
            span_context: ctx,
            parent_span_id: if n == 0 {
                SpanId::INVALID
            } else {
                SpanId::from_bytes([7; 8])
            },
            parent_span_is_remote: n == 1,
            span_kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][usize::from(n % 3)].clone(),
            name: Cow::Owned(format!("product.ProductService/GetProduct-{n}")),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + u64::from(n)),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_500_000_000),
            attributes: vec![
                KeyValue::new("rpc.method", "GetProduct"),
                KeyValue::new("rpc.grpc.status_code", 14_i64),
                KeyValue::new("negative", -1_i64),
                KeyValue::new("sampled", true),
                KeyValue::new("ratio", 0.25_f64),
                KeyValue::new("ids", Value::Array(Array::I64(vec![1, 300]))),
                KeyValue::new(
                    "names",
                    Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("é")])),
                ),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("weights", Value::Array(Array::F64(vec![0.8, 0.2]))),
            ],
            dropped_attributes_count: u32::from(n),
            events,
            links,
            status: match n {
                0 => Status::Unset,
                1 => Status::error("upstream connect error"),
                _ => Status::Ok,
            },
            instrumentation_scope: scope.clone(),
        }
    }

    /// What opentelemetry-otlp would have sent for the same batch.
    fn reference(batch: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &ResourceAttributesWithSchema::from(resource)),
        }
    }

    #[tokio::test]
    async fn encodes_the_message_opentelemetry_proto_builds() {
        let resource = Resource::builder_empty()
            .with_schema_url(
                [KeyValue::new("service.name", "product")],
                "https://opentelemetry.io/schemas/1.21.0",
            )
            .build();
        let scope = InstrumentationScope::builder("telemetry")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.21.0")
            .with_attributes([KeyValue::new("library", "tracing-opentelemetry")])
            .build();
        let mut exporter = OtlpExporter::new("http://127.0.0.1:4317", Duration::from_secs(1)).unwrap();
        exporter.set_resource(&resource);
        let batch: Vec<SpanData> = (0..3).map(|n| span(n, &scope)).collect();
        let ours = ExportTraceServiceRequest::decode(exporter.encode(&batch)).unwrap();
        assert_eq!(ours, reference(batch, &resource));
    }

    #[tokio::test]
    async fn one_scope_spans_per_instrumentation_scope_in_first_seen_order() {
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "order")])
            .build();
        let a = InstrumentationScope::builder("telemetry").build();
        let b = InstrumentationScope::builder("sqlx").build();
        let mut exporter = OtlpExporter::new("http://127.0.0.1:4317", Duration::from_secs(1)).unwrap();
        exporter.set_resource(&resource);
        let batch = vec![span(0, &a), span(1, &b), span(2, &a)];
        let ours = ExportTraceServiceRequest::decode(exporter.encode(&batch)).unwrap();
        let rs = &ours.resource_spans;
        assert_eq!(rs.len(), 1);
        let scopes: Vec<(&str, usize)> = rs[0]
            .scope_spans
            .iter()
            .map(|s| (s.scope.as_ref().unwrap().name.as_str(), s.spans.len()))
            .collect();
        assert_eq!(scopes, [("telemetry", 2), ("sqlx", 1)]);
        let mut want = reference(batch, &resource);
        want.resource_spans[0]
            .scope_spans
            .sort_by_key(|s| s.scope.as_ref().unwrap().name != "telemetry");
        assert_eq!(ours, want);
    }

    /// Exports one span to a real tonic collector that answers its first `failures` calls with
    /// `code`; returns the result, the calls it saw and what it accepted.
    async fn export_to(failures: usize, code: tonic::Code) -> (OTelSdkResult, usize, Vec<ExportTraceServiceRequest>) {
        let collector = testkit::otlp::Collector::failing(failures, code).await;
        let mut exporter = OtlpExporter::new(&collector.endpoint(), Duration::from_secs(3)).unwrap();
        exporter.set_resource(&Resource::builder_empty().with_service_name("product").build());
        let scope = InstrumentationScope::builder("telemetry").build();
        let result = exporter.export(vec![span(0, &scope)]).await;
        (result, collector.calls(), collector.requests())
    }

    #[tokio::test]
    async fn a_batch_reaches_a_collector_after_retryable_failures() {
        let (result, calls, got) = export_to(2, tonic::Code::Unavailable).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls, 3, "two UNAVAILABLE answers, then the batch is accepted");
        assert_eq!(got.len(), 1);
        let spans = &got[0].resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].name, "product.ProductService/GetProduct-0");
    }

    #[tokio::test]
    async fn a_rejected_batch_is_not_sent_again() {
        let (result, calls, got) = export_to(1, tonic::Code::InvalidArgument).await;
        let err = result.expect_err("INVALID_ARGUMENT is final").to_string();
        assert!(err.contains("InvalidArgument") && err.contains("not now"), "{err}");
        assert_eq!((calls, got.len()), (1, 0));
    }
}
