//! What localmesh reads but does not emulate. Each finding names the file, kind, name and field, and
//! is reported once at startup, so a local run never silently differs from the cluster.

use std::fmt;

use manifests::{Manifests, Object, Resource, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEmulated {
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    /// What the cluster does that localmesh does not, and what happens locally instead.
    pub message: String,
}

impl NotEmulated {
    pub(crate) fn new(o: &Object, field: impl Into<String>, message: impl Into<String>) -> Self {
        NotEmulated {
            source: o.source.clone(),
            object: o.id(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for NotEmulated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: field `{}`: {}",
            self.source, self.object, self.field, self.message
        )
    }
}

/// Whole kinds and object-level fields localmesh ignores. Field-level findings inside the kinds it
/// does emulate (connectionPool keys, route filters, ...) are added by [`crate::build()`].
pub fn scan(m: &Manifests) -> Vec<NotEmulated> {
    let mut out = Vec::new();
    for o in &m.objects {
        let mut note = |field: &str, message: &str| out.push(NotEmulated::new(o, field, message));
        match &o.resource {
            Resource::PeerAuthentication(pa) => {
                let mode = pa.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()).unwrap_or("UNSET");
                note(
                    "spec.mtls.mode",
                    &format!("{mode}: no mTLS locally; local hops are plaintext on 127.0.0.1"),
                );
            }
            Resource::AuthorizationPolicy(_) => note(
                "spec",
                "not enforced locally: there are no mTLS identities, every local caller is allowed",
            ),
            Resource::ServiceEntry(_) => note(
                "spec.hosts",
                "no DNS capture locally: the hosts are reachable only through localmesh's proxy, routed by the VirtualServices naming them",
            ),
            Resource::StatefulSet(_) => note(
                "spec",
                "StatefulSets are not started locally (the order service uses its embedded SQLite)",
            ),
            Resource::PodDisruptionBudget(_) => note("spec", "no disruptions locally"),
            Resource::ReferenceGrant(_) => note("spec", "not checked locally: cross-namespace backendRefs are allowed"),
            Resource::Gateway(g)
                if g.spec
                    .infrastructure
                    .as_ref()
                    .is_some_and(|i| i.parameters_ref.is_some()) =>
            {
                note(
                    "spec.infrastructure.parametersRef",
                    "the gateway's Deployment/Service options do not apply: localmesh is one local process",
                )
            }
            Resource::Other(_) if o.kind == crate::build::MESH_CONFIG_KIND => note(
                "spec",
                "only spec.meshConfig.defaultHttpRetryPolicy applies locally (the retries of routes without their own)",
            ),
            Resource::Other(_) => note("kind", "kind not emulated locally"),
            _ => {}
        }
    }
    out
}
