//! The compiled routing model: what the gateway and the sidecars route by, with every string
//! already parsed (durations, regexes, retry tokens) so that routing itself cannot fail.

mod listener;
pub use listener::{GatewayRoute, Listener, Protocol, TlsCert};
mod request_match;
pub use request_match::{FullRegex, HeaderMatch, PathMatch, RequestMatch, StringMatch};
mod route;
pub use route::{Backend, Redirect, RouteAction};
mod retry;
pub use retry::{RetryOn, RetryPolicy};
mod virtual_service;
pub use virtual_service::{AbortStatus, Fault, FaultAbort, FaultDelay, MeshRoute, VirtualService};
mod service;
pub use service::{BackendNames, Service, ServicePort, SpanNames, SpanNamesEntry, TargetPort};
mod policy;
pub use policy::{ConnectionPool, DestinationRule, LoadBalancer, OutlierConfig, Subset, TrafficPolicy};
mod telemetry;
pub use telemetry::{ProxyTelemetry, ProxyTracing, TelemetryRule, TelemetryScope};
mod workload;
pub use workload::{ContainerPort, EnvValue, EnvVar, ProbeCheck, Readiness, Scaled, Strategy, Workload};

use std::fmt;

use manifests::Source;

use crate::unsupported::NotEmulated;

/// Everything localmesh routes by, compiled from the manifests.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    /// Gateway API listeners, each with the HTTPRoute matches attached to it.
    pub listeners: Vec<Listener>,
    /// Sidecar (east-west) routing: mesh VirtualServices, in file order.
    pub virtual_services: Vec<VirtualService>,
    pub services: Vec<Service>,
    pub destination_rules: Vec<DestinationRule>,
    /// Deployments that become local pods (child processes).
    pub workloads: Vec<Workload>,
    /// Telemetry resources: which proxies sample how much and report spans, write the access
    /// log, report metrics.
    pub telemetry: Vec<TelemetryRule>,
    /// Whether a proxy no Telemetry resource's `accessLogging` covers writes its access log:
    /// the IstioOperator's `meshConfig.accessLogFile` names a file (Istio's default profile sets
    /// none: off); without an IstioOperator, on (Istio's demo profile, `/dev/stdout`).
    pub access_log_default: bool,
    /// What a route without its own `retries` gets (every Gateway-API route): the IstioOperator's
    /// `meshConfig.defaultHttpRetryPolicy`, else Istio's default.
    pub default_retry: RetryPolicy,
    /// Fields read but not emulated, reported once at startup.
    pub not_emulated: Vec<NotEmulated>,
}

/// `namespace/name` of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The Service's cluster DNS name, the host VirtualServices and DestinationRules name.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a compiled item came from, for logs and errors at request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.object, self.source)
    }
}

impl Mesh {
    pub fn service(&self, key: &Key) -> Option<&Service> {
        self.services.iter().find(|s| &s.key == key)
    }

    /// The DestinationRule for a Service (the first one, as Istio keeps the oldest).
    pub fn destination_rule(&self, service: &Key) -> Option<&DestinationRule> {
        self.destination_rules.iter().find(|d| &d.host == service)
    }
}
