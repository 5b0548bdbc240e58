//! One finished span, whoever made it: localmesh's proxies or a pod's OpenTelemetry SDK (received
//! over OTLP). The console, the Jaeger API and the OTLP exporter all read this one model.

use std::borrow::Cow;
use std::sync::Arc;

use super::context::{SpanId, TraceId};

/// OpenTelemetry's span kinds (Jaeger's `span.kind` tag, lower-cased), numbered as OTLP's
/// `SpanKind`: the number OTLP sends and packed traces keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl Kind {
    /// From OTLP's `SpanKind` number; an unknown one is unspecified.
    pub fn from_otlp(n: u64) -> Kind {
        match n {
            1 => Kind::Internal,
            2 => Kind::Server,
            3 => Kind::Client,
            4 => Kind::Producer,
            5 => Kind::Consumer,
            _ => Kind::Unspecified,
        }
    }

    /// As Jaeger tags it; `None` for unspecified.
    pub fn as_tag(self) -> Option<&'static str> {
        Some(match self {
            Kind::Unspecified => return None,
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        })
    }
}

/// A tag (attribute) value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Value {
    /// Jaeger's `type` for the value.
    pub fn jaeger_type(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int64",
            Value::Float(_) => "float64",
        }
    }

    /// The value as a tag filter compares it (`true`, `42`, the string itself).
    pub fn as_text(&self) -> Cow<'_, str> {
        self.as_ref().as_text()
    }
}

/// A tag value borrowed from where it is kept (a packed trace, a proxy's request).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl<'a> ValueRef<'a> {
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Str(s) => Value::Str(s.to_string()),
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
        }
    }

    /// As [`Value::as_text`].
    pub fn as_text(self) -> Cow<'a, str> {
        match self {
            ValueRef::Str(s) => Cow::Borrowed(s),
            ValueRef::Bool(b) => Cow::Owned(b.to_string()),
            ValueRef::Int(i) => Cow::Owned(i.to_string()),
            ValueRef::Float(f) => Cow::Owned(f.to_string()),
        }
    }
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Str(s) => ValueRef::Str(s),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

pub type Tag = (Cow<'static, str>, Value);

/// Tag names kept once for the life of the process; a sender inventing more names than this gets
/// copies instead, so the table stays bounded.
const MAX_KEYS: usize = 4096;

/// A tag name, shared when it has been seen before (they are few: `http.method`, ...).
pub fn intern_key(k: &str) -> Cow<'static, str> {
    static KEYS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::LazyLock::new(Default::default);
    let mut keys = crate::lock(&KEYS);
    if let Some(k) = keys.get(k) {
        return Cow::Borrowed(k);
    }
    if keys.len() >= MAX_KEYS {
        return Cow::Owned(k.to_string());
    }
    let shared: &'static str = Box::leak(k.into());
    keys.insert(shared);
    Cow::Borrowed(shared)
}

/// Who reported a span (an OTLP resource; a Jaeger process).
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// `service.name`.
    pub service: String,
    /// The other resource attributes.
    pub tags: Vec<Tag>,
    /// Tags every span of this process carries (a proxy's `istio.*`, `node_id`, `component`): kept
    /// once here instead of on each span, and written out with each span.
    pub span_tags: Vec<Tag>,
}

impl Process {
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A timed event inside a span (Jaeger's logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_unix_nanos: u64,
    pub name: String,
    pub tags: Vec<Tag>,
}

/// Tags written out only when read: a proxy keeps its spans' tags as the request's facts (shared
/// by the hop and attempt spans), which costs a few allocations per request instead of a few
/// dozen; the store packs them straight from those facts.
pub trait LazyTags: std::fmt::Debug + Send + Sync {
    /// Calls `f` with every tag, in order.
    fn visit(&self, f: &mut dyn FnMut(&str, ValueRef<'_>));
    /// Every tag, in order.
    fn tags(&self) -> Vec<Tag> {
        let mut out = Vec::new();
        self.visit(&mut |k, v| out.push((intern_key(k), v.to_value())));
        out
    }
    /// One tag, without writing out the others where that is cheaper.
    fn get(&self, key: &str) -> Option<Value> {
        let mut found = None;
        self.visit(&mut |k, v| {
            if found.is_none() && k == key {
                found = Some(v.to_value());
            }
        });
        found
    }
}

#[derive(Debug, Clone)]
pub enum Tags {
    /// As received (the apps' spans).
    Owned(Vec<Tag>),
    Lazy(Arc<dyn LazyTags>),
}

impl Default for Tags {
    fn default() -> Self {
        Tags::Owned(Vec::new())
    }
}

#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub tags: Tags,
    pub events: Vec<Event>,
    /// OpenTelemetry status ERROR.
    pub error: bool,
    pub status_message: Option<String>,
    pub process: Arc<Process>,
}

impl Span {
    /// The span's own tags, then its process's per-span tags, written out.
    pub fn all_tags(&self) -> Vec<Tag> {
        let mut out = match &self.tags {
            Tags::Owned(t) => t.clone(),
            Tags::Lazy(l) => l.tags(),
        };
        out.extend(self.process.span_tags.iter().cloned());
        out
    }

    pub fn tag(&self, key: &str) -> Option<Cow<'_, Value>> {
        let own = match &self.tags {
            Tags::Owned(t) => t.iter().find(|(k, _)| k == key).map(|(_, v)| Cow::Borrowed(v)),
            Tags::Lazy(l) => l.get(key).map(Cow::Owned),
        };
        own.or_else(|| {
            self.process
                .span_tags
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| Cow::Borrowed(v))
        })
    }

    /// A tag as text (`true`, `200`, the string itself).
    pub fn tag_text(&self, key: &str) -> Option<String> {
        self.tag(key).map(|v| v.as_text().into_owned())
    }

    /// Whether the span reports a failure: status ERROR or an `error` tag that is true.
    pub fn is_error(&self) -> bool {
        self.error
            || match self.tag("error").as_deref() {
                Some(Value::Bool(b)) => *b,
                Some(Value::Str(s)) => s == "true",
                _ => false,
            }
    }

    pub fn end_unix_nanos(&self) -> u64 {
        self.start_unix_nanos.saturating_add(self.duration_nanos)
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
