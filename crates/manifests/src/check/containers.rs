//! Container hygiene: probes, resources, non-root.

use super::Finding;
use crate::model::core::{Container, PodSpec};
use crate::model::{Manifests, Object};

const CHECK: &str = "container_hardening";

/// Every container of every Deployment/StatefulSet has readiness and liveness probes, CPU and memory
/// requests and a memory limit, and runs as non-root (`runAsNonRoot: true` on the container or the
/// pod, no `runAsUser: 0`, not privileged). Init containers need resources and non-root, not probes.
pub fn container_hardening(m: &Manifests) -> Vec<Finding> {
    let mut out = Vec::new();
    for (o, t) in m.pod_templates() {
        for (i, c) in t.spec.containers.iter().enumerate() {
            let at = format!("spec.template.spec.containers[{i}]");
            probes(&mut out, o, &at, c);
            resources(&mut out, o, &at, c);
            non_root(&mut out, o, &at, c, &t.spec);
        }
        for (i, c) in t.spec.init_containers.iter().enumerate() {
            let at = format!("spec.template.spec.initContainers[{i}]");
            resources(&mut out, o, &at, c);
            non_root(&mut out, o, &at, c, &t.spec);
        }
    }
    out
}

fn probes(out: &mut Vec<Finding>, o: &Object, at: &str, c: &Container) {
    for (field, probe) in [
        ("readinessProbe", &c.readiness_probe),
        ("livenessProbe", &c.liveness_probe),
    ] {
        if probe.is_none() {
            out.push(Finding::new(
                CHECK,
                o,
                format!("{at}.{field}"),
                format!("container `{}` has no {field}", c.name),
            ));
        }
    }
}

fn resources(out: &mut Vec<Finding>, o: &Object, at: &str, c: &Container) {
    let r = c.resources.clone().unwrap_or_default();
    let wanted = [
        ("requests", "cpu", &r.requests),
        ("requests", "memory", &r.requests),
        ("limits", "memory", &r.limits),
    ];
    for (section, key, map) in wanted {
        if !map.contains_key(key) {
            let msg = format!("container `{}` has no {section}.{key}", c.name);
            out.push(Finding::new(CHECK, o, format!("{at}.resources.{section}.{key}"), msg));
        }
    }
}

fn non_root(out: &mut Vec<Finding>, o: &Object, at: &str, c: &Container, pod: &PodSpec) {
    let sc = c.security_context.as_ref();
    let psc = pod.security_context.as_ref();
    // The container's setting wins over the pod's, as in Kubernetes.
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|p| p.run_as_non_root));
    if non_root != Some(true) {
        let msg = format!(
            "container `{}` does not set runAsNonRoot: true (here or in the pod securityContext)",
            c.name
        );
        out.push(Finding::new(
            CHECK,
            o,
            format!("{at}.securityContext.runAsNonRoot"),
            msg,
        ));
    }
    let user = sc.and_then(|s| s.run_as_user).or(psc.and_then(|p| p.run_as_user));
    if user == Some(0) {
        let msg = format!("container `{}` runs as UID 0", c.name);
        out.push(Finding::new(CHECK, o, format!("{at}.securityContext.runAsUser"), msg));
    }
    if sc.and_then(|s| s.privileged) == Some(true) {
        let msg = format!("container `{}` is privileged", c.name);
        out.push(Finding::new(CHECK, o, format!("{at}.securityContext.privileged"), msg));
    }
}
