//! One JSON object a line: time, level, message and fields, the fields of
//! the enclosing spans (such as `request_id`), the OpenTelemetry `trace_id`
//! and `span_id`, and the pod identity.

use std::{fmt, time::SystemTime};

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

use crate::Identity;

pub struct JsonLines {
    identity: Map<String, Value>,
}

impl JsonLines {
    pub fn new(id: &Identity) -> Self {
        let mut identity = Map::new();
        identity.insert("service".into(), id.service.clone().into());
        identity.insert("version".into(), id.version.clone().into());
        identity.insert("pod".into(), id.pod.clone().into());
        Self { identity }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(SystemTime::now()).to_string().into(),
        );
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());

        // The message first, then the event's fields, then those of the
        // enclosing spans (an event's own field wins on a name clash).
        let mut fields = Map::new();
        event.record(&mut Visitor(&mut fields));
        if let Some(m) = fields.remove("message") {
            obj.insert("message".into(), m);
        }
        obj.append(&mut fields);

        let mut leaf = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&f.fields)
                {
                    for (k, v) in map {
                        if !k.starts_with("otel.") && !obj.contains_key(&k) {
                            obj.insert(k, v);
                        }
                    }
                }
                leaf = Some(span.id());
            }
        }
        // Looked up after the loop: the OTel layer locks span extensions itself.
        if let Some(id) = leaf {
            let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&id, d));
            if let Some(cx) = cx {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    obj.insert("trace_id".into(), sc.trace_id().to_string().into());
                    obj.insert("span_id".into(), sc.span_id().to_string().into());
                }
            }
        }

        for (k, v) in &self.identity {
            obj.insert(k.clone(), v.clone());
        }
        writeln!(writer, "{}", Value::Object(obj))
    }
}

struct Visitor<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), v.to_string().into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}
