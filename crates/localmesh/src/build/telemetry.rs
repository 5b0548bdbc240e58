//! Telemetry resources → [`TelemetryRule`]s: which proxies sample how much and report spans,
//! write their access log, report metrics.

use std::collections::BTreeMap;

use manifests::Object;
use serde::Deserialize;

use super::{Ctx, origin};
use crate::model::{TelemetryRule, TelemetryScope};

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
    #[serde(default)]
    access_logging: Vec<AccessLogging>,
    #[serde(default)]
    metrics: Vec<Metrics>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessLogging {
    #[serde(default)]
    providers: Vec<Provider>,
    disabled: Option<bool>,
    #[serde(rename = "match")]
    match_mode: Option<serde_json::Value>,
    filter: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    #[serde(default)]
    overrides: Vec<MetricsOverride>,
    reporting_interval: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricsOverride {
    #[serde(rename = "match")]
    selector: Option<MetricSelector>,
    disabled: Option<bool>,
    tag_overrides: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricSelector {
    metric: Option<String>,
    custom_metric: Option<String>,
    mode: Option<String>,
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

pub(super) fn telemetry(cx: &mut Ctx) -> Vec<TelemetryRule> {
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
        let access_log = access_log(cx, o, &spec.access_logging);
        let metrics = metrics(cx, o, &spec.metrics);
        if spec.tracing.len() > 1 {
            cx.note(
                o,
                "spec.tracing[1]",
                "Istio applies only the first tracing entry; so does localmesh",
            );
        }
        let Some(tr) = spec.tracing.first() else {
            if access_log.is_some() || metrics.is_some() {
                out.push(TelemetryRule {
                    origin: origin(o),
                    scope,
                    sampling: None,
                    report: None,
                    access_log,
                    metrics,
                });
            }
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
        out.push(TelemetryRule {
            origin: origin(o),
            scope,
            sampling,
            report,
            access_log,
            metrics,
        });
    }
    out
}

/// Whether the first `accessLogging` entry turns a proxy's access log on or off: `disabled`, else
/// on when it names a provider (each of Istio's writes one line per request; localmesh writes its
/// JSON line). `None`: inherited.
fn access_log(cx: &mut Ctx, o: &Object, entries: &[AccessLogging]) -> Option<bool> {
    let first = entries.first()?;
    if entries.len() > 1 {
        cx.note(
            o,
            "spec.accessLogging[1]",
            "localmesh reads the first accessLogging entry only",
        );
    }
    if first.match_mode.is_some() {
        cx.note(
            o,
            "spec.accessLogging[0].match",
            "localmesh writes one line per request for client and server alike",
        );
    }
    if first.filter.is_some() {
        cx.note(
            o,
            "spec.accessLogging[0].filter",
            "CEL filters are not evaluated locally: every request is logged",
        );
    }
    match first.disabled {
        Some(d) => Some(!d),
        None => (!first.providers.is_empty()).then_some(true),
    }
}

/// Whether the metrics entries turn a proxy's standard metrics off (an override with
/// `disabled: true` for `ALL_METRICS`, the default match, in `CLIENT_AND_SERVER` mode) or on
/// again (`disabled: false`). Overrides of a single metric or mode, tag overrides and reporting
/// intervals are noted, not emulated. `None`: inherited.
fn metrics(cx: &mut Ctx, o: &Object, entries: &[Metrics]) -> Option<bool> {
    let mut out = None;
    for (i, m) in entries.iter().enumerate() {
        if m.reporting_interval.is_some() {
            cx.note(
                o,
                format!("spec.metrics[{i}].reportingInterval"),
                "localmesh's metrics are read when scraped; there is no reporting interval",
            );
        }
        for (j, ov) in m.overrides.iter().enumerate() {
            let field = format!("spec.metrics[{i}].overrides[{j}]");
            if ov.tag_overrides.is_some() {
                cx.note(o, format!("{field}.tagOverrides"), "labels are not changed locally");
            }
            let Some(disabled) = ov.disabled else {
                continue;
            };
            let sel = ov.selector.as_ref();
            let all =
                sel.is_none_or(|s| s.custom_metric.is_none() && s.metric.as_deref().is_none_or(|m| m == "ALL_METRICS"));
            let both = sel
                .and_then(|s| s.mode.as_deref())
                .is_none_or(|m| m == "CLIENT_AND_SERVER");
            if all && both {
                out = Some(!disabled);
            } else {
                cx.note(
                    o,
                    format!("{field}.match"),
                    "only ALL_METRICS in CLIENT_AND_SERVER mode is turned on or off locally",
                );
            }
        }
    }
    out
}
