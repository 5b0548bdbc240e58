//! The public Gateway as the user's seed 001 describes it, and HTTPRoutes' attachment to it.

use super::Finding;
use crate::model::gateway_api::Listener;
use crate::model::{Manifests, Object};

/// The Gateway the suite is specified with (host, HTTPS listener, Secret), which the manifests
/// must reproduce (docs/cluster.md).
#[derive(Debug, Clone, Copy)]
pub struct SeedGateway {
    pub namespace: &'static str,
    pub name: &'static str,
    pub class: &'static str,
    pub parameters_config_map: &'static str,
    pub listener: &'static str,
    pub hostname: &'static str,
    pub port: i64,
    pub protocol: &'static str,
    pub tls_mode: &'static str,
    pub secret: &'static str,
}

pub const SEED_GATEWAY: SeedGateway = SeedGateway {
    namespace: "gateway",
    name: "public-api-gateway",
    class: "istio",
    parameters_config_map: "public-gw-options",
    listener: "https",
    hostname: "sit-gateway.tcex.com.vn",
    port: 443,
    protocol: "HTTPS",
    tls_mode: "Terminate",
    secret: "tcex-cert",
};

const CHECK: &str = "gateway_matches_seed";

/// The Gateway `gateway/public-api-gateway` exists and matches seed 001: class, parametersRef to the
/// ConfigMap (which must exist beside it), and the `https` listener's hostname, port, protocol, TLS
/// mode and certificate Secret. `allowedRoutes` is not compared literally (the seed says `All`; a
/// tighter selector is fine); [`http_route_parents`] checks that it admits the routes.
pub fn gateway_matches_seed(m: &Manifests) -> Vec<Finding> {
    let seed = SEED_GATEWAY;
    let Some((o, gw)) = m
        .gateways()
        .find(|(o, _)| o.namespace() == seed.namespace && o.name() == seed.name)
    else {
        let found: Vec<String> = m.gateways().map(|(o, _)| o.id()).collect();
        let anchor = m.gateways().next().map(|(o, _)| o).or(m.objects.first());
        let msg = format!(
            "Gateway {}/{} not found (Gateways: {found:?})",
            seed.namespace, seed.name
        );
        return anchor
            .map(|a| Finding::new(CHECK, a, "metadata.name", msg))
            .into_iter()
            .collect();
    };
    let mut out = Vec::new();
    let mut expect = |field: &str, got: Option<&str>, want: &str| {
        if got != Some(want) {
            out.push(Finding::new(
                CHECK,
                o,
                field,
                format!("is {:?}, seed 001 says {want:?}", got.unwrap_or("(unset)")),
            ));
        }
    };
    expect(
        "spec.gatewayClassName",
        gw.spec.gateway_class_name.as_deref(),
        seed.class,
    );
    let pref = gw.spec.infrastructure.as_ref().and_then(|i| i.parameters_ref.as_ref());
    expect(
        "spec.infrastructure.parametersRef.name",
        pref.map(|p| p.name.as_str()),
        seed.parameters_config_map,
    );
    expect(
        "spec.infrastructure.parametersRef.kind",
        pref.and_then(|p| p.kind.as_deref()),
        "ConfigMap",
    );
    expect(
        "spec.infrastructure.parametersRef.group",
        pref.map(|p| p.group.as_deref().unwrap_or("")),
        "",
    );
    let listeners = &gw.spec.listeners;
    let Some(i) = listeners.iter().position(|l| l.name == seed.listener) else {
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        out.push(Finding::new(
            CHECK,
            o,
            "spec.listeners",
            format!("no listener named `{}` (have {names:?})", seed.listener),
        ));
        return out;
    };
    out.extend(listener_findings(o, i, &listeners[i]));
    if !m
        .config_maps()
        .any(|(c, _)| c.namespace() == seed.namespace && c.name() == seed.parameters_config_map)
    {
        out.push(Finding::new(
            CHECK,
            o,
            "spec.infrastructure.parametersRef",
            format!(
                "ConfigMap {}/{} is not in the manifests",
                seed.namespace, seed.parameters_config_map
            ),
        ));
    }
    out
}

