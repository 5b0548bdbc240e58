//! What a client of the public gateway meets at the edge, where Envoy's semantics differ from what
//! the YAML seems to say: the port-80 redirect's port, the gRPC services reachable through the
//! HTTPS listener, and retries of calls that must never be replayed.

use super::Finding;
use crate::model::gateway_api::{HttpRoute, HttpRouteRule};
use crate::model::{Manifests, Object, Resource};

/// Where kind publishes the gateway's HTTPS listener on the host: NodePort 30443
/// (`gateway/public-gw-options.yaml`) mapped to 127.0.0.1:8443 (`scripts/cluster/kind-config.yaml`;
/// a test keeps the two equal). Every overlay under `manifests/overlays/` deploys to kind.
pub const KIND_HTTPS_HOST_PORT: i64 = 8443;

/// gRPC methods a client calls through the gateway (README, docs/cluster.md), which must reach a
/// gRPC backend rather than fall through to the shop's `/` route (an HTML 404 to grpcurl).
/// Each with the Service that serves it: a path is required when that Service exists.
pub const GATEWAY_GRPC_PATHS: &[(&str, &str)] = &[
    ("/product.ProductService/GetProduct", "product-service"),
    ("/product.ProductService/AgentSync", "product-service"),
    ("/order.OrderService/CreateOrder", "order-service"),
    ("/grpc.health.v1.Health/Check", "product-service"),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "product-service",
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "product-service",
    ),
];

/// Calls the gateway must never replay: an order (the payment may be under way) and the streams.
pub const NEVER_RETRIED: &[&str] = &[
    "/order.OrderService/CreateOrder",
    "/product.ProductService/AgentSync",
    "/product.ProductService/WatchPrices",
];

/// The kind of the file `istioctl install -f` reads (`observability/istio/istio-operator.yaml`).
const ISTIO_OPERATOR: &str = "IstioOperator";

/// Gateway (not mesh) parents: the routes of the public edge.
fn gateway_routes(m: &Manifests) -> impl Iterator<Item = (&Object, &HttpRoute)> {
    m.http_routes().filter(|(_, r)| {
        r.spec.parent_refs.iter().any(|p| {
            p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && p.group.as_deref().unwrap_or("gateway.networking.k8s.io") == "gateway.networking.k8s.io"
        })
    })
}

/// Whether one of the rule's path matches selects `path` (Exact, or a PathPrefix on `/`-separated
/// elements). A rule without matches selects everything.
fn rule_selects(rule: &HttpRouteRule, path: &str) -> Option<usize> {
    if rule.matches.is_empty() {
        return Some(1);
    }
    rule.matches
        .iter()
        .filter_map(|mt| {
            let Some(p) = &mt.path else {
                return Some(1);
            };
            let value = p.value.as_deref().unwrap_or("/");
            match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => (value == path).then_some(usize::MAX),
                "PathPrefix" => {
                    let prefix = value.trim_end_matches('/');
                    let hit = prefix.is_empty()
                        || path == prefix
                        || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'));
                    hit.then_some(prefix.len().max(1))
                }
                _ => None,
            }
        })
        .max()
}

