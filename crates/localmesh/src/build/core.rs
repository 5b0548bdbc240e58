//! Deployments (local pods) and Services (their selectors and ports).

use std::time::Duration;

use manifests::Object;
use manifests::model::IntOrString;
use manifests::model::core::{Container, DeploymentStrategy, EnvVar as RawEnv, Probe};
use manifests::model::labels_contain;

use super::{Ctx, key, origin};
use crate::model::{
    ContainerPort, EnvValue, EnvVar, ProbeCheck, Readiness, Scaled, Service, ServicePort, Strategy, TargetPort,
    Workload,
};

pub(super) fn workloads(cx: &mut Ctx) -> Vec<Workload> {
    let mut out = Vec::new();
    for (o, d) in cx.m.deployments() {
        let spec = &d.spec;
        let replicas = match u32::try_from(spec.replicas.unwrap_or(1)) {
            Ok(r) => r,
            Err(_) => {
                cx.err(o, "spec.replicas", "must not be negative");
                continue;
            }
        };
        let Some(strategy) = strategy(cx, o, spec.strategy.as_ref()) else {
            continue;
        };
        let Some(c) = spec.template.spec.containers.first() else {
            cx.err(o, "spec.template.spec.containers", "no container to run");
            continue;
        };
        if spec.template.spec.containers.len() > 1 {
            cx.note(
                o,
                "spec.template.spec.containers[1]",
                "only the first container of a pod is started locally",
            );
        }
        let cfield = "spec.template.spec.containers[0]";
        let Some(binary) = c.image.as_deref().map(binary_of) else {
            cx.err(
                o,
                format!("{cfield}.image"),
                "no image: cannot tell which binary to run",
            );
            continue;
        };
        let ports = c
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let port = cx.port(o, &format!("{cfield}.ports[{i}].containerPort"), p.container_port)?;
                Some(ContainerPort {
                    name: p.name.clone(),
                    port,
                })
            })
            .collect();
        let env = c
            .env
            .iter()
            .enumerate()
            .map(|(i, e)| EnvVar {
                name: e.name.clone(),
                value: env_value(cx, o, &format!("{cfield}.env[{i}]"), e),
            })
            .collect();
        out.push(Workload {
            origin: origin(o),
            key: key(o),
            replicas,
            labels: spec.template.metadata.labels.clone(),
            annotations: spec.template.metadata.annotations.clone(),
            service_account: spec.template.spec.service_account().to_string(),
            container: c.name.clone(),
            binary,
            ports,
            env,
            readiness: c
                .readiness_probe
                .as_ref()
                .and_then(|p| readiness(cx, o, &format!("{cfield}.readinessProbe"), p)),
            strategy,
            pre_stop: pre_stop(cx, o, cfield, c),
        });
    }
    out
}

/// `spec.strategy`, checked as the API server validates it.
fn strategy(cx: &mut Ctx, o: &Object, s: Option<&DeploymentStrategy>) -> Option<Strategy> {
    let Some(s) = s else {
        return Some(Strategy::default());
    };
    match s.kind.as_deref() {
        Some("Recreate") => {
            if s.rolling_update.is_some() {
                cx.err(o, "spec.strategy.rollingUpdate", "may not be set when type is Recreate");
                return None;
            }
            Some(Strategy::Recreate)
        }
        None | Some("RollingUpdate") => {
            let default = Scaled::Percent(25);
            let ru = s.rolling_update.as_ref();
            let surge = scaled(
                cx,
                o,
                "spec.strategy.rollingUpdate.maxSurge",
                ru.and_then(|r| r.max_surge.as_ref()),
                default,
            )?;
            let unavailable = scaled(
                cx,
                o,
                "spec.strategy.rollingUpdate.maxUnavailable",
                ru.and_then(|r| r.max_unavailable.as_ref()),
                default,
            )?;
            let zero = |x: Scaled| matches!(x, Scaled::Count(0) | Scaled::Percent(0));
            if zero(surge) && zero(unavailable) {
                cx.err(
                    o,
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "may not be 0 when maxSurge is 0: the rollout could never start",
                );
                return None;
            }
            Some(Strategy::RollingUpdate {
                max_surge: surge,
                max_unavailable: unavailable,
            })
        }
        Some(other) => {
            cx.err(
                o,
                "spec.strategy.type",
                format!("{other:?} is not a strategy: expected RollingUpdate or Recreate"),
            );
            None
        }
    }
}

/// A count (`1`) or a percentage (`25%`) of the replicas.
fn scaled(cx: &mut Ctx, o: &Object, field: &str, v: Option<&IntOrString>, default: Scaled) -> Option<Scaled> {
    let parsed = match v {
        None => return Some(default),
        Some(IntOrString::Int(n)) => u32::try_from(*n).ok().map(Scaled::Count),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| *p <= 100)
            .map(Scaled::Percent),
    };
    if parsed.is_none() {
        cx.err(
            o,
            field,
            format!(
                "{} is not a count of pods or a percentage: expected e.g. 1 or 25%",
                v.map(ToString::to_string).unwrap_or_default()
            ),
        );
    }
    parsed
}

