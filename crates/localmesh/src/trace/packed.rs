//! A trace's spans packed into one byte buffer. The store keeps each trace as two heap blocks (this
//! buffer and its processes) instead of a few dozen (every span's name, tags and strings): with
//! thousands of traces kept, evicting the oldest and storing the next then touches little cold
//! memory, which is what made a full store the largest part of tracing's cost.
//!
//! Layout of one span (varints are protobuf's, from prost): process index, span id (8 bytes),
//! flags (bit 0: has a parent, 1: error, 2: has a status message, 3..6: kind), parent id (8 bytes,
//! when flagged), start and duration (varints), name, status message (when flagged), the tags
//! (byte length, then each tag), the events (byte length, then time, name and tags of each).
//! A tag is its key, a type byte and the value. Strings are a varint length and UTF-8 bytes; a
//! block's length is 4 bytes, little-endian. A key is a varint `n`: odd, it is [`KEYS`]`[n / 2]`
//! (the tags every proxy span carries and the apps' usual ones: a byte instead of their text,
//! a third of a proxy span); even, `n / 2` bytes of text follow.

use std::sync::Arc;

use prost::encoding::{decode_varint, encode_varint};

use super::context::{SpanId, TraceId};
use super::span::{Event, Kind, Process, Span, Tags, ValueRef, intern_key};

const HAS_PARENT: u8 = 1;
const ERROR: u8 = 2;
const HAS_STATUS: u8 = 4;
const KIND_SHIFT: u8 = 3;

const STR: u8 = 0;
const BOOL: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;

