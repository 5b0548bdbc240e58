//! Local pods: every Deployment replica as a child process of the suite's binaries, with the
//! Downward-API-like env, its own `127.0.0.1` ports, registration in the proxy's endpoints once
//! ready, restarts with exponential backoff, and the kubelet's readiness probe (the Deployment's
//! gRPC or HTTP probe, every `periodSeconds`): a pod failing `failureThreshold` probes in a row
//! leaves its Services' endpoints until it passes again. A pod's stdout and stderr reach its log
//! through localmesh ([`crate::logs`]), which rotates it by size as the kubelet rotates container
//! logs.
//!
//! In the order a change flows: [`Supervisor`] follows the pushed configuration and gives each
//! Deployment a controller ([`rollout`]), which scales and rolls its pods; each pod ([`run`]) is
//! started, probed, restarted and stopped as the kubelet would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod probe;
mod rollout;
mod run;
mod supervisor;

pub use supervisor::Supervisor;

use crate::model::{EnvValue, Key, Mesh, ProbeCheck, Readiness, Workload};

/// The env variables naming an east-west upstream by URL; `localmesh up` points them at a sidecar
/// listener for the URL's host.
pub const UPSTREAM_VARS: [&str; 3] = ["PRODUCT_SERVICE_ADDR", "ORDER_SERVICE_ADDR", "PAYMENT_URL"];

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A pod ready this long has its backoff reset (as the kubelet does after 10 minutes; shorter here).
const BACKOFF_RESET: Duration = Duration::from_secs(10);
const PROBE_PERIOD: Duration = Duration::from_millis(100);

/// One replica to run.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Its Deployment, as it was when the pod was made.
    pub workload: Arc<Workload>,
    /// The `pod-template-hash`: pods of an older template are replaced by a rollout.
    pub template: String,
    /// `product-v1-<hash>-<suffix>`, kept across restarts (a container restart, not a new pod).
    pub name: String,
    pub binary: PathBuf,
    /// The Deployment's env with the Downward API resolved and the local rewrites applied;
    /// `PORT` and `METRICS_PORT` are added at each start.
    pub env: Vec<(String, String)>,
    /// The Deployment's readiness probe, else gRPC health `Check("")` (gRPC pods) or
    /// `GET /healthz`, run until the pod first answers.
    pub readiness: Option<Readiness>,
    /// The check for a pod without a readiness probe.
    pub start_check: ProbeCheck,
    /// `SHUTDOWN_GRACE_SECS` + 2 s; also how long, after the pod stopped, its last output may
    /// take to reach its log.
    pub drain: Duration,
    /// `<data-dir>/logs/<pod>.log`, the newest of its rotated files.
    pub log: PathBuf,
}

/// What `up` knows of a pod right now.
#[derive(Debug, Clone, Default)]
pub struct PodStatus {
    /// Its Deployment.
    pub workload: Key,
    /// The pod's labels (a rollout may change them: old and new pods differ).
    pub labels: BTreeMap<String, String>,
    /// The `pod-template-hash`.
    pub template: String,
    /// Its endpoint has left its Services and it is being stopped.
    pub terminating: bool,
    pub pid: Option<u32>,
    pub addr: Option<SocketAddr>,
    /// Its `/metrics` (what Prometheus scrapes).
    pub metrics_addr: Option<SocketAddr>,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// How `pods` are made from the model.
#[derive(Debug, Clone)]
pub struct PodOptions {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub node: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for every pod: localmesh's own receiver, or `None` to leave the
    /// pods the variable of localmesh's environment.
    pub otlp_endpoint: Option<String>,
}

/// How soon a pod's spans reach the console: the OpenTelemetry SDK's batch delay (5 s by default)
/// for pods whose environment does not set `OTEL_BSP_SCHEDULE_DELAY`.
const SPAN_BATCH_DELAY_MS: &str = "1000";

/// The host (authority) of an upstream URL: `http://product-service:50051` → `product-service:50051`.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

impl PodSpec {
    /// The hosts this pod calls east-west (from [`UPSTREAM_VARS`] in its env), each once.
    pub fn upstreams(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, v) in &self.env {
            let host = url_host(v).to_string();
            if UPSTREAM_VARS.contains(&k.as_str()) && !out.contains(&host) {
                out.push(host);
            }
        }
        out
    }

    /// Points the variables naming `host` at this pod's sidecar listener for it.
    pub fn route_upstream(&mut self, host: &str, sidecar: SocketAddr) {
        for (k, v) in &mut self.env {
            if UPSTREAM_VARS.contains(&k.as_str()) && url_host(v) == host {
                *v = format!("http://{sidecar}");
            }
        }
    }
}

/// A new replica of `w`, named as a ReplicaSet names its pods.
pub fn spec(mesh: &Mesh, w: &Arc<Workload>, opts: &PodOptions) -> PodSpec {
    let template = w.template_hash();
    let name = crate::identity::pod_name(&w.key.name, &template);
    {
        let mut env: Vec<(String, String)> = Vec::new();
        for e in &w.env {
            let v = match &e.value {
                EnvValue::Literal(v) => v.clone(),
                EnvValue::PodName => name.clone(),
                EnvValue::PodNamespace => w.key.namespace.clone(),
                EnvValue::NodeName => opts.node.clone(),
                EnvValue::Unresolved => continue,
            };
            // The cluster's collector is not reachable locally: localmesh decides where spans go.
            if e.name == "OTEL_EXPORTER_OTLP_ENDPOINT" && v.contains(".svc") {
                continue;
            }
            env.push((e.name.clone(), v));
        }
        let mut set = |k: &str, v: String, force: bool| {
            if let Some(slot) = env.iter_mut().find(|(n, _)| n == k) {
                if force {
                    slot.1 = v;
                }
            } else {
                env.push((k.to_string(), v));
            }
        };
        set("BIND_ADDR", "127.0.0.1".into(), true);
        set("POD_NAME", name.clone(), true);
        set("POD_NAMESPACE", w.key.namespace.clone(), true);
        set("NODE_NAME", opts.node.clone(), true);
        if let Some(v) = w.labels.get("version") {
            set("SERVICE_VERSION", v.clone(), false);
        }
        set("DATA_DIR", opts.data_dir.join(&w.key.name).display().to_string(), false);
        if let Some(ep) = &opts.otlp_endpoint {
            set("OTEL_EXPORTER_OTLP_ENDPOINT", ep.clone(), true);
        }
        if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            set("OTEL_BSP_SCHEDULE_DELAY", SPAN_BATCH_DELAY_MS.into(), false);
        }
        let grace = env
            .iter()
            .find(|(n, _)| n == "SHUTDOWN_GRACE_SECS")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(10);
        // Selected by labels, as the Services select this template's pods.
        let grpc = mesh.services.iter().any(|s| {
            s.key.namespace == w.key.namespace
                && !s.selector.is_empty()
                && manifests::model::labels_contain(&w.labels, &s.selector)
                && s.ports.iter().any(|p| p.is_http2())
        });
        PodSpec {
            workload: w.clone(),
            template,
            binary: opts.bin_dir.join(&w.binary),
            log: opts.data_dir.join("logs").join(format!("{name}.log")),
            name,
            env,
            readiness: w.readiness.clone(),
            start_check: if grpc {
                ProbeCheck::Grpc(String::new())
            } else {
                ProbeCheck::Http("/healthz".into())
            },
            drain: Duration::from_secs(grace + 2),
        }
    }
}

/// The directory the log files are written to.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

#[cfg(test)]
mod tests;