/// `lifecycle.preStop.sleep.seconds` (the kubelet's sleep action); other handlers are not run.
fn pre_stop(cx: &mut Ctx, o: &Object, cfield: &str, c: &Container) -> Duration {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return Duration::ZERO;
    };
    let field = format!("{cfield}.lifecycle.preStop");
    if let Some(sleep) = &h.sleep {
        match u64::try_from(sleep.seconds) {
            Ok(s) => return Duration::from_secs(s),
            Err(_) => cx.err(o, format!("{field}.sleep.seconds"), "must not be negative"),
        }
    } else {
        cx.note(
            o,
            field,
            "only the sleep preStop action is run locally; the pod gets SIGTERM as soon as its endpoint leaves",
        );
    }
    Duration::ZERO
}

/// A readiness probe the kubelet would run against the main port: gRPC health or an HTTP GET
/// (TCP and exec probes are not emulated; the pod then gets localmesh's own check).
fn readiness(cx: &mut Ctx, o: &Object, field: &str, p: &Probe) -> Option<Readiness> {
    let check = if let Some(g) = &p.grpc {
        ProbeCheck::Grpc(g.service.clone().unwrap_or_default())
    } else if let Some(h) = &p.http_get {
        ProbeCheck::Http(h.path.clone().unwrap_or_else(|| "/".into()))
    } else {
        cx.note(
            o,
            field,
            "only grpc and httpGet readiness probes are run locally; this pod is checked with gRPC health or /healthz",
        );
        return None;
    };
    let mut secs = |name: &str, v: Option<i64>, default: u64, min: u64| -> Option<u64> {
        match v {
            None => Some(default),
            Some(n) if u64::try_from(n).is_ok_and(|n| n >= min) => u64::try_from(n).ok(),
            Some(n) => {
                cx.err(
                    o,
                    format!("{field}.{name}"),
                    format!("{n} is below the minimum of {min}"),
                );
                None
            }
        }
    };
    // The kubelet's defaults (core/v1 Probe).
    let initial = secs("initialDelaySeconds", p.initial_delay_seconds, 0, 0)?;
    let period = secs("periodSeconds", p.period_seconds, 10, 1)?;
    let timeout = secs("timeoutSeconds", p.timeout_seconds, 1, 1)?;
    let failure = secs("failureThreshold", p.failure_threshold, 3, 1)?;
    let success = secs("successThreshold", p.success_threshold, 1, 1)?;
    Some(Readiness {
        check,
        initial_delay: Duration::from_secs(initial),
        period: Duration::from_secs(period),
        timeout: Duration::from_secs(timeout),
        failure_threshold: u32::try_from(failure).unwrap_or(u32::MAX),
        success_threshold: u32::try_from(success).unwrap_or(u32::MAX),
    })
}

/// `mesh-shop/product:0.1.0` → `product`: the suite's images are named after their binaries.
fn binary_of(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split(['@', ':']).next().unwrap_or(last).to_string()
}

fn env_value(cx: &mut Ctx, o: &Object, field: &str, e: &RawEnv) -> EnvValue {
    let Some(from) = &e.value_from else {
        return EnvValue::Literal(e.value.clone().unwrap_or_default());
    };
    let path = from.pointer("/fieldRef/fieldPath").and_then(|p| p.as_str());
    match path {
        Some("metadata.name") => EnvValue::PodName,
        Some("metadata.namespace") => EnvValue::PodNamespace,
        Some("spec.nodeName") => EnvValue::NodeName,
        _ => {
            cx.note(
                o,
                format!("{field}.valueFrom"),
                format!(
                    "{} is not resolved locally: the variable is left unset, so the service uses its default",
                    e.name
                ),
            );
            EnvValue::Unresolved
        }
    }
}

pub(super) fn services(cx: &mut Ctx, workloads: &[Workload]) -> Vec<Service> {
    let mut out = Vec::new();
    for (o, s) in cx.m.services() {
        let mut ports = Vec::new();
        for (i, p) in s.spec.ports.iter().enumerate() {
            let Some(port) = cx.port(o, &format!("spec.ports[{i}].port"), p.port) else {
                continue;
            };
            let target = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::String(n)) => TargetPort::Name(n.clone()),
                Some(IntOrString::Int(n)) => match cx.port(o, &format!("spec.ports[{i}].targetPort"), *n) {
                    Some(t) => TargetPort::Number(t),
                    None => continue,
                },
            };
            ports.push(ServicePort {
                name: p.name.clone(),
                port,
                target,
                app_protocol: p.app_protocol.clone(),
            });
        }
        let k = key(o);
        // No selector means manually managed endpoints: nothing local to send to.
        let selected = workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                !s.spec.selector.is_empty()
                    && w.key.namespace == k.namespace
                    && labels_contain(&w.labels, &s.spec.selector)
            })
            .map(|(i, _)| i)
            .collect();
        out.push(Service {
            origin: origin(o),
            key: k,
            selector: s.spec.selector.clone(),
            ports,
            workloads: selected,
            span_names: Default::default(),
        });
    }
    out
}
