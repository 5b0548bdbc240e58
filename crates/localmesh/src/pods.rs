//! Local pods: every Deployment replica as a child process of the suite's binaries, with the
//! Downward-API-like env, its own `127.0.0.1` ports, a readiness probe (gRPC health `Check` or
//! `GET /healthz`), registration in [`Endpoints`] once ready, and restarts with exponential backoff.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::model::{EnvValue, Mesh, Workload};
use crate::proxy::Endpoints;

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
    /// Index into [`Mesh::workloads`].
    pub workload: usize,
    /// `product-v1-<hash>-<suffix>`, kept across restarts (a container restart, not a new pod).
    pub name: String,
    pub binary: PathBuf,
    /// The Deployment's env with the Downward API resolved and the local rewrites applied;
    /// `PORT` and `METRICS_PORT` are added at each start.
    pub env: Vec<(String, String)>,
    /// Probe with a gRPC health `Check` (else `GET /healthz`).
    pub grpc: bool,
    /// `SHUTDOWN_GRACE_SECS` + 2 s.
    pub drain: Duration,
    pub log: PathBuf,
}

/// What `up` knows of a pod right now.
#[derive(Debug, Clone, Default)]
pub struct PodStatus {
    pub pid: Option<u32>,
    pub addr: Option<SocketAddr>,
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
    /// `(caller Deployment index, upstream host)` → the sidecar listener for it.
    pub sidecars: BTreeMap<(usize, String), SocketAddr>,
}

/// The host (authority) of an upstream URL: `http://product-service:50051` → `product-service:50051`.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// The hosts each Deployment calls east-west (from [`UPSTREAM_VARS`] in its env).
pub fn upstreams(mesh: &Mesh) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, w) in mesh.workloads.iter().enumerate() {
        for e in &w.env {
            if let EnvValue::Literal(v) = &e.value
                && UPSTREAM_VARS.contains(&e.name.as_str())
            {
                let key = (i, url_host(v).to_string());
                if !out.contains(&key) {
                    out.push(key);
                }
            }
        }
    }
    out
}

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

/// `<deployment>-<pod-template-hash>-<suffix>` as a ReplicaSet names its pods: the hash is stable
/// for a given template, the suffix random.
fn pod_name(w: &Workload, seen: &mut Vec<String>) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    w.key.hash(&mut h);
    w.labels.hash(&mut h);
    w.binary.hash(&mut h);
    for e in &w.env {
        e.name.hash(&mut h);
        format!("{:?}", e.value).hash(&mut h);
    }
    let template = k8s_chars(h.finish(), 10);
    loop {
        let name = format!(
            "{}-{template}-{}",
            w.key.name,
            k8s_chars(RandomState::new().hash_one(seen.len()), 5)
        );
        if !seen.contains(&name) {
            seen.push(name.clone());
            return name;
        }
    }
}

/// Every replica of every Deployment ([`Mesh::pods`]) as a [`PodSpec`].
pub fn specs(mesh: &Mesh, opts: &PodOptions) -> Vec<PodSpec> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for pod in mesh.pods(&opts.node) {
        let Some(wi) = mesh.workloads.iter().position(|w| w.key == pod.workload) else {
            continue;
        };
        let w = &mesh.workloads[wi];
        let name = pod_name(w, &mut seen);
        let mut env: Vec<(String, String)> = Vec::new();
        for e in &w.env {
            let v = match &e.value {
                EnvValue::Literal(v) => v.clone(),
                EnvValue::PodName => name.clone(),
                EnvValue::PodNamespace => w.key.namespace.clone(),
                EnvValue::NodeName => opts.node.clone(),
                EnvValue::Unresolved => continue,
            };
            // The cluster's collector is not reachable locally: localmesh's own env decides.
            if e.name == "OTEL_EXPORTER_OTLP_ENDPOINT" && v.contains(".svc") {
                continue;
            }
            let v = if UPSTREAM_VARS.contains(&e.name.as_str()) {
                match opts.sidecars.get(&(wi, url_host(&v).to_string())) {
                    Some(addr) => format!("http://{addr}"),
                    None => v,
                }
            } else {
                v
            };
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
        let grace = env
            .iter()
            .find(|(n, _)| n == "SHUTDOWN_GRACE_SECS")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(10);
        let grpc = mesh
            .services
            .iter()
            .any(|s| s.workloads.contains(&wi) && s.ports.iter().any(|p| p.is_http2()));
        out.push(PodSpec {
            workload: wi,
            binary: opts.bin_dir.join(&w.binary),
            log: opts.data_dir.join("logs").join(format!("{name}.log")),
            name,
            env,
            grpc,
            drain: Duration::from_secs(grace + 2),
        });
    }
    out
}

/// Runs the pods until [`Supervisor::shutdown`].
pub struct Supervisor {
    specs: Vec<PodSpec>,
    status: Arc<Mutex<BTreeMap<String, PodStatus>>>,
    changed: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Starts every pod; each registers its endpoint in `endpoints` once its probe passes.
    pub fn start(mesh: Arc<Mesh>, specs: Vec<PodSpec>, endpoints: Arc<Endpoints>) -> Self {
        let status = Arc::new(Mutex::new(
            specs.iter().map(|s| (s.name.clone(), PodStatus::default())).collect(),
        ));
        let (changed, _) = watch::channel(0u64);
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for spec in &specs {
            tasks.spawn(run_pod(
                mesh.clone(),
                spec.clone(),
                endpoints.clone(),
                status.clone(),
                changed.clone(),
                stop.subscribe(),
            ));
        }
        Supervisor {
            specs,
            status,
            changed,
            stop,
            tasks,
        }
    }

    pub fn specs(&self) -> &[PodSpec] {
        &self.specs
    }

