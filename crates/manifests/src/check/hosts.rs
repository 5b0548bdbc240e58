//! Istio host names: short names are relative to the namespace of the rule that uses them.

use crate::model::core::Service;
use crate::model::{Manifests, Object};

const CLUSTER_SUFFIX: &str = ".svc.cluster.local";

/// The fully-qualified host as Istio reads it: a name without dots is `<name>.<ns>.svc.cluster.local`;
/// any name with a dot is taken literally (Istio does not expand `name.ns`).
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}{CLUSTER_SUFFIX}")
    }
}

/// `(namespace, service)` of a cluster-local FQDN.
pub fn cluster_service(fqdn: &str) -> Option<(&str, &str)> {
    let rest = fqdn.strip_suffix(CLUSTER_SUFFIX)?;
    let (name, ns) = rest.split_once('.')?;
    (!ns.contains('.') && !name.starts_with('*')).then_some((ns, name))
}

/// The Service a cluster-local host names, if it is in the manifests.
pub fn service_for_host<'a>(m: &'a Manifests, fqdn: &str) -> Option<(&'a Object, &'a Service)> {
    let (ns, name) = cluster_service(fqdn)?;
    m.service(ns, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_and_dotted_names_do_not() {
        assert_eq!(
            fqdn("product-service", "shop"),
            "product-service.shop.svc.cluster.local"
        );
        assert_eq!(fqdn("api.payment-provider.com", "shop"), "api.payment-provider.com");
        assert_eq!(
            cluster_service("product-service.shop.svc.cluster.local"),
            Some(("shop", "product-service"))
        );
        assert_eq!(cluster_service("api.payment-provider.com"), None);
    }
}
