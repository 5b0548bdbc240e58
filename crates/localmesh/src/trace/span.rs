//! One finished span, whoever made it: localmesh's proxies or a pod's OpenTelemetry SDK (received
//! over OTLP). The console, the Jaeger API and the OTLP exporter all read this one model.

use std::borrow::Cow;
use std::sync::Arc;

use super::context::{SpanId, TraceId};

/// OpenTelemetry's span kinds (Jaeger's `span.kind` tag, lower-cased).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
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
        match self {
            Value::Str(s) => Cow::Borrowed(s),
            Value::Bool(b) => Cow::Owned(b.to_string()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => Cow::Owned(f.to_string()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            _ => 8,
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

#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub tags: Vec<Tag>,
    pub events: Vec<Event>,
    /// OpenTelemetry status ERROR.
    pub error: bool,
    pub status_message: Option<String>,
    pub process: Arc<Process>,
}

impl Span {
    /// The span's own tags, then its process's per-span tags.
    pub fn all_tags(&self) -> impl Iterator<Item = &Tag> {
        self.tags.iter().chain(self.process.span_tags.iter())
    }

    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.all_tags().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tag_str(&self, key: &str) -> Option<&str> {
        match self.tag(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the span reports a failure: status ERROR or an `error` tag that is true.
    pub fn is_error(&self) -> bool {
        self.error
            || match self.tag("error") {
                Some(Value::Bool(b)) => *b,
                Some(Value::Str(s)) => s == "true",
                _ => false,
            }
    }

    pub fn end_unix_nanos(&self) -> u64 {
        self.start_unix_nanos.saturating_add(self.duration_nanos)
    }

    /// What the span costs to keep, roughly (its strings plus fixed overhead; the process is
    /// shared and not counted).
    pub fn approx_bytes(&self) -> usize {
        let tags = |t: &[Tag]| t.iter().map(|(k, v)| k.len() + v.bytes() + 48).sum::<usize>();
        160 + self.name.len()
            + tags(&self.tags)
            + self
                .events
                .iter()
                .map(|e| 48 + e.name.len() + tags(&e.tags))
                .sum::<usize>()
            + self.status_message.as_ref().map_or(0, String::len)
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
