//! Telemetry API tracing: which proxies sample how much and whether they report spans.

use std::collections::BTreeMap;

use super::{Mesh, Origin};

/// The tracing part of one Telemetry resource (its first `spec.tracing` entry, the only one Istio
/// applies).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingRule {
    pub origin: Origin,
    pub scope: TelemetryScope,
    /// `randomSamplingPercentage` (0-100); unset inherits from the wider scope.
    pub sampling: Option<f64>,
    /// Whether spans are sent to a provider: `providers` named and `disableSpanReporting` false;
    /// unset inherits.
    pub report: Option<bool>,
}

/// Which proxies a Telemetry resource applies to, narrowest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelemetryScope {
    /// In Istio's root namespace (`istio-system`): every proxy.
    Mesh,
    /// Every proxy in a namespace.
    Namespace(String),
    /// Proxies in a namespace whose pod labels contain these (`selector.matchLabels`, or a
    /// `targetRefs` Gateway as its `gateway.networking.k8s.io/gateway-name` label).
    Workloads(String, BTreeMap<String, String>),
}

/// How one proxy traces: the percentage of new traces it samples, and whether it reports spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyTracing {
    pub sampling: f64,
    pub report: bool,
}

impl Mesh {
    /// The tracing a proxy in `namespace` with pod `labels` applies: the narrowest Telemetry
    /// resource setting each field wins (workload, then namespace, then mesh). Without any, Istio
    /// samples 1 % (`meshConfig.defaultConfig.tracing.sampling`) and, with no provider, reports
    /// nothing.
    pub fn proxy_tracing(&self, namespace: &str, labels: &BTreeMap<String, String>) -> ProxyTracing {
        let rank = |s: &TelemetryScope| match s {
            TelemetryScope::Mesh => Some(0),
            TelemetryScope::Namespace(ns) => (ns == namespace).then_some(1),
            TelemetryScope::Workloads(ns, sel) => {
                (ns == namespace && sel.iter().all(|(k, v)| labels.get(k) == Some(v))).then_some(2)
            }
        };
        let mut applicable: Vec<(u8, &TracingRule)> =
            self.tracing.iter().filter_map(|r| Some((rank(&r.scope)?, r))).collect();
        applicable.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        ProxyTracing {
            sampling: applicable.iter().find_map(|(_, r)| r.sampling).unwrap_or(1.0),
            report: applicable.iter().find_map(|(_, r)| r.report).unwrap_or(false),
        }
    }
}
