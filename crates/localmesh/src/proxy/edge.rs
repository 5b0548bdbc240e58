//! What the gateway does to a request from outside before routing it, as an edge Envoy does.
//!
//! Istio configures its gateways' connection manager with `use_remote_address: true` (and
//! `xff_num_trusted_hops` from `gatewayTopology.numTrustedProxies`, 0 by default), so Envoy
//! treats a client's request as external and sanitises it (envoy docs,
//! `configuration/http/http_conn_man/header_sanitizing` and `headers`):
//! - the internal-only `x-envoy-*` headers and `x-forwarded-client-cert` are removed, so a client
//!   cannot set the mesh's timeouts or retries, or pose as an internal caller;
//! - the client's address is appended to `x-forwarded-for`, and set as
//!   `x-envoy-external-address`;
//! - `x-forwarded-proto` is the scheme of the client's connection;
//! - `x-request-id` is made anew (`preserve_external_request_id` is false by default, and Istio
//!   leaves it so).
//!
//! Sidecar hops carry what the mesh set and are left as they are.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request headers Envoy removes from external requests (its header-sanitizing list;
/// `x-forwarded-for`, `x-forwarded-proto` and `x-request-id` are rewritten below instead).
const INTERNAL_ONLY: [&str; 17] = [
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-max-retries",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
    "x-forwarded-client-cert",
];

const XFF: &str = "x-forwarded-for";

/// Sanitises the headers of a request that came from `peer` over TLS or not.
pub fn sanitize_external(headers: &mut HeaderMap, peer: IpAddr, tls: bool) {
    // One pass over the request's few headers instead of a lookup per listed name.
    let listed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            (k.starts_with("x-envoy-") || k == "x-forwarded-client-cert") && INTERNAL_ONLY.contains(&k)
        })
        .cloned()
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let client = peer.to_string();
    // Envoy appends with a bare comma (`Utility::appendXff`); several header lines count as one
    // list.
    let previous: Vec<&str> = headers.get_all(XFF).iter().filter_map(|v| v.to_str().ok()).collect();
    let xff = if previous.is_empty() {
        client.clone()
    } else {
        format!("{},{client}", previous.join(","))
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(HeaderName::from_static(XFF), v);
    }
    if let Ok(v) = HeaderValue::from_str(&client) {
        headers.insert(HeaderName::from_static("x-envoy-external-address"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    headers.remove(telemetry::propagation::REQUEST_ID);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_forwarded_for_lines_are_one_list_and_the_client_goes_last() {
        let mut h = HeaderMap::new();
        h.append(XFF, HeaderValue::from_static("198.51.100.1"));
        h.append(XFF, HeaderValue::from_static("203.0.113.7"));
        h.insert("x-envoy-retry-on", HeaderValue::from_static("5xx"));
        sanitize_external(&mut h, "192.0.2.9".parse().expect("ip"), false);
        assert_eq!(h.get_all(XFF).iter().count(), 1);
        assert_eq!(h[XFF], "198.51.100.1,203.0.113.7,192.0.2.9");
        assert_eq!(h["x-envoy-external-address"], "192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-envoy-retry-on").is_none());
    }
}
