//! Jaeger's query API over the [`Store`]: the JSON shapes Jaeger's own UI reads (`/api/services`,
//! `/api/services/{service}/operations`, `/api/operations`, `/api/traces`, `/api/traces/{id}`), so
//! a script written against the cluster's Jaeger (through a port-forward) runs here unchanged.
//!
//! Shapes as in jaeger's `cmd/query/app/internal/uimodel` and `apiv3`-less HTTP handler: every
//! answer is `{"data": ..., "total", "limit", "offset", "errors"}`; spans carry `references`
//! (`CHILD_OF`), micro-second `startTime`/`duration`, typed `tags`, `logs` and a `processID`
//! into the trace's `processes`. Like Jaeger's OTLP translator, the span kind becomes the
//! `span.kind` tag and an error status `otel.status_code=ERROR` plus `error=true`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::context::TraceId;
use super::span::{Process, Span, Tag, Value};
use super::store::{Query, Trace};

/// `{"data": data, ...}` as Jaeger's API wraps every answer.
pub fn envelope(data: Json, total: usize) -> Json {
    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null})
}

/// Jaeger's error answer; the caller sends it with the same HTTP status.
pub fn error(code: u16, msg: &str) -> Json {
    json!({"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": code, "msg": msg}]})
}

/// A trace id as Jaeger prints it: 32 hex digits, or 16 when the high half is zero (64-bit ids).
pub fn trace_id_text(id: TraceId) -> String {
    let s = id.to_string();
    if id.0[..8] == [0; 8] { s[16..].to_string() } else { s }
}

/// Up to 32 hex digits (shorter ids are left-padded, as Jaeger reads them).
pub fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(&format!("{s:0>32}"))
}

fn tag(key: &str, v: &Value) -> Json {
    let value = match v {
        Value::Str(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
    };
    json!({"key": key, "type": v.jaeger_type(), "value": value})
}

fn tags<'a>(t: impl Iterator<Item = &'a Tag>) -> Vec<Json> {
    t.map(|(k, v)| tag(k, v)).collect()
}

fn span_json(s: &Span, process_id: &str) -> Json {
    let all = s.all_tags();
    let mut t = tags(all.iter());
    let has = |t: &[Json], k: &str| t.iter().any(|j| j["key"] == k);
    if let Some(kind) = s.kind.as_tag()
        && !has(&t, "span.kind")
    {
        t.push(tag("span.kind", &Value::from(kind)));
    }
    if s.error {
        t.push(tag("otel.status_code", &Value::from("ERROR")));
        if let Some(m) = &s.status_message {
            t.push(tag("otel.status_description", &Value::from(m.as_str())));
        }
        if !has(&t, "error") {
            t.push(tag("error", &Value::Bool(true)));
        }
    }
    let trace = trace_id_text(s.trace_id);
    let references: Vec<Json> = s
        .parent
        .map(|p| json!({"refType": "CHILD_OF", "traceID": trace, "spanID": p.to_string()}))
        .into_iter()
        .collect();
    let logs: Vec<Json> = s
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![tag("event", &Value::from(e.name.as_str()))];
            fields.extend(tags(e.tags.iter()));
            json!({"timestamp": e.time_unix_nanos / 1000, "fields": fields})
        })
        .collect();
    json!({
        "traceID": trace,
        "spanID": s.span_id.to_string(),
        "operationName": s.name,
        "references": references,
        "startTime": s.start_unix_nanos / 1000,
        "duration": s.duration_nanos / 1000,
        "tags": t,
        "logs": logs,
        "processID": process_id,
        "warnings": null,
        "flags": 1,
    })
}

/// One trace with its processes numbered `p1`, `p2`, ... in order of first appearance.
pub fn trace_json(t: &Trace) -> Json {
    let mut processes: Vec<&Arc<Process>> = Vec::new();
    let mut spans = Vec::with_capacity(t.spans.len());
    for s in &t.spans {
        let i = match processes
            .iter()
            .position(|p| Arc::ptr_eq(p, &s.process) || ***p == *s.process)
        {
            Some(i) => i,
            None => {
                processes.push(&s.process);
                processes.len() - 1
            }
        };
        spans.push(span_json(s, &format!("p{}", i + 1)));
    }
    let procs: serde_json::Map<String, Json> = processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("p{}", i + 1),
                json!({"serviceName": p.service, "tags": tags(p.tags.iter())}),
            )
        })
        .collect();
    json!({"traceID": trace_id_text(t.id), "spans": spans, "processes": procs, "warnings": null})
}

