//! DestinationRules and their subsets' traffic policy: load balancing, outlier detection and
//! connection-pool limits.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Key, Origin};

#[derive(Debug, Clone)]
pub struct DestinationRule {
    pub origin: Origin,
    pub host: Key,
    pub policy: TrafficPolicy,
    /// The policy for each Service port some `portLevelSettings` names (here or in a subset),
    /// already merged as Istio merges them; other ports get `policy`.
    pub port_policies: BTreeMap<u16, TrafficPolicy>,
    pub subsets: Vec<Subset>,
}

impl DestinationRule {
    /// The rule's policy for traffic to Service port `port`.
    pub fn policy_at(&self, port: u16) -> &TrafficPolicy {
        self.port_policies.get(&port).unwrap_or(&self.policy)
    }
}

#[derive(Debug, Clone)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The rule's policy with the subset's own sections laid over it (as Istio merges them).
    pub policy: TrafficPolicy,
    /// As [`DestinationRule::port_policies`], for this subset.
    pub port_policies: BTreeMap<u16, TrafficPolicy>,
}

impl Subset {
    /// The subset's policy for traffic to Service port `port`.
    pub fn policy_at(&self, port: u16) -> &TrafficPolicy {
        self.port_policies.get(&port).unwrap_or(&self.policy)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficPolicy {
    pub load_balancer: LoadBalancer,
    pub outlier: Option<OutlierConfig>,
    pub pool: ConnectionPool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LoadBalancer {
    RoundRobin,
    /// Istio's default.
    #[default]
    LeastRequest,
    Random,
    /// `consistentHash.httpHeaderName`.
    HashHeader(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 0 disables; Istio's default is 5.
    pub consecutive_5xx: u32,
    /// 0 (the default) disables.
    pub consecutive_gateway: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    /// 0..=100; Istio's default is 10.
    pub max_ejection_percent: u32,
}

/// `connectionPool` limits localmesh enforces (see `proxy::breaker`); `None` means Envoy's
/// (effectively unlimited) default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}
