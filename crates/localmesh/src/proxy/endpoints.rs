//! The live endpoints of each workload: `127.0.0.1:<port>` with the pod template's labels, a health
//! flag and an in-flight counter. The child-process manager (and tests) add and remove them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::identity::Identity;
use crate::model::{Key, Workload};

/// One local pod's serving address.
#[derive(Debug)]
pub struct Endpoint {
    pub id: u64,
    /// The Deployment (`namespace/name`).
    pub workload: Key,
    pub pod: String,
    pub addr: SocketAddr,
    /// The pod template's labels (`app`, `version`, ...): what Services and subsets select.
    pub labels: BTreeMap<String, String>,
    /// The pod's sidecar: the destination in metrics, the inbound spans' process.
    pub identity: Arc<Identity>,
    healthy: AtomicBool,
    in_flight: AtomicU32,
}

impl Endpoint {
    /// The `version` label, or `unknown` as Istio reports it.
    pub fn version(&self) -> &str {
        self.labels.get("version").map_or("unknown", String::as_str)
    }

    /// The `app` label, else the workload name.
    pub fn app(&self) -> &str {
        self.labels
            .get("app")
            .map_or(self.workload.name.as_str(), String::as_str)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// Requests and streams currently open to this endpoint.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts one request until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight to an endpoint.
#[derive(Debug)]
pub(crate) struct InFlight(pub(crate) Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every workload's endpoints.
#[derive(Debug, Default)]
pub struct Endpoints {
    list: RwLock<Vec<Arc<Endpoint>>>,
    next: AtomicU64,
}

impl Endpoints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a healthy endpoint and returns it (its `id` removes it again).
    pub fn add(
        &self,
        workload: Key,
        pod: impl Into<String>,
        addr: SocketAddr,
        labels: BTreeMap<String, String>,
    ) -> Arc<Endpoint> {
        let pod = pod.into();
        let ep = Arc::new(Endpoint {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            identity: Arc::new(Identity::sidecar(&workload, &pod, &labels)),
            workload,
            pod,
            addr,
            labels,
            healthy: AtomicBool::new(true),
            in_flight: AtomicU32::new(0),
        });
        self.write().push(ep.clone());
        ep
    }

    /// Registers a pod of `workload`, with the pod template's labels.
    pub fn add_pod(&self, workload: &Workload, pod: impl Into<String>, addr: SocketAddr) -> Arc<Endpoint> {
        self.add(workload.key.clone(), pod, addr, workload.labels.clone())
    }

    pub fn remove(&self, id: u64) -> Option<Arc<Endpoint>> {
        let mut list = self.write();
        let i = list.iter().position(|e| e.id == id)?;
        Some(list.remove(i))
    }

    /// Removes every endpoint of a pod; returns how many.
    pub fn remove_pod(&self, pod: &str) -> usize {
        let mut list = self.write();
        let before = list.len();
        list.retain(|e| e.pod != pod);
        before - list.len()
    }

    /// Marks an endpoint (un)healthy; `false` if there is no such endpoint.
    pub fn set_healthy(&self, id: u64, healthy: bool) -> bool {
        self.all()
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.set_healthy(healthy))
            .is_some()
    }

    /// The endpoints of one workload, in registration order.
    pub fn of(&self, workload: &Key) -> Vec<Arc<Endpoint>> {
        self.read()
            .iter()
            .filter(|e| &e.workload == workload)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Endpoint>>> {
        self.list.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Endpoint>>> {
        self.list.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
