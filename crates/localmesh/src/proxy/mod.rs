//! The data plane: the gateway listener (TLS, SNI, HTTP/1.1 and HTTP/2) and the sidecar listener
//! (h2c and HTTP/1.1), both routing with [`crate::select`] and forwarding through one machinery:
//! weighted backends, DestinationRule load balancing over the live [`Endpoints`], outlier
//! ejection, route timeouts, retries, fault injection, and per request Istio's metrics, a JSON
//! access log, the spans Istio's proxies make ([`spans`]) and a tap event ([`record`]).
//!
//! Built from hyper 1 / hyper-util (server: auto HTTP/1.1 + HTTP/2; client: the pooled legacy
//! client, HTTP/2 prior knowledge to gRPC backends) and tokio-rustls. Response bodies stream
//! through frame by frame; only a request body that ends within a short window is buffered, and
//! only such requests are ever retried.

mod body;
mod breaker;
mod edge;
pub mod endpoints;
pub mod listen;
pub mod metrics;
mod names;
mod plaintext;
mod record;
mod redirect;
mod reply;
mod retry;
mod spans;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::Registry;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::identity::Identity;
use crate::model::{
    AbortStatus, Backend, Fault, Listener, Mesh, ProxyTracing, Redirect, RetryPolicy, RouteAction, TrafficPolicy,
};
use crate::outlier::{Outcome as OutlierOutcome, Outlier};
use crate::select;
use crate::tap::Tap;
use crate::trace::{self, Sink, Tracer, store::Store};
use reply::LocalReply;
use retry::AttemptEnd;

