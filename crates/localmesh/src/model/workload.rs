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
    /// The pod template's annotations (`kubectl rollout restart` changes one to roll the pods).
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub container: String,
    /// The suite binary, from the image name (`mesh-shop/product:0.1.0` → `product`).
    pub binary: String,
    pub ports: Vec<ContainerPort>,
    pub env: Vec<EnvVar>,
    /// The container's readiness probe; `None`: localmesh checks gRPC health or `/healthz`.
    pub readiness: Option<Readiness>,
    /// How a changed pod template replaces the running pods.
    pub strategy: Strategy,
    /// `lifecycle.preStop.sleep`: how long a pod being removed keeps serving after its endpoint
    /// has left its Services, before SIGTERM.
    pub pre_stop: Duration,
}

/// `spec.strategy` of a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Every old pod is stopped, and gone, before the new ones start.
    Recreate,
    /// New pods replace old ones a few at a time.
    RollingUpdate { max_surge: Scaled, max_unavailable: Scaled },
}

/// `maxSurge` / `maxUnavailable`: a count of pods or a percentage of `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scaled {
    Count(u32),
    Percent(u32),
}

impl Workload {
    /// The `pod-template-hash`: the same for the same pod template, new for a changed one (which
    /// is what starts a rollout).
    pub fn template_hash(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|e| format!("{}={:?}", e.name, e.value)).collect();
        let ports: Vec<u16> = self.ports.iter().map(|p| p.port).collect();
        let template = (
            &self.labels,
            &self.annotations,
            &self.binary,
            env,
            ports,
            format!("{:?}", self.readiness),
        );
        crate::identity::template_hash(&self.key.name, &template)
    }
}

impl Default for Strategy {
    /// Kubernetes' default: `RollingUpdate` with 25% / 25%.
    fn default() -> Self {
        Strategy::RollingUpdate {
            max_surge: Scaled::Percent(25),
            max_unavailable: Scaled::Percent(25),
        }
    }
}

impl Strategy {
    /// `(maxSurge, maxUnavailable)` as pod counts for `replicas`: the surge rounded up, the
    /// unavailable rounded down, and never both 0 (the Deployment controller's
    /// `ResolveFenceposts`). `Recreate`: no surge, everything may be unavailable.
    pub fn fenceposts(&self, replicas: u32) -> (u32, u32) {
        match *self {
            Strategy::Recreate => (0, replicas),
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            } => {
                let of = |s: Scaled, up: bool| match s {
                    Scaled::Count(n) => n,
                    Scaled::Percent(p) => {
                        let x = u64::from(replicas) * u64::from(p);
                        let n = if up { x.div_ceil(100) } else { x / 100 };
                        u32::try_from(n).unwrap_or(u32::MAX)
                    }
                };
                let (surge, unavailable) = (of(max_surge, true), of(max_unavailable, false));
                if surge == 0 && unavailable == 0 {
                    (0, 1)
                } else {
                    (surge, unavailable)
                }
            }
        }
    }
}

impl std::fmt::Display for Scaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scaled::Count(n) => write!(f, "{n}"),
            Scaled::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Recreate => f.write_str("Recreate"),
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            } => write!(f, "RollingUpdate maxSurge {max_surge} maxUnavailable {max_unavailable}"),
        }
    }
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
