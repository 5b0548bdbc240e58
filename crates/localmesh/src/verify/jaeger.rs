//! The order's trace in Jaeger: looked up by its request id and checked to be one whole trace
//! rooted at the gateway, with spans from every app.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;

use super::VerifyOptions;
use super::http::snippet;

/// The gateway's service name in Jaeger: Istio's proxies report as `<canonical service>.<namespace>`.
const GATEWAY_SERVICE: &str = "public-api-gateway-istio.gateway";
/// The apps one order crosses (matched against Jaeger service names up to the first `.` or `-`,
/// so both the apps, `order`, and their proxies, `order-service.default`, count).
const ORDER_APPS: [&str; 4] = ["frontend", "order", "product", "payment"];
/// How long the order's spans may take to reach Jaeger (the SDKs batch them).
const TRACE_WAIT: Duration = Duration::from_secs(20);

/// One order's trace in Jaeger's query API: found by the request id its answer carried, it must be
/// one trace with one root (the gateway's span), every parent present, and spans from every app.
pub(super) async fn order_trace(o: &VerifyOptions, request_id: &str) -> Result<String, String> {
    let tags = serde_json::json!({"guid:x-request-id": request_id}).to_string();
    let query: String = [
        ("service", GATEWAY_SERVICE),
        ("tags", tags.as_str()),
        ("lookback", "1h"),
        ("limit", "5"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", query_escape(v)))
    .collect::<Vec<_>>()
    .join("&");
    let url = format!("{}/api/traces?{query}", o.jaeger);
    let deadline = tokio::time::Instant::now() + TRACE_WAIT;
    loop {
        let last = match jaeger_get(&url).await.and_then(|v| check_order_trace(&v)) {
            Ok(detail) => return Ok(detail),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("after {}s: {last}", TRACE_WAIT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// GET over plain HTTP (a port-forward or the local console), as JSON.
async fn jaeger_get(url: &str) -> Result<serde_json::Value, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("--jaeger {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--jaeger {url}: expected an http:// URL of Jaeger's query service"
        ));
    }
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| format!("Jaeger at {url} did not answer in 10 s"))?
        .map_err(|e| format!("cannot reach Jaeger at {}: {}", url, crate::error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("Jaeger's answer: {}", crate::error_chain(&e)))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "Jaeger answered {status} with no JSON ({e}): {}",
            snippet(&String::from_utf8_lossy(&body))
        )
    })?;
    if !status.is_success() {
        return Err(format!("Jaeger answered {status}: {}", v["errors"]));
    }
    Ok(v)
}

/// The trace checks on a Jaeger `/api/traces` answer.
pub fn check_order_trace(v: &serde_json::Value) -> Result<String, String> {
    let traces = v["data"].as_array().ok_or("Jaeger's answer has no data array")?;
    let [t] = traces.as_slice() else {
        return Err(format!("{} traces carry the order's request id, want 1", traces.len()));
    };
    let spans = t["spans"].as_array().ok_or("the trace has no spans")?;
    let service_of = |s: &serde_json::Value| {
        s["processID"]
            .as_str()
            .and_then(|p| t["processes"][p]["serviceName"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut services: Vec<String> = spans.iter().map(service_of).collect();
    services.sort();
    services.dedup();
    let missing: Vec<&str> = ORDER_APPS
        .iter()
        .copied()
        .filter(|app| !services.iter().any(|s| s.split(['.', '-']).next() == Some(app)))
        .collect();
    if !missing.is_empty() {
        return Err(format!("no spans yet from {missing:?} (services so far: {services:?})"));
    }
    let ids: std::collections::HashSet<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    let parents = |s: &serde_json::Value| -> Vec<String> {
        s["references"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["spanID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let roots: Vec<&serde_json::Value> = spans.iter().filter(|s| parents(s).is_empty()).collect();
    let orphans = spans
        .iter()
        .filter(|s| parents(s).iter().any(|p| !ids.contains(p.as_str())))
        .count();
    if orphans > 0 {
        return Err(format!("{orphans} spans name a parent that is not in the trace"));
    }
    let [root] = roots.as_slice() else {
        return Err(format!("{} root spans, want 1 (the gateway's)", roots.len()));
    };
    let root_service = service_of(root);
    if root_service != GATEWAY_SERVICE {
        return Err(format!("the root span is {root_service}'s, want {GATEWAY_SERVICE}'s"));
    }
    Ok(format!(
        "trace {}: {} spans, root {root_service} ({}), services {}",
        t["traceID"].as_str().unwrap_or("?"),
        spans.len(),
        root["operationName"].as_str().unwrap_or("?"),
        services.join(", ")
    ))
}
