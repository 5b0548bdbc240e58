//! The Telemetry API: which proxies sample how much and report spans, write an access log, and
//! report metrics.

use std::collections::BTreeMap;

use super::{Mesh, Origin};

/// One Telemetry resource: of each of `tracing`, `accessLogging` and `metrics`, the first entry
/// (the only one Istio applies). Every field unset inherits from the wider scope.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryRule {
    pub origin: Origin,
    pub scope: TelemetryScope,
    /// `randomSamplingPercentage` (0-100).
    pub sampling: Option<f64>,
    /// Whether spans are sent to a provider: `providers` named and `disableSpanReporting` false.
    pub report: Option<bool>,
    /// Whether the proxy writes its access log: `accessLogging[0].disabled` false or a provider
    /// named.
    pub access_log: Option<bool>,
    /// Whether the proxy reports the standard metrics (`istio_requests_total`, ...): `false` from
    /// `metrics[0].overrides` disabling `ALL_METRICS` (or both of those the suite has).
    pub metrics: Option<bool>,
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

/// What one proxy tells of its requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyTelemetry {
    pub tracing: ProxyTracing,
    pub access_log: bool,
    pub metrics: bool,
}

impl Mesh {
    /// What a proxy in `namespace` with pod `labels` does: the narrowest Telemetry resource
    /// setting each field wins (workload, then namespace, then mesh), as Istio merges them
    /// (https://istio.io/latest/docs/reference/config/telemetry/: "the most specific
    /// configuration overrides"). Without any, Istio samples 1 %
    /// (`meshConfig.defaultConfig.tracing.sampling`) and reports no spans; writes the access log
    /// when `meshConfig.accessLogFile` names a file ([`Mesh::access_log_default`]); and reports
    /// metrics.
    pub fn proxy_telemetry(&self, namespace: &str, labels: &BTreeMap<String, String>) -> ProxyTelemetry {
        let applicable = self.applicable(namespace, labels);
        let first = |f: fn(&TelemetryRule) -> Option<bool>| applicable.iter().find_map(|r| f(r));
        ProxyTelemetry {
            tracing: ProxyTracing {
                sampling: applicable.iter().find_map(|r| r.sampling).unwrap_or(1.0),
                report: first(|r| r.report).unwrap_or(false),
            },
            access_log: first(|r| r.access_log).unwrap_or(self.access_log_default),
            metrics: first(|r| r.metrics).unwrap_or(true),
        }
    }

    /// The tracing part of [`Mesh::proxy_telemetry`].
    pub fn proxy_tracing(&self, namespace: &str, labels: &BTreeMap<String, String>) -> ProxyTracing {
        self.proxy_telemetry(namespace, labels).tracing
    }

    /// Whether a proxy reports metrics; at no cost when no Telemetry resource turns them off
    /// (asked for every attempt's destination sidecar).
    pub fn reports_metrics(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        !self.telemetry.iter().any(|r| r.metrics.is_some()) || self.proxy_telemetry(namespace, labels).metrics
    }

    /// The rules that apply to a proxy, narrowest first.
    fn applicable(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&TelemetryRule> {
        let rank = |s: &TelemetryScope| match s {
            TelemetryScope::Mesh => Some(0),
            TelemetryScope::Namespace(ns) => (ns == namespace).then_some(1),
            TelemetryScope::Workloads(ns, sel) => {
                (ns == namespace && sel.iter().all(|(k, v)| labels.get(k) == Some(v))).then_some(2)
            }
        };
        let mut applicable: Vec<(u8, &TelemetryRule)> = self
            .telemetry
            .iter()
            .filter_map(|r| Some((rank(&r.scope)?, r)))
            .collect();
        applicable.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        applicable.into_iter().map(|(_, r)| r).collect()
    }
}
