//! One pod's life, as the kubelet runs it: its ports, its process and restarts, its readiness
//! probe and its endpoint, and its removal.
//!
//! A pod's two ports are bound once, by localmesh, and handed to every run of its process as
//! systemd hands sockets to a service (`LISTEN_FDS=2`, fds 3 and 4, `LISTEN_FDNAMES=main:metrics`):
//! a restart keeps the pod's address, as a container restart keeps the pod's IP, and no other
//! process can take the port between a bind and the pod's own.
//!
//! Removal follows the order a Deployment's scale-down or rollout gives: the endpoint leaves its
//! Services first (the EndpointSlice update), the pod keeps serving what it already has for its
//! `preStop` sleep, then SIGTERM, the app's drain, and SIGKILL past it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, RawFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::probe::{ProbeState, probe, until_ready};
use super::{BACKOFF_MAX, BACKOFF_RESET, BACKOFF_START, PodSpec, PodStatus};
use crate::logs::{LogFile, Pump, Rotation};
use crate::proxy::{Endpoint, Endpoints, Running};

/// What every pod shares: where endpoints are registered, the status table and its change
/// counter, and how logs are rotated.
pub(super) struct Ctx {
    pub endpoints: Arc<Endpoints>,
    pub status: Arc<Mutex<BTreeMap<String, PodStatus>>>,
    pub changed: watch::Sender<u64>,
    pub rotation: Rotation,
}