/// Each RequestRedirect that changes the scheme names its port: without one Istio sets no port
/// redirect and Envoy keeps the request's port unless it is exactly :80 or :443
/// (`processRequestHost`; envoyproxy/envoy#4832, istio/istio#44798), so kind's
/// `http://host:8880/` would go to `https://host:8880/`. On kind (any overlay) the port is
/// [`KIND_HTTPS_HOST_PORT`]; elsewhere an HTTPS listener's port of the route's Gateway.
pub fn redirect_ports(m: &Manifests) -> Vec<Finding> {
    let https_ports: Vec<i64> = m
        .gateways()
        .flat_map(|(_, g)| &g.spec.listeners)
        .filter(|l| l.protocol == "HTTPS")
        .map(|l| l.port)
        .collect();
    let mut out = Vec::new();
    for (o, r) in m.http_routes() {
        let on_kind = o.source.file.to_string_lossy().contains("overlays");
        for (ri, rule) in r.spec.rules.iter().enumerate() {
            for (fi, f) in rule.filters.iter().enumerate() {
                if f.get("type").and_then(|t| t.as_str()) != Some("RequestRedirect") {
                    continue;
                }
                let rd = f.get("requestRedirect").cloned().unwrap_or_default();
                let Some(scheme) = rd.get("scheme").and_then(|s| s.as_str()) else {
                    continue;
                };
                let field = format!("spec.rules[{ri}].filters[{fi}].requestRedirect.port");
                let port = rd.get("port").and_then(serde_json::Value::as_i64);
                let want: Vec<i64> = match (scheme, on_kind) {
                    ("https", true) => vec![KIND_HTTPS_HOST_PORT],
                    ("https", false) => https_ports.clone(),
                    _ => continue,
                };
                match port {
                    None => out.push(Finding::new(
                        "redirect_ports",
                        o,
                        field,
                        format!(
                            "no port: Envoy keeps the request's port (kind's :8880 stays) unless it is :80 or :443; name {}",
                            if on_kind { "8443, where kind publishes HTTPS" } else { "the HTTPS listener's port" }
                        ),
                    )),
                    Some(p) if !want.contains(&p) => out.push(Finding::new(
                        "redirect_ports",
                        o,
                        field,
                        format!("port {p} is not where HTTPS is served ({want:?})"),
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    out
}

/// Every method of [`GATEWAY_GRPC_PATHS`] is selected, through the HTTPS listeners, by a rule that
/// sends it to a gRPC Service port (`appProtocol: grpc`), not by the shop's `/` rule.
pub fn gateway_grpc_services(m: &Manifests) -> Vec<Finding> {
    let https: Vec<&str> = m
        .gateways()
        .flat_map(|(_, g)| &g.spec.listeners)
        .filter(|l| l.protocol == "HTTPS")
        .map(|l| l.name.as_str())
        .collect();
    let routes: Vec<(&Object, &HttpRoute)> = gateway_routes(m)
        .filter(|(_, r)| {
            r.spec
                .parent_refs
                .iter()
                .any(|p| p.section_name.as_deref().is_none_or(|s| https.contains(&s)))
        })
        .collect();
    let Some(anchor) = routes.first().map(|(o, _)| *o) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for &(path, served_by) in GATEWAY_GRPC_PATHS {
        if !m.services().any(|(o, _)| o.name() == served_by) {
            continue;
        }
        // The most specific rule wins (Gateway API precedence: Exact, then the longest prefix).
        let best = routes
            .iter()
            .flat_map(|(o, r)| r.spec.rules.iter().map(move |rule| (*o, rule)))
            .filter_map(|(o, rule)| rule_selects(rule, path).map(|len| (len, o, rule)))
            .max_by_key(|(len, _, _)| *len);
        let Some((_, o, rule)) = best else {
            out.push(Finding::new(
                "gateway_grpc_services",
                anchor,
                "spec.rules",
                format!("no gateway route selects {path}"),
            ));
            continue;
        };
        let grpc = !rule.backend_refs.is_empty()
            && rule.backend_refs.iter().all(|b| {
                // A missing Service or port is http_route_backend_refs' finding, not this one's.
                let ns = b.namespace.as_deref().unwrap_or(o.namespace());
                m.service(ns, &b.name).is_none_or(|(_, s)| {
                    s.spec.ports.iter().all(|p| Some(p.port) != b.port)
                        || s.spec
                            .ports
                            .iter()
                            .any(|p| Some(p.port) == b.port && p.app_protocol.as_deref() == Some("grpc"))
                })
            });
        if !grpc {
            let to: Vec<&str> = rule.backend_refs.iter().map(|b| b.name.as_str()).collect();
            out.push(Finding::new(
                "gateway_grpc_services",
                o,
                "spec.rules",
                format!("{path} falls to a rule sending it to {to:?}, not a gRPC port: route its service's prefix"),
            ));
        }
    }
    out
}

/// Whether some gateway rule takes every request for `path`: an Exact match for it with no header,
/// query or method condition, which wins over every PathPrefix rule (Gateway API precedence).
fn always_exact(m: &Manifests, path: &str) -> bool {
    gateway_routes(m).any(|(_, r)| {
        r.spec.rules.iter().flat_map(|rule| &rule.matches).any(|mt| {
            mt.path
                .as_ref()
                .is_some_and(|p| p.type_.as_deref() == Some("Exact") && p.value.as_deref() == Some(path))
                && mt.headers.is_empty()
                && mt.query_params.is_empty()
                && mt.method.is_none()
        })
    })
}

/// No gateway route retries [`NEVER_RETRIED`] calls: neither with its own `retry` nor through the
/// mesh default. Istio gives a route without `retries` the IstioOperator's
/// `meshConfig.defaultHttpRetryPolicy`, else 2 retries on connect-failure, refused-stream,
/// unavailable, cancelled and 503 (`routeDestination`, pilot/pkg/networking/core/route), so when an
/// IstioOperator is loaded its policy must say `attempts: 0`.
pub fn gateway_retries(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut unset = Vec::new();
    for (o, r) in gateway_routes(m) {
        for (ri, rule) in r.spec.rules.iter().enumerate() {
            // A prefix rule never sees a path that an Exact rule always takes.
            let carries = |p: &&str| match rule_selects(rule, p) {
                Some(usize::MAX) => true,
                Some(len) => len > 1 && !always_exact(m, p),
                None => false,
            };
            if !NEVER_RETRIED.iter().any(carries) {
                continue;
            }
            match &rule.retry {
                Some(retry) => {
                    if retry.get("attempts").and_then(serde_json::Value::as_i64).unwrap_or(1) != 0 {
                        out.push(Finding::new(
                            "gateway_retries",
                            o,
                            format!("spec.rules[{ri}].retry"),
                            "retries an order or a stream: a replayed CreateOrder may charge twice, a stream restarts",
                        ));
                    }
                }
                None => unset.push((o, ri)),
            }
        }
    }
    if unset.is_empty() {
        return out;
    }
    // The mesh default is checked where the IstioOperator is loaded (the repo: load_repo adds it).
    let Some((op, value)) = m.objects.iter().find_map(|o| match &o.resource {
        Resource::Other(v) if o.kind == ISTIO_OPERATOR => Some((o, v)),
        _ => None,
    }) else {
        return out;
    };
    let attempts = value
        .pointer("/spec/meshConfig/defaultHttpRetryPolicy/attempts")
        .map(|a| a.as_i64().unwrap_or(1));
    if attempts != Some(0) {
        let routes: Vec<String> = unset.iter().map(|(o, ri)| format!("{} rule {ri}", o.id())).collect();
        out.push(Finding::new(
            "gateway_retries",
            op,
            "spec.meshConfig.defaultHttpRetryPolicy.attempts",
            format!(
                "not 0: gateway routes without retries of their own get it (else Istio's 2 retries on \
                 unavailable, cancelled, 503 and connect failures), so CreateOrder and the streams \
                 would be retried: {routes:?}"
            ),
        ));
    }
    out
}
