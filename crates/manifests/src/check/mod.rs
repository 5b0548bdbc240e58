//! Cross-object rules that schema validators cannot see. Each rule is one function from the loaded
//! [`Manifests`] to a list of [`Finding`]s; an empty list means the rule holds.

mod authz;
mod containers;
mod edge;
mod gateway;
mod hosts;
mod ports;
mod routes;
mod subsets;

use std::fmt;

pub use authz::{authorization_principals, workload_service_accounts};
pub use containers::container_hardening;
pub use edge::{
    GATEWAY_GRPC_PATHS, KIND_HTTPS_HOST_PORT, NEVER_RETRIED, gateway_grpc_services, gateway_retries, redirect_ports,
};
pub use gateway::{SEED_GATEWAY, SeedGateway, gateway_matches_seed, http_route_parents};
pub use ports::grpc_ports;
pub use routes::{http_route_backend_refs, route_weights, service_selectors};
pub use subsets::{destination_rule_subset_labels, virtual_service_subsets};

use crate::model::{Manifests, Object, Source};

/// One broken rule, naming the object, the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's function name, e.g. `virtual_service_subsets`.
    pub check: &'static str,
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
    /// Path of the offending field, e.g. `spec.http[0].route[1].destination.subset`.
    pub field: String,
    pub message: String,
}

impl Finding {
    pub(crate) fn new(check: &'static str, o: &Object, field: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            check,
            source: o.source.clone(),
            object: o.id(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}: {}: {}",
            self.check, self.source, self.object, self.field, self.message
        )
    }
}

/// A rule: the manifests in, what breaks it out.
pub type Check = fn(&Manifests) -> Vec<Finding>;

/// Every rule with its name, in a stable order.
pub const CHECKS: &[(&str, Check)] = &[
    ("virtual_service_subsets", virtual_service_subsets),
    ("destination_rule_subset_labels", destination_rule_subset_labels),
    ("http_route_backend_refs", http_route_backend_refs),
    ("http_route_parents", http_route_parents),
    ("service_selectors", service_selectors),
    ("route_weights", route_weights),
    ("grpc_ports", grpc_ports),
    ("gateway_matches_seed", gateway_matches_seed),
    ("authorization_principals", authorization_principals),
    ("workload_service_accounts", workload_service_accounts),
    ("container_hardening", container_hardening),
    ("redirect_ports", redirect_ports),
    ("gateway_grpc_services", gateway_grpc_services),
    ("gateway_retries", gateway_retries),
];

/// Runs every rule and returns all findings.
pub fn check_all(m: &Manifests) -> Vec<Finding> {
    CHECKS.iter().flat_map(|(_, check)| check(m)).collect()
}
