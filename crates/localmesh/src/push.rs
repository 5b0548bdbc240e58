//! Configuration pushed while `localmesh up` runs, as istiod pushes it: the files it loaded are
//! watched (debounced), loaded and validated again on a change, and a valid result replaces the
//! proxy's routing model atomically (requests in flight finish on the model they started with,
//! as Envoy drains a replaced route table). An invalid one is refused: the running configuration
//! stays, and the error, naming the file, kind/name and field, is logged and shown on
//! `/config_dump` until a fix clears it.
//!
//! What is pushed: routing (HTTPRoutes, VirtualServices, DestinationRules, weights, matches,
//! timeouts, retries, faults, outlier detection, connection pools) to the proxy, and the
//! Deployments to the pods (scaled, rolled out, started, stopped: [`crate::pods`]). The gateway's
//! listeners are those `localmesh up` started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use serde_json::{Value, json};

use crate::model::Mesh;
use crate::proxy::Proxy;

/// How long a burst of file changes is gathered into one push (an editor's save is several).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The configuration the proxy runs now, for `/config_dump`.
#[derive(Debug)]
pub struct Pushed {
    state: RwLock<State>,
    /// The model last accepted, for whoever follows pushes besides the proxy (the pods).
    current: tokio::sync::watch::Sender<Arc<Mesh>>,
}

#[derive(Debug, Clone)]
struct State {
    /// 1 at start, one more per accepted push.
    version: u64,
    pushed_at: String,
    summary: String,
    last_error: Option<String>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Pushed {
    /// The configuration `localmesh up` started with, as version 1.
    pub fn new(mesh: Arc<Mesh>) -> Arc<Self> {
        Arc::new(Pushed {
            state: RwLock::new(State {
                version: 1,
                pushed_at: now(),
                summary: format!("{mesh}"),
                last_error: None,
            }),
            current: tokio::sync::watch::channel(mesh).0,
        })
    }

    /// Each model accepted from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Mesh>> {
        self.current.subscribe()
    }

    /// The routing as `localmesh lint` prints it, one entry per line.
    pub fn summary(&self) -> String {
        self.read().summary.clone()
    }

    /// Why the last change to the files was refused, until a valid one clears it.
    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// `version`, `pushed_at` and `last_error` for `/config_dump`.
    pub fn status(&self) -> Value {
        let s = self.read();
        json!({"version": s.version, "pushed_at": s.pushed_at, "last_error": s.last_error})
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads `root` again and pushes it to `proxy` if it is valid and differs; records the
    /// outcome. Returns the new version when one was pushed.
    pub fn reload(&self, root: &Path, proxy: &Proxy) -> Option<u64> {
        match crate::load(root) {
            Err(e) => {
                let error = e.to_string();
                // Recorded before it is logged: whoever reads the log line finds it on the admin.
                self.write().last_error = Some(error.clone());
                tracing::error!(%error, "configuration refused; the running configuration stays");
                None
            }
            Ok(mesh) => {
                let summary = format!("{mesh}");
                let mut s = self.write();
                s.last_error = None;
                if summary == s.summary {
                    return None;
                }
                let changed = changed_lines(&s.summary, &summary);
                let mesh = Arc::new(mesh);
                proxy.set_mesh(mesh.clone());
                self.current.send_replace(mesh);
                s.version += 1;
                s.pushed_at = now();
                s.summary = summary;
                // `config_version`: `version` is the log line's own field (the process's version).
                tracing::info!(config_version = s.version, changed = %changed.join(" | "), "configuration pushed");
                Some(s.version)
            }
        }
    }
}

/// The lines of `new` that `old` does not have: what a push changed, for its log line.
fn changed_lines(old: &str, new: &str) -> Vec<String> {
    let before: std::collections::HashSet<&str> = old.lines().collect();
    new.lines()
        .filter(|l| !before.contains(l))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The directories `localmesh up` loads its configuration from, as they exist under `root`.
fn watched(root: &Path) -> Vec<PathBuf> {
    ["gateway", "manifests", "observability/istio"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect()
}

/// Whether a file event can change the configuration: not reading a file (inotify reports every
/// open, the reloads' own included, which would reload forever), nor the local CA's files, which
/// change as they are made.
fn relevant(res: &notify::Result<notify::Event>, certs: &Path) -> bool {
    match res {
        Ok(e) => !matches!(e.kind, EventKind::Access(_)) && e.paths.iter().any(|p| !p.starts_with(certs)),
        // A lost event (an overflowed queue) may have been a change.
        Err(_) => true,
    }
}

/// Watches `root`'s configuration and pushes each valid change to `proxy` until dropped. A burst
/// of changes (an editor's save, a `kubectl apply` of several files) is gathered for [`DEBOUNCE`]
/// after its first event into one reload.
pub fn watch(root: PathBuf, proxy: Arc<Proxy>, pushed: Arc<Pushed>) -> anyhow::Result<Watching> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let certs = root.join("gateway/certs");
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if relevant(&res, &certs) {
            let _ = tx.send(());
        }
    })?;
    for dir in watched(&root) {
        watcher.watch(&dir, RecursiveMode::Recursive)?;
    }
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let (root, proxy, pushed) = (root.clone(), proxy.clone(), pushed.clone());
            let _ = tokio::task::spawn_blocking(move || pushed.reload(&root, &proxy)).await;
        }
    });
    Ok(Watching {
        _watcher: Box::new(watcher),
        task,
    })
}

/// A running watch; dropping it stops watching.
pub struct Watching {
    _watcher: Box<dyn std::any::Any + Send>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

    use super::*;

    #[test]
    fn reading_the_files_is_not_a_change_and_neither_is_the_local_ca() {
        let certs = Path::new("/r/gateway/certs");
        let event = |kind, path: &str| Ok(notify::Event::new(kind).add_path(PathBuf::from(path)));
        let routes = "/r/gateway/httproutes.yaml";
        assert!(!relevant(&event(EventKind::Access(AccessKind::Any), routes), certs));
        assert!(relevant(
            &event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), routes),
            certs
        ));
        assert!(relevant(&event(EventKind::Create(CreateKind::File), routes), certs));
        assert!(!relevant(
            &event(EventKind::Create(CreateKind::File), "/r/gateway/certs/ca.crt"),
            certs
        ));
        assert!(relevant(&Err(notify::Error::generic("queue overflow")), certs));
    }
}
