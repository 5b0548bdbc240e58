//! VirtualService subsets ↔ DestinationRule subsets ↔ pod template labels.

use super::Finding;
use super::hosts::{cluster_service, fqdn, service_for_host};
use crate::model::Manifests;
use crate::model::istio::{Destination, DestinationRule};
use crate::model::meta::labels_contain;

/// Every subset a VirtualService routes to is declared by a DestinationRule for the same host;
/// otherwise Envoy has no cluster for it and the route answers 503 (`NR`/`NC`).
pub fn virtual_service_subsets(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, vs) in m.virtual_services() {
        let mut dests: Vec<(String, &Destination)> = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            dests.extend(
                r.route
                    .iter()
                    .enumerate()
                    .map(|(j, d)| (format!("spec.http[{i}].route[{j}]"), &d.destination)),
            );
            dests.extend(r.mirror.iter().map(|d| (format!("spec.http[{i}].mirror"), d)));
        }
        for (kind, routes) in [("tcp", &vs.spec.tcp), ("tls", &vs.spec.tls)] {
            for (i, r) in routes.iter().enumerate() {
                dests.extend(
                    r.route
                        .iter()
                        .enumerate()
                        .map(|(j, d)| (format!("spec.{kind}[{i}].route[{j}]"), &d.destination)),
                );
            }
        }
        for (path, dest) in dests {
            let Some(subset) = &dest.subset else { continue };
            let host = fqdn(&dest.host, o.namespace());
            let rules: Vec<_> = m
                .destination_rules()
                .filter(|(dro, dr)| fqdn(&dr.spec.host, dro.namespace()) == host)
                .collect();
            let field = format!("{path}.destination.subset");
            if rules.is_empty() {
                out.push(Finding::new(
                    "virtual_service_subsets",
                    o,
                    field,
                    format!("subset `{subset}` of host {host}, but no DestinationRule has that host"),
                ));
            } else if !rules
                .iter()
                .any(|(_, dr)| dr.spec.subsets.iter().any(|s| &s.name == subset))
            {
                let names: Vec<String> = rules
                    .iter()
                    .map(|(dro, dr)| format!("{} {:?}", dro.id(), subset_names(dr)))
                    .collect();
                out.push(Finding::new(
                    "virtual_service_subsets",
                    o,
                    field,
                    format!("subset `{subset}` is not declared by {}", names.join(", ")),
                ));
            }
        }
    }
    out
}

fn subset_names(dr: &DestinationRule) -> Vec<&str> {
    dr.spec.subsets.iter().map(|s| s.name.as_str()).collect()
}

/// Every DestinationRule subset selects at least one pod template behind its host's Service
/// (the template's labels hold both the Service selector and the subset labels). A subset with no
/// pods is an empty Envoy cluster: requests routed to it fail with `UH`/503.
pub fn destination_rule_subset_labels(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, dr) in m.destination_rules() {
        let host = fqdn(&dr.spec.host, o.namespace());
        let Some((ns, svc_name)) = cluster_service(&host) else {
            continue;
        };
        let svc = service_for_host(m, &host);
        if svc.is_none() {
            out.push(Finding::new(
                "destination_rule_subset_labels",
                o,
                "spec.host",
                format!("host {host} names no Service in the manifests (Service {ns}/{svc_name})"),
            ));
        }
        for (i, subset) in dr.spec.subsets.iter().enumerate() {
            let matched = m.pod_templates().any(|(wo, t)| {
                wo.namespace() == ns
                    && labels_contain(&t.metadata.labels, &subset.labels)
                    && svc.is_none_or(|(_, s)| labels_contain(&t.metadata.labels, &s.spec.selector))
            });
            if !matched {
                let behind = svc.map(|(so, _)| format!(" behind {}", so.id())).unwrap_or_default();
                out.push(Finding::new(
                    "destination_rule_subset_labels",
                    o,
                    format!("spec.subsets[{i}].labels"),
                    format!(
                        "subset `{}` labels {:?} match no Deployment/StatefulSet pod template in namespace {ns}{behind}",
                        subset.name, subset.labels
                    ),
                ));
            }
        }
    }
    out
}
