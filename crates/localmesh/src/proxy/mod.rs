//! The data plane: the gateway listener (TLS, SNI, HTTP/1.1 and HTTP/2) and the sidecar listener
//! (h2c and HTTP/1.1), both routing with [`crate::select`] and forwarding through one path of
//! small stages, in the order a request meets them (as linkerd2-proxy's stacks read):
//!
//! 1. [`listen`]: listeners and connections, bounded by [`limits`];
//! 2. [`edge`]: external requests sanitised at the gateway;
//! 3. [`route`]: the request's route, as a plan (backends, timeout, retries, fault);
//! 4. [`forward`]: the attempts, each an endpoint from [`balance`] and a call of the
//!    [`upstream`] seam, ended as one [`retry::AttemptEnd`] that one decision retries or not;
//! 5. [`reply`]: the answers the proxy makes itself, in one vocabulary;
//! 6. [`record`]: per request Istio's metrics, a JSON access log, the spans Istio's proxies make
//!    ([`spans`]) and a tap event.
//!
//! Built from hyper 1 / hyper-util (server: auto HTTP/1.1 + HTTP/2; client: the pooled legacy
//! client, HTTP/2 prior knowledge to gRPC backends) and tokio-rustls. Bodies stream through frame
//! by frame; a request body is also kept, up to `--per-request-buffer-limit`, for retries.

mod balance;
mod body;
mod breaker;
mod edge;
pub mod endpoints;
mod forward;
mod headers;
pub mod limits;
pub mod listen;
pub mod metrics;
mod names;
mod plaintext;
mod record;
mod redirect;
mod reply;
mod retry;
mod route;
mod spans;
#[cfg(test)]
mod tests;
pub mod tls;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use prometheus::Registry;
use tokio::task::JoinHandle;

use crate::identity::Identity;
use crate::model::{Listener, Mesh, ProxyTelemetry};
use crate::tap::Tap;
use crate::trace::{self, Sink, Tracer, store::Store};

pub use crate::identity::GATEWAY_WORKLOAD;
pub use endpoints::{Endpoint, Endpoints};
pub use metrics::{Labels, ProxyMetrics};
use record::{Record, Recorder};
pub use tls::{GATEWAY_HOST, LocalCa, TlsError, ensure_local_ca, load_certified_key, load_pem, server_config};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy hands to hyper.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Envoy's default cluster connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Hop {
    kind: HopKind,
    /// The proxy the requests enter: the gateway, or the caller's sidecar.
    source: Arc<Identity>,
    /// What it tells of its requests (the Telemetry resources), worked out once.
    telemetry: ProxyTelemetry,
}

#[derive(Debug, Clone)]
enum HopKind {
    Gateway(Arc<Listener>),
    /// A sidecar listener; with a host, every request is routed as if its `:authority` were that
    /// host (a per-upstream listener, for callers that dial `127.0.0.1:<port>`).
    Sidecar(Option<Arc<str>>),
}

/// A running listener; dropping it (or [`Running::stop`]) stops accepting and closes its connections.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Running {
    pub fn stop(self) {}
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the proxy tells of its requests besides metrics: where its spans go and how many may
/// wait, and how far a tap listener may fall behind.
#[derive(Debug, Clone)]
pub struct ObserveOptions {
    pub sink: Sink,
    /// See [`trace::DEFAULT_QUEUE`].
    pub queue: usize,
    /// See [`crate::tap::DEFAULT_BUFFER`].
    pub tap_buffer: usize,
}

impl Default for ObserveOptions {
    /// A fresh in-memory store ([`Proxy::store`]).
    fn default() -> Self {
        ObserveOptions {
            sink: Sink::Store(Arc::new(Store::new(trace::store::Limits::default()))),
            queue: trace::DEFAULT_QUEUE,
            tap_buffer: crate::tap::DEFAULT_BUFFER,
        }
    }
}

/// The shared state of every listener: the routing model, the endpoints, the upstream seam,
/// breakers and outlier state, and where finished requests are recorded.
pub struct Proxy {
    /// The routing model: replaced whole by a configuration push; each request keeps the one it
    /// started with, as Envoy pins a stream to the route table it saw first
    /// (`ActiveStream::decodeHeaders` sets `snapped_route_config_` once, envoy
    /// `source/common/http/conn_manager_impl.cc`).
    mesh: std::sync::RwLock<Arc<Mesh>>,
    endpoints: Arc<Endpoints>,
    registry: Registry,
    recorder: Arc<Recorder>,
    store: Option<Arc<Store>>,
    upstream: upstream::Upstream,
    breakers: breaker::Breakers,
    balance: balance::Balancer,
    /// Gateway listener port -> the local port it is served on (for redirects).
    published: Mutex<HashMap<u16, u16>>,
    limits: limits::Limits,
    admission: Arc<limits::Admission>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy over `mesh` whose spans go to a fresh in-memory store ([`Proxy::store`]), with its
    /// metrics in a fresh registry ([`Proxy::registry`]). Call it inside a Tokio runtime.
    pub fn new(mesh: Mesh, endpoints: Arc<Endpoints>) -> prometheus::Result<Arc<Self>> {
        Self::with_options(mesh, endpoints, ObserveOptions::default())
    }