/// A Go duration (`time.ParseDuration`, as Jaeger parses `minDuration`): `1.5s`, `250ms`, `1h30m`,
/// `500us`; Jaeger's `lookback` also takes days (`2d`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration such as 250ms, 1.5s, 1h or 2d");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(err()),
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

/// `/api/traces`'s parameters as a [`Query`] (and the trace ids asked for by `traceID`), or the
/// 400 message naming the parameter. `now_micros` anchors `lookback`.
pub fn parse_query(pairs: &[(String, String)], now_micros: u64) -> Result<(Query, Vec<TraceId>), String> {
    let mut q = Query::default();
    let mut ids = Vec::new();
    let mut lookback = None;
    for (k, v) in pairs {
        let bad = |why: String| format!("parameter '{k}': {why}");
        match k.as_str() {
            "service" if !v.is_empty() => q.service = Some(v.clone()),
            "operation" if !v.is_empty() => q.operation = Some(v.clone()),
            "tags" if !v.is_empty() => {
                let m: BTreeMap<String, Json> =
                    serde_json::from_str(v).map_err(|e| bad(format!("expected a JSON object of tag values ({e})")))?;
                for (tk, tv) in m {
                    let text = match tv {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    q.tags.insert(tk, text);
                }
            }
            "tag" => {
                let (tk, tv) = v.split_once(':').ok_or_else(|| bad("expected key:value".into()))?;
                q.tags.insert(tk.to_string(), tv.to_string());
            }
            "limit" if !v.is_empty() => {
                q.limit = v.parse().map_err(|_| bad("expected a whole number".into()))?;
            }
            "start" if !v.is_empty() => {
                q.start_micros = Some(v.parse().map_err(|_| bad("expected Unix microseconds".into()))?)
            }
            "end" if !v.is_empty() => {
                q.end_micros = Some(v.parse().map_err(|_| bad("expected Unix microseconds".into()))?)
            }
            "lookback" if !v.is_empty() && v != "custom" => lookback = Some(parse_go_duration(v).map_err(bad)?),
            "minDuration" if !v.is_empty() => q.min_duration = Some(parse_go_duration(v).map_err(bad)?),
            "maxDuration" if !v.is_empty() => q.max_duration = Some(parse_go_duration(v).map_err(bad)?),
            "traceID" => ids.push(parse_trace_id(v).ok_or_else(|| bad("expected up to 32 hex digits".into()))?),
            _ => {}
        }
    }
    if let (Some(lb), None) = (lookback, q.start_micros) {
        let end = q.end_micros.unwrap_or(now_micros);
        q.start_micros = Some(end.saturating_sub(u64::try_from(lb.as_micros()).unwrap_or(u64::MAX)));
    }
    if ids.is_empty() && q.service.is_none() {
        return Err("parameter 'service' is required".into());
    }
    Ok((q, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_go_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_go_duration("500us").unwrap(), Duration::from_micros(500));
        for bad in ["", "5", "5 parsecs", "ms", "1..2s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_parameters_as_jaeger_takes_them() {
        let (q, ids) = parse_query(
            &pairs(&[
                ("service", "frontend.default"),
                ("operation", "GET /"),
                ("tags", r#"{"guid:x-request-id":"r-1","http.status_code":200}"#),
                ("tag", "error:true"),
                ("limit", "5"),
                ("lookback", "1h"),
                ("minDuration", "10ms"),
            ]),
            10_000_000_000,
        )
        .unwrap();
        assert!(ids.is_empty());
        assert_eq!(q.service.as_deref(), Some("frontend.default"));
        assert_eq!(q.tags["guid:x-request-id"], "r-1");
        assert_eq!(q.tags["http.status_code"], "200");
        assert_eq!(q.tags["error"], "true");
        assert_eq!(q.limit, 5);
        assert_eq!(q.start_micros, Some(10_000_000_000 - 3_600_000_000));
        assert_eq!(q.min_duration, Some(Duration::from_millis(10)));

        let e = parse_query(&pairs(&[("limit", "5")]), 0).unwrap_err();
        assert!(e.contains("'service' is required"), "{e}");
        let e = parse_query(&pairs(&[("service", "a"), ("minDuration", "fast")]), 0).unwrap_err();
        assert!(e.contains("'minDuration'"), "{e}");
        let e = parse_query(&pairs(&[("service", "a"), ("tags", "{")]), 0).unwrap_err();
        assert!(e.contains("'tags'"), "{e}");
        let (_, ids) = parse_query(&pairs(&[("traceID", "463ac35c9f6413ad")]), 0).unwrap();
        assert_eq!(ids[0].to_string(), "0000000000000000463ac35c9f6413ad");
        assert_eq!(trace_id_text(ids[0]), "463ac35c9f6413ad");
    }
}
