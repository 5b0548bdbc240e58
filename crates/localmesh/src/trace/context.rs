//! Trace context on the wire: the caller's W3C `traceparent` or B3 headers in, W3C and B3 out.
//!
//! Envoy's OpenTelemetry tracer continues an incoming `traceparent` and respects its sampled flag,
//! and injects `traceparent` (plus the `tracestate` it received) upstream
//! (`source/extensions/tracers/opentelemetry/tracer.cc`: `startSpan` with a previous span context,
//! `Span::injectContext`). localmesh also reads B3, as Istio's Zipkin tracer would, and writes the
//! B3 headers beside `traceparent`, so apps that only read B3 stay in the trace.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random, valid (non-zero) id.
    pub fn random() -> Self {
        loop {
            let id = TraceId(rand::random::<u128>().to_be_bytes());
            if id.0 != [0; 16] {
                return id;
            }
        }
    }

    /// 32 hex digits, or 16 (B3's 64-bit ids, left-padded with zeros). All-zero is invalid.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        match s.len() {
            32 => hex_into(s, &mut out)?,
            16 => hex_into(s, &mut out[8..])?,
            _ => return None,
        }
        (out != [0; 16]).then_some(TraceId(out))
    }
}

impl SpanId {
    pub fn random() -> Self {
        loop {
            let id = SpanId(rand::random::<u64>().to_be_bytes());
            if id.0 != [0; 8] {
                return id;
            }
        }
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 8];
        if s.len() != 16 {
            return None;
        }
        hex_into(s, &mut out)?;
        (out != [0; 8]).then_some(SpanId(out))
    }
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return None;
    }
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(())
}

/// Lower-case hex of up to 16 bytes, without the formatting machinery (ids are written on every
/// request: into the trace headers and the access log).
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in bytes.iter().take(16).enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    let n = 2 * bytes.len().min(16);
    f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The context a caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None`: the caller left the decision to us (B3 without `x-b3-sampled`).
    pub sampled: Option<bool>,
    pub tracestate: Option<HeaderValue>,
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const B3: &str = "b3";
const B3_TRACE: &str = "x-b3-traceid";
const B3_SPAN: &str = "x-b3-spanid";
const B3_PARENT: &str = "x-b3-parentspanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The caller's context: a valid `traceparent` first (as the apps' propagators prefer W3C), else
/// B3 (multi-header, then single-header). Invalid headers are ignored, as Envoy ignores them.
pub fn extract(h: &HeaderMap) -> Option<Parent> {
    extract_w3c(h)
        .or_else(|| extract_b3(h))
        .or_else(|| extract_b3_single(h))
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` (W3C Trace Context, level 1). A higher
/// version may append fields after the flags; version `ff` is invalid.
fn extract_w3c(h: &HeaderMap) -> Option<Parent> {
    let v = header(h, TRACEPARENT)?;
    let mut parts = v.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || (version == "00" && parts.next().is_some()) {
        return None;
    }
    u8::from_str_radix(version, 16).ok()?;
    if trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id: TraceId::from_hex(trace)?,
        span_id: SpanId::from_hex(span)?,
        sampled: Some(flags & 1 == 1),
        tracestate: h.get(TRACESTATE).cloned(),
    })
}

fn b3_sampled(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn extract_b3(h: &HeaderMap) -> Option<Parent> {
    let trace = TraceId::from_hex(header(h, B3_TRACE)?)?;
    let span = SpanId::from_hex(header(h, B3_SPAN)?)?;
    let debug = header(h, B3_FLAGS) == Some("1");
    let sampled = if debug {
        Some(true)
    } else {
        header(h, B3_SAMPLED).and_then(b3_sampled)
    };
    Some(Parent {
        trace_id: trace,
        span_id: span,
        sampled,
        tracestate: None,
    })
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`.
fn extract_b3_single(h: &HeaderMap) -> Option<Parent> {
    let v = header(h, B3)?;
    let mut parts = v.split('-');
    let trace = TraceId::from_hex(parts.next()?)?;
    let span = SpanId::from_hex(parts.next()?)?;
    let sampled = parts.next().and_then(b3_sampled);
    Some(Parent {
        trace_id: trace,
        span_id: span,
        sampled,
        tracestate: None,
    })
}

/// Replaces the trace headers of an upstream request with `span` as the parent: `traceparent`
/// (and `tracestate` as received), and the B3 headers naming `parent` as the parent span.
pub fn inject(
    h: &mut HeaderMap,
    trace: TraceId,
    span: SpanId,
    parent: Option<SpanId>,
    sampled: bool,
    tracestate: Option<&HeaderValue>,
) {
    for name in [B3, B3_FLAGS, B3_PARENT, TRACESTATE] {
        h.remove(name);
    }
    let flag = if sampled { "01" } else { "00" };
    let set = |h: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(h, TRACEPARENT, format!("00-{trace}-{span}-{flag}"));
    if let Some(ts) = tracestate {
        h.insert(HeaderName::from_static(TRACESTATE), ts.clone());
    }
    set(h, B3_TRACE, trace.to_string());
    set(h, B3_SPAN, span.to_string());
    if let Some(p) = parent {
        set(h, B3_PARENT, p.to_string());
    }
    h.insert(
        HeaderName::from_static(B3_SAMPLED),
        HeaderValue::from_static(if sampled { "1" } else { "0" }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn w3c_is_read_with_its_sampled_flag() {
        let p = extract(&headers(&[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]))
        .unwrap();
        assert_eq!(p.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(p.span_id.to_string(), "b7ad6b7169203331");
        assert_eq!(p.sampled, Some(true));
        assert_eq!(p.tracestate.unwrap(), "congo=t61rcWkgMzE");
        let p = extract(&headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )]))
        .unwrap();
        assert_eq!(p.sampled, Some(false));
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "garbage",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
    }

    #[test]
    fn b3_multi_and_single_headers() {
        let p = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]))
        .unwrap();
        assert_eq!(p.trace_id.to_string(), "0000000000000000463ac35c9f6413ad");
        assert_eq!(p.sampled, None, "no x-b3-sampled: the proxy decides");
        let p = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]))
        .unwrap();
        assert_eq!(p.sampled, Some(false));
        let p = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]))
        .unwrap();
        assert_eq!(p.span_id.to_string(), "e457b5a2e4d86bd1");
        assert_eq!(p.sampled, Some(true));
    }

    #[test]
    fn w3c_wins_over_b3() {
        let p = extract(&headers(&[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]))
        .unwrap();
        assert_eq!(p.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn inject_replaces_the_callers_headers() {
        let mut h = headers(&[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-parentspanid", "1111111111111111"),
        ]);
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let parent = SpanId::from_hex("b7ad6b7169203331").unwrap();
        inject(&mut h, trace, span, Some(parent), false, None);
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00"
        );
        assert!(h.get("b3").is_none());
        assert_eq!(h["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-parentspanid"], "b7ad6b7169203331");
        assert_eq!(h["x-b3-sampled"], "0");
        // What we wrote reads back as the same context.
        let back = extract(&h).unwrap();
        assert_eq!((back.trace_id, back.span_id, back.sampled), (trace, span, Some(false)));
    }
}