fn put_str(out: &mut Vec<u8>, s: &str) {
    encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// The keys packed as a number, in [`key_code`]'s order.
const KEYS: [&str; 35] = [
    "guid:x-request-id",
    "http.url",
    "http.method",
    "downstream_cluster",
    "user_agent",
    "http.protocol",
    "peer.address",
    "guid:x-client-trace-id",
    "grpc.path",
    "grpc.authority",
    "grpc.content_type",
    "grpc.timeout",
    "request_size",
    "response_size",
    "upstream_cluster",
    "upstream_cluster.name",
    "http.status_code",
    "response_flags",
    "grpc.status_code",
    "grpc.message",
    "error",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "request_id",
    "peer.service",
    "http.request.method",
    "http.route",
    "url.path",
    "url.full",
    "http.response.status_code",
    "order_id",
    "exception.message",
    "level",
];

/// A key's index in [`KEYS`] (a `match` on the text: no hashing on the span's way in).
fn key_code(key: &str) -> Option<u8> {
    Some(match key {
        "guid:x-request-id" => 0,
        "http.url" => 1,
        "http.method" => 2,
        "downstream_cluster" => 3,
        "user_agent" => 4,
        "http.protocol" => 5,
        "peer.address" => 6,
        "guid:x-client-trace-id" => 7,
        "grpc.path" => 8,
        "grpc.authority" => 9,
        "grpc.content_type" => 10,
        "grpc.timeout" => 11,
        "request_size" => 12,
        "response_size" => 13,
        "upstream_cluster" => 14,
        "upstream_cluster.name" => 15,
        "http.status_code" => 16,
        "response_flags" => 17,
        "grpc.status_code" => 18,
        "grpc.message" => 19,
        "error" => 20,
        "rpc.system" => 21,
        "rpc.service" => 22,
        "rpc.method" => 23,
        "rpc.grpc.status_code" => 24,
        "request_id" => 25,
        "peer.service" => 26,
        "http.request.method" => 27,
        "http.route" => 28,
        "url.path" => 29,
        "url.full" => 30,
        "http.response.status_code" => 31,
        "order_id" => 32,
        "exception.message" => 33,
        "level" => 34,
        _ => return None,
    })
}

pub fn put_tag(out: &mut Vec<u8>, key: &str, v: ValueRef<'_>) {
    match key_code(key) {
        Some(code) => encode_varint(2 * u64::from(code) + 1, out),
        None => {
            encode_varint(2 * key.len() as u64, out);
            out.extend_from_slice(key.as_bytes());
        }
    }
    match v {
        ValueRef::Str(s) => {
            out.push(STR);
            put_str(out, s);
        }
        ValueRef::Bool(b) => out.extend_from_slice(&[BOOL, u8::from(b)]),
        ValueRef::Int(i) => {
            out.push(INT);
            // Zigzag, as protobuf's sint64.
            encode_varint(((i << 1) ^ (i >> 63)) as u64, out);
        }
        ValueRef::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// Writes a block as its byte length (4 bytes, little-endian, so that it can be written after the
/// block's bytes) then its bytes; `fill` writes the bytes.
fn put_block(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A span but its trace id, process, tags and events: what packing starts with, and what a
/// [`View`] reads first.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub kind: Kind,
    pub error: bool,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub name: &'a str,
    pub status_message: Option<&'a str>,
}

/// Appends a span without its process index (the store writes that, once it knows the index)
/// and without its trace id (the store's key): `tags` writes the tags with [`put_tag`], `events`
/// the events with [`put_event`].
pub fn pack_parts(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    tags: impl FnOnce(&mut Vec<u8>),
    events: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(&h.span_id.0);
    let mut flags = (h.kind as u8) << KIND_SHIFT;
    if h.parent.is_some() {
        flags |= HAS_PARENT;
    }
    if h.error {
        flags |= ERROR;
    }
    if h.status_message.is_some() {
        flags |= HAS_STATUS;
    }
    out.push(flags);
    if let Some(p) = h.parent {
        out.extend_from_slice(&p.0);
    }
    encode_varint(h.start_unix_nanos, out);
    encode_varint(h.duration_nanos, out);
    put_str(out, h.name);
    if let Some(m) = h.status_message {
        put_str(out, m);
    }
    put_block(out, tags);
    put_block(out, events);
}

/// Appends one event: `tags` writes its tags with [`put_tag`].
pub fn put_event(out: &mut Vec<u8>, time_unix_nanos: u64, name: &str, tags: impl FnOnce(&mut Vec<u8>)) {
    encode_varint(time_unix_nanos, out);
    put_str(out, name);
    put_block(out, tags);
}

/// Appends `span` as [`pack_parts`] does.
pub fn pack(span: &Span, out: &mut Vec<u8>) {
    let h = Header {
        span_id: span.span_id,
        parent: span.parent,
        kind: span.kind,
        error: span.error,
        start_unix_nanos: span.start_unix_nanos,
        duration_nanos: span.duration_nanos,
        name: &span.name,
        status_message: span.status_message.as_deref(),
    };
    pack_parts(
        out,
        &h,
        |out| match &span.tags {
            Tags::Owned(t) => t.iter().for_each(|(k, v)| put_tag(out, k, v.as_ref())),
            Tags::Lazy(l) => l.visit(&mut |k, v| put_tag(out, k, v)),
        },
        |out| {
            for e in &span.events {
                put_event(out, e.time_unix_nanos, &e.name, |out| {
                    e.tags.iter().for_each(|(k, v)| put_tag(out, k, v.as_ref()));
                });
            }
        },
    );
}

/// Reads what [`pack`] wrote. Every read is checked: a short or malformed buffer ends the reading
/// instead of panicking.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        decode_varint(&mut self.0).ok()
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    fn id<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.varint()?).ok()?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }

    fn block(&mut self) -> Option<Reader<'a>> {
        let n = usize::try_from(u32::from_le_bytes(self.id::<4>()?)).ok()?;
        self.bytes(n).map(Reader)
    }

    fn key(&mut self) -> Option<&'a str> {
        let n = self.varint()?;
        if n % 2 == 1 {
            return KEYS.get(usize::try_from(n / 2).ok()?).copied();
        }
        std::str::from_utf8(self.bytes(usize::try_from(n / 2).ok()?)?).ok()
    }

    fn tag(&mut self) -> Option<(&'a str, ValueRef<'a>)> {
        let key = self.key()?;
        let v = match self.byte()? {
            STR => ValueRef::Str(self.str()?),
            BOOL => ValueRef::Bool(self.byte()? != 0),
            INT => {
                let z = self.varint()?;
                ValueRef::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            FLOAT => ValueRef::Float(f64::from_le_bytes(self.id::<8>()?)),
            _ => return None,
        };
        Some((key, v))
    }
}

