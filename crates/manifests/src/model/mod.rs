//! Typed objects. Field names follow the Kubernetes/Istio/Gateway API YAML (serde camelCase),
//! every field is optional or defaulted unless the API itself requires it, and fields nobody reads
//! yet are simply not modelled (schema validation is the external validators' job).

pub mod core;
pub mod gateway_api;
pub mod istio;
pub mod meta;

use std::fmt;
use std::path::PathBuf;

pub use meta::{IntOrString, LabelSelector, LabelSelectorRequirement, ObjectMeta, Quantity, labels_contain};

/// Where an object came from: a file on disk, or the output of `kubectl kustomize <dir>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The YAML file, or the kustomization directory when `rendered` is set.
    pub file: PathBuf,
    /// 1-based index of the document in the file (counting empty documents, as an editor would).
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub rendered: bool,
    /// The file kustomize read the object from, when the kustomization sets
    /// `buildMetadata: [originAnnotations]` (annotation `config.kubernetes.io/origin`).
    pub origin: Option<String>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rendered {
            write!(f, "kustomize {} doc {}", self.file.display(), self.document)?;
            if let Some(origin) = &self.origin {
                write!(f, " (from {origin})")?;
            }
            Ok(())
        } else {
            write!(f, "{} doc {} (line {})", self.file.display(), self.document, self.line)
        }
    }
}

/// One Kubernetes object: the header every kind shares, and the kind-specific body.
#[derive(Debug, Clone)]
pub struct Object {
    pub source: Source,
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub resource: Resource,
}

impl Object {
    /// The API group (`""` for core), from `apiVersion`.
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The object's namespace; an unset namespace means `default`, as `kubectl apply` does.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// `Kind namespace/name`, the way findings and errors name an object.
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace(), self.name())
    }
}

/// The kind-specific part of an object. Kinds with the same name in two groups (Istio's classic
/// `networking.istio.io` Gateway vs Gateway API's) are told apart by group; unknown kinds are `Other`.
#[derive(Debug, Clone)]
pub enum Resource {
    Deployment(core::Deployment),
    StatefulSet(core::StatefulSet),
    Service(core::Service),
    ServiceAccount,
    ConfigMap(core::ConfigMap),
    Secret(core::Secret),
    Namespace,
    PodDisruptionBudget(core::PodDisruptionBudget),
    Gateway(gateway_api::Gateway),
    HTTPRoute(gateway_api::HttpRoute),
    ReferenceGrant(gateway_api::ReferenceGrant),
    VirtualService(istio::VirtualService),
    DestinationRule(istio::DestinationRule),
    AuthorizationPolicy(istio::AuthorizationPolicy),
    PeerAuthentication(istio::PeerAuthentication),
    ServiceEntry(istio::ServiceEntry),
    Telemetry(istio::Telemetry),
    /// Any other kind, kept whole so nothing is lost.
    Other(serde_json::Value),
}

/// All loaded objects, in load order.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub objects: Vec<Object>,
}

macro_rules! typed_iter {
    ($($fn_name:ident => $variant:ident($ty:ty);)*) => {
        $(
            #[doc = concat!("Every `", stringify!($variant), "` with its object header.")]
            pub fn $fn_name(&self) -> impl Iterator<Item = (&Object, &$ty)> {
                self.objects.iter().filter_map(|o| match &o.resource {
                    Resource::$variant(x) => Some((o, x)),
                    _ => None,
                })
            }
        )*
    };
}

impl Manifests {
    typed_iter! {
        deployments => Deployment(core::Deployment);
        stateful_sets => StatefulSet(core::StatefulSet);
        services => Service(core::Service);
        config_maps => ConfigMap(core::ConfigMap);
        secrets => Secret(core::Secret);
        pod_disruption_budgets => PodDisruptionBudget(core::PodDisruptionBudget);
        gateways => Gateway(gateway_api::Gateway);
        http_routes => HTTPRoute(gateway_api::HttpRoute);
        reference_grants => ReferenceGrant(gateway_api::ReferenceGrant);
        virtual_services => VirtualService(istio::VirtualService);
        destination_rules => DestinationRule(istio::DestinationRule);
        authorization_policies => AuthorizationPolicy(istio::AuthorizationPolicy);
        peer_authentications => PeerAuthentication(istio::PeerAuthentication);
        service_entries => ServiceEntry(istio::ServiceEntry);
        telemetries => Telemetry(istio::Telemetry);
    }

    pub fn service_accounts(&self) -> impl Iterator<Item = &Object> {
        self.objects
            .iter()
            .filter(|o| matches!(o.resource, Resource::ServiceAccount))
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Object> {
        self.objects
            .iter()
            .filter(|o| matches!(o.resource, Resource::Namespace))
    }

    /// Workloads that own pod templates (Deployments and StatefulSets), as `(object, template)`.
    pub fn pod_templates(&self) -> impl Iterator<Item = (&Object, &core::PodTemplateSpec)> {
        self.objects.iter().filter_map(|o| match &o.resource {
            Resource::Deployment(d) => Some((o, &d.spec.template)),
            Resource::StatefulSet(s) => Some((o, &s.spec.template)),
            _ => None,
        })
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<(&Object, &core::Service)> {
        self.services()
            .find(|(o, _)| o.namespace() == namespace && o.name() == name)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Appends objects, skipping any whose `group/kind namespace/name` is already loaded: an overlay
    /// rendered first wins over the raw base file it came from.
    pub fn extend(&mut self, objects: impl IntoIterator<Item = Object>) {
        for o in objects {
            let dup = self.objects.iter().any(|p| {
                p.group() == o.group() && p.kind == o.kind && p.namespace() == o.namespace() && p.name() == o.name()
            });
            if !dup {
                self.objects.push(o);
            }
        }
    }
}