    pub fn status(&self) -> BTreeMap<String, PodStatus> {
        crate::lock(&self.status).clone()
    }

    /// A shared view of the pods' status (for the admin port).
    pub fn status_handle(&self) -> Arc<Mutex<BTreeMap<String, PodStatus>>> {
        self.status.clone()
    }

    /// Waits until every pod is ready; on timeout, the error names each pod that is not and its log.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status();
            if status.values().all(|s| s.ready) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                let lines: Vec<String> = self
                    .specs
                    .iter()
                    .filter(|s| !status.get(&s.name).is_some_and(|p| p.ready))
                    .map(|s| {
                        let st = status.get(&s.name).cloned().unwrap_or_default();
                        let why = st.last_exit.map_or_else(
                            || "not answering its readiness probe".to_string(),
                            |e| format!("{e}, {} restarts", st.restarts),
                        );
                        format!("pod {} ({why}); see {}", s.name, s.log.display())
                    })
                    .collect();
                return Err(format!("not ready after {}s: {}", timeout.as_secs(), lines.join("; ")));
            }
        }
    }

    /// SIGTERM to every child, a bounded drain (`SHUTDOWN_GRACE_SECS` + 2 s), then SIGKILL; returns
    /// once no child is left.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_child(spec: &PodSpec, port: u16, metrics_port: u16) -> std::io::Result<Child> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log)?;
    let mut cmd = Command::new(&spec.binary);
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PORT", port.to_string())
        .env("METRICS_PORT", metrics_port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn()
}

async fn probe(addr: SocketAddr, grpc: bool) -> bool {
    if grpc {
        let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
            return false;
        };
        let Ok(channel) = ep
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1))
            .connect()
            .await
        else {
            return false;
        };
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        matches!(client.check(req).await, Ok(r)
            if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    } else {
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let Ok(uri) = format!("http://{addr}/healthz").parse::<http::Uri>() else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await,
            Ok(Ok(r)) if r.status().is_success()
        )
    }
}

async fn until_ready(addr: SocketAddr, grpc: bool) {
    while !probe(addr, grpc).await {
        tokio::time::sleep(PROBE_PERIOD).await;
    }
}

/// SIGTERM, wait up to `drain`, then SIGKILL.
async fn terminate(child: &mut Child, drain: Duration, pod: &str) {
    if let Some(pid) = child.id()
        && let Ok(pid) = libc::pid_t::try_from(pid)
    {
        // SAFETY: kill(2) on our own child's pid, which `child` has not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    match tokio::time::timeout(drain, child.wait()).await {
        Ok(Ok(st)) => tracing::info!(pod_name = pod, status = %st, "pod stopped"),
        _ => {
            tracing::warn!(
                pod_name = pod,
                drain_secs = drain.as_secs(),
                "pod did not stop within its drain; SIGKILL"
            );
            let _ = child.kill().await;
        }
    }
}

async fn run_pod(
    mesh: Arc<Mesh>,
    spec: PodSpec,
    endpoints: Arc<Endpoints>,
    status: Arc<Mutex<BTreeMap<String, PodStatus>>>,
    changed: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let workload = &mesh.workloads[spec.workload];
    let pod = spec.name.as_str();
    let update = |f: &mut dyn FnMut(&mut PodStatus)| {
        if let Some(s) = crate::lock(&status).get_mut(pod) {
            f(s);
        }
        changed.send_modify(|n| *n += 1);
    };
    let mut backoff = BACKOFF_START;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = (|| {
            let (port, metrics) = (free_port()?, free_port()?);
            Ok::<_, std::io::Error>((spawn_child(&spec, port, metrics)?, port, metrics))
        })();
        let exit = match started {
            Err(e) => format!("failed to start {}: {e}", spec.binary.display()),
            Ok((mut child, port, metrics_port)) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let pid = child.id();
                tracing::info!(pod_name = pod, workload = %workload.key, pid, %addr, metrics_port, log = %spec.log.display(), "pod started");
                update(&mut |s| {
                    s.pid = pid;
                    s.addr = Some(addr);
                });
                let ready = until_ready(addr, spec.grpc);
                tokio::pin!(ready);
                let mut endpoint = None;
                let mut ready_at = None;
                let exit = loop {
                    tokio::select! {
                        st = child.wait() => break match st {
                            Ok(st) => format!("exited with {st}"),
                            Err(e) => format!("wait failed: {e}"),
                        },
                        () = &mut ready, if endpoint.is_none() => {
                            endpoint = Some(endpoints.add_pod(workload, pod, addr));
                            ready_at = Some(tokio::time::Instant::now());
                            tracing::info!(pod_name = pod, %addr, "pod ready; endpoint registered");
                            update(&mut |s| s.ready = true);
                        }
                        _ = stop.changed() => {
                            if let Some(ep) = &endpoint {
                                ep.set_healthy(false);
                            }
                            terminate(&mut child, spec.drain, pod).await;
                            if let Some(ep) = endpoint {
                                endpoints.remove(ep.id);
                            }
                            update(&mut |s| { s.ready = false; s.pid = None; });
                            return;
                        }
                    }
                };
                if let Some(ep) = endpoint {
                    endpoints.set_healthy(ep.id, false);
                    endpoints.remove(ep.id);
                }
                if ready_at.is_some_and(|t| t.elapsed() >= BACKOFF_RESET) {
                    backoff = BACKOFF_START;
                }
                exit
            }
        };
        tracing::warn!(pod_name = pod, reason = %exit, restart_in_ms = backoff.as_millis() as u64, log = %spec.log.display(), "pod not running; restarting");
        update(&mut |s| {
            s.ready = false;
            s.pid = None;
            s.restarts += 1;
            s.last_exit = Some(exit.clone());
        });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The directory the log files are written to.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}
