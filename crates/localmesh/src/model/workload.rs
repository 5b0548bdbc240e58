//! Deployments as local workloads: their containers, readiness probes and environment, and the
//! pods started from them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Key, Origin};

/// A container's readiness probe, as the kubelet runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub check: ProbeCheck,
    /// `initialDelaySeconds`.
    pub initial_delay: Duration,
    /// `periodSeconds` (the kubelet's default is 10 s).
    pub period: Duration,
    /// `timeoutSeconds` (default 1 s).
    pub timeout: Duration,
    /// Consecutive failures before the pod leaves its Services' endpoints (default 3).
    pub failure_threshold: u32,
    /// Consecutive successes before it is ready again (default 1).
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// gRPC health `Check` for this service name (`""`: the server as a whole).
    Grpc(String),
    /// `GET` on the main port.
    Http(String),
}

/// A Deployment, to be started as `replicas` local processes.
#[derive(Debug, Clone)]
pub struct Workload {
    pub origin: Origin,
    pub key: Key,
    pub replicas: u32,
    /// The pod template's labels: what Services and subsets select.
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub container: String,
    /// The suite binary, from the image name (`mesh-shop/product:0.1.0` → `product`).
    pub binary: String,
    pub ports: Vec<ContainerPort>,
    pub env: Vec<EnvVar>,
    /// The container's readiness probe; `None`: localmesh checks gRPC health or `/healthz`.
    pub readiness: Option<Readiness>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    /// Downward API `metadata.name`.
    PodName,
    /// Downward API `metadata.namespace`.
    PodNamespace,
    /// Downward API `spec.nodeName`.
    NodeName,
    /// Secret/ConfigMap references and other fields: left unset locally (reported as not emulated).
    Unresolved,
}

/// One local pod of a workload, with its environment resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub workload: Key,
    pub name: String,
    pub env: Vec<(String, String)>,
}

impl Workload {
    /// The pods to start: `<deployment>-<n>` for n in 0..replicas, each with the Downward-API env
    /// resolved (`node` stands in for `spec.nodeName`).
    pub fn pods(&self, node: &str) -> Vec<Pod> {
        (0..self.replicas)
            .map(|i| {
                let name = format!("{}-{i}", self.key.name);
                let env = self
                    .env
                    .iter()
                    .filter_map(|e| {
                        let v = match &e.value {
                            EnvValue::Literal(v) => v.clone(),
                            EnvValue::PodName => name.clone(),
                            EnvValue::PodNamespace => self.key.namespace.clone(),
                            EnvValue::NodeName => node.to_string(),
                            EnvValue::Unresolved => return None,
                        };
                        Some((e.name.clone(), v))
                    })
                    .collect();
                Pod {
                    workload: self.key.clone(),
                    name,
                    env,
                }
            })
            .collect()
    }
}
