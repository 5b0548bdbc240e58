//! Who a proxy speaks for: the Istio gateway, or the sidecar of one pod. The same identity names a
//! request's source and destination in the metrics and the proxy's spans (service name, `node_id`,
//! `istio.*` tags), as Istio derives them from the pod's labels.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::model::Key;
use crate::trace::span::{Process, Value};

/// `source_app` / `source_workload` of requests entering through the gateway: the Deployment Istio
/// creates for `public-api-gateway` (`<gateway name>-istio`).
pub const GATEWAY_WORKLOAD: &str = "public-api-gateway-istio";
/// Istio's mesh id and cluster id when none is configured (`istio.mesh_id`, `istio.cluster_id`).
const MESH_ID: &str = "cluster.local";
const CLUSTER_ID: &str = "Kubernetes";

/// The characters Kubernetes uses in generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn k8s_chars(mut n: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = NAME_ALPHABET[(n % NAME_ALPHABET.len() as u64) as usize] as char;
            n /= NAME_ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The `pod-template-hash` of a Deployment's pod template: stable for the same template, new for
/// a changed one (which is what starts a rollout).
pub fn template_hash(deployment: &str, template: &impl std::hash::Hash) -> String {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    deployment.hash(&mut h);
    template.hash(&mut h);
    k8s_chars(h.finish(), 10)
}

/// A pod name as a ReplicaSet makes one: `<deployment>-<pod-template-hash>-<suffix>`; the hash
/// is stable for `template`, the suffix random.
pub fn replica_name(deployment: &str, template: &impl std::hash::Hash) -> String {
    pod_name(deployment, &template_hash(deployment, template))
}

/// `<deployment>-<hash>-<random suffix>`.
pub fn pod_name(deployment: &str, hash: &str) -> String {
    let suffix: u64 = rand::random();
    format!("{deployment}-{hash}-{}", k8s_chars(suffix, 5))
}

#[derive(Debug)]
pub struct Identity {
    /// The gateway (Envoy's node type `router`) rather than a sidecar.
    pub router: bool,
    pub pod: String,
    pub namespace: String,
    /// The Deployment.
    pub workload: String,
    /// The `app` label (`source_app`, `destination_app`), else the workload name.
    pub app: String,
    /// The `version` label, `unknown` without one (as Istio's metrics say).
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub labels: BTreeMap<String, String>,
    /// The process its spans are reported as: `<canonical service>.<namespace>`.
    pub process: Arc<Process>,
}

/// Istio's canonical service and revision of a pod: `service.istio.io/canonical-name`, else
/// `app.kubernetes.io/name`, else `app`, else the workload's name; the revision likewise from
/// `service.istio.io/canonical-revision`, `app.kubernetes.io/version`, `version`, else `latest`
/// (istio `pkg/config/labels` / `pkg/model` `CanonicalService`).
pub fn canonical(labels: &BTreeMap<String, String>, workload: &str) -> (String, String) {
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    let service = first(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload.to_string());
    let revision = first(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".to_string());
    (service, revision)
}

impl Identity {
    /// The sidecar of pod `pod` of Deployment `workload`, with the pod template's labels.
    pub fn sidecar(workload: &Key, pod: &str, labels: &BTreeMap<String, String>) -> Self {
        Self::new(false, workload, pod, labels.clone())
    }

    /// The gateway's Envoy: Istio deploys `<gateway>-istio` in the Gateway's namespace, labelled
    /// with the gateway's name and canonical name `<gateway>-istio`.
    pub fn gateway(gateway: &Key, pod: &str) -> Self {
        let workload = format!("{}-istio", gateway.name);
        let labels = BTreeMap::from([
            (
                "gateway.networking.k8s.io/gateway-name".to_string(),
                gateway.name.clone(),
            ),
            ("service.istio.io/canonical-name".to_string(), workload.clone()),
            ("service.istio.io/canonical-revision".to_string(), "latest".to_string()),
        ]);
        Self::new(true, &Key::new(&gateway.namespace, workload), pod, labels)
    }

    fn new(router: bool, workload: &Key, pod: &str, labels: BTreeMap<String, String>) -> Self {
        let (canonical_service, canonical_revision) = canonical(&labels, &workload.name);
        let app = labels.get("app").cloned().unwrap_or_else(|| workload.name.clone());
        let version = labels.get("version").cloned().unwrap_or_else(|| "unknown".into());
        let ns = &workload.namespace;
        // Envoy's node id: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
        let node = format!(
            "{}~127.0.0.1~{pod}.{ns}~{ns}.svc.cluster.local",
            if router { "router" } else { "sidecar" }
        );
        let span_tags = vec![
            ("node_id".into(), Value::Str(node)),
            ("zone".into(), Value::Str(String::new())),
            ("component".into(), Value::from("proxy")),
            ("istio.canonical_service".into(), Value::Str(canonical_service.clone())),
            (
                "istio.canonical_revision".into(),
                Value::Str(canonical_revision.clone()),
            ),
            ("istio.namespace".into(), Value::Str(ns.clone())),
            ("istio.mesh_id".into(), Value::from(MESH_ID)),
            ("istio.cluster_id".into(), Value::from(CLUSTER_ID)),
        ];
        let process = Arc::new(Process {
            service: format!("{canonical_service}.{ns}"),
            tags: vec![
                ("k8s.pod.name".into(), Value::Str(pod.to_string())),
                ("k8s.pod.ip".into(), Value::from("127.0.0.1")),
                ("telemetry.sdk.name".into(), Value::from("localmesh")),
            ],
            span_tags,
        });
        Identity {
            router,
            pod: pod.to_string(),
            namespace: ns.clone(),
            workload: workload.name.clone(),
            app,
            version,
            canonical_service,
            canonical_revision,
            labels,
            process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_follow_istios_label_order() {
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            canonical(&l(&[("app", "product-service"), ("version", "v2")]), "product-v2"),
            ("product-service".into(), "v2".into())
        );
        assert_eq!(
            canonical(
                &l(&[
                    ("app", "x"),
                    ("app.kubernetes.io/name", "y"),
                    ("app.kubernetes.io/version", "3")
                ]),
                "w"
            ),
            ("y".into(), "3".into())
        );
        assert_eq!(canonical(&l(&[]), "w"), ("w".into(), "latest".into()));
    }

    #[test]
    fn proxies_report_as_canonical_service_dot_namespace() {
        let gw = Identity::gateway(
            &Key::new("gateway", "public-api-gateway"),
            "public-api-gateway-istio-abc",
        );
        assert_eq!(gw.process.service, "public-api-gateway-istio.gateway");
        assert_eq!(gw.workload, GATEWAY_WORKLOAD);
        let labels = BTreeMap::from([
            ("app".to_string(), "frontend".to_string()),
            ("version".into(), "v1".into()),
        ]);
        let fe = Identity::sidecar(&Key::new("default", "frontend"), "frontend-x-1", &labels);
        assert_eq!(fe.process.service, "frontend.default");
        let node = fe.process.span_tags.iter().find(|(k, _)| k == "node_id").unwrap();
        assert_eq!(
            node.1,
            Value::from("sidecar~127.0.0.1~frontend-x-1.default~default.svc.cluster.local")
        );
    }
}
