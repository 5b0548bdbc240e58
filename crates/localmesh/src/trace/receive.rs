//! The OTLP/gRPC receiver for the pods' spans. It reads each export request in place, straight
//! from the protobuf wire format into the store's packed form: a pod's batch of spans costs no
//! allocation per span, attribute or string (decoding it into OTLP's message types first was the
//! largest part of receiving).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use prost::encoding::{WireType, decode_key, decode_varint};
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::context::{SpanId, TraceId};
use super::packed::{self, Header};
use super::span::{Kind, Process, ValueRef};
use super::store::{Packed, PackedSpan, Store};

const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One protobuf field's value, borrowed from the message.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Skipped: OTLP's 32-bit fields (span flags) are not kept.
    Fixed32,
    Bytes(&'a [u8]),
}

/// The fields of one message, in wire order. A malformed message ends with an error naming what
/// was wrong.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u32, Field<'_>), String>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let next = (|| {
            let (tag, wire) = decode_key(&mut buf).map_err(|e| e.to_string())?;
            let value = match wire {
                WireType::Varint => Field::Varint(decode_varint(&mut buf).map_err(|e| e.to_string())?),
                WireType::SixtyFourBit => {
                    let (b, rest) = buf.split_at_checked(8).ok_or("a 64-bit field is cut short")?;
                    buf = rest;
                    Field::Fixed64(u64::from_le_bytes(
                        b.try_into().map_err(|_| "a 64-bit field is cut short")?,
                    ))
                }
                WireType::ThirtyTwoBit => {
                    buf = buf.get(4..).ok_or("a 32-bit field is cut short")?;
                    Field::Fixed32
                }
                WireType::LengthDelimited => {
                    let n = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                    let n = usize::try_from(n).map_err(|_| "a length is too large")?;
                    let (b, rest) = buf.split_at_checked(n).ok_or("a length-delimited field is cut short")?;
                    buf = rest;
                    Field::Bytes(b)
                }
                WireType::StartGroup | WireType::EndGroup => return Err("groups are not used by OTLP".to_string()),
            };
            Ok((tag, value))
        })();
        if next.is_err() {
            buf = &[];
        }
        Some(next)
    })
}

fn text<'a>(b: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
}

/// Interns processes by their encoded resource, so the spans of one pod share one [`Process`].
#[derive(Debug, Default)]
struct Processes(Mutex<HashMap<Vec<u8>, Arc<Process>>>);

/// More distinct resources than this and the table starts over (pods come and go).
const MAX_PROCESSES: usize = 1024;

impl Processes {
    fn get(&self, resource: &[u8]) -> Result<Arc<Process>, String> {
        let mut map = crate::lock(&self.0);
        if let Some(p) = map.get(resource) {
            return Ok(p.clone());
        }
        let r = Resource::decode(resource).map_err(|e| format!("resource: {e}"))?;
        let mut service = None;
        let mut tags = Vec::new();
        for kv in r.attributes {
            let Some(v) = kv.value.and_then(|v| v.value) else {
                continue;
            };
            let v = super::otlp::value(v);
            if kv.key == "service.name" && service.is_none() {
                service = Some(v.as_text().into_owned());
            } else {
                tags.push((kv.key.into(), v));
            }
        }
        let p = Arc::new(Process {
            service: service.unwrap_or_else(|| "unknown_service".into()),
            tags,
            span_tags: Vec::new(),
        });
        if map.len() >= MAX_PROCESSES {
            map.clear();
        }
        map.insert(resource.to_vec(), p.clone());
        Ok(p)
    }
}

