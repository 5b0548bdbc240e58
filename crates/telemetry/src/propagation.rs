//! W3C `traceparent`/`tracestate` and B3 propagation over HTTP headers and
//! gRPC metadata, plus `x-request-id`.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector, TextMapCompositePropagator},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const REQUEST_ID: &str = "x-request-id";

/// Headers a caller's context arrives in and that a hop passes on.
/// `user-type` and `x-user-id` drive routing in the mesh, so they travel too.
pub const FORWARDED_HEADERS: &[&str] = &[REQUEST_ID, "user-type", "x-user-id"];

/// B3 first, then W3C: on extraction the later one wins, so a valid
/// `traceparent` takes precedence over B3 when a caller sends both.
pub fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(opentelemetry_propagator_b3::Propagator::with_encoding(
            opentelemetry_propagator_b3::B3Encoding::MultipleHeader,
        )),
        Box::new(TraceContextPropagator::new()),
    ])
}

pub(crate) fn install() {
    global::set_text_map_propagator(propagator());
}

pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|k| match k {
                KeyRef::Ascii(k) => k.as_str(),
                KeyRef::Binary(k) => k.as_str(),
            })
            .collect()
    }
}

pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The remote parent a caller sent, from W3C or B3 headers.
pub fn extract_http(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

pub fn extract_metadata(md: &MetadataMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(md)))
}

/// Writes the current span's context into outgoing metadata.
pub fn inject_metadata(md: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(md)));
}

/// Writes the current span's context into outgoing HTTP headers.
pub fn inject_http(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

/// tonic client interceptor: continue the current trace on the next hop.
pub fn inject_trace_context(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_metadata(req.metadata_mut());
    Ok(req)
}

/// Copies `x-request-id`, `user-type` and `x-user-id` from an incoming call
/// onto an outgoing one, so routing headers and the request id follow the call.
pub fn forward_metadata(from: &MetadataMap, to: &mut MetadataMap) {
    for name in FORWARDED_HEADERS {
        if let Some(v) = from.get(*name) {
            to.insert(*name, v.clone());
        }
    }
}

/// Copies `x-request-id`, `user-type` and `x-user-id` from incoming HTTP
/// headers (the frontend's case) onto an outgoing gRPC call.
pub fn forward_headers(from: &HeaderMap, to: &mut MetadataMap) {
    for name in FORWARDED_HEADERS {
        if let Some(v) = from.get(*name).and_then(|v| v.to_str().ok())
            && let Ok(v) = MetadataValue::try_from(v)
        {
            to.insert(*name, v);
        }
    }
}

/// The time a caller still allows, from its `grpc-timeout` metadata
/// ("100m" = 100 ms; units H, M, S, m, u, n), so the next hop can be given
/// no more than what is left.
pub fn grpc_timeout(md: &MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let raw = md.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The request id of an incoming request, when it carries a usable one.
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The request's `x-request-id`, or a new one written into `headers` so the
/// handler and the next hop see the same id.
pub fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = request_id(headers) {
        return id.to_owned();
    }
    let id = new_request_id();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, v);
    }
    id
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};

    fn extract(pairs: &[(&'static str, &'static str)]) -> opentelemetry::trace::SpanContext {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        propagator().extract(&HeaderExtractor(&h)).span().span_context().clone()
    }

    #[test]
    fn w3c_and_b3_are_both_understood() {
        let w3c = extract(&[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]);
        assert_eq!(w3c.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(w3c.span_id().to_string(), "b7ad6b7169203331");
        assert!(w3c.is_remote());

        let b3 = extract(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        assert_eq!(b3.trace_id().to_string(), "463ac35c9f6413ad48485a3953bb6124");

        let single = extract(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        assert_eq!(single.span_id().to_string(), "e457b5a2e4d86bd1");
    }

    #[test]
    fn grpc_timeouts() {
        use std::time::Duration;
        let md = |v: &'static str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", MetadataValue::from_static(v));
            m
        };
        assert_eq!(grpc_timeout(&md("100m")), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(&md("5S")), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(&md("2M")), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout(&md("m")), None);
        assert_eq!(grpc_timeout(&md("10x")), None);
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }

    #[test]
    fn routing_headers_are_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("user-type", HeaderValue::from_static("premium"));
        h.insert("x-request-id", HeaderValue::from_static("r-1"));
        h.insert("cookie", HeaderValue::from_static("secret"));
        let mut md = MetadataMap::new();
        forward_headers(&h, &mut md);
        assert_eq!(md.get("user-type").unwrap(), "premium");
        assert_eq!(md.get("x-request-id").unwrap(), "r-1");
        assert!(md.get("cookie").is_none());
    }

    #[test]
    fn w3c_wins_over_b3() {
        let both = extract(&[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(both.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
    }
}