pub use crate::identity::GATEWAY_WORKLOAD;
use body::{Observed, Prefixed, Replay};
pub use endpoints::{Endpoint, Endpoints};
pub use metrics::{Labels, ProxyMetrics};
use metrics::{Reporter, ServiceName};
use record::{Answered, Ctx, FinalAttempt, Record, Recorder, Reply};
use spans::{Attempt, Inbound, Outcome, RequestInfo, RequestTrace};
pub use tls::{GATEWAY_HOST, LocalCa, TlsError, ensure_local_ca, load_certified_key, load_pem, server_config};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy hands to hyper.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The largest request body buffered for retries (Envoy's per-request buffer limit is similar).
const RETRY_BUFFER_LIMIT: usize = 1 << 20;
/// How long a request body may take to end before the request counts as a stream (and is sent on
/// without buffering, and never retried).
const BUFFER_WINDOW: Duration = Duration::from_millis(50);
/// Envoy's default cluster connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Hop {
    kind: HopKind,
    /// The proxy the requests enter: the gateway, or the caller's sidecar.
    source: Arc<Identity>,
    /// Its tracing (the Telemetry resources), worked out once.
    tracing: ProxyTracing,
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

#[derive(Debug)]
struct ClusterOutlier {
    ids: Vec<u64>,
    outlier: Outlier,
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

/// The shared state of every listener: the routing model, the endpoints, the upstream connection
/// pools, outlier state, and where finished requests are recorded.
pub struct Proxy {
    mesh: Arc<Mesh>,
    endpoints: Arc<Endpoints>,
    registry: Registry,
    recorder: Arc<Recorder>,
    store: Option<Arc<Store>>,
    h1: Client<HttpConnector, ProxyBody>,
    h2: Client<HttpConnector, ProxyBody>,
    /// Clients for clusters with their own `connectionPool.tcp.connectTimeout`, by (h2, timeout).
    timed_clients: Mutex<HashMap<(bool, Duration), Client<HttpConnector, ProxyBody>>>,
    breakers: breaker::Breakers,
    outliers: Mutex<HashMap<String, ClusterOutlier>>,
    counter: AtomicU64,
    /// Gateway listener port -> the local port it is served on (for redirects).
    published: Mutex<HashMap<u16, u16>>,
    limits: listen::Limits,
    admission: Arc<listen::Admission>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// The downstream request as the forwarding stage reads it: its head, its routing view and its
/// path with the query.
#[derive(Clone, Copy)]
struct Downstream<'a> {
    parts: &'a http::request::Parts,
    sreq: &'a select::Request,
    path_q: &'a str,
}

/// What the matched route asks for.
#[derive(Debug)]
struct Plan {
    backends: Vec<Backend>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    fault: Option<Fault>,
    /// The port the caller dialled (routes and cluster names resolve Service ports against it).
    port: u16,
}

impl Proxy {
    /// A proxy over `mesh` whose spans go to a fresh in-memory store ([`Proxy::store`]), with its
    /// metrics in a fresh registry ([`Proxy::registry`]). Call it inside a Tokio runtime.
    pub fn new(mesh: Mesh, endpoints: Arc<Endpoints>) -> prometheus::Result<Arc<Self>> {
        Self::with_options(mesh, endpoints, ObserveOptions::default())
    }

    /// [`Proxy::new`] with the spans sent, and the tap bounded, as `spans` says.
    pub fn with_options(mesh: Mesh, endpoints: Arc<Endpoints>, spans: ObserveOptions) -> prometheus::Result<Arc<Self>> {
        Self::with_limits(mesh, endpoints, spans, listen::Limits::default())
    }

    /// [`Proxy::with_options`] with its connections bounded by `limits`.
    pub fn with_limits(
        mesh: Mesh,
        endpoints: Arc<Endpoints>,
        spans: ObserveOptions,
        limits: listen::Limits,
    ) -> prometheus::Result<Arc<Self>> {
        let registry = Registry::new();
        let metrics = ProxyMetrics::new(&registry)?;
        let store = match &spans.sink {
            Sink::Store(s) => Some(s.clone()),
            Sink::Otlp(_) => None,
        };
        let tracer = Tracer::new(&registry, spans.sink, spans.queue)?;
        Ok(Arc::new(Proxy {
            mesh: Arc::new(mesh),
            endpoints,
            registry,
            recorder: Arc::new(Recorder {
                metrics,
                tracer,
                tap: Tap::new(spans.tap_buffer),
            }),
            store,
            h1: upstream_client(false, CONNECT_TIMEOUT, limits.upstream_idle),
            h2: upstream_client(true, CONNECT_TIMEOUT, limits.upstream_idle),
            timed_clients: Mutex::new(HashMap::new()),
            breakers: breaker::Breakers::default(),
            outliers: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            published: Mutex::new(HashMap::new()),
            admission: listen::Admission::new(limits.max_connections),
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

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The in-memory trace store, when spans are kept here (not exported).
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Finished requests, for `localmesh tap` and `top`.
    pub fn tap(&self) -> &Tap {
        &self.recorder.tap
    }

    async fn handle(self: Arc<Self>, hop: Hop, peer: IpAddr, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let mesh = self.mesh.clone();
        let (mut parts, body) = req.into_parts();
        if let HopKind::Gateway(l) = &hop.kind {
            edge::sanitize_external(&mut parts.headers, peer, l.tls.is_some());
        }
        let authority = match &hop.kind {
            HopKind::Sidecar(Some(host)) => host.to_string(),
            _ => parts
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| header_str(&parts.headers, "host").map(str::to_string))
                .unwrap_or_default(),
        };
        let path_q = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut sreq = select::Request::new(parts.method.as_str(), &path_q).authority(&authority);
        for (n, v) in &parts.headers {
            if let Ok(v) = v.to_str() {
                sreq.headers.push((n.as_str().to_string(), v.to_string()));
            }
        }
        let grpc = header_str(&parts.headers, "content-type").is_some_and(|c| c.starts_with("application/grpc"));
        let hop_name = match &hop.kind {
            HopKind::Gateway(_) => "gateway",
            HopKind::Sidecar(_) => "sidecar",
        };
        // Envoy makes an x-request-id where a request arrives without one, once for all attempts.
        let request_id = telemetry::propagation::request_id(&parts.headers)
            .map_or_else(telemetry::propagation::new_request_id, str::to_string);
        let tapping = self.recorder.tap.active();
        let mut ctx = Ctx {
            start,
            hop: hop_name,
            trace: RequestTrace::start(
                &parts.headers,
                &hop.source,
                hop.tracing,
                telemetry::grpc::is_health_check(&sreq.path) || telemetry::http::is_probe(&sreq.path),
            ),
            source: hop.source.clone(),
            authority: authority.clone(),
            path: sreq.path.clone(),
            method: parts.method.to_string(),
            grpc,
            request_id,
            route: String::new(),
            tap_headers: tapping.then(|| parts.headers.clone()),
        };
        let scheme = match &hop.kind {
            HopKind::Gateway(l) if l.tls.is_some() => "https",
            _ => "http",
        };
        let peer_text = if ctx.trace.recording() {
            peer.to_string()
        } else {
            String::new()
        };
        let info = RequestInfo {
            headers: &parts.headers,
            method: parts.method.as_str(),
            scheme,
            authority: &authority,
            path: &path_q,
            protocol: match parts.version {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            peer: &peer_text,
            request_id: &ctx.request_id,
            grpc,
        };

        // Envoy's connection manager serves relative paths only: a `:path` that does not start
        // with `/` (`*`, an absolute URI) is answered 404 (gRPC: UNIMPLEMENTED) before any route
        // or upstream is tried (envoy `source/common/http/conn_manager_impl.cc`,
        // `ActiveStream::decodeHeaders`, details `absolute_path`).
        if !path_q.starts_with('/') {
            ctx.trace.describe(&info, || format!("{authority}:{path_q}").into());
            let msg = format!("the request path {path_q:?} is not a relative path (it must start with \"/\")");
            return self.local(ctx, None, None, LocalReply::NotRelativePath, msg);
        }
        let plan = match &hop.kind {
            HopKind::Gateway(l) => {
                sreq.port = Some(l.port);
                match select::gateway(&mesh, l.port, &authority, &sreq) {
                    Err(_) => {
                        ctx.trace.describe(&info, || format!("egress {authority}").into());
                        return self.no_route(ctx);
                    }
                    Ok((_, route)) => {
                        ctx.trace.describe(&info, || {
                            route
                                .span_name
                                .get_or_init(|| names::gateway_operation(&mesh, l, route).into())
                                .clone()
                        });
                        if tapping {
                            ctx.route = format!("{} {}", route.origin.object, route.field);
                        }
                        match &route.action {
                            RouteAction::Redirect(r) => return self.redirect(ctx, r, &path_q, l),
                            RouteAction::Forward(b) => Plan {
                                backends: b.clone(),
                                timeout: route.timeout,
                                retry: route.retry.clone(),
                                fault: None,
                                port: l.port,
                            },
                        }
                    }
                }
            }
            HopKind::Sidecar(_) => {
                let port = authority
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(80);
                sreq.port = Some(port);
                match select::sidecar(&mesh, &hop.source.namespace, &authority, &sreq) {
                    None => {
                        ctx.trace.describe(&info, || format!("egress {authority}").into());
                        return self.no_route(ctx);
                    }
                    Some(sc) => {
                        ctx.trace
                            .describe(&info, || names::sidecar_operation(&mesh, &sc, &sreq, port).into());
                        if tapping {
                            ctx.route = match &sc {
                                select::Sidecar::Route { vs, route } => format!("{} {}", vs.origin.object, route.field),
                                select::Sidecar::Direct { service, .. } => format!("Service {}", service.key),
                            };
                        }
                        Plan {
                            backends: sc.backends().to_vec(),
                            timeout: sc.timeout(),
                            retry: sc.retry().clone(),
                            fault: sc.fault().cloned(),
                            port,
                        }
                    }
                }
            }
        };

        if let Some(fault) = &plan.fault {
            let (delay, abort) = fault.decide(rand_percent(), rand_percent());
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if let Some(abort) = abort {
                let (http, code) = match abort {
                    AbortStatus::Http(s) => (*s, http_to_grpc(*s)),
                    AbortStatus::Grpc(name) => (500, grpc_code(name)),
                };
                let reply = LocalReply::FaultAbort {
                    http,
                    grpc: tonic::Code::from_i32(code),
                };
                return self.local(ctx, None, None, reply, "fault filter abort".into());
            }
        }

        let Some(backend) = select::pick(&plan.backends, rand64() as u32).cloned() else {
            let msg = "every backend of the route has weight 0".into();
            return self.local(ctx, None, None, LocalReply::NoWeightedBackend, msg);
        };
        let down = Downstream {
            parts: &parts,
            sreq: &sreq,
            path_q: &path_q,
        };
        self.forward(ctx, &mesh, down, body, backend, &plan).await
    }

    async fn forward(
        &self,
        mut ctx: Ctx,
        mesh: &Mesh,
        down: Downstream<'_>,
        body: Incoming,
        backend: Backend,
        plan: &Plan,
    ) -> Response<ProxyBody> {
        let sreq = down.sreq;
        let Some(service) = mesh.service(&backend.service) else {
            let msg = format!("backend {backend} is not a known Service");
            return self.local(ctx, None, None, LocalReply::UnknownService, msg);
        };
        let svc_port = names::service_port(service, &backend, plan.port);
        let http2 = service
            .ports
            .iter()
            .find(|sp| sp.port == svc_port)
            .or(service.ports.first())
            .is_some_and(|p| p.is_http2());
        let policy = select::traffic_policy(mesh, &backend).clone();
        let cluster = format!("{}|{}", backend.service, backend.subset.as_deref().unwrap_or(""));
        let eps: Vec<Arc<Endpoint>> = select::workloads(mesh, &backend)
            .iter()
            .flat_map(|w| self.endpoints.of(&w.key))
            .collect();
        let name = Arc::new(ServiceName::from(&service.key));
        let fqdn = name.fqdn.clone();
        // The inbound span's name and cluster are the same for every attempt.
        let span_names = ctx
            .trace
            .recording()
            .then(|| names::backend_names(mesh, service, &backend, plan.port));
        if let Some(n) = &span_names {
            ctx.trace.set_upstream_cluster(n.outbound_cluster.clone());
        }
        let inbound_for = |ep: &Endpoint| {
            span_names.as_ref().map(|n| Inbound {
                identity: ep.identity.clone(),
                tracing: mesh.proxy_tracing(&ep.identity.namespace, &ep.labels),
                operation: n.inbound_operation.clone(),
                cluster: n.inbound_cluster.clone(),
            })
        };

        let deadline = plan.timeout.map(|t| ctx.start + t);
        let counter = ctx.trace.recording().then(|| Arc::new(AtomicU64::new(0)));
        let (buffered, mut streaming) = if plan.retry.is_enabled() {
            match read_body(body).await {
                Ok(Ok(frames)) => (Some(frames), None),
                Ok(Err(mut prefixed)) => {
                    prefixed.counter = counter.clone();
                    (None, Some(prefixed))
                }
                Err(e) => {
                    let msg = format!("reading the request body: {e}");
                    return self.local(ctx, Some(name), None, LocalReply::BadRequestBody, msg);
                }
            }
        } else {
            (
                None,
                Some(Prefixed {
                    prefix: VecDeque::new(),
                    rest: body,
                    counter: counter.clone(),
                }),
            )
        };
        let request_bytes = |counter: &Option<Arc<AtomicU64>>| match (&buffered, counter) {
            (Some(frames), _) => frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum(),
            (None, Some(c)) => c.load(Ordering::Relaxed),
            (None, None) => 0,
        };

        let breaker = self.breakers.get(&cluster, &policy.pool);
        let admitted = match deadline {
            Some(d) => tokio::time::timeout_at(d, breaker.admit(!http2)).await.ok(),
            None => Some(breaker.admit(!http2).await),
        };
        let admitted = match admitted {
            None => {
                let msg = format!("upstream request timeout ({fqdn}) waiting for a connection");
                return self.local(ctx, Some(name), None, LocalReply::Timeout, msg);
            }
            Some(Err(over)) => {
                let msg = format!("upstream overflow ({fqdn}): {over}");
                return self.local(ctx, Some(name), None, LocalReply::Overflow, msg);
            }
            Some(Ok(a)) => a,
        };

        let mut retries = Retries {
            tried: Vec::new(),
            left: if buffered.is_some() { plan.retry.attempts } else { 0 },
            in_progress: None,
        };
        loop {
            let tried = &retries.tried;
            let Some(ep) = self.choose(&cluster, &policy, &eps, sreq, tried) else {
                let msg = format!("no healthy upstream for {fqdn}");
                return self.local(ctx, Some(name), None, LocalReply::NoHealthyUpstream, msg);
            };
            let attempt_body = match (&buffered, streaming.take()) {
                (Some(frames), _) => Replay::new(frames).boxed_unsync(),
                (None, Some(s)) => s.boxed_unsync(),
                (None, None) => {
                    let msg = format!("upstream of {fqdn} failed and the request body is gone");
                    return self.local(ctx, Some(name), None, LocalReply::BodyGone, msg);
                }
            };
            let attempt = ctx.trace.attempt();
            let upstream = upstream_request(down, &ctx, &attempt, &ep, http2, attempt_body, tried.len());
            let in_flight = ep.begin();
            let client = self.client(http2, policy.pool.connect_timeout);
            let now = Instant::now();
            let try_deadline = match (deadline, plan.retry.per_try_timeout.map(|p| now + p)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sent = client.request(upstream);
            let result = match try_deadline {
                Some(d) => tokio::time::timeout_at(d, sent).await.ok(),
                None => Some(sent.await),
            };
            match result {
                Some(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let grpc_status: Option<i32> =
                        header_str(resp.headers(), "grpc-status").and_then(|s| s.parse().ok());
                    let outcome = match grpc_status {
                        Some(c) if ctx.grpc => OutlierOutcome::Grpc(c),
                        _ => OutlierOutcome::Http(status),
                    };
                    self.record_outlier(&cluster, &policy, &eps, &ep, outcome);
                    let retriable =
                        retry::should_retry(&plan.retry, ctx.grpc, AttemptEnd::Response { status, grpc_status });
                    if retriable && retries.take(&breaker, ep.id) {
                        tracing::debug!(pod = %ep.pod, status, ?grpc_status, "retrying");
                        let code = grpc_status.map(|c| c.to_string());
                        let outcome = Outcome::retried(status, code.as_deref(), "-", request_bytes(&counter));
                        let fa = FinalAttempt {
                            attempt,
                            inbound: inbound_for(&ep),
                        };
                        self.retried_attempt(&mut ctx, &name, &ep, fa, &outcome);
                        continue;
                    }
                    let flags = if retriable && buffered.is_some() { "URX" } else { "-" };
                    drop(retries);
                    let fa = FinalAttempt {
                        attempt,
                        inbound: inbound_for(&ep),
                    };
                    let bytes = request_bytes(&counter);
                    let answered = Answered {
                        held: (in_flight, admitted),
                        attempt: fa,
                        flags,
                        request_bytes: bytes,
                        request_counter: counter,
                    };
                    return self.respond(ctx, name, &ep, resp, deadline, answered);
                }
                Some(Err(e)) => {
                    self.record_outlier(&cluster, &policy, &eps, &ep, OutlierOutcome::ConnectFailure);
                    let connect = e.is_connect();
                    let refused = !connect && is_refused(&e);
                    let end = if connect {
                        AttemptEnd::ConnectFailure
                    } else if refused {
                        AttemptEnd::Refused
                    } else {
                        AttemptEnd::Reset
                    };
                    let retriable = retry::should_retry(&plan.retry, ctx.grpc, end);
                    // A connect failure never reached the pod's sidecar: no inbound span or report.
                    let reached = (!connect).then(|| inbound_for(&ep)).flatten();
                    if retriable && retries.take(&breaker, ep.id) {
                        tracing::debug!(pod = %ep.pod, error = %e, "retrying after an upstream error");
                        if !connect {
                            let code = ctx.grpc.then_some("14");
                            let outcome = Outcome::retried(503, code, "UC", request_bytes(&counter));
                            let fa = FinalAttempt {
                                attempt,
                                inbound: reached,
                            };
                            self.retried_attempt(&mut ctx, &name, &ep, fa, &outcome);
                        }
                        continue;
                    }
                    let reply = LocalReply::UpstreamFailure {
                        connect,
                        retried_out: retriable && buffered.is_some(),
                    };
                    let msg = format!("upstream connect error to {} ({fqdn}): {}", ep.pod, error_chain(&e));
                    let fa = FinalAttempt {
                        attempt,
                        inbound: reached,
                    };
                    let ep = (!connect).then_some(ep);
                    return self.local_after(ctx, Some(name), ep, Some(fa), reply, msg);
                }
                None => {
                    // A timeout is a gateway error for outlier detection (see OutlierOutcome::Timeout).
                    self.record_outlier(&cluster, &policy, &eps, &ep, OutlierOutcome::Timeout);
                    let overall = deadline.is_some_and(|d| Instant::now() >= d);
                    let retriable = !overall && retry::should_retry(&plan.retry, ctx.grpc, AttemptEnd::PerTryTimeout);
                    if retriable && retries.take(&breaker, ep.id) {
                        let code = ctx.grpc.then_some("4");
                        let outcome = Outcome::retried(504, code, "UT", request_bytes(&counter));
                        let fa = FinalAttempt {
                            attempt,
                            inbound: inbound_for(&ep),
                        };
                        self.retried_attempt(&mut ctx, &name, &ep, fa, &outcome);
                        continue;
                    }
                    let msg = format!("upstream request timeout ({fqdn})");
                    let fa = FinalAttempt {
                        attempt,
                        inbound: inbound_for(&ep),
                    };
                    return self.local_after(ctx, Some(name), Some(ep), Some(fa), LocalReply::Timeout, msg);
                }
            }
        }
    }

    /// An attempt that is retried: the destination sidecar's report and span of what it saw.
    fn retried_attempt(
        &self,
        ctx: &mut Ctx,
        service: &Arc<ServiceName>,
        ep: &Arc<Endpoint>,
        fa: FinalAttempt,
        outcome: &Outcome<'_>,
    ) {
        let labels = Labels {
            reporter: Reporter::Destination,
            source: ctx.source.clone(),
            destination: Some(ep.identity.clone()),
            service: Some(service.clone()),
            grpc: ctx.grpc,
            response_code: outcome.status,
            grpc_response_status: outcome.grpc_status.map(str::to_string),
            response_flags: outcome.flags.to_string(),
        };
        self.recorder.metrics.record(&labels, fa.attempt.elapsed_ms());
        if let Some(inbound) = &fa.inbound {
            ctx.trace
                .finish_attempt(&self.recorder.tracer, fa.attempt, inbound, outcome);
        }
    }

    /// The upstream client for a cluster: the shared one, or one with the cluster's connect timeout.
    fn client(&self, http2: bool, connect_timeout: Option<Duration>) -> Client<HttpConnector, ProxyBody> {
        match connect_timeout {
            None => if http2 { &self.h2 } else { &self.h1 }.clone(),
            Some(t) => crate::lock(&self.timed_clients)
                .entry((http2, t))
                .or_insert_with(|| upstream_client(http2, t, self.limits.upstream_idle))
                .clone(),
        }
    }

    /// An endpoint of the cluster for one attempt: healthy, not ejected, preferably not tried yet.
    fn choose(
        &self,
        cluster: &str,
        policy: &TrafficPolicy,
        eps: &[Arc<Endpoint>],
        req: &select::Request,
        tried: &[u64],
    ) -> Option<Arc<Endpoint>> {
        let now = std::time::Instant::now();
        let ejected = self
            .with_outlier(cluster, policy, eps, |o, ids| {
                ids.iter()
                    .enumerate()
                    .filter(|(i, _)| o.is_ejected(*i, now))
                    .map(|(_, id)| *id)
                    .collect::<Vec<u64>>()
            })
            .unwrap_or_default();
        let healthy: Vec<&Arc<Endpoint>> = eps
            .iter()
            .filter(|e| e.is_healthy() && !ejected.contains(&e.id))
            .collect();
        let fresh: Vec<&Arc<Endpoint>> = healthy.iter().copied().filter(|e| !tried.contains(&e.id)).collect();
        let pool = if fresh.is_empty() { healthy } else { fresh };
        let in_flight: Vec<u32> = pool.iter().map(|e| e.in_flight()).collect();
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let i = select::choose_endpoint(&policy.load_balancer, req, &in_flight, counter, rand64())?;
        pool.get(i).map(|e| (*e).clone())
    }

    /// The endpoints outlier detection has ejected from any cluster, now.
    pub fn ejected(&self) -> std::collections::HashSet<u64> {
        let now = std::time::Instant::now();
        crate::lock(&self.outliers)
            .values()
            .flat_map(|c| {
                c.ids
                    .iter()
                    .enumerate()
                    .filter(move |(i, _)| c.outlier.is_ejected(*i, now))
                    .map(|(_, id)| *id)
            })
            .collect()
    }

    fn with_outlier<R>(
        &self,
        cluster: &str,
        policy: &TrafficPolicy,
        eps: &[Arc<Endpoint>],
        f: impl FnOnce(&mut Outlier, &[u64]) -> R,
    ) -> Option<R> {
        let cfg = policy.outlier?;
        let ids: Vec<u64> = eps.iter().map(|e| e.id).collect();
        let mut map = crate::lock(&self.outliers);
        let entry = map.entry(cluster.to_string()).or_insert_with(|| ClusterOutlier {
            ids: ids.clone(),
            outlier: Outlier::new(cfg, ids.len()),
        });
        if entry.ids != ids {
            // The endpoint set changed (a pod came or went): start over, as Envoy does for new hosts.
            *entry = ClusterOutlier {
                outlier: Outlier::new(cfg, ids.len()),
                ids,
            };
        }
        Some(f(&mut entry.outlier, &entry.ids))
    }

    fn record_outlier(
        &self,
        cluster: &str,
        policy: &TrafficPolicy,
        eps: &[Arc<Endpoint>],
        ep: &Endpoint,
        outcome: OutlierOutcome,
    ) {
        let now = std::time::Instant::now();
        self.with_outlier(cluster, policy, eps, |o, ids| {
            let Some(i) = ids.iter().position(|id| *id == ep.id) else {
                return;
            };
            if let Some(e) = o.record(i, outcome, now) {
                // `upstream_pod`, as in the access log: `pod` is the log line's own field (the
                // process writing it).
                tracing::warn!(
                    target: "localmesh::outlier",
                    cluster,
                    upstream_pod = %ep.pod,
                    reason = ?e.reason,
                    ejected_for_ms = e.until.saturating_duration_since(now).as_millis() as u64,
                    "endpoint ejected"
                );
            }
        });
    }

    /// The pod's answer, passed on: its record (metrics, access log, spans) is written when its
    /// body ends.
    fn respond(
        &self,
        ctx: Ctx,
        service: Arc<ServiceName>,
        ep: &Arc<Endpoint>,
        resp: Response<Incoming>,
        deadline: Option<Instant>,
        answered: Answered,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        if let Ok(v) = HeaderValue::from_str(&ep.pod) {
            parts.headers.insert(HeaderName::from_static("x-localmesh-upstream"), v);
        }
        parts.headers.insert(
            HeaderName::from_static("x-envoy-upstream-service-time"),
            HeaderValue::from(ctx.start.elapsed().as_millis() as u64),
        );
        let reply = Reply {
            status: parts.status.as_u16(),
            grpc_status: header_str(&parts.headers, "grpc-status").map(str::to_string),
            grpc_message: header_str(&parts.headers, "grpc-message").map(str::to_string),
            flags: answered.flags.to_string(),
        };
        let mut record = Record::new(self.recorder.clone(), ctx, Some(service), Some(ep.clone()), reply);
        record.held = Some(answered.held);
        record.attempt = Some(answered.attempt);
        record.request_bytes = answered.request_bytes;
        record.request_counter = answered.request_counter;
        Response::from_parts(parts, Observed::new(body, record, deadline).boxed_unsync())
    }

    fn no_route(&self, ctx: Ctx) -> Response<ProxyBody> {
        let msg = format!("no route for {} (authority {:?})", ctx.path, ctx.authority);
        self.local(ctx, None, None, LocalReply::NoRoute, msg)
    }

    fn redirect(&self, ctx: Ctx, r: &Redirect, path_q: &str, l: &Listener) -> Response<ProxyBody> {
        let req = redirect::Incoming {
            protocol: l.protocol,
            authority: &ctx.authority,
            path: path_q,
            listener_port: l.port,
        };
        let location = {
            let published = crate::lock(&self.published);
            redirect::location(r, &req, |p| published.get(&p).copied())
        };
        let mut resp = Response::new(Empty::new().map_err(|e: Infallible| match e {}).boxed_unsync());
        *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        let reply = Reply {
            status: resp.status().as_u16(),
            grpc_status: None,
            grpc_message: None,
            flags: "-".into(),
        };
        Record::new(self.recorder.clone(), ctx, None, None, reply).done(None, None);
        resp
    }

    /// A reply the proxy makes itself, before any upstream answered.
    fn local(
        &self,
        ctx: Ctx,
        service: Option<Arc<ServiceName>>,
        ep: Option<Arc<Endpoint>>,
        why: LocalReply,
        msg: String,
    ) -> Response<ProxyBody> {
        self.local_after(ctx, service, ep, None, why, msg)
    }

    /// [`Proxy::local`] after a failed attempt on `ep`, so the metrics, access log and spans name
    /// the pod.
    fn local_after(
        &self,
        ctx: Ctx,
        service: Option<Arc<ServiceName>>,
        ep: Option<Arc<Endpoint>>,
        attempt: Option<FinalAttempt>,
        why: LocalReply,
        msg: String,
    ) -> Response<ProxyBody> {
        let code = why.grpc();
        let resp = reply::response(ctx.grpc, why.http(), code, &msg);
        let reply = Reply {
            status: resp.status().as_u16(),
            grpc_status: ctx.grpc.then(|| (code as i32).to_string()),
            grpc_message: ctx.grpc.then_some(msg),
            flags: why.flags().to_string(),
        };
        let mut record = Record::new(self.recorder.clone(), ctx, service, ep, reply);
        record.attempt = attempt;
        record.done(None, None);
        resp
    }
}

/// A pooled upstream client. Its pool needs a timer to close idle connections at all: without
/// one, hyper-util keeps them until the peer goes.
fn upstream_client(http2: bool, connect_timeout: Duration, idle: Duration) -> Client<HttpConnector, ProxyBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(idle)
        .http2_only(http2)
        .build(connector)
}

/// One request's retry state: the endpoints tried, the retries left (none for a streamed body),
/// and the retry in progress, counted against `maxRetries` until the next attempt ends.
struct Retries {
    tried: Vec<u64>,
    left: u32,
    in_progress: Option<breaker::Retrying>,
}

impl Retries {
    /// Takes a retry after a failed attempt on `endpoint`, if one is left and the cluster's
    /// `maxRetries` allows it.
    fn take(&mut self, breaker: &Arc<breaker::Breaker>, endpoint: u64) -> bool {
        if self.left == 0 {
            return false;
        }
        let Some(r) = breaker.retry() else {
            return false;
        };
        self.in_progress = Some(r);
        self.left -= 1;
        self.tried.push(endpoint);
        true
    }
}

/// Reads a request body to its end within [`BUFFER_WINDOW`] and [`RETRY_BUFFER_LIMIT`]:
/// `Ok(frames)` when complete, else `Err` with what was read in front of the rest (a stream).
async fn read_body(mut body: Incoming) -> Result<Result<Vec<Frame<Bytes>>, Prefixed>, hyper::Error> {
    let deadline = Instant::now() + BUFFER_WINDOW;
    let mut frames = Vec::new();
    let mut size = 0;
    loop {
        if body.is_end_stream() {
            return Ok(Ok(frames));
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return Ok(Ok(frames)),
            Ok(Some(frame)) => {
                let frame = frame?;
                size += frame.data_ref().map_or(0, Bytes::len);
                let trailers = frame.is_trailers();
                frames.push(frame);
                if trailers {
                    return Ok(Ok(frames));
                }
                if size > RETRY_BUFFER_LIMIT {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Ok(Err(Prefixed {
        prefix: frames.into(),
        rest: body,
        counter: None,
    }))
}

fn upstream_request(
    down: Downstream<'_>,
    ctx: &Ctx,
    attempt: &Attempt,
    ep: &Endpoint,
    http2: bool,
    body: ProxyBody,
    retries: usize,
) -> Request<ProxyBody> {
    let Downstream { parts, path_q, .. } = down;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.version_mut() = if http2 { Version::HTTP_2 } else { Version::HTTP_11 };
    if let Ok(uri) = format!("http://{}{}", ep.addr, path_q).parse() {
        *req.uri_mut() = uri;
    }
    let headers = req.headers_mut();
    for (n, v) in &parts.headers {
        headers.append(n.clone(), v.clone());
    }
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    if let Ok(host) = HeaderValue::from_str(&ctx.authority) {
        if !http2 {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if ctx.grpc || parts.headers.get(header::TE).is_some_and(|t| t == "trailers") {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    ctx.trace.inject(attempt, headers);
    if retries > 0 {
        headers.insert(
            HeaderName::from_static("x-envoy-attempt-count"),
            HeaderValue::from(retries as u64 + 1),
        );
    }
    req
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for h in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(h);
    }
}

fn header_str<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request the pod never processed, so safe to send again: an HTTP/2 stream reset with
/// REFUSED_STREAM or cut by a GOAWAY, or a request the client dropped before sending it (the
/// connection was closing). Read from the typed errors in the chain, never from their text.
fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away();
        }
        if s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        src = s.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

const GRPC_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn grpc_name(code: i32) -> Option<&'static str> {
    usize::try_from(code).ok().and_then(|i| GRPC_NAMES.get(i).copied())
}

fn grpc_code(name: &str) -> i32 {
    GRPC_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| i32::try_from(i).ok())
        .unwrap_or(2)
}

/// Envoy's `httpToGrpcStatus`.
fn http_to_grpc(status: u16) -> i32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// A uniformly random `u64` (SipHash with a fresh random key over a counter).
fn rand64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A uniform draw in `0.0..100.0`.
fn rand_percent() -> f64 {
    (rand64() % 10_000) as f64 / 100.0
}

#[cfg(test)]
mod tests {

    /// An error whose cause is `source` (as hyper's errors wrap h2's).
    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<dyn std::error::Error + Send + Sync>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn refused_streams_are_read_from_the_http2_error_type() {
        let h2 = |r: h2::Reason| Wrapped("client error (SendRequest)", Some(Box::new(h2::Error::from(r))));
        assert!(is_refused(&h2(h2::Reason::REFUSED_STREAM)));
        assert!(!is_refused(&h2(h2::Reason::CANCEL)), "a reset after processing began");
        assert!(!is_refused(&h2(h2::Reason::INTERNAL_ERROR)));
        // Text is not a type: a message that merely mentions it is not a refusal.
        let lookalike = Wrapped("upstream said REFUSED_STREAM GoAway Canceled", None);
        assert!(!is_refused(&lookalike));
        let io = Wrapped(
            "connection reset",
            Some(Box::new(std::io::Error::other("reset by peer"))),
        );
        assert!(!is_refused(&io));
    }
    use super::*;

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        assert_eq!(grpc_code("unavailable"), 14);
        assert_eq!(http_to_grpc(404), 12);
    }
}
