//! DestinationRules: subsets, load balancing, outlier detection and connection-pool limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use manifests::Object;
use manifests::model::istio::{LoadBalancerSettings, OutlierDetection, TrafficPolicy as RawPolicy};
use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, origin, resolve_host};
use crate::model::{ConnectionPool, DestinationRule, LoadBalancer, OutlierConfig, Service, Subset, TrafficPolicy};

pub(super) fn destination_rules(cx: &mut Ctx, services: &[Service]) -> Vec<DestinationRule> {
    let mut out = Vec::new();
    for (o, dr) in cx.m.destination_rules() {
        let spec = &dr.spec;
        let host = resolve_host(&spec.host, o.namespace()).filter(|k| services.iter().any(|s| &s.key == k));
        let Some(host) = host else {
            cx.note(
                o,
                "spec.host",
                format!("`{}` is not a Service of the manifests: the rule is ignored", spec.host),
            );
            continue;
        };
        let top = written(cx, o, "spec.trafficPolicy", spec.traffic_policy.as_ref());
        let own: Vec<Written> = spec
            .subsets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("spec.subsets[{i}].trafficPolicy");
                written(cx, o, &field, s.traffic_policy.as_ref())
            })
            .collect();
        let ports: BTreeSet<u16> = top
            .ports
            .keys()
            .chain(own.iter().flat_map(|w| w.ports.keys()))
            .copied()
            .collect();
        let policy = top.sections.clone().over(&TrafficPolicy::default());
        let rule_at = |p: u16| top.at(p, &policy);
        let port_policies = ports.iter().map(|&p| (p, rule_at(p))).collect();
        let subsets = spec
            .subsets
            .iter()
            .zip(own)
            .map(|(s, own)| Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
                policy: own.sections.clone().over(&policy),
                port_policies: ports
                    .iter()
                    .map(|&p| (p, own.at(p, &own.sections.clone().over(&rule_at(p)))))
                    .collect(),
            })
            .collect();
        out.push(DestinationRule {
            origin: origin(o),
            host,
            policy,
            port_policies,
            subsets,
        });
    }
    out
}

/// The sections of one `trafficPolicy` that are set. Istio merges a subset's policy over the rule's
/// section by section (a subset's `outlierDetection` replaces the rule's whole), hence `Option`s.
#[derive(Debug, Clone, Default)]
struct Sections {
    load_balancer: Option<LoadBalancer>,
    outlier: Option<OutlierConfig>,
    pool: Option<ConnectionPool>,
}

impl Sections {
    fn over(self, base: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: self.load_balancer.unwrap_or_else(|| base.load_balancer.clone()),
            outlier: self.outlier.or(base.outlier),
            pool: self.pool.unwrap_or(base.pool),
        }
    }
}

/// One `trafficPolicy` as written: its sections, and its `portLevelSettings` by port number.
struct Written {
    sections: Sections,
    ports: BTreeMap<u16, Sections>,
}

impl Written {
    /// The policy at `port`: a `portLevelSettings` entry for it replaces every section, unset ones
    /// by their defaults ("port level policies do not inherit": `MergeTrafficPolicy` and
    /// `GetPortLevelTrafficPolicy` in istio `pilot/pkg/networking/core/cluster_traffic_policy.go`);
    /// otherwise `merged`, the policy without port settings.
    fn at(&self, port: u16, merged: &TrafficPolicy) -> TrafficPolicy {
        match self.ports.get(&port) {
            Some(s) => s.clone().over(&TrafficPolicy::default()),
            None => merged.clone(),
        }
    }
}

