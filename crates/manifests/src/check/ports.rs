//! gRPC Service ports must be declared HTTP/2: the gateway otherwise speaks HTTP/1.1 upstream
//! and gRPC fails with `502 UPE protocol_error` (istio#57294).

use std::collections::BTreeSet;

use super::Finding;
use crate::model::Manifests;
use crate::model::core::{Service, ServicePort};
use crate::model::meta::{IntOrString, labels_contain};

/// The suite's gRPC port (docs/architecture.md, "Ports and pod identity"): every gRPC service listens on it.
pub const GRPC_PORT: i64 = 50051;

/// Every Service port that carries gRPC is named `grpc` or `grpc-*` and has `appProtocol: grpc`.
/// A port carries gRPC when any of these says so: its name or appProtocol, port or targetPort 50051,
/// a `grpc*`-named container port behind it, or an HTTPRoute sending a gRPC path (`/pkg.Service…`) to it.
pub fn grpc_ports(m: &Manifests) -> Vec<Finding> {
    let routed = grpc_routed_ports(m);
    let mut out = Vec::new();
    for (o, svc) in m.services() {
        for (i, p) in svc.spec.ports.iter().enumerate() {
            let via_route = routed.contains(&(o.namespace().to_string(), o.name().to_string(), p.port));
            if !(via_route || looks_grpc(m, o.namespace(), svc, p)) {
                continue;
            }
            let name = p.name.as_deref().unwrap_or("");
            if name != "grpc" && !name.starts_with("grpc-") {
                out.push(Finding::new(
                    "grpc_ports",
                    o,
                    format!("spec.ports[{i}].name"),
                    format!(
                        "gRPC port {} is named `{name}`; name it `grpc` or `grpc-<suffix>`",
                        p.port
                    ),
                ));
            }
            if p.app_protocol.as_deref() != Some("grpc") {
                out.push(Finding::new(
                    "grpc_ports",
                    o,
                    format!("spec.ports[{i}].appProtocol"),
                    format!(
                        "gRPC port {} has appProtocol {:?}; set `appProtocol: grpc` so the gateway speaks HTTP/2 upstream",
                        p.port,
                        p.app_protocol.as_deref().unwrap_or("(unset)")
                    ),
                ));
            }
        }
    }
    out
}

fn looks_grpc(m: &Manifests, ns: &str, svc: &Service, p: &ServicePort) -> bool {
    let named = |n: &str| n.starts_with("grpc") && !n.starts_with("grpc-web");
    if p.name.as_deref().is_some_and(named) || p.app_protocol.as_deref() == Some("grpc") {
        return true;
    }
    let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
    if p.port == GRPC_PORT || target == IntOrString::Int(GRPC_PORT) {
        return true;
    }
    if let IntOrString::String(t) = &target {
        return named(t);
    }
    // A numeric targetPort whose container port is named grpc*.
    !svc.spec.selector.is_empty()
        && m.pod_templates()
            .filter(|(w, t)| w.namespace() == ns && labels_contain(&t.metadata.labels, &svc.spec.selector))
            .flat_map(|(_, t)| t.spec.containers.iter().flat_map(|c| &c.ports))
            .any(|cp| IntOrString::Int(cp.container_port) == target && cp.name.as_deref().is_some_and(named))
}

/// `(namespace, service, port)` that HTTPRoute rules matching a gRPC path send traffic to.
fn grpc_routed_ports(m: &Manifests) -> BTreeSet<(String, String, i64)> {
    let mut set = BTreeSet::new();
    for (o, route) in m.http_routes() {
        for rule in &route.spec.rules {
            let grpc = rule.matches.iter().any(|mt| {
                mt.path
                    .as_ref()
                    .and_then(|p| p.value.as_deref())
                    .is_some_and(is_grpc_path)
            });
            if !grpc {
                continue;
            }
            for b in rule.backend_refs.iter().filter(|b| b.is_service()) {
                let ns = b.namespace.as_deref().unwrap_or(o.namespace());
                if let Some(port) = b.port {
                    set.insert((ns.to_string(), b.name.clone(), port));
                }
            }
        }
    }
    set
}

/// gRPC paths are `/<package>.<Service>/<Method>`: the first segment is dotted and ends in a
/// capitalised service name (which tells `/product.ProductService` from `/favicon.ico`).
fn is_grpc_path(path: &str) -> bool {
    let first = path.strip_prefix('/').and_then(|p| p.split('/').next()).unwrap_or("");
    first
        .rsplit_once('.')
        .is_some_and(|(pkg, svc)| !pkg.is_empty() && svc.starts_with(|c: char| c.is_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_paths_are_told_from_files() {
        assert!(super::is_grpc_path("/product.ProductService"));
        assert!(super::is_grpc_path(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!super::is_grpc_path("/favicon.ico"));
        assert!(!super::is_grpc_path("/"));
    }
}