/// Writes one `KeyValue` as a tag; one without a value is skipped, as OTLP receivers do.
fn put_attribute(out: &mut Vec<u8>, kv: &[u8]) -> Result<(), String> {
    let mut key = "";
    let mut value = None;
    for f in fields(kv) {
        match f? {
            (1, Field::Bytes(b)) => key = text(b, "an attribute key")?,
            (2, Field::Bytes(b)) => value = Some(b),
            _ => {}
        }
    }
    let Some(any) = value else {
        return Ok(());
    };
    let mut v = None;
    for f in fields(any) {
        v = match f? {
            (1, Field::Bytes(b)) => Some(ValueRef::Str(text(b, "a string attribute")?)),
            (2, Field::Varint(b)) => Some(ValueRef::Bool(b != 0)),
            (3, Field::Varint(i)) => Some(ValueRef::Int(i as i64)),
            (4, Field::Fixed64(f)) => Some(ValueRef::Float(f64::from_bits(f))),
            // Arrays, maps and bytes are shown as text, as Jaeger shows them.
            (5..=7, Field::Bytes(_)) => {
                let decoded = AnyValue::decode(any).map_err(|e| format!("attribute {key}: {e}"))?;
                if let Some(other) = decoded.value {
                    let shown = super::otlp::value(other);
                    packed::put_tag(out, key, shown.as_ref());
                }
                return Ok(());
            }
            _ => v,
        };
    }
    if let Some(v) = v {
        packed::put_tag(out, key, v);
    }
    Ok(())
}

fn put_attributes(out: &mut Vec<u8>, attrs: &[&[u8]]) -> Result<(), String> {
    attrs.iter().try_for_each(|kv| put_attribute(out, kv))
}

/// The parts of one span, collected before it is packed (protobuf fields come in any order).
#[derive(Default)]
struct SpanFields<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent: &'a [u8],
    name: &'a [u8],
    kind: u64,
    start: u64,
    end: u64,
    status: &'a [u8],
    attributes: Vec<&'a [u8]>,
    events: Vec<&'a [u8]>,
}

/// Packs one `Span` message; `Ok(false)` when its ids are not valid (the span is rejected).
/// `s` is the previous span's parts, reused so that a batch allocates them once.
fn put_span<'a>(
    batch: &mut Packed,
    process: &Arc<Process>,
    span: &'a [u8],
    s: &mut SpanFields<'a>,
) -> Result<bool, String> {
    let (mut attributes, mut events) = (std::mem::take(&mut s.attributes), std::mem::take(&mut s.events));
    attributes.clear();
    events.clear();
    *s = SpanFields {
        attributes,
        events,
        ..SpanFields::default()
    };
    for f in fields(span) {
        match f? {
            (1, Field::Bytes(b)) => s.trace_id = b,
            (2, Field::Bytes(b)) => s.span_id = b,
            (4, Field::Bytes(b)) => s.parent = b,
            (5, Field::Bytes(b)) => s.name = b,
            (6, Field::Varint(k)) => s.kind = k,
            (7, Field::Fixed64(t)) => s.start = t,
            (8, Field::Fixed64(t)) => s.end = t,
            (9, Field::Bytes(b)) => s.attributes.push(b),
            (11, Field::Bytes(b)) => s.events.push(b),
            (15, Field::Bytes(b)) => s.status = b,
            _ => {}
        }
    }
    let (Ok(trace), Ok(span_id)) = (<[u8; 16]>::try_from(s.trace_id), <[u8; 8]>::try_from(s.span_id)) else {
        return Ok(false);
    };
    let mut status_message = "";
    let mut error = false;
    for f in fields(s.status) {
        match f? {
            (2, Field::Bytes(b)) => status_message = text(b, "status.message")?,
            // STATUS_CODE_ERROR
            (3, Field::Varint(c)) => error = c == 2,
            _ => {}
        }
    }
    let header = Header {
        span_id: SpanId(span_id),
        parent: <[u8; 8]>::try_from(s.parent).ok().filter(|p| *p != [0; 8]).map(SpanId),
        kind: Kind::from_otlp(s.kind),
        error,
        start_unix_nanos: s.start,
        duration_nanos: s.end.saturating_sub(s.start),
        name: text(s.name, "name")?,
        status_message: (!status_message.is_empty()).then_some(status_message),
    };
    let at = batch.bytes.len();
    let (mut tags, mut events) = (Ok(()), Ok(()));
    packed::pack_parts(
        &mut batch.bytes,
        &header,
        |out| tags = put_attributes(out, &s.attributes),
        |out| events = s.events.iter().try_for_each(|e| put_event(out, e)),
    );
    if let Err(e) = tags.and(events) {
        batch.bytes.truncate(at);
        return Err(e);
    }
    batch.spans.push(PackedSpan {
        trace: TraceId(trace),
        process: process.clone(),
        start: s.start,
        range: at..batch.bytes.len(),
    });
    Ok(true)
}