/// One packed span, read in place.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub process: &'a Arc<Process>,
    pub header: Header<'a>,
    tags: Reader<'a>,
    events: Reader<'a>,
}

impl<'a> View<'a> {
    /// The span's own tags, as packed.
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, ValueRef<'a>)> + use<'a> {
        let mut r = self.tags;
        std::iter::from_fn(move || r.tag())
    }

    /// A tag of the span, or else of its process's per-span tags (as [`Span::tag`]).
    pub fn tag(&self, key: &str) -> Option<ValueRef<'a>> {
        self.tags().find(|(k, _)| *k == key).map(|(_, v)| v).or_else(|| {
            let p: &'a Process = self.process;
            p.span_tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
        })
    }

    /// As [`Span::is_error`].
    pub fn is_error(&self) -> bool {
        self.header.error
            || match self.tag("error") {
                Some(ValueRef::Bool(b)) => b,
                Some(ValueRef::Str(s)) => s == "true",
                _ => false,
            }
    }

    /// The span itself, owned.
    pub fn to_span(&self, trace_id: TraceId) -> Span {
        let owned = |r: Reader<'a>| {
            let mut r = r;
            std::iter::from_fn(move || r.tag())
                .map(|(k, v)| (intern_key(k), v.to_value()))
                .collect::<Vec<_>>()
        };
        let mut events = Vec::new();
        let mut r = self.events;
        while let (Some(time), Some(name), Some(tags)) = (r.varint(), r.str(), r.block()) {
            events.push(Event {
                time_unix_nanos: time,
                name: name.to_string(),
                tags: owned(tags),
            });
        }
        let h = &self.header;
        Span {
            trace_id,
            span_id: h.span_id,
            parent: h.parent,
            name: h.name.to_string(),
            kind: h.kind,
            start_unix_nanos: h.start_unix_nanos,
            duration_nanos: h.duration_nanos,
            tags: Tags::Owned(owned(self.tags)),
            events,
            error: h.error,
            status_message: h.status_message.map(str::to_string),
            process: self.process.clone(),
        }
    }
}

/// The spans packed in `buf` (each after its process index into `processes`), in order.
pub fn spans<'a>(buf: &'a [u8], processes: &'a [Arc<Process>]) -> impl Iterator<Item = View<'a>> + use<'a> {
    let mut r = Reader(buf);
    std::iter::from_fn(move || {
        let process = processes.get(usize::try_from(r.varint()?).ok()?)?;
        let span_id = SpanId(r.id::<8>()?);
        let flags = r.byte()?;
        let parent = if flags & HAS_PARENT != 0 {
            Some(SpanId(r.id::<8>()?))
        } else {
            None
        };
        let start_unix_nanos = r.varint()?;
        let duration_nanos = r.varint()?;
        let name = r.str()?;
        let status_message = if flags & HAS_STATUS != 0 { Some(r.str()?) } else { None };
        let tags = r.block()?;
        let events = r.block()?;
        Some(View {
            process,
            header: Header {
                span_id,
                parent,
                kind: Kind::from_otlp(u64::from(flags >> KIND_SHIFT)),
                error: flags & ERROR != 0,
                start_unix_nanos,
                duration_nanos,
                name,
                status_message,
            },
            tags,
            events,
        })
    })
}

#[cfg(test)]
mod tests;
