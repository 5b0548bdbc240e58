//! Gateway API: Gateway listeners and the HTTPRoute matches attached to them.

use std::collections::BTreeMap;

use manifests::Object;
use manifests::model::LabelSelector;
use manifests::model::gateway_api::{HttpBackendRef, HttpRoute, HttpRouteRule, Listener as RawListener};
use serde::Deserialize;

use super::matches::{gateway_path, gateway_value};
use super::{Ctx, Options, key, origin};
use crate::model::{
    Backend, GatewayRoute, Key, Listener, Mesh, PathMatch, Protocol, Redirect, RequestMatch, RetryOn, RetryPolicy,
    RouteAction, StringMatch, TlsCert,
};

/// Which namespaces may attach routes to a listener (`allowedRoutes.namespaces`).
enum Allowed {
    Same,
    All,
    Selector(LabelSelector),
}

pub(super) fn listeners(cx: &mut Ctx, mesh: &Mesh, options: &Options) -> Vec<Listener> {
    let mut out = Vec::new();
    let mut allowed = Vec::new();
    for (o, g) in cx.m.gateways() {
        for (i, l) in g.spec.listeners.iter().enumerate() {
            if let Some((listener, from)) = listener(cx, o, &format!("spec.listeners[{i}]"), l, options) {
                out.push(listener);
                allowed.push(from);
            }
        }
    }
    let ns_labels = namespace_labels(cx);
    let mut order = 0;
    for (o, r) in cx.m.http_routes() {
        let attached = attach(cx, o, r, &out, &allowed, &ns_labels);
        if attached.is_empty() {
            continue;
        }
        let entries = entries(cx, o, mesh, r, &mut order);
        for li in attached {
            out[li].routes.extend(entries.iter().cloned());
        }
    }
    out
}

fn listener(cx: &mut Ctx, o: &Object, field: &str, l: &RawListener, options: &Options) -> Option<(Listener, Allowed)> {
    let protocol = match l.protocol.as_str() {
        "HTTP" => Protocol::Http,
        "HTTPS" => Protocol::Https,
        other => {
            cx.note(
                o,
                format!("{field}.protocol"),
                format!("{other} listeners are not emulated"),
            );
            return None;
        }
    };
    let port = cx.port(o, &format!("{field}.port"), l.port)?;
    let mut tls = None;
    if protocol == Protocol::Https {
        let t = l.tls.as_ref();
        if t.and_then(|t| t.mode.as_deref()).is_some_and(|m| m != "Terminate") {
            cx.note(o, format!("{field}.tls.mode"), "only Terminate is emulated");
            return None;
        }
        let refs = t.map(|t| t.certificate_refs.as_slice()).unwrap_or_default();
        let Some(secret) = refs.first() else {
            cx.err(
                o,
                format!("{field}.tls.certificateRefs"),
                "an HTTPS listener needs a certificate",
            );
            return None;
        };
        if refs.len() > 1 {
            cx.note(
                o,
                format!("{field}.tls.certificateRefs[1]"),
                "only the first certificate is served",
            );
        }
        tls = Some(TlsCert {
            secret: Key::new(secret.namespace.as_deref().unwrap_or(o.namespace()), &secret.name),
            cert_file: options.cert_dir.join("tls.crt"),
            key_file: options.cert_dir.join("tls.key"),
        });
    }
    let ns = l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    let from = match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => Allowed::All,
        "Selector" => Allowed::Selector(ns.and_then(|n| n.selector.clone()).unwrap_or_default()),
        _ => Allowed::Same,
    };
    let listener = Listener {
        origin: origin(o),
        gateway: key(o),
        name: l.name.clone(),
        protocol,
        port,
        hostname: l.hostname.clone(),
        tls,
        routes: Vec::new(),
    };
    Some((listener, from))
}

/// Namespace labels, including the `kubernetes.io/metadata.name` label Kubernetes sets on each.
fn namespace_labels(cx: &Ctx) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for n in cx.m.namespaces() {
        out.insert(n.name().to_string(), n.metadata.labels.clone());
    }
    out
}

fn admits(
    from: &Allowed,
    gateway_ns: &str,
    route_ns: &str,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    match from {
        Allowed::Same => gateway_ns == route_ns,
        Allowed::All => true,
        Allowed::Selector(sel) => {
            let mut l = labels.get(route_ns).cloned().unwrap_or_default();
            l.insert("kubernetes.io/metadata.name".into(), route_ns.into());
            sel.matches(&l)
        }
    }
}