fn put_event(out: &mut Vec<u8>, event: &[u8]) -> Result<(), String> {
    let mut time = 0;
    let mut name = "";
    let mut attrs = Vec::new();
    for f in fields(event) {
        match f? {
            (1, Field::Fixed64(t)) => time = t,
            (2, Field::Bytes(b)) => name = text(b, "event name")?,
            (3, Field::Bytes(b)) => attrs.push(b),
            _ => {}
        }
    }
    let mut result = Ok(());
    packed::put_event(out, time, name, |out| result = put_attributes(out, &attrs));
    result
}

/// Packs every span of an `ExportTraceServiceRequest`; returns how many were rejected for their
/// ids. A malformed message is an error naming where it is malformed.
fn unpack(request: &[u8], processes: &Processes, batch: &mut Packed) -> Result<usize, String> {
    let mut rejected = 0;
    let mut parts = SpanFields::default();
    for (r, f) in fields(request).enumerate() {
        let (1, Field::Bytes(resource_spans)) = f? else {
            continue;
        };
        let at = |e: String| format!("resource_spans[{r}]: {e}");
        let mut resource: &[u8] = &[];
        let mut scopes = Vec::new();
        for f in fields(resource_spans) {
            match f.map_err(at)? {
                (1, Field::Bytes(b)) => resource = b,
                (2, Field::Bytes(b)) => scopes.push(b),
                _ => {}
            }
        }
        let process = processes.get(resource).map_err(at)?;
        for (i, scope) in scopes.iter().enumerate() {
            let mut k = 0;
            for f in fields(scope) {
                if let (2, Field::Bytes(span)) = f.map_err(at)? {
                    let kept = put_span(batch, &process, span, &mut parts)
                        .map_err(|e| format!("resource_spans[{r}].scope_spans[{i}].spans[{k}]: {e}"))?;
                    rejected += usize::from(!kept);
                    k += 1;
                }
            }
        }
    }
    Ok(rejected)
}

/// Requests as their bytes, responses as protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
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
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[derive(Clone)]
struct Receiver {
    store: Arc<Store>,
    processes: Arc<Processes>,
    max_message: usize,
}

impl Receiver {
    fn export(&self, request: &[u8]) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let mut batch = Packed::with_capacity(64);
        let rejected = unpack(request, &self.processes, &mut batch)
            .map_err(|e| tonic::Status::invalid_argument(format!("not an OTLP ExportTraceServiceRequest: {e}")))?;
        self.store.insert_packed(batch);
        Ok(ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: "trace_id must be 16 bytes and span_id 8 bytes".into(),
            }),
        })
    }
}

impl tonic::server::UnaryService<Bytes> for Receiver {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        std::future::ready(self.export(request.get_ref()).map(tonic::Response::new))
    }
}

impl tonic::server::NamedService for Receiver {
    const NAME: &'static str = SERVICE;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Receiver {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT {
                return Ok(
                    tonic::Status::unimplemented(format!("{} is not served here", req.uri().path())).into_http(),
                );
            }
            let mut grpc =
                tonic::server::Grpc::new(RawCodec).apply_max_message_size_config(Some(this.max_message), None);
            Ok(grpc.unary(this, req).await)
        })
    }
}

/// Serves OTLP/gRPC on `tcp` until the task is aborted; every span goes into `store`. A request
/// over `max_message` bytes is refused with OUT_OF_RANGE naming its size and the limit.
pub fn serve_receiver(
    store: Arc<Store>,
    tcp: TcpListener,
    max_message: usize,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = tcp.local_addr()?;
    let svc = Receiver {
        store,
        processes: Arc::default(),
        max_message,
    };
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

#[cfg(test)]
mod tests;
