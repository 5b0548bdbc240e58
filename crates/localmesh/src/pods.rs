//! Local pods: every Deployment replica as a child process of the suite's binaries, with the
//! Downward-API-like env, its own `127.0.0.1` ports, registration in [`Endpoints`] once ready,
//! restarts with exponential backoff, and the kubelet's readiness probe (the Deployment's gRPC or
//! HTTP probe, every `periodSeconds`): a pod failing `failureThreshold` probes in a row leaves its
//! Services' endpoints until it passes again. A pod's stdout and stderr reach its log through
//! localmesh ([`crate::logs`]), which rotates it by size as the kubelet rotates container logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

mod probe;

use probe::{ProbeState, probe, until_ready};

use crate::logs::{LogFile, Pump, Rotation};
use crate::model::{EnvValue, Mesh, ProbeCheck, Readiness, Workload};
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
    /// Index into [`Mesh::workloads`].
    pub workload: usize,
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

/// `<deployment>-<pod-template-hash>-<suffix>` as a ReplicaSet names its pods: the hash is stable
/// for a given template, the suffix random.
fn pod_name(w: &Workload, seen: &mut Vec<String>) -> String {
    let env: Vec<String> = w.env.iter().map(|e| format!("{}={:?}", e.name, e.value)).collect();
    let template = (&w.key, &w.labels, &w.binary, env);
    loop {
        let name = crate::identity::replica_name(&w.key.name, &template);
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
            readiness: w.readiness.clone(),
            start_check: if grpc {
                ProbeCheck::Grpc(String::new())
            } else {
                ProbeCheck::Http("/healthz".into())
            },
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
    /// Starts every pod; each registers its endpoint in `endpoints` once its probe passes. Their
    /// logs are rotated by `logs`.
    pub fn start(mesh: Arc<Mesh>, specs: Vec<PodSpec>, endpoints: Arc<Endpoints>, logs: Rotation) -> Self {
        let status = Arc::new(Mutex::new(
            specs
                .iter()
                .map(|s| {
                    let st = PodStatus {
                        workload: s.workload,
                        ..PodStatus::default()
                    };
                    (s.name.clone(), st)
                })
                .collect(),
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
                logs,
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

/// Starts the pod's process with its stdout and stderr on one pipe (so their lines stay in the
/// order it wrote them, as in one file), copied into `log` by a [`Pump`].
fn spawn_child(
    spec: &PodSpec,
    port: u16,
    metrics_port: u16,
    log: &Arc<Mutex<LogFile>>,
) -> std::io::Result<(Child, Pump)> {
    let (output, input) = std::io::pipe()?;
    // Started first: if the process does not start, the pipe closes and the pump ends.
    let pump = Pump::start(output, log.clone(), &spec.name)?;
    let mut cmd = Command::new(&spec.binary);
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PORT", port.to_string())
        .env("METRICS_PORT", metrics_port.to_string())
        .stdin(Stdio::null())
        .stdout(input.try_clone()?)
        .stderr(input)
        .kill_on_drop(true);
    let child = cmd.spawn();
    // localmesh's copies of the write end: the pump sees the end once the child's are closed.
    drop(cmd);
    Ok((child?, pump))
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
    rotation: Rotation,
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
    // Opened once, kept across restarts (the kubelet keeps a restarted container's logs too).
    let mut log: Option<Arc<Mutex<LogFile>>> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let log_file = match &log {
            Some(l) => Ok(l.clone()),
            None => LogFile::open(&spec.log, rotation).map(|l| {
                let l = Arc::new(Mutex::new(l));
                log = Some(l.clone());
                l
            }),
        };
        let started = match log_file {
            Err(e) => Err(format!("cannot open its log: {e}")),
            Ok(log) => (|| {
                let (port, metrics) = (free_port()?, free_port()?);
                let (child, pump) = spawn_child(&spec, port, metrics, &log)?;
                Ok::<_, std::io::Error>((child, pump, port, metrics))
            })()
            .map_err(|e| format!("failed to start {}: {e}", spec.binary.display())),
        };
        let exit = match started {
            Err(e) => e,
            Ok((mut child, pump, port, metrics_port)) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let pid = child.id();
                tracing::info!(pod_name = pod, workload = %workload.key, pid, %addr, metrics_port, log = %spec.log.display(), "pod started");
                update(&mut |s| {
                    s.pid = pid;
                    s.addr = Some(addr);
                    s.metrics_addr = Some(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
                });
                let check = spec.readiness.as_ref().map_or(&spec.start_check, |r| &r.check);
                let ready = until_ready(addr, check);
                tokio::pin!(ready);
                let mut endpoint: Option<Arc<crate::proxy::Endpoint>> = None;
                let mut ready_at = None;
                // Without a readiness probe a started pod stays ready (the timer never fires in practice).
                let period = spec.readiness.as_ref().map_or(Duration::from_secs(3600), |r| r.period);
                let mut probes = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut state = ProbeState::default();
                let exit = loop {
                    tokio::select! {
                        st = child.wait() => break match st {
                            Ok(st) => format!("exited with {st}"),
                            Err(e) => format!("wait failed: {e}"),
                        },
                        () = &mut ready, if endpoint.is_none() => {
                            endpoint = Some(endpoints.add_pod(workload, pod, addr));
                            ready_at = Some(tokio::time::Instant::now());
                            probes.reset();
                            tracing::info!(pod_name = pod, %addr, "pod ready; endpoint registered");
                            update(&mut |s| s.ready = true);
                        }
                        _ = probes.tick(), if endpoint.is_some() && spec.readiness.is_some() => {
                            let (Some(r), Some(ep)) = (&spec.readiness, &endpoint) else { continue };
                            let passed = probe(addr, &r.check, r.timeout).await;
                            if let Some(now_ready) = state.record(r, passed, ep.is_healthy()) {
                                ep.set_healthy(now_ready);
                                if now_ready {
                                    tracing::info!(pod_name = pod, "readiness probe passes again; endpoint back in its Services");
                                } else {
                                    tracing::warn!(pod_name = pod, failures = state.failures, "readiness probe failing; endpoint removed from its Services");
                                }
                                update(&mut |s| s.ready = now_ready);
                            }
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
                            last_output(pump, spec.drain, pod, &spec.log).await;
                            return;
                        }
                    }
                };
                if let Some(ep) = endpoint {
                    endpoints.set_healthy(ep.id, false);
                    endpoints.remove(ep.id);
                }
                last_output(pump, spec.drain, pod, &spec.log).await;
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

/// Waits for a stopped pod's last output to be in its log (at most `drain`: a process it left
/// behind may hold its output open, which is then still copied, later).
async fn last_output(pump: Pump, drain: Duration, pod: &str, log: &Path) {
    if !pump.finish(drain).await {
        tracing::warn!(
            pod_name = pod,
            log = %log.display(),
            drain_secs = drain.as_secs(),
            "the pod stopped but something it started still holds its output open"
        );
    }
}

/// The directory the log files are written to.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

#[cfg(test)]
mod tests;
