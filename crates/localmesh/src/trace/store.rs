//! The most recent traces, in memory, bounded by a trace count and a byte budget; the oldest trace
//! goes first. Each trace is kept packed ([`packed`]) and read back as [`Span`]s. Queries follow
//! Jaeger's search: a trace matches when one of its spans has the service, operation, tags and
//! duration asked for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::context::{SpanId, TraceId};
use super::packed;
use super::span::{Process, Span};

/// `--max-traces`: how many traces the store keeps.
pub const DEFAULT_MAX_TRACES: usize = 10_000;
/// `--max-trace-bytes`: the store's byte budget (the packed traces and their bookkeeping).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_traces: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_traces: DEFAULT_MAX_TRACES,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What the store holds and has dropped, for `/stats/prometheus` and `make bench`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub traces: usize,
    pub spans: usize,
    pub bytes: usize,
    pub evicted_traces: u64,
    pub received_spans: u64,
}

/// One trace: its spans packed in arrival order (see [`packed`]), and the processes they name.
#[derive(Debug)]
struct Entry {
    id: TraceId,
    packed: Vec<u8>,
    processes: Vec<Arc<Process>>,
    spans: usize,
    /// The earliest span start, for newest-first lists.
    start: u64,
    /// What the entry holds on the heap (its part of `Inner::bytes`).
    bytes: usize,
}

/// A heap block's cost beyond its bytes (the allocator's header and rounding), for the budget.
const BLOCK: usize = 16;

impl Entry {
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<(TraceId, Entry)>()
            + self.packed.capacity()
            + self.processes.capacity() * std::mem::size_of::<Arc<Process>>()
            + 2 * BLOCK
    }

    fn views(&self) -> impl Iterator<Item = packed::View<'_>> {
        packed::spans(&self.packed, &self.processes)
    }

    fn trace(&self) -> Trace {
        let mut spans: Vec<Span> = self.views().map(|v| v.to_span(self.id)).collect();
        spans.sort_by_key(|s| s.start_unix_nanos);
        Trace { id: self.id, spans }
    }

    /// The entry of the trace evicted to make room, emptied for `id`: its buffer is reused, so a
    /// full store neither allocates nor frees per trace (one that grew large is replaced).
    fn recycle(mut self, id: TraceId, start: u64) -> (Entry, Option<Vec<u8>>) {
        let big = (self.packed.capacity() > 4 * FIRST_CAPACITY)
            .then(|| std::mem::replace(&mut self.packed, Vec::with_capacity(FIRST_CAPACITY)));
        self.packed.clear();
        self.processes.clear();
        let entry = Entry {
            id,
            start,
            spans: 0,
            bytes: 0,
            ..self
        };
        (entry, big)
    }
}

/// A first span's buffer: about what one request's spans through one sidecar hop take (two proxy
/// spans and an app's), so that most traces never grow it.
const FIRST_CAPACITY: usize = 1536;

#[derive(Debug, Default)]
struct Inner {
    /// Each trace's sequence number: its entry is `ring[seq - first]`. Looked up for every span;
    /// foldhash (seeded per process) hashes a trace id several times faster than SipHash.
    seqs: HashMap<TraceId, u64, foldhash::fast::RandomState>,
    /// Oldest first (by the arrival of a trace's first span): eviction is first in, first out.
    ring: VecDeque<Entry>,
    /// The sequence number of `ring[0]`.
    first: u64,
    spans: usize,
    bytes: usize,
    evicted: u64,
    received: u64,
}

impl Inner {
    fn entry(&self, id: TraceId) -> Option<&Entry> {
        let seq = *self.seqs.get(&id)?;
        self.ring.get(usize::try_from(seq - self.first).ok()?)
    }

    fn evict_oldest(&mut self) -> Option<Entry> {
        let old = self.ring.pop_front()?;
        self.first += 1;
        self.seqs.remove(&old.id);
        self.spans -= old.spans;
        self.bytes -= old.bytes;
        self.evicted += 1;
        Some(old)
    }
}

#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<Inner>,
    limits: Limits,
}

/// Spans packed ([`packed::pack_parts`]) back to back, for [`Store::insert_packed`].
#[derive(Debug, Default)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub spans: Vec<PackedSpan>,
}

#[derive(Debug)]
pub struct PackedSpan {
    pub trace: TraceId,
    pub process: Arc<Process>,
    pub start: u64,
    /// Where the span is in [`Packed::bytes`].
    pub range: std::ops::Range<usize>,
}

impl Packed {
    /// Room for `spans` spans of about a proxy span's size (700 bytes) each.
    pub fn with_capacity(spans: usize) -> Self {
        Packed {
            bytes: Vec::with_capacity(1024 * spans.clamp(1, 64)),
            spans: Vec::with_capacity(spans),
        }
    }
}