/// The listeners (indexes) an HTTPRoute attaches to. A parentRef that attaches nowhere is an error:
/// in the cluster the route would be `Accepted: False` and serve nothing.
fn attach(
    cx: &mut Ctx,
    o: &Object,
    r: &HttpRoute,
    listeners: &[Listener],
    allowed: &[Allowed],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<usize> {
    let mut out = Vec::new();
    for (pi, p) in r.spec.parent_refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{pi}]");
        let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if group != "gateway.networking.k8s.io" || kind != "Gateway" {
            cx.note(o, field, format!("{kind} parents (GAMMA) are not emulated"));
            continue;
        }
        let gw = Key::new(p.namespace.as_deref().unwrap_or(o.namespace()), &p.name);
        let candidates: Vec<usize> = (0..listeners.len())
            .filter(|&i| listeners[i].gateway == gw)
            .filter(|&i| p.section_name.as_ref().is_none_or(|s| *s == listeners[i].name))
            .filter(|&i| p.port.is_none_or(|port| i64::from(listeners[i].port) == port))
            .collect();
        if candidates.is_empty() {
            cx.err(o, field, format!("no emulated listener of Gateway {gw} matches"));
            continue;
        }
        let mut any = false;
        for i in candidates {
            let l = &listeners[i];
            if !admits(&allowed[i], &gw.namespace, o.namespace(), ns_labels) {
                continue;
            }
            if !r.spec.hostnames.is_empty()
                && let Some(lh) = &l.hostname
                && !r.spec.hostnames.iter().any(|h| hostnames_intersect(h, lh))
            {
                continue;
            }
            any = true;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        if !any {
            cx.err(
                o,
                field,
                format!(
                    "not attached: Gateway {gw} does not admit routes from namespace {} with these hostnames",
                    o.namespace()
                ),
            );
        }
    }
    out
}

/// Whether two hostnames (either may be a `*.` wildcard) can name the same host.
pub(crate) fn hostnames_intersect(a: &str, b: &str) -> bool {
    let wild = |w: &str, h: &str| w.strip_prefix('*').is_some_and(|suffix| h.ends_with(suffix));
    a.eq_ignore_ascii_case(b) || wild(a, b) || wild(b, a)
}

fn entries(cx: &mut Ctx, o: &Object, mesh: &Mesh, r: &HttpRoute, order: &mut usize) -> Vec<GatewayRoute> {
    let mut out = Vec::new();
    for (ri, rule) in r.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{ri}]");
        let Some((action, timeout, retry)) = rule_action(cx, o, mesh, &field, rule) else {
            continue;
        };
        // No matches: one implicit `PathPrefix /`.
        let implicit = [Default::default()];
        let matches = if rule.matches.is_empty() {
            &implicit[..]
        } else {
            &rule.matches[..]
        };
        for (mi, m) in matches.iter().enumerate() {
            let mfield = format!("{field}.matches[{mi}]");
            let path = match &m.path {
                Some(p) => gateway_path(cx, o, &format!("{mfield}.path"), p),
                None => Some(PathMatch::SegmentPrefix("/".into())),
            };
            let headers: Vec<_> = m
                .headers
                .iter()
                .enumerate()
                .filter_map(|(i, h)| gateway_value(cx, o, &format!("{mfield}.headers[{i}]"), h, true))
                .collect();
            let query_params: Vec<_> = m
                .query_params
                .iter()
                .enumerate()
                .filter_map(|(i, h)| gateway_value(cx, o, &format!("{mfield}.queryParams[{i}]"), h, false))
                .collect();
            let (Some(path), true, true) = (
                path,
                headers.len() == m.headers.len(),
                query_params.len() == m.query_params.len(),
            ) else {
                continue;
            };
            out.push(GatewayRoute {
                origin: origin(o),
                route: key(o),
                field: mfield,
                hostnames: r.spec.hostnames.clone(),
                matcher: RequestMatch {
                    path: Some(path),
                    method: m.method.as_ref().map(|x| StringMatch::Exact(x.to_ascii_uppercase())),
                    headers,
                    query_params,
                    ..RequestMatch::default()
                },
                action: action.clone(),
                timeout,
                retry: retry.clone(),
                order: *order,
                span_name: Default::default(),
            });
            *order += 1;
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRedirect {
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<u16>,
    status_code: Option<u16>,
}

type RuleAction = (RouteAction, Option<std::time::Duration>, RetryPolicy);

fn rule_action(cx: &mut Ctx, o: &Object, mesh: &Mesh, field: &str, rule: &HttpRouteRule) -> Option<RuleAction> {
    let mut redirect = None;
    for (fi, f) in rule.filters.iter().enumerate() {
        let ffield = format!("{field}.filters[{fi}]");
        match f.get("type").and_then(|t| t.as_str()) {
            Some("RequestRedirect") => {
                let raw = f.get("requestRedirect").cloned().unwrap_or_default();
                let r: RawRedirect = cx.decode(o, &format!("{ffield}.requestRedirect"), &raw)?;
                if raw.get("path").is_some() {
                    cx.note(
                        o,
                        format!("{ffield}.requestRedirect.path"),
                        "path rewrites in redirects are not emulated",
                    );
                }
                redirect = Some(Redirect {
                    scheme: r.scheme,
                    hostname: r.hostname,
                    port: r.port,
                    status: r.status_code.unwrap_or(302),
                });
            }
            Some(t) => cx.note(o, format!("{ffield}.type"), format!("{t} filters are not emulated")),
            None => cx.err(o, format!("{ffield}.type"), "missing"),
        }
    }
    // Without a `retry` of its own the route gets the mesh's defaultHttpRetryPolicy.
    let own_retry = match &rule.retry {
        Some(r) => Some(httproute_retry(cx, o, &format!("{field}.retry"), r)?),
        None => None,
    };
    let mut retry = own_retry.clone().unwrap_or_else(|| mesh.default_retry.clone());
    let mut timeout = None;
    if let Some(t) = &rule.timeouts {
        if let Some(req) = &t.request {
            timeout = cx.duration(o, &format!("{field}.timeouts.request"), req)?.into();
        }
        // Istio's `convertHTTPRoute`: backendRequest is the per-try timeout of the rule's own
        // retry, else the route's timeout (pilot/pkg/config/kube/gateway/conversion.go).
        if let Some(b) = &t.backend_request {
            let b = cx.duration(o, &format!("{field}.timeouts.backendRequest"), b)?;
            if own_retry.is_some() {
                retry.per_try_timeout = Some(b);
            } else {
                timeout = Some(b);
            }
        }
    }
    let timeout = timeout.filter(|d: &std::time::Duration| !d.is_zero());
    if let Some(r) = redirect {
        return Some((RouteAction::Redirect(r), timeout, retry));
    }
    let mut backends = Vec::new();
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        backends.push(backend(cx, o, mesh, &format!("{field}.backendRefs[{bi}]"), b)?);
    }
    Some((RouteAction::Forward(backends), timeout, retry))
}

