//! Telemetry resources → [`TracingRule`]s: which proxies sample how much, and whether they report.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Ctx, origin};
use crate::model::{TelemetryScope, TracingRule};

/// Istio's root namespace: a Telemetry there applies to the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    selector: Option<Selector>,
    #[serde(default)]
    target_refs: Vec<TargetRef>,
    target_ref: Option<TargetRef>,
    #[serde(default)]
    tracing: Vec<Tracing>,
    access_logging: Option<serde_json::Value>,
    metrics: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct TargetRef {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tracing {
    #[serde(default)]
    providers: Vec<Provider>,
    random_sampling_percentage: Option<f64>,
    disable_span_reporting: Option<bool>,
    custom_tags: Option<serde_json::Value>,
    #[serde(rename = "match")]
    match_mode: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Provider {
    name: String,
}

pub(super) fn tracing(cx: &mut Ctx) -> Vec<TracingRule> {
    let mut out = Vec::new();
    for (o, t) in cx.m.telemetries() {
        let Some(spec) = cx.decode::<Spec>(o, "spec", &t.spec) else {
            continue;
        };
        let ns = o.namespace().to_string();
        let mut refs: Vec<&TargetRef> = spec.target_refs.iter().chain(spec.target_ref.as_ref()).collect();
        refs.retain(|r| {
            let gateway = r.kind == "Gateway";
            if !gateway {
                cx.note(
                    o,
                    "spec.targetRefs",
                    format!("a {} target is not emulated locally; only Gateway targets are", r.kind),
                );
            }
            gateway
        });
        let scope = match (&spec.selector, refs.first()) {
            (_, Some(r)) => TelemetryScope::Workloads(
                ns.clone(),
                BTreeMap::from([("gateway.networking.k8s.io/gateway-name".to_string(), r.name.clone())]),
            ),
            (Some(s), None) => TelemetryScope::Workloads(ns.clone(), s.match_labels.clone()),
            (None, None) if ns == ROOT_NAMESPACE => TelemetryScope::Mesh,
            (None, None) => TelemetryScope::Namespace(ns.clone()),
        };
        if spec.access_logging.is_some() {
            cx.note(
                o,
                "spec.accessLogging",
                "not read: localmesh always writes every proxy's JSON access log to its own log",
            );
        }
        if spec.metrics.is_some() {
            cx.note(
                o,
                "spec.metrics",
                "not read: localmesh always exports istio_requests_total and istio_request_duration_milliseconds",
            );
        }
        if spec.tracing.len() > 1 {
            cx.note(
                o,
                "spec.tracing[1]",
                "Istio applies only the first tracing entry; so does localmesh",
            );
        }
        let Some(tr) = spec.tracing.first() else {
            continue;
        };
        if tr.custom_tags.is_some() {
            cx.note(
                o,
                "spec.tracing[0].customTags",
                "custom span tags are not added locally",
            );
        }
        if tr.match_mode.is_some() {
            cx.note(
                o,
                "spec.tracing[0].match",
                "local spans are made for clients and servers alike",
            );
        }
        let sampling = match tr.random_sampling_percentage {
            Some(p) if !(0.0..=100.0).contains(&p) || p.is_nan() => {
                cx.err(
                    o,
                    "spec.tracing[0].randomSamplingPercentage",
                    format!("{p} is not a percentage from 0 to 100"),
                );
                continue;
            }
            p => p,
        };
        let report = match (tr.disable_span_reporting, tr.providers.is_empty()) {
            (Some(true), _) => Some(false),
            (_, false) => Some(true),
            (_, true) => None,
        };
        if tr.providers.len() > 1 {
            cx.note(
                o,
                "spec.tracing[0].providers[1]",
                "Istio supports one tracing provider; localmesh reports to one place as well",
            );
        }
        if let Some(p) = tr.providers.first() {
            cx.note(
                o,
                "spec.tracing[0].providers[0]",
                format!(
                    "{} is the cluster's collector: locally spans go to OTEL_EXPORTER_OTLP_ENDPOINT when set, else to localmesh's console",
                    p.name
                ),
            );
        }
        out.push(TracingRule {
            origin: origin(o),
            scope,
            sampling,
            report,
        });
    }
    out
}
