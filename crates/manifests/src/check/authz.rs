//! AuthorizationPolicy principals and workload ServiceAccounts.

use super::Finding;
use crate::model::{Manifests, Object};

/// Every AuthorizationPolicy principal `<trust-domain>/ns/<ns>/sa/<sa>` names a ServiceAccount in the
/// manifests, or the one Istio generates for a Gateway (`<gateway>-<class>`, or the
/// `gateway.istio.io/service-account` annotation). A typo here silently denies that caller (RBAC 403,
/// `PERMISSION_DENIED` for gRPC). Wildcard principals are not checked.
pub fn authorization_principals(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, ap) in m.authorization_policies() {
        for (i, rule) in ap.spec.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let lists = [
                    ("principals", &from.source.principals),
                    ("notPrincipals", &from.source.not_principals),
                ];
                for (list, principals) in lists {
                    for (k, p) in principals.iter().enumerate() {
                        let field = format!("spec.rules[{i}].from[{j}].source.{list}[{k}]");
                        if let Some(msg) = principal_problem(m, p) {
                            out.push(Finding::new("authorization_principals", o, field, msg));
                        }
                    }
                }
            }
        }
    }
    out
}

fn principal_problem(m: &Manifests, principal: &str) -> Option<String> {
    if principal.contains('*') {
        return None;
    }
    let parts: Vec<&str> = principal.split('/').collect();
    let [_, "ns", ns, "sa", sa] = parts.as_slice() else {
        return Some(format!(
            "{principal:?} is not of the form <trust-domain>/ns/<namespace>/sa/<serviceaccount>"
        ));
    };
    let declared = m.service_accounts().any(|o| o.namespace() == *ns && o.name() == *sa);
    let generated = m
        .gateways()
        .any(|(g, gw)| g.namespace() == *ns && gateway_service_account(g, gw) == *sa);
    (!declared && !generated)
        .then(|| format!("ServiceAccount {ns}/{sa} is neither in the manifests nor generated for a Gateway"))
}

/// The ServiceAccount Istio creates for a Gateway's deployment
/// (Istio's automated deployment names it `<gateway name>-istio`).
fn gateway_service_account(o: &Object, gw: &crate::model::gateway_api::Gateway) -> String {
    o.metadata
        .annotations
        .get("gateway.istio.io/service-account")
        .cloned()
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                o.name(),
                gw.spec.gateway_class_name.as_deref().unwrap_or("istio")
            )
        })
}

/// Every workload's `serviceAccountName` names a ServiceAccount in the manifests (the pod is not
/// created otherwise), and no workload relies on `default`: principals are per-workload identities.
pub fn workload_service_accounts(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, t) in m.pod_templates() {
        let field = "spec.template.spec.serviceAccountName";
        match &t.spec.service_account_name {
            None => out.push(Finding::new(
                "workload_service_accounts",
                o,
                field,
                "unset, so the pod runs as `default`; give each workload its own ServiceAccount",
            )),
            Some(sa)
                if !m
                    .service_accounts()
                    .any(|s| s.namespace() == o.namespace() && s.name() == sa) =>
            {
                out.push(Finding::new(
                    "workload_service_accounts",
                    o,
                    field,
                    format!("ServiceAccount {}/{sa} is not in the manifests", o.namespace()),
                ));
            }
            Some(_) => {}
        }
    }
    out
}