impl Ctx {
    /// Changes a pod's status and wakes whoever waits on the pods.
    pub fn update(&self, pod: &str, f: impl FnOnce(&mut PodStatus)) {
        if let Some(s) = crate::lock(&self.status).get_mut(pod) {
            f(s);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn is_ready(&self, pod: &str) -> bool {
        crate::lock(&self.status).get(pod).is_some_and(|s| s.ready)
    }
}

/// A pod, running until [`PodRun::stop`].
pub(super) struct PodRun {
    pub name: String,
    pub template: String,
    stop: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
}

impl PodRun {
    /// Starts `spec` with its pre-bound ports; `sidecars` (its listeners for the hosts it calls)
    /// live as long as the pod. An error: its ports could not be bound.
    pub fn start(spec: PodSpec, ctx: Arc<Ctx>, sidecars: Vec<Running>) -> std::io::Result<Self> {
        let ports = Ports::bind()?;
        crate::lock(&ctx.status).insert(
            spec.name.clone(),
            PodStatus {
                workload: spec.workload.key.clone(),
                labels: spec.workload.labels.clone(),
                template: spec.template.clone(),
                addr: Some(ports.addr()),
                metrics_addr: Some(ports.metrics_addr()),
                ..PodStatus::default()
            },
        );
        ctx.changed.send_modify(|n| *n += 1);
        let (stop, stop_rx) = watch::channel(None);
        let (name, template) = (spec.name.clone(), spec.template.clone());
        let task = tokio::spawn(async move {
            run_pod(&spec, &ctx, ports, stop_rx).await;
            drop(sidecars);
            crate::lock(&ctx.status).remove(&spec.name);
            ctx.changed.send_modify(|n| *n += 1);
        });
        Ok(PodRun {
            name,
            template,
            stop,
            task,
        })
    }

    /// Begins its removal (`pre_stop`: how long it keeps serving after its endpoint left); the
    /// task ends once its process is gone.
    pub fn stop(self, pre_stop: Duration) -> JoinHandle<()> {
        let _ = self.stop.send(Some(pre_stop));
        self.task
    }
}

/// A pod's main port and metrics port, bound for its whole life.
struct Ports {
    main: std::net::TcpListener,
    metrics: std::net::TcpListener,
}

impl Ports {
    fn bind() -> std::io::Result<Self> {
        Ok(Ports {
            main: std::net::TcpListener::bind("127.0.0.1:0")?,
            metrics: std::net::TcpListener::bind("127.0.0.1:0")?,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.main
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// In the child, between fork and exec: the two sockets as fds 3 and 4 (`SD_LISTEN_FDS_START`).
/// Only async-signal-safe calls (fcntl, dup2) may run here.
fn hand_over(main: RawFd, metrics: RawFd) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: fcntl and dup2 on descriptors this process holds; the copies above 10 move both out
    // of the way of 3 and 4 first, so that neither dup2 overwrites the other's source, and are
    // close-on-exec. dup2 clears close-on-exec on 3 and 4, so the service inherits them.
    unsafe {
        let main = check(libc::fcntl(main, libc::F_DUPFD_CLOEXEC, 10))?;
        let metrics = check(libc::fcntl(metrics, libc::F_DUPFD_CLOEXEC, 10))?;
        check(libc::dup2(main, 3))?;
        check(libc::dup2(metrics, 4))?;
    }
    Ok(())
}

/// Starts the pod's process with its sockets and with its stdout and stderr on one pipe (so their
/// lines stay in the order it wrote them, as in one file), copied into `log` by a [`Pump`].
fn spawn_child(spec: &PodSpec, ports: &Ports, log: &Arc<Mutex<LogFile>>) -> std::io::Result<(Child, Pump)> {
    let (output, input) = std::io::pipe()?;
    // Started first: if the process does not start, the pipe closes and the pump ends.
    let pump = Pump::start(output, log.clone(), &spec.name)?;
    let mut cmd = Command::new(&spec.binary);
    let (main, metrics) = (ports.main.as_raw_fd(), ports.metrics.as_raw_fd());
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        // What the sockets are, for logs and for a binary that binds its own.
        .env("PORT", ports.addr().port().to_string())
        .env("METRICS_PORT", ports.metrics_addr().port().to_string())
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "main:metrics")
        .stdin(Stdio::null())
        .stdout(input.try_clone()?)
        .stderr(input)
        .kill_on_drop(true);
    // SAFETY: `hand_over` only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || hand_over(main, metrics));
    }
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

/// The endpoint leaves its Services; the pod is marked terminating.
fn leave(ctx: &Ctx, pod: &str, endpoint: &mut Option<Arc<Endpoint>>) {
    if let Some(ep) = endpoint.take() {
        ep.set_healthy(false);
        ctx.endpoints.remove(ep.id);
    }
    ctx.update(pod, |s| {
        s.ready = false;
        s.terminating = true;
    });
}

async fn run_pod(spec: &PodSpec, ctx: &Ctx, ports: Ports, mut stop: watch::Receiver<Option<Duration>>) {
    let pod = spec.name.as_str();
    let mut backoff = BACKOFF_START;
    // Opened once, kept across restarts (the kubelet keeps a restarted container's logs too).
    let mut log: Option<Arc<Mutex<LogFile>>> = None;
    let (addr, metrics_addr) = (ports.addr(), ports.metrics_addr());
    loop {
        if stop.borrow().is_some() {
            return;
        }
        let log_file = match &log {
            Some(l) => Ok(l.clone()),
            None => LogFile::open(&spec.log, ctx.rotation).map(|l| {
                let l = Arc::new(Mutex::new(l));
                log = Some(l.clone());
                l
            }),
        };
        let started = match log_file {
            Err(e) => Err(format!("cannot open its log: {e}")),
            Ok(log) => {
                spawn_child(spec, &ports, &log).map_err(|e| format!("failed to start {}: {e}", spec.binary.display()))
            }
        };
        let exit = match started {
            Err(e) => e,
            Ok((mut child, pump)) => {
                let pid = child.id();
                tracing::info!(pod_name = pod, workload = %spec.workload.key, pid, %addr, metrics_port = metrics_addr.port(), log = %spec.log.display(), "pod started");
                ctx.update(pod, |s| s.pid = pid);
                let check = spec.readiness.as_ref().map_or(&spec.start_check, |r| &r.check);
                let ready = until_ready(addr, check);
                tokio::pin!(ready);
                let mut endpoint: Option<Arc<Endpoint>> = None;
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
                            endpoint = Some(ctx.endpoints.add_pod(&spec.workload, pod, addr));
                            ready_at = Some(tokio::time::Instant::now());
                            probes.reset();
                            tracing::info!(pod_name = pod, %addr, "pod ready; endpoint registered");
                            ctx.update(pod, |s| s.ready = true);
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
                                ctx.update(pod, |s| s.ready = now_ready);
                            }
                        }
                        _ = stop.changed() => {
                            let pre_stop = (*stop.borrow()).unwrap_or_default();
                            leave(ctx, pod, &mut endpoint);
                            if !pre_stop.is_zero() {
                                tracing::info!(pod_name = pod, pre_stop_secs = pre_stop.as_secs(), "endpoint removed from its Services; preStop, then SIGTERM");
                                // The process may end on its own meanwhile.
                                tokio::select! {
                                    () = tokio::time::sleep(pre_stop) => {}
                                    _ = child.wait() => {}
                                }
                            }
                            terminate(&mut child, spec.drain, pod).await;
                            ctx.update(pod, |s| s.pid = None);
                            last_output(pump, spec.drain, pod, &spec.log).await;
                            return;
                        }
                    }
                };
                leave(ctx, pod, &mut endpoint);
                ctx.update(pod, |s| s.terminating = false);
                last_output(pump, spec.drain, pod, &spec.log).await;
                if ready_at.is_some_and(|t| t.elapsed() >= BACKOFF_RESET) {
                    backoff = BACKOFF_START;
                }
                exit
            }
        };
        tracing::warn!(pod_name = pod, reason = %exit, restart_in_ms = backoff.as_millis() as u64, log = %spec.log.display(), "pod not running; restarting");
        ctx.update(pod, |s| {
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
async fn last_output(pump: Pump, drain: Duration, pod: &str, log: &std::path::Path) {
    if !pump.finish(drain).await {
        tracing::warn!(
            pod_name = pod,
            log = %log.display(),
            drain_secs = drain.as_secs(),
            "the pod stopped but something it started still holds its output open"
        );
    }
}