    /// [`Proxy::new`] with the spans sent, and the tap bounded, as `spans` says.
    pub fn with_options(mesh: Mesh, endpoints: Arc<Endpoints>, spans: ObserveOptions) -> prometheus::Result<Arc<Self>> {
        Self::with_limits(mesh, endpoints, spans, limits::Limits::default())
    }

    /// [`Proxy::with_options`] with its connections bounded by `limits`.
    pub fn with_limits(
        mesh: Mesh,
        endpoints: Arc<Endpoints>,
        spans: ObserveOptions,
        limits: limits::Limits,
    ) -> prometheus::Result<Arc<Self>> {
        let upstream = upstream::Clients::new(limits.upstream_idle).into_upstream();
        Self::with_upstream(mesh, endpoints, spans, limits, upstream)
    }

    /// The proxy with its attempts sent through `upstream` (tests script it).
    fn with_upstream(
        mesh: Mesh,
        endpoints: Arc<Endpoints>,
        spans: ObserveOptions,
        limits: limits::Limits,
        upstream: upstream::Upstream,
    ) -> prometheus::Result<Arc<Self>> {
        let registry = Registry::new();
        let metrics = ProxyMetrics::new(&registry)?;
        let store = match &spans.sink {
            Sink::Store(s) => Some(s.clone()),
            Sink::Otlp(_) => None,
        };
        let tracer = Tracer::new(&registry, spans.sink, spans.queue)?;
        Ok(Arc::new(Proxy {
            mesh: std::sync::RwLock::new(Arc::new(mesh)),
            endpoints,
            registry,
            recorder: Arc::new(Recorder {
                metrics,
                tracer,
                tap: Tap::new(spans.tap_buffer),
            }),
            store,
            upstream,
            breakers: breaker::Breakers::default(),
            balance: balance::Balancer::default(),
            published: Mutex::new(HashMap::new()),
            admission: limits::Admission::new(limits.max_connections),
            limits,
        }))
    }

    /// `istio_requests_total`, `istio_request_duration_milliseconds`, `localmesh_spans_dropped_total`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Downstream connections open now, and those closed at `--max-connections`.
    pub fn connections(&self) -> (usize, u64) {
        (self.admission.open(), self.admission.overflowed())
    }

    pub fn endpoints(&self) -> &Arc<Endpoints> {
        &self.endpoints
    }

    /// The routing model now.
    pub fn mesh(&self) -> Arc<Mesh> {
        self.mesh
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the routing model: requests that start afterwards route by `mesh`; those in
    /// flight finish on the one they started with.
    pub fn set_mesh(&self, mesh: Arc<Mesh>) {
        *self.mesh.write().unwrap_or_else(std::sync::PoisonError::into_inner) = mesh;
    }

    /// The in-memory trace store, when spans are kept here (not exported).
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Finished requests, for `localmesh tap` and `top`.
    pub fn tap(&self) -> &Tap {
        &self.recorder.tap
    }

    /// The endpoints outlier detection has ejected from any cluster, now.
    pub fn ejected(&self) -> std::collections::HashSet<u64> {
        self.balance.ejected()
    }

    /// Every endpoint with its health as Envoy's admin writes it (`HostUtility::healthFlagsToString`,
    /// envoy `source/common/upstream/host_utility.cc`): `healthy`, or the failed checks in its
    /// order; a pod that is not ready is one its endpoint discovery marks unhealthy.
    pub fn endpoint_health(&self) -> Vec<(Arc<Endpoint>, &'static str)> {
        let ejected = self.ejected();
        self.endpoints
            .all()
            .into_iter()
            .map(|ep| {
                let health = match (ep.is_healthy(), ejected.contains(&ep.id)) {
                    (true, false) => "healthy",
                    (true, true) => "/failed_outlier_check",
                    (false, false) => "/failed_eds_health",
                    (false, true) => "/failed_outlier_check/failed_eds_health",
                };
                (ep, health)
            })
            .collect()
    }
}
