//! HTTPRoute backend references, Service selectors, and traffic weights.

use super::Finding;
use crate::model::meta::{IntOrString, labels_contain};
use crate::model::{Manifests, Object};

/// Every HTTPRoute `backendRef` to a Service names a Service in the manifests and one of its ports,
/// and a cross-namespace reference is allowed by a ReferenceGrant. Otherwise the gateway answers
/// 500 for that backend's share of the traffic.
pub fn http_route_backend_refs(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, route) in m.http_routes() {
        for (i, rule) in route.spec.rules.iter().enumerate() {
            for (j, b) in rule.backend_refs.iter().enumerate() {
                let field = format!("spec.rules[{i}].backendRefs[{j}]");
                if !b.is_service() {
                    continue;
                }
                let ns = b.namespace.as_deref().unwrap_or(o.namespace());
                let Some((_, svc)) = m.service(ns, &b.name) else {
                    out.push(Finding::new(
                        "http_route_backend_refs",
                        o,
                        format!("{field}.name"),
                        format!("Service {ns}/{} does not exist in the manifests", b.name),
                    ));
                    continue;
                };
                match b.port {
                    None => out.push(Finding::new(
                        "http_route_backend_refs",
                        o,
                        format!("{field}.port"),
                        "port is required when the backend is a Service",
                    )),
                    Some(p) if !svc.spec.ports.iter().any(|sp| sp.port == p) => {
                        let have: Vec<i64> = svc.spec.ports.iter().map(|sp| sp.port).collect();
                        out.push(Finding::new(
                            "http_route_backend_refs",
                            o,
                            format!("{field}.port"),
                            format!("Service {ns}/{} has no port {p} (ports: {have:?})", b.name),
                        ));
                    }
                    Some(_) => {}
                }
                if ns != o.namespace() && !granted(m, o.namespace(), ns, &b.name) {
                    out.push(Finding::new(
                        "http_route_backend_refs",
                        o,
                        format!("{field}.namespace"),
                        format!(
                            "cross-namespace reference to Service {ns}/{} needs a ReferenceGrant in {ns} from HTTPRoute in {}",
                            b.name,
                            o.namespace()
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// Whether a ReferenceGrant in `to_ns` lets HTTPRoutes in `from_ns` reference Service `name`.
fn granted(m: &Manifests, from_ns: &str, to_ns: &str, name: &str) -> bool {
    m.reference_grants().any(|(g, rg)| {
        g.namespace() == to_ns
            && rg
                .spec
                .from
                .iter()
                .any(|f| f.group == "gateway.networking.k8s.io" && f.kind == "HTTPRoute" && f.namespace == from_ns)
            && rg
                .spec
                .to
                .iter()
                .any(|t| t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == name))
    })
}

/// Every Service with a selector selects at least one pod template, and a named `targetPort`
/// is a named port of those containers: otherwise the Service has no endpoints.
pub fn service_selectors(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, svc) in m.services() {
        if svc.spec.selector.is_empty() {
            continue;
        }
        let pods: Vec<_> = m
            .pod_templates()
            .filter(|(w, t)| w.namespace() == o.namespace() && labels_contain(&t.metadata.labels, &svc.spec.selector))
            .collect();
        if pods.is_empty() {
            out.push(Finding::new(
                "service_selectors",
                o,
                "spec.selector",
                format!(
                    "selector {:?} matches no Deployment/StatefulSet pod template in {}",
                    svc.spec.selector,
                    o.namespace()
                ),
            ));
            continue;
        }
        for (i, p) in svc.spec.ports.iter().enumerate() {
            let Some(IntOrString::String(name)) = &p.target_port else {
                continue;
            };
            let found = pods.iter().any(|(_, t)| {
                t.spec
                    .containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .any(|cp| cp.name.as_deref() == Some(name))
            });
            if !found {
                out.push(Finding::new(
                    "service_selectors",
                    o,
                    format!("spec.ports[{i}].targetPort"),
                    format!("no selected container declares a port named `{name}`"),
                ));
            }
        }
    }
    out
}

/// Weighted splits add up to 100, so the percentages in the YAML are the percentages users see.
/// HTTPRoute: rules with several backendRefs (unset weight = 1). VirtualService: routes with several
/// destinations, or one destination with an explicit weight (unset weight = 0 when there are several).
pub fn route_weights(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, route) in m.http_routes() {
        for (i, rule) in route.spec.rules.iter().enumerate() {
            if rule.backend_refs.len() < 2 {
                continue;
            }
            let sum: i64 = rule.backend_refs.iter().map(|b| b.weight.unwrap_or(1)).sum();
            push_sum(&mut out, o, format!("spec.rules[{i}].backendRefs"), sum);
        }
    }
    for (o, vs) in m.virtual_services() {
        let http = vs.spec.http.iter().enumerate().map(|(i, r)| {
            (
                format!("spec.http[{i}].route"),
                r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
            )
        });
        let tcp = vs.spec.tcp.iter().enumerate().map(|(i, r)| {
            (
                format!("spec.tcp[{i}].route"),
                r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
            )
        });
        let tls = vs.spec.tls.iter().enumerate().map(|(i, r)| {
            (
                format!("spec.tls[{i}].route"),
                r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
            )
        });
        for (field, weights) in http.chain(tcp).chain(tls) {
            if weights.len() < 2 && weights.iter().all(Option::is_none) {
                continue;
            }
            push_sum(&mut out, o, field, weights.iter().map(|w| w.unwrap_or(0)).sum());
        }
    }
    out
}

fn push_sum(out: &mut Vec<Finding>, o: &Object, field: String, sum: i64) {
    if sum != 100 {
        out.push(Finding::new(
            "route_weights",
            o,
            format!("{field}[*].weight"),
            format!("weights add up to {sum}, not 100"),
        ));
    }
}