fn written(cx: &mut Ctx, o: &Object, field: &str, p: Option<&RawPolicy>) -> Written {
    let mut ports = BTreeMap::new();
    for (i, v) in p
        .map(|p| p.port_level_settings.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let f = format!("{field}.portLevelSettings[{i}]");
        let number = v
            .get("port")
            .and_then(|p| p.get("number"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0);
        let Some(number) = number else {
            cx.err(
                o,
                format!("{f}.port.number"),
                "required: the Service port (1 to 65535) the settings apply to",
            );
            continue;
        };
        let Some(raw) = cx.decode::<RawPolicy>(o, &f, v) else {
            continue;
        };
        if !raw.port_level_settings.is_empty() {
            cx.err(
                o,
                format!("{f}.portLevelSettings"),
                "not allowed inside portLevelSettings",
            );
            continue;
        }
        if ports.insert(number, sections(cx, o, &f, Some(&raw))).is_some() {
            cx.err(
                o,
                format!("{f}.port.number"),
                format!("port {number} has settings twice"),
            );
        }
    }
    Written {
        sections: sections(cx, o, field, p),
        ports,
    }
}

fn sections(cx: &mut Ctx, o: &Object, field: &str, p: Option<&RawPolicy>) -> Sections {
    let Some(p) = p else {
        return Sections::default();
    };
    if let Some(mode) = p.tls.as_ref().and_then(|t| t.mode.as_deref()) {
        cx.note(
            o,
            format!("{field}.tls.mode"),
            format!("{mode}: no TLS origination locally; upstream hops are plaintext"),
        );
    }
    Sections {
        load_balancer: p
            .load_balancer
            .as_ref()
            .and_then(|lb| load_balancer(cx, o, &format!("{field}.loadBalancer"), lb)),
        outlier: p
            .outlier_detection
            .as_ref()
            .and_then(|od| outlier(cx, o, &format!("{field}.outlierDetection"), od)),
        pool: p
            .connection_pool
            .as_ref()
            .and_then(|cp| pool(cx, o, &format!("{field}.connectionPool"), cp)),
    }
}

fn load_balancer(cx: &mut Ctx, o: &Object, field: &str, lb: &LoadBalancerSettings) -> Option<LoadBalancer> {
    if let Some(hash) = &lb.consistent_hash {
        let header = hash.get("httpHeaderName").and_then(Value::as_str);
        if let Some(h) = header {
            return Some(LoadBalancer::HashHeader(h.to_ascii_lowercase()));
        }
        cx.note(
            o,
            format!("{field}.consistentHash"),
            "only httpHeaderName is emulated; LEAST_REQUEST is used instead",
        );
        return None;
    }
    match lb.simple.as_deref()? {
        "ROUND_ROBIN" => Some(LoadBalancer::RoundRobin),
        // LEAST_CONN is the deprecated name of the same Envoy policy.
        "LEAST_REQUEST" | "LEAST_CONN" => Some(LoadBalancer::LeastRequest),
        "RANDOM" => Some(LoadBalancer::Random),
        "UNSPECIFIED" => None,
        "PASSTHROUGH" => {
            cx.note(
                o,
                format!("{field}.simple"),
                "PASSTHROUGH is not emulated; LEAST_REQUEST is used instead",
            );
            None
        }
        other => {
            cx.err(o, format!("{field}.simple"), format!("unknown load balancer `{other}`"));
            None
        }
    }
}

fn outlier(cx: &mut Ctx, o: &Object, field: &str, od: &OutlierDetection) -> Option<OutlierConfig> {
    for (set, name) in [
        (
            od.consecutive_local_origin_failures.is_some(),
            "consecutiveLocalOriginFailures",
        ),
        (
            od.split_external_local_origin_errors.is_some(),
            "splitExternalLocalOriginErrors",
        ),
        (od.min_health_percent.is_some(), "minHealthPercent"),
    ] {
        if set {
            cx.note(o, format!("{field}.{name}"), "not emulated");
        }
    }
    let mut dur = |name: &str, v: &Option<String>, default: u64| match v {
        Some(t) => cx.duration(o, &format!("{field}.{name}"), t),
        None => Some(Duration::from_secs(default)),
    };
    let interval = dur("interval", &od.interval, 10)?;
    let base_ejection = dur("baseEjectionTime", &od.base_ejection_time, 30)?;
    let pct = od.max_ejection_percent.unwrap_or(10);
    let max_ejection_percent = match u32::try_from(pct) {
        Ok(p) if p <= 100 => p,
        _ => {
            cx.err(
                o,
                format!("{field}.maxEjectionPercent"),
                format!("{pct} is not a percentage (0-100)"),
            );
            return None;
        }
    };
    Some(OutlierConfig {
        consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(5),
        consecutive_gateway: od.consecutive_gateway_errors.unwrap_or(0),
        interval,
        base_ejection,
        max_ejection_percent,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPool {
    tcp: Option<RawTcp>,
    http: Option<RawHttp>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawTcp {
    max_connections: Option<u32>,
    connect_timeout: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawHttp {
    http1_max_pending_requests: Option<u32>,
    http2_max_requests: Option<u32>,
    max_requests_per_connection: Option<u32>,
    max_retries: Option<u32>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

fn pool(cx: &mut Ctx, o: &Object, field: &str, v: &Value) -> Option<ConnectionPool> {
    let raw: RawPool = cx.decode(o, field, v)?;
    let tcp = raw.tcp.unwrap_or_default();
    let http = raw.http.unwrap_or_default();
    // Keys localmesh does not enforce (keepalives, idle timeouts, h2 upgrade, ...), named one by one.
    for (section, other) in [("", &raw.other), (".tcp", &tcp.other), (".http", &http.other)] {
        for k in other.keys() {
            cx.note(
                o,
                format!("{field}{section}.{k}"),
                "connection-pool setting not emulated",
            );
        }
    }
    if http.max_requests_per_connection.is_some() {
        cx.note(
            o,
            format!("{field}.http.maxRequestsPerConnection"),
            "connection-pool setting not emulated (upstream connections are reused without a request limit)",
        );
    }
    let connect_timeout = match &tcp.connect_timeout {
        Some(t) => Some(cx.duration(o, &format!("{field}.tcp.connectTimeout"), t)?),
        None => None,
    };
    Some(ConnectionPool {
        max_connections: tcp.max_connections,
        connect_timeout,
        http1_max_pending_requests: http.http1_max_pending_requests,
        http2_max_requests: http.http2_max_requests,
        max_retries: http.max_retries,
    })
}
