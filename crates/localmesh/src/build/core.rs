//! Deployments (local pods) and Services (their selectors and ports).

use manifests::Object;
use manifests::model::IntOrString;
use manifests::model::core::EnvVar as RawEnv;
use manifests::model::labels_contain;

use super::{Ctx, key, origin};
use crate::model::{ContainerPort, EnvValue, EnvVar, Service, ServicePort, TargetPort, Workload};

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
        });
    }
    out
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
        });
    }
    out
}
