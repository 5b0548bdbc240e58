//! Deployments (local pods) and Services (their selectors and ports).

use std::time::Duration;

use manifests::Object;
use manifests::model::IntOrString;
use manifests::model::core::{EnvVar as RawEnv, Probe};
use manifests::model::labels_contain;

use super::{Ctx, key, origin};
use crate::model::{
    ContainerPort, EnvValue, EnvVar, ProbeCheck, Readiness, Service, ServicePort, TargetPort, Workload,
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
            service_account: spec.template.spec.service_account().to_string(),
            container: c.name.clone(),
            binary,
            ports,
            env,
            readiness: c
                .readiness_probe
                .as_ref()
                .and_then(|p| readiness(cx, o, &format!("{cfield}.readinessProbe"), p)),
        });
    }
    out
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
