//! The pods of every Deployment, following the configuration as it is pushed: a controller per
//! Deployment ([`super::rollout`]), started when the Deployment appears and told when it changes
//! or goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::rollout::{self, Desired};
use super::run::{Ctx, PodRun};
use super::{PodOptions, PodSpec, PodStatus};
use crate::identity::Identity;
use crate::logs::Rotation;
use crate::model::{Key, Mesh, Workload};
use crate::proxy::{Endpoints, Proxy, Running};

/// Makes pods: their specs from the Deployment, and each pod's sidecar listeners.
pub(super) struct Maker {
    pub ctx: Arc<Ctx>,
    opts: PodOptions,
    /// The proxy the pods' sidecar listeners belong to; `None`: pods call their upstreams directly.
    proxy: Option<Arc<Proxy>>,
    stopping: AtomicBool,
}

impl Maker {
    /// A new pod of `w`, started, with a sidecar listener for each host it calls.
    pub fn start(&self, mesh: &Mesh, w: &Arc<Workload>) -> std::io::Result<PodRun> {
        let mut spec = super::spec(mesh, w, &self.opts);
        let mut sidecars: Vec<Running> = Vec::new();
        if let Some(proxy) = &self.proxy {
            // East-west: the pod's own sidecar, one listener per upstream host it calls, routing
            // every request as if its :authority were that host.
            let identity = Arc::new(Identity::sidecar(&w.key, &spec.name, &w.labels));
            for host in spec.upstreams() {
                let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
                tcp.set_nonblocking(true)?;
                let r =
                    proxy.serve_sidecar_for_host(identity.clone(), &host, tokio::net::TcpListener::from_std(tcp)?)?;
                tracing::debug!(pod = %spec.name, upstream = %host, addr = %r.addr, "sidecar listener");
                spec.route_upstream(&host, r.addr);
                sidecars.push(r);
            }
        }
        PodRun::start(spec, self.ctx.clone(), sidecars)
    }

    /// `localmesh up` is stopping: pods go without their preStop.
    pub fn shutting_down(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

struct Controller {
    desired: watch::Sender<Option<Desired>>,
    task: JoinHandle<()>,
}

/// Runs the pods until [`Supervisor::shutdown`].
pub struct Supervisor {
    maker: Arc<Maker>,
    controllers: Mutex<BTreeMap<Key, Controller>>,
    /// The Deployments as last applied.
    desired: Mutex<Arc<Mesh>>,
    /// Pods outside any Deployment (static pods).
    statics: Mutex<Vec<PodRun>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("status", &self.maker.ctx.status)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// No pods yet: [`Supervisor::apply`] starts them. Ready pods are registered in `endpoints`;
    /// with a `proxy`, each pod calls its upstreams through its own sidecar listeners.
    pub fn new(endpoints: Arc<Endpoints>, rotation: Rotation, opts: PodOptions, proxy: Option<Arc<Proxy>>) -> Self {
        let ctx = Arc::new(Ctx {
            endpoints,
            status: Arc::new(Mutex::new(BTreeMap::new())),
            changed: watch::channel(0).0,
            rotation,
        });
        Supervisor {
            maker: Arc::new(Maker {
                ctx,
                opts,
                proxy,
                stopping: AtomicBool::new(false),
            }),
            controllers: Mutex::new(BTreeMap::new()),
            desired: Mutex::new(Arc::new(Mesh::default())),
            statics: Mutex::new(Vec::new()),
        }
    }

    /// Makes the pods follow `mesh`'s Deployments: a new one starts, a deleted one stops, a changed
    /// one scales or rolls out.
    pub fn apply(&self, mesh: Arc<Mesh>) {
        let mut controllers = crate::lock(&self.controllers);
        for w in &mesh.workloads {
            let desired = Desired {
                mesh: mesh.clone(),
                workload: Arc::new(w.clone()),
            };
            match controllers.get(&w.key) {
                Some(c) => {
                    let _ = c.desired.send(Some(desired));
                }
                None => {
                    let (tx, rx) = watch::channel(Some(desired));
                    let task = tokio::spawn(rollout::control(w.key.clone(), rx, self.maker.clone()));
                    controllers.insert(w.key.clone(), Controller { desired: tx, task });
                }
            }
        }
        let gone: Vec<Key> = controllers
            .keys()
            .filter(|k| !mesh.workloads.iter().any(|w| &w.key == *k))
            .cloned()
            .collect();
        for k in gone {
            tracing::info!(deployment = %k, "deployment deleted; stopping its pods");
            if let Some(c) = controllers.remove(&k) {
                let _ = c.desired.send(None);
                // The controller finishes stopping the pods on its own.
                drop(c.task);
            }
        }
        *crate::lock(&self.desired) = mesh;
    }

    /// Applies every configuration `pushed` sends, until the returned task is aborted.
    pub fn follow(self: &Arc<Self>, mut pushed: watch::Receiver<Arc<Mesh>>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while pushed.changed().await.is_ok() {
                let mesh = pushed.borrow_and_update().clone();
                me.apply(mesh);
            }
        })
    }