/// A search, as Jaeger's `/api/traces` takes it. Every part that is set must hold for one span.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// Span (or process) tags that must all be present with these values.
    pub tags: BTreeMap<String, String>,
    pub min_duration: Option<Duration>,
    pub max_duration: Option<Duration>,
    /// Unix microseconds: spans starting in `[start, end]`.
    pub start_micros: Option<u64>,
    pub end_micros: Option<u64>,
    /// Only traces holding a failed span.
    pub errors_only: bool,
    /// At most this many traces, newest first; 0 means Jaeger's default of 20.
    pub limit: usize,
}

/// One trace's spans, in start order (a copy: the store may drop the trace meanwhile).
#[derive(Debug, Clone)]
pub struct Trace {
    pub id: TraceId,
    pub spans: Vec<Span>,
}

impl Store {
    pub fn new(limits: Limits) -> Self {
        Store {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Adds spans (any traces, any order), then evicts the oldest traces beyond the bounds. The
    /// spans are packed, and the evicted traces freed, outside the lock.
    pub fn insert(&self, spans: impl IntoIterator<Item = Span>) {
        let spans = spans.into_iter();
        let mut batch = Packed::with_capacity(spans.size_hint().0);
        for span in spans {
            let at = batch.bytes.len();
            packed::pack(&span, &mut batch.bytes);
            let Span {
                trace_id,
                process,
                start_unix_nanos,
                ..
            } = span;
            batch.spans.push(PackedSpan {
                trace: trace_id,
                process,
                start: start_unix_nanos,
                range: at..batch.bytes.len(),
            });
        }
        self.insert_packed(batch);
    }

    /// Adds spans packed by the caller (the OTLP receiver packs straight from the wire).
    pub fn insert_packed(&self, batch: Packed) {
        let Packed {
            bytes: scratch,
            spans: items,
        } = batch;
        let mut freed: Vec<Entry> = Vec::new();
        let mut big: Vec<Vec<u8>> = Vec::new();
        {
            let mut inner = crate::lock(&self.inner);
            let inner = &mut *inner;
            let max_traces = self.limits.max_traces.max(1);
            for PackedSpan {
                trace,
                process,
                start,
                range,
            } in items
            {
                let seq = match inner.seqs.get(&trace) {
                    Some(&seq) => seq,
                    None => {
                        let oldest = if inner.ring.len() >= max_traces {
                            inner.evict_oldest()
                        } else {
                            None
                        };
                        let entry = if let Some(old) = oldest {
                            let (entry, grown) = old.recycle(trace, start);
                            big.extend(grown);
                            entry
                        } else {
                            Entry {
                                id: trace,
                                packed: Vec::with_capacity(FIRST_CAPACITY),
                                processes: Vec::new(),
                                spans: 0,
                                start,
                                bytes: 0,
                            }
                        };
                        let seq = inner.first + inner.ring.len() as u64;
                        inner.ring.push_back(entry);
                        inner.seqs.insert(trace, seq);
                        seq
                    }
                };
                let Some(entry) = usize::try_from(seq - inner.first)
                    .ok()
                    .and_then(|i| inner.ring.get_mut(i))
                else {
                    continue;
                };
                let index = match entry.processes.iter().position(|p| Arc::ptr_eq(p, &process)) {
                    Some(i) => i,
                    None => {
                        entry.processes.push(process);
                        entry.processes.len() - 1
                    }
                };
                prost::encoding::encode_varint(index as u64, &mut entry.packed);
                entry.packed.extend_from_slice(&scratch[range]);
                entry.spans += 1;
                entry.start = entry.start.min(start);
                let bytes = entry.heap_bytes();
                inner.bytes = inner.bytes + bytes - entry.bytes;
                entry.bytes = bytes;
                inner.spans += 1;
                inner.received += 1;
            }
            while inner.bytes > self.limits.max_bytes {
                let Some(old) = inner.evict_oldest() else {
                    break;
                };
                freed.push(old);
            }
        }
        drop((freed, big));
    }

    pub fn stats(&self) -> StoreStats {
        let inner = crate::lock(&self.inner);
        StoreStats {
            traces: inner.ring.len(),
            spans: inner.spans,
            bytes: inner.bytes,
            evicted_traces: inner.evicted,
            received_spans: inner.received,
        }
    }

    pub fn get(&self, id: TraceId) -> Option<Trace> {
        let inner = crate::lock(&self.inner);
        inner.entry(id).map(Entry::trace)
    }

    /// Every service that reported a span, sorted.
    pub fn services(&self) -> Vec<String> {
        let inner = crate::lock(&self.inner);
        let mut out: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in &inner.ring {
            for p in &e.processes {
                if seen.insert(Arc::as_ptr(p)) && !out.contains(&p.service) {
                    out.push(p.service.clone());
                }
            }
        }
        out.sort();
        out
    }

    /// The operations (span names) of a service, sorted, with their span kinds.
    pub fn operations(&self, service: &str) -> Vec<(String, Option<&'static str>)> {
        let inner = crate::lock(&self.inner);
        let mut seen = std::collections::HashSet::new();
        for e in &inner.ring {
            for s in e.views().filter(|s| s.process.service == service) {
                seen.insert((s.header.name, s.header.kind.as_tag()));
            }
        }
        let mut out: Vec<(String, Option<&'static str>)> =
            seen.into_iter().map(|(name, kind)| (name.to_string(), kind)).collect();
        out.sort();
        out
    }

    /// The traces matching `q`, newest first (by their earliest span).
    pub fn find(&self, q: &Query) -> Vec<Trace> {
        let limit = if q.limit == 0 { 20 } else { q.limit };
        let inner = crate::lock(&self.inner);
        let mut hits: Vec<&Entry> = inner.ring.iter().filter(|e| matches(q, e)).collect();
        hits.sort_by_key(|e| std::cmp::Reverse((e.start, e.id)));
        hits.truncate(limit);
        hits.into_iter().map(Entry::trace).collect()
    }
}

fn span_matches(q: &Query, s: &packed::View<'_>) -> bool {
    if q.service.as_ref().is_some_and(|svc| &s.process.service != svc) {
        return false;
    }
    if q.operation.as_ref().is_some_and(|op| s.header.name != op) {
        return false;
    }
    let d = Duration::from_nanos(s.header.duration_nanos);
    if q.min_duration.is_some_and(|m| d < m) || q.max_duration.is_some_and(|m| d > m) {
        return false;
    }
    let start = s.header.start_unix_nanos / 1000;
    if q.start_micros.is_some_and(|t| start < t) || q.end_micros.is_some_and(|t| start > t) {
        return false;
    }
    q.tags.iter().all(|(k, want)| {
        if k == "error" && want == "true" && s.is_error() {
            return true;
        }
        s.tag(k).is_some_and(|v| v.as_text() == want.as_str())
            || s.process.tag(k).is_some_and(|v| v.as_text() == want.as_str())
    })
}

fn matches(q: &Query, e: &Entry) -> bool {
    e.views().any(|s| span_matches(q, &s)) && (!q.errors_only || e.views().any(|s| s.is_error()))
}

/// One trace at a glance, for lists.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: TraceId,
    pub root_service: String,
    pub root_operation: String,
    /// The root's request as its proxy tagged it (`POST /api/orders`), when it did.
    pub root_request: Option<String>,
    /// Each service with its span count, by name.
    pub services: Vec<(String, usize)>,
    pub spans: usize,
    pub errors: usize,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    /// Spans whose parent is not in the trace (a trace still arriving, or a broken chain).
    pub orphans: usize,
}

impl Trace {
    /// Spans without a parent in this trace: the root(s), and any whose parent is missing.
    pub fn roots(&self) -> Vec<&Span> {
        let ids: std::collections::HashSet<SpanId> = self.spans.iter().map(|s| s.span_id).collect();
        self.spans
            .iter()
            .filter(|s| s.parent.is_none_or(|p| !ids.contains(&p)))
            .collect()
    }

    pub fn summary(&self) -> Summary {
        let roots = self.roots();
        let root = roots
            .iter()
            .find(|s| s.parent.is_none())
            .or_else(|| roots.first())
            .copied()
            .or_else(|| self.spans.first());
        let start = self.spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.end_unix_nanos()).max().unwrap_or(start);
        let mut services: BTreeMap<String, usize> = BTreeMap::new();
        for s in &self.spans {
            *services.entry(s.process.service.clone()).or_default() += 1;
        }
        Summary {
            id: self.id,
            root_service: root.map(|s| s.process.service.clone()).unwrap_or_default(),
            root_operation: root.map(|s| s.name.clone()).unwrap_or_default(),
            root_request: root.and_then(|s| {
                let url = s.tag_text("http.url")?;
                let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                let path = rest.find('/').map_or("/", |i| &rest[i..]);
                let method = s.tag_text("http.method").unwrap_or_default();
                Some(format!("{method} {path}").trim().to_string())
            }),
            services: services.into_iter().collect(),
            spans: self.spans.len(),
            errors: self.spans.iter().filter(|s| s.is_error()).count(),
            start_unix_nanos: start,
            duration_nanos: end.saturating_sub(start),
            orphans: roots.iter().filter(|s| s.parent.is_some()).count(),
        }
    }
}

#[cfg(test)]
mod tests;
