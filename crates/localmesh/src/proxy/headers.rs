//! The request one attempt sends upstream, and the hop-by-hop headers no hop passes on.

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri, Version};

use super::ProxyBody;
use super::record::Ctx;
use super::route::Downstream;
use super::spans::Attempt;
use super::upstream::Dial;

/// The upstream request of one attempt: the client's method, path, headers and `:authority`
/// (Envoy keeps the original host unless a route rewrites it), the mesh's request id and trace
/// context, and `x-envoy-attempt-count` on a retry. Where it goes is in its [`Dial`].
pub(crate) fn upstream_request(
    down: Downstream<'_>,
    ctx: &Ctx,
    attempt: &Attempt,
    dial: Dial,
    body: ProxyBody,
    retries: usize,
) -> Request<ProxyBody> {
    let Downstream { parts, path_q, .. } = down;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.version_mut() = if dial.http2 { Version::HTTP_2 } else { Version::HTTP_11 };
    let uri = Uri::try_from(format!("http://{}{}", ctx.authority, path_q))
        .or_else(|_| Uri::try_from(format!("http://{}{}", dial.addr, path_q)));
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
    req.extensions_mut().insert(dial);
    let headers = req.headers_mut();
    for (n, v) in &parts.headers {
        headers.append(n.clone(), v.clone());
    }
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    if !dial.http2
        && let Ok(host) = HeaderValue::from_str(&ctx.authority)
    {
        headers.insert(header::HOST, host);
    }
    if ctx.grpc || parts.headers.get(header::TE).is_some_and(|t| t == "trailers") {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    ctx.trace.inject(attempt, headers);
    if retries > 0 {
        headers.insert(
            HeaderName::from_static("x-envoy-attempt-count"),
            HeaderValue::from(retries as u64 + 1),
        );
    }
    req
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for h in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(h);
    }
}

pub(crate) fn header_str<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