    /// Runs `spec` as a pod of no Deployment (the kubelet's static pods): restarted when it exits,
    /// stopped at [`Supervisor::shutdown`].
    pub fn start_static(&self, spec: PodSpec) -> std::io::Result<()> {
        let p = PodRun::start(spec, self.maker.ctx.clone(), Vec::new())?;
        crate::lock(&self.statics).push(p);
        Ok(())
    }

    pub fn status(&self) -> BTreeMap<String, PodStatus> {
        crate::lock(&self.maker.ctx.status).clone()
    }

    /// A shared view of the pods' status (for the admin port).
    pub fn status_handle(&self) -> Arc<Mutex<BTreeMap<String, PodStatus>>> {
        self.maker.ctx.status.clone()
    }

    /// Why the Deployments are not all available yet: each pod that is not ready and each
    /// Deployment short of its replicas; empty once every Deployment has `replicas` ready pods of
    /// its current template and no other.
    pub fn not_ready(&self) -> Vec<String> {
        let mesh = crate::lock(&self.desired).clone();
        let status = self.status();
        let mut out = Vec::new();
        for w in &mesh.workloads {
            let template = w.template_hash();
            let mine: Vec<(&String, &PodStatus)> = status.iter().filter(|(_, s)| s.workload == w.key).collect();
            let ready = mine
                .iter()
                .filter(|(_, s)| s.template == template && s.ready && !s.terminating)
                .count();
            let old = mine.iter().filter(|(_, s)| s.template != template).count();
            for (name, s) in &mine {
                if !s.ready && !s.terminating {
                    let why = s.last_exit.clone().map_or_else(
                        || "not answering its readiness probe".to_string(),
                        |e| format!("{e}, {} restarts", s.restarts),
                    );
                    let log = self.maker.opts.data_dir.join("logs").join(format!("{name}.log"));
                    out.push(format!("pod {name} ({why}); see {}", log.display()));
                }
            }
            if ready < w.replicas as usize || old > 0 {
                out.push(format!(
                    "deployment {}: {ready}/{} ready{}",
                    w.key,
                    w.replicas,
                    if old > 0 {
                        format!(", {old} old pods left")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        out
    }

    /// Waits until every Deployment is available ([`Supervisor::not_ready`] is empty); on timeout,
    /// the error names what is not.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.maker.ctx.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing = self.not_ready();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(format!(
                    "not ready after {}s: {}",
                    timeout.as_secs(),
                    missing.join("; ")
                ));
            }
        }
    }

    /// SIGTERM to every pod (no preStop), a bounded drain (`SHUTDOWN_GRACE_SECS` + 2 s), then
    /// SIGKILL; returns once no pod is left.
    pub async fn shutdown(&self) {
        self.maker.stopping.store(true, Ordering::Release);
        let controllers = std::mem::take(&mut *crate::lock(&self.controllers));
        let statics = std::mem::take(&mut *crate::lock(&self.statics));
        let mut tasks = Vec::new();
        for c in controllers.into_values() {
            let _ = c.desired.send(None);
            tasks.push(c.task);
        }
        for p in statics {
            tasks.push(p.stop(Duration::ZERO));
        }
        for t in tasks {
            let _ = t.await;
        }
        // Deleted Deployments' controllers may still be stopping their pods.
        let mut rx = self.maker.ctx.changed.subscribe();
        while !crate::lock(&self.maker.ctx.status).is_empty() {
            if tokio::time::timeout(Duration::from_secs(60), rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
}
