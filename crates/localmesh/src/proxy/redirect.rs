//! The `Location` of a Gateway API `RequestRedirect`, as Istio translates the filter and Envoy
//! builds the URL.
//!
//! Istio (`createRedirectFilter`, pilot/pkg/config/kube/gateway/conversion.go): a `port` becomes
//! the redirect port; without one, a `scheme` derives the port from the protocol
//! (`FROM_PROTOCOL_DEFAULT`, for which Istio's route translation sets no port redirect at all), and
//! neither derives it from the request (`FROM_REQUEST_PORT`, which Istio sets to the listener's
//! port). Envoy (`RouteEntryImplBase::newUri` and `processRequestHost`,
//! source/common/router/config_impl.cc): `<scheme>://<host><:port redirect><path>`, where the host
//! is the redirect's hostname or the request's `Host`, whose port is dropped only when a port
//! redirect is set, or when the scheme changes and the port is exactly `:80` (from http) or `:443`
//! (from https). Any other request port stays: `http://host:8880/` with `scheme: https` and no
//! port goes to `https://host:8880/` (envoyproxy/envoy#4832, istio/istio#44798).
//!
//! Ports are the cluster's (a Gateway listener's `port`). localmesh serves a listener on a local
//! port (`--gateway-port`, `--http-port`), as kind publishes a NodePort on a host port, so a
//! redirect to a listener's port names the local port it is served on.

use crate::model::{Protocol, Redirect};

/// The request a redirect answers.
pub(crate) struct Incoming<'a> {
    /// The listener's protocol: Envoy's `x-forwarded-proto` for the connection.
    pub protocol: Protocol,
    /// `Host` / `:authority`, with its port when the client sent one.
    pub authority: &'a str,
    /// Path and query, kept as they are.
    pub path: &'a str,
    /// The Gateway listener's (cluster) port.
    pub listener_port: u16,
}

fn scheme_of(p: Protocol) -> &'static str {
    match p {
        Protocol::Https => "https",
        Protocol::Http => "http",
    }
}

/// The `Location` header. `published` maps a listener (cluster) port to the local port it is
/// served on; ports no listener has are kept as written.
pub(crate) fn location(r: &Redirect, req: &Incoming<'_>, published: impl Fn(u16) -> Option<u16>) -> String {
    let request_scheme = scheme_of(req.protocol);
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let port_redirect = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => Some(req.listener_port),
    }
    .map(|p| published(p).unwrap_or(p));
    let host = match &r.hostname {
        Some(h) => h.as_str(),
        None => request_host(req.authority, request_scheme, scheme, port_redirect.is_some()),
    };
    match port_redirect {
        Some(p) => format!("{scheme}://{host}:{p}{}", req.path),
        None => format!("{scheme}://{host}{}", req.path),
    }
}

/// Envoy's `processRequestHost`.
fn request_host<'a>(authority: &'a str, request_scheme: &str, scheme: &str, port_redirect: bool) -> &'a str {
    let port_at = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    let Some(i) = port_at else {
        return authority;
    };
    let port = &authority[i..];
    let mut remove = port_redirect;
    if scheme != request_scheme {
        remove |= (request_scheme == "https" && port == ":443") || (request_scheme == "http" && port == ":80");
    }
    if remove { &authority[..i] } else { authority }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(scheme: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme: scheme.map(str::to_owned),
            hostname: None,
            port,
            status: 301,
        }
    }

    fn http(authority: &str) -> Incoming<'_> {
        Incoming {
            protocol: Protocol::Http,
            authority,
            path: "/products/1?x=2",
            listener_port: 80,
        }
    }

    const NONE: fn(u16) -> Option<u16> = |_| None;

    #[test]
    fn a_scheme_without_a_port_keeps_a_non_default_request_port() {
        let r = redirect(Some("https"), None);
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn:8880"), NONE),
            "https://sit-gateway.tcex.com.vn:8880/products/1?x=2"
        );
        // :80 is the old scheme's default: dropped.
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn:80"), NONE),
            "https://sit-gateway.tcex.com.vn/products/1?x=2"
        );
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn"), NONE),
            "https://sit-gateway.tcex.com.vn/products/1?x=2"
        );
    }

    #[test]
    fn a_port_replaces_the_request_port_and_is_always_written() {
        let r = redirect(Some("https"), Some(8443));
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn:8880"), NONE),
            "https://sit-gateway.tcex.com.vn:8443/products/1?x=2"
        );
        let r = redirect(Some("https"), Some(443));
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn"), NONE),
            "https://sit-gateway.tcex.com.vn:443/products/1?x=2"
        );
    }

    #[test]
    fn a_listener_port_names_the_local_port_it_is_served_on() {
        let r = redirect(Some("https"), Some(443));
        let published = |p: u16| (p == 443).then_some(18443);
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn:18880"), published),
            "https://sit-gateway.tcex.com.vn:18443/products/1?x=2"
        );
    }

    #[test]
    fn neither_scheme_nor_port_redirects_to_the_listener_port() {
        let r = Redirect {
            hostname: Some("example.org".into()),
            ..redirect(None, None)
        };
        assert_eq!(
            location(&r, &http("sit-gateway.tcex.com.vn:8880"), NONE),
            "http://example.org:80/products/1?x=2"
        );
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let r = redirect(Some("https"), Some(8443));
        assert_eq!(
            location(&r, &http("[::1]:8880"), NONE),
            "https://[::1]:8443/products/1?x=2"
        );
        let r = redirect(Some("https"), None);
        assert_eq!(
            location(&r, &http("[::1]:8880"), NONE),
            "https://[::1]:8880/products/1?x=2"
        );
    }
}