fn listener_findings(o: &Object, i: usize, l: &Listener) -> Vec<Finding> {
    let seed = SEED_GATEWAY;
    let mut out = Vec::new();
    let at = |f: &str| format!("spec.listeners[{i}].{f}");
    let mut expect = |field: String, got: String, want: String| {
        if got != want {
            out.push(Finding::new(
                CHECK,
                o,
                field,
                format!("is {got:?}, seed 001 says {want:?}"),
            ));
        }
    };
    expect(
        at("hostname"),
        l.hostname.clone().unwrap_or_default(),
        seed.hostname.into(),
    );
    expect(at("port"), l.port.to_string(), seed.port.to_string());
    expect(at("protocol"), l.protocol.clone(), seed.protocol.into());
    let tls = l.tls.as_ref();
    // `mode` defaults to Terminate in the API, so leaving it out is the same Gateway.
    expect(
        at("tls.mode"),
        tls.and_then(|t| t.mode.clone()).unwrap_or_else(|| "Terminate".into()),
        seed.tls_mode.into(),
    );
    let refs = tls.map(|t| t.certificate_refs.as_slice()).unwrap_or_default();
    let described: Vec<String> = refs
        .iter()
        .map(|r| {
            let kind = r.kind.as_deref().unwrap_or("Secret");
            let group = r.group.as_deref().unwrap_or("");
            let ns = r.namespace.as_deref().unwrap_or(o.namespace());
            format!("{group}/{kind} {ns}/{}", r.name)
        })
        .collect();
    expect(
        at("tls.certificateRefs"),
        described.join(", "),
        format!("/Secret {}/{}", seed.namespace, seed.secret),
    );
    out
}

/// Every HTTPRoute `parentRef` to a Gateway names a Gateway in the manifests and one of its
/// listeners, the listener's `allowedRoutes` admits the route's namespace, and the route's hostnames
/// meet the listener's. Otherwise the route is never `Accepted` and nothing is routed.
pub fn http_route_parents(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, route) in m.http_routes() {
        for (i, p) in route.spec.parent_refs.iter().enumerate() {
            let field = format!("spec.parentRefs[{i}]");
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            let ns = p.namespace.as_deref().unwrap_or(o.namespace());
            if kind == "Service" {
                // GAMMA: the route attaches to a Service for mesh traffic.
                if m.service(ns, &p.name).is_none() {
                    let msg = format!("Service {ns}/{} does not exist in the manifests", p.name);
                    out.push(Finding::new("http_route_parents", o, format!("{field}.name"), msg));
                }
                continue;
            }
            let Some((_, gw)) = m.gateways().find(|(g, _)| g.namespace() == ns && g.name() == p.name) else {
                let msg = format!("Gateway {ns}/{} does not exist in the manifests", p.name);
                out.push(Finding::new("http_route_parents", o, format!("{field}.name"), msg));
                continue;
            };
            let listeners: Vec<&Listener> = gw
                .spec
                .listeners
                .iter()
                .filter(|l| {
                    p.section_name.as_ref().is_none_or(|s| *s == l.name) && p.port.is_none_or(|pt| pt == l.port)
                })
                .collect();
            if listeners.is_empty() {
                let msg = format!(
                    "Gateway {ns}/{} has no listener {:?}",
                    p.name,
                    p.section_name.as_deref().unwrap_or("?")
                );
                out.push(Finding::new(
                    "http_route_parents",
                    o,
                    format!("{field}.sectionName"),
                    msg,
                ));
                continue;
            }
            if !listeners.iter().any(|l| admits(m, ns, l, o.namespace())) {
                let msg = format!(
                    "listener allowedRoutes of Gateway {ns}/{} do not admit routes from namespace {}",
                    p.name,
                    o.namespace()
                );
                out.push(Finding::new("http_route_parents", o, field.clone(), msg));
            }
            if !route.spec.hostnames.is_empty()
                && !listeners.iter().any(|l| {
                    route
                        .spec
                        .hostnames
                        .iter()
                        .any(|h| hosts_meet(l.hostname.as_deref(), h))
                })
            {
                let msg = format!("no hostname meets the listener hostnames of Gateway {ns}/{}", p.name);
                out.push(Finding::new("http_route_parents", o, "spec.hostnames", msg));
            }
        }
    }
    out
}

fn admits(m: &Manifests, gw_ns: &str, l: &Listener, route_ns: &str) -> bool {
    let ns = l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => gw_ns == route_ns,
        "Selector" => {
            let Some(sel) = ns.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            // Kubernetes labels every namespace with its own name; other labels come from a
            // Namespace object in the manifests, if there is one.
            let mut labels = m
                .namespaces()
                .find(|n| n.name() == route_ns)
                .map(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), route_ns.into());
            sel.matches(&labels)
        }
        _ => false,
    }
}

fn hosts_meet(listener: Option<&str>, route: &str) -> bool {
    let Some(l) = listener else { return true };
    let wild = |pattern: &str, host: &str| {
        pattern
            .strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
    };
    l == route || wild(l, route) || wild(route, l)
}