/// An HTTPRoute rule's `retry` (Gateway API experimental channel) as Istio converts it
/// (`convertHTTPRoute`, pilot/pkg/config/kube/gateway/conversion.go): retries on connect failures,
/// refused streams and gRPC `unavailable` and `cancelled`, plus each of `codes`; `attempts`
/// defaults to 2 (the mesh's own default), and 0 retries nothing.
fn httproute_retry(cx: &mut Ctx, o: &Object, field: &str, r: &serde_json::Value) -> Option<RetryPolicy> {
    let Some(map) = r.as_object() else {
        cx.err(o, field, "must be a map (attempts, codes, backoff)");
        return None;
    };
    let attempts = match map.get("attempts") {
        None => 2,
        Some(a) => match a.as_u64().and_then(|a| u32::try_from(a).ok()) {
            Some(a) => a,
            None => {
                cx.err(
                    o,
                    format!("{field}.attempts"),
                    format!("{a} is not a count of retries (0 or more)"),
                );
                return None;
            }
        },
    };
    let mut retry_on = vec![
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Unavailable,
        RetryOn::Cancelled,
    ];
    if let Some(codes) = map.get("codes") {
        let Some(list) = codes.as_array() else {
            cx.err(o, format!("{field}.codes"), "must be a list of HTTP status codes");
            return None;
        };
        for (i, c) in list.iter().enumerate() {
            match c
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..=599).contains(c))
            {
                Some(c) => {
                    if !retry_on.contains(&RetryOn::RetriableStatusCodes) {
                        retry_on.push(RetryOn::RetriableStatusCodes);
                    }
                    retry_on.push(RetryOn::Status(c));
                }
                None => {
                    cx.err(
                        o,
                        format!("{field}.codes[{i}]"),
                        format!("{c} is not an HTTP status code from 400 to 599"),
                    );
                    return None;
                }
            }
        }
    }
    if let Some(b) = map.get("backoff") {
        let text = b.as_str().unwrap_or_default();
        cx.duration(o, &format!("{field}.backoff"), text)?;
        cx.note(
            o,
            format!("{field}.backoff"),
            "the backoff between retries is not emulated: retries go at once",
        );
    }
    if attempts == 0 {
        return Some(RetryPolicy::none());
    }
    Some(RetryPolicy {
        attempts,
        per_try_timeout: None,
        retry_on,
    })
}

fn backend(cx: &mut Ctx, o: &Object, mesh: &Mesh, field: &str, b: &HttpBackendRef) -> Option<Backend> {
    if !b.is_service() {
        cx.err(o, format!("{field}.kind"), "only Service backends are emulated");
        return None;
    }
    if !b.filters.is_empty() {
        cx.note(o, format!("{field}.filters"), "backend filters are not emulated");
    }
    let service = Key::new(b.namespace.as_deref().unwrap_or(o.namespace()), &b.name);
    let Some(svc) = mesh.service(&service) else {
        cx.err(
            o,
            format!("{field}.name"),
            format!("no Service {service} in the manifests"),
        );
        return None;
    };
    let Some(port) = b.port else {
        cx.err(o, format!("{field}.port"), "required for a Service backend");
        return None;
    };
    let port = cx.port(o, &format!("{field}.port"), port)?;
    if !svc.ports.iter().any(|p| p.port == port) {
        cx.err(
            o,
            format!("{field}.port"),
            format!("Service {service} has no port {port}"),
        );
        return None;
    }
    let weight = match u32::try_from(b.weight.unwrap_or(1)) {
        Ok(w) => w,
        Err(_) => {
            cx.err(o, format!("{field}.weight"), "must not be negative");
            return None;
        }
    };
    Some(Backend {
        service,
        port: Some(port),
        subset: None,
        weight,
    })
}
