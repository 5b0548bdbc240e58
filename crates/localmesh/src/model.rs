//! The compiled routing model: what the gateway and the sidecars route by, with every string
//! already parsed (durations, regexes, retry tokens) so that routing itself cannot fail.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use manifests::Source;
use regex::Regex;

use crate::unsupported::NotEmulated;

/// Everything localmesh routes by, compiled from the manifests.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    /// Gateway API listeners, each with the HTTPRoute matches attached to it.
    pub listeners: Vec<Listener>,
    /// Sidecar (east-west) routing: mesh VirtualServices, in file order.
    pub virtual_services: Vec<VirtualService>,
    pub services: Vec<Service>,
    pub destination_rules: Vec<DestinationRule>,
    /// Deployments that become local pods (child processes).
    pub workloads: Vec<Workload>,
    /// Telemetry API tracing: which proxies sample how much and report spans.
    pub tracing: Vec<TracingRule>,
    /// What a route without its own `retries` gets (every Gateway-API route): the IstioOperator's
    /// `meshConfig.defaultHttpRetryPolicy`, else Istio's default.
    pub default_retry: RetryPolicy,
    /// Fields read but not emulated, reported once at startup.
    pub not_emulated: Vec<NotEmulated>,
}

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The Service's cluster DNS name, the host VirtualServices and DestinationRules name.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a compiled item came from, for logs and errors at request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.object, self.source)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub origin: Origin,
    pub gateway: Key,
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// `None` matches every host.
    pub hostname: Option<String>,
    pub tls: Option<TlsCert>,
    /// One entry per HTTPRoute rule match, in file order; [`crate::select`] applies precedence.
    pub routes: Vec<GatewayRoute>,
}

/// A listener's certificate: the Secret it names, and the local files standing in for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    pub secret: Key,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// One `matches[]` entry of one HTTPRoute rule, with the rule's action and policy. The Gateway API
/// ranks matches, not rules, so the model flattens rules into their matches.
#[derive(Debug, Clone)]
pub struct GatewayRoute {
    pub origin: Origin,
    pub route: Key,
    /// e.g. `spec.rules[2].matches[0]`.
    pub field: String,
    /// The route's hostnames (empty: the listener's).
    pub hostnames: Vec<String>,
    pub matcher: RequestMatch,
    pub action: RouteAction,
    /// `timeouts.request`; `None` (or `0s` in YAML) means no timeout.
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// Position in load order: the tie-breaker once the Gateway API's precedence is exhausted.
    pub order: usize,
    /// The gateway span's name for this route, made on first use (the model does not change).
    pub span_name: OnceLock<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    Forward(Vec<Backend>),
    Redirect(Redirect),
}

/// A `RequestRedirect` filter. Unset parts keep the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub status: u16,
}

/// A weighted destination: a Service (and for VirtualServices, a DestinationRule subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub service: Key,
    /// The Service port; `None` when the Service has exactly one port.
    pub port: Option<u16>,
    pub subset: Option<String>,
    pub weight: u32,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(s) = &self.subset {
            write!(f, " subset {s}")?;
        }
        Ok(())
    }
}

/// What a request must look like; every present part must match (AND).
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub path: Option<PathMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    /// Names lower-case.
    pub headers: Vec<HeaderMatch>,
    /// Istio `withoutHeaders`: the request must not carry a matching header.
    pub without_headers: Vec<HeaderMatch>,
    pub query_params: Vec<HeaderMatch>,
    /// Istio `match.port`: the port the caller dialled.
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Gateway API `PathPrefix`: whole `/`-separated segments (`/a` matches `/a` and `/a/b`, not `/ab`).
    SegmentPrefix(String),
    /// Istio `uri.prefix`: a plain string prefix.
    Prefix(String),
    Regex(FullRegex),
}

#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(FullRegex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// An RE2-style regex that must match the whole value, as in Envoy (`^(?:...)$`).
#[derive(Debug, Clone)]
pub struct FullRegex {
    pub source: String,
    pub(crate) regex: Regex,
}

impl FullRegex {
    pub fn new(source: &str) -> Result<Self, String> {
        let regex = Regex::new(&format!("^(?:{source})$")).map_err(|e| format!("invalid regex: {e}"))?;
        Ok(FullRegex {
            source: source.to_string(),
            regex,
        })
    }

    pub fn is_full_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// Envoy retry policy. `attempts` counts retries after the first try (Envoy's `num_retries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::mesh_default()
    }
}

impl RetryPolicy {
    /// What Istio applies when a route sets no `retries` (and at a Gateway-API gateway, where
    /// `HTTPRoute.retry` is experimental): 2 retries on connect failures, refused streams, gRPC
    /// `unavailable`/`cancelled`, and HTTP 503 (`pilot/pkg/networking/core/route/retry`).
    pub fn mesh_default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Unavailable,
                RetryOn::Cancelled,
                RetryOn::RetriableStatusCodes,
                RetryOn::Status(503),
            ],
        }
    }

    /// `retries: {attempts: 0}`.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            retry_on: Vec::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.attempts > 0
    }

    pub fn retries_on(&self, cond: RetryOn) -> bool {
        self.retry_on.contains(&cond)
    }
}

/// A `retryOn` token (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    FiveXx,
    GatewayError,
    Reset,
    ResetBeforeRequest,
    ConnectFailure,
    Retriable4xx,
    RefusedStream,
    RetriableStatusCodes,
    RetriableHeaders,
    EnvoyRateLimited,
    Http3PostConnectFailure,
    /// gRPC status `CANCELLED` in the response headers.
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
    /// A bare HTTP status (Istio adds `retriable-status-codes`).
    Status(u16),
}

impl RetryOn {
    const NAMED: [(&'static str, RetryOn); 16] = [
        ("5xx", RetryOn::FiveXx),
        ("gateway-error", RetryOn::GatewayError),
        ("reset", RetryOn::Reset),
        ("reset-before-request", RetryOn::ResetBeforeRequest),
        ("connect-failure", RetryOn::ConnectFailure),
        ("retriable-4xx", RetryOn::Retriable4xx),
        ("refused-stream", RetryOn::RefusedStream),
        ("retriable-status-codes", RetryOn::RetriableStatusCodes),
        ("retriable-headers", RetryOn::RetriableHeaders),
        ("envoy-ratelimited", RetryOn::EnvoyRateLimited),
        ("http3-post-connect-failure", RetryOn::Http3PostConnectFailure),
        ("cancelled", RetryOn::Cancelled),
        ("deadline-exceeded", RetryOn::DeadlineExceeded),
        ("internal", RetryOn::Internal),
        ("resource-exhausted", RetryOn::ResourceExhausted),
        ("unavailable", RetryOn::Unavailable),
    ];

    /// One token, exactly as Istio's validator accepts it (no surrounding spaces).
    pub fn parse(token: &str) -> Option<RetryOn> {
        if let Some((_, v)) = Self::NAMED.iter().find(|(n, _)| *n == token) {
            return Some(*v);
        }
        token
            .parse::<u16>()
            .ok()
            .filter(|c| (100..600).contains(c))
            .map(RetryOn::Status)
    }

    /// The gRPC status this token retries on, if it is a gRPC token.
    pub fn grpc_code(self) -> Option<tonic::Code> {
        use tonic::Code;
        Some(match self {
            RetryOn::Cancelled => Code::Cancelled,
            RetryOn::DeadlineExceeded => Code::DeadlineExceeded,
            RetryOn::Internal => Code::Internal,
            RetryOn::ResourceExhausted => Code::ResourceExhausted,
            RetryOn::Unavailable => Code::Unavailable,
            _ => return None,
        })
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let RetryOn::Status(c) = self {
            return write!(f, "{c}");
        }
        let name = Self::NAMED.iter().find(|(_, v)| v == self).map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

/// An east-west VirtualService as the callers' sidecars apply it.
#[derive(Debug, Clone)]
pub struct VirtualService {
    pub origin: Origin,
    /// The VirtualService's namespace: short hosts resolve against it.
    pub namespace: String,
    /// The hosts as written (FQDNs or external names such as `api.payment-provider.com`).
    pub hosts: Vec<String>,
    /// In order: the first matching route wins.
    pub routes: Vec<MeshRoute>,
}

#[derive(Debug, Clone)]
pub struct MeshRoute {
    pub name: Option<String>,
    /// e.g. `spec.http[3]`.
    pub field: String,
    /// Any one matching selects the route (OR); empty matches everything.
    pub matches: Vec<RequestMatch>,
    pub backends: Vec<Backend>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
}

/// Istio fault injection on a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    /// 0..=100; unset in YAML means every request.
    pub percent: f64,
    pub fixed: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    pub percent: f64,
    pub status: AbortStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortStatus {
    Http(u16),
    /// A gRPC status (written by name, e.g. `UNAVAILABLE`).
    Grpc(tonic::Code),
}

impl Fault {
    /// What to inject for one request, given two uniform draws in `0.0..100.0` (one per fault kind,
    /// as Envoy draws them independently).
    pub fn decide(&self, delay_draw: f64, abort_draw: f64) -> (Option<Duration>, Option<&AbortStatus>) {
        let delay = self.delay.as_ref().filter(|d| delay_draw < d.percent).map(|d| d.fixed);
        let abort = self
            .abort
            .as_ref()
            .filter(|a| abort_draw < a.percent)
            .map(|a| &a.status);
        (delay, abort)
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub origin: Origin,
    pub key: Key,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// Indexes into [`Mesh::workloads`] whose pod template the selector matches.
    pub workloads: Vec<usize>,
    /// The span and cluster names of its backends, made on first use (the model does not change).
    pub span_names: SpanNames,
}

/// The names a sampled request's spans take from the backend it goes to.
#[derive(Debug)]
pub struct BackendNames {
    /// The hop span's `upstream_cluster`: `outbound|<port>|<subset>|<FQDN>`.
    pub outbound_cluster: Arc<str>,
    /// The inbound attempt span's name: `<FQDN>:<service port>/*`.
    pub inbound_operation: Arc<str>,
    /// The inbound attempt span's `upstream_cluster`: `inbound|<container port>||`.
    pub inbound_cluster: Arc<str>,
}

/// A Service's [`BackendNames`] by subset and dialled port (a handful per Service: a list).
#[derive(Debug, Default)]
pub struct SpanNames(pub Mutex<Vec<SpanNamesEntry>>);

/// One [`SpanNames`] entry: the backend's subset, the port dialled, the names.
pub type SpanNamesEntry = (Option<String>, u16, Arc<BackendNames>);

impl Clone for SpanNames {
    /// A copy of the model starts with an empty cache.
    fn clone(&self) -> Self {
        SpanNames::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target: TargetPort,
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// Whether upstream traffic is HTTP/2 (`appProtocol: grpc`/`http2`/`h2c`, or a `grpc`/`http2` port name).
    pub fn is_http2(&self) -> bool {
        let proto = self.app_protocol.as_deref().or(self.name.as_deref()).unwrap_or("");
        let base = proto.split('-').next().unwrap_or("");
        matches!(base, "grpc" | "http2" | "h2c" | "kubernetes.io/h2c")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone)]
pub struct DestinationRule {
    pub origin: Origin,
    pub host: Key,
    pub policy: TrafficPolicy,
    pub subsets: Vec<Subset>,
}

#[derive(Debug, Clone)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The rule's policy with the subset's own sections laid over it (as Istio merges them).
    pub policy: TrafficPolicy,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficPolicy {
    pub load_balancer: LoadBalancer,
    pub outlier: Option<OutlierConfig>,
    pub pool: ConnectionPool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LoadBalancer {
    RoundRobin,
    /// Istio's default.
    #[default]
    LeastRequest,
    Random,
    /// `consistentHash.httpHeaderName`.
    HashHeader(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 0 disables; Istio's default is 5.
    pub consecutive_5xx: u32,
    /// 0 (the default) disables.
    pub consecutive_gateway: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    /// 0..=100; Istio's default is 10.
    pub max_ejection_percent: u32,
}

/// `connectionPool` limits localmesh enforces (see `proxy::breaker`); `None` means Envoy's
/// (effectively unlimited) default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

/// The tracing part of one Telemetry resource (its first `spec.tracing` entry, the only one Istio
/// applies).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingRule {
    pub origin: Origin,
    pub scope: TelemetryScope,
    /// `randomSamplingPercentage` (0-100); unset inherits from the wider scope.
    pub sampling: Option<f64>,
    /// Whether spans are sent to a provider: `providers` named and `disableSpanReporting` false;
    /// unset inherits.
    pub report: Option<bool>,
}

/// Which proxies a Telemetry resource applies to, narrowest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelemetryScope {
    /// In Istio's root namespace (`istio-system`): every proxy.
    Mesh,
    /// Every proxy in a namespace.
    Namespace(String),
    /// Proxies in a namespace whose pod labels contain these (`selector.matchLabels`, or a
    /// `targetRefs` Gateway as its `gateway.networking.k8s.io/gateway-name` label).
    Workloads(String, BTreeMap<String, String>),
}

/// How one proxy traces: the percentage of new traces it samples, and whether it reports spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyTracing {
    pub sampling: f64,
    pub report: bool,
}

impl Mesh {
    /// The tracing a proxy in `namespace` with pod `labels` applies: the narrowest Telemetry
    /// resource setting each field wins (workload, then namespace, then mesh). Without any, Istio
    /// samples 1 % (`meshConfig.defaultConfig.tracing.sampling`) and, with no provider, reports
    /// nothing.
    pub fn proxy_tracing(&self, namespace: &str, labels: &BTreeMap<String, String>) -> ProxyTracing {
        let rank = |s: &TelemetryScope| match s {
            TelemetryScope::Mesh => Some(0),
            TelemetryScope::Namespace(ns) => (ns == namespace).then_some(1),
            TelemetryScope::Workloads(ns, sel) => {
                (ns == namespace && sel.iter().all(|(k, v)| labels.get(k) == Some(v))).then_some(2)
            }
        };
        let mut applicable: Vec<(u8, &TracingRule)> =
            self.tracing.iter().filter_map(|r| Some((rank(&r.scope)?, r))).collect();
        applicable.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        ProxyTracing {
            sampling: applicable.iter().find_map(|(_, r)| r.sampling).unwrap_or(1.0),
            report: applicable.iter().find_map(|(_, r)| r.report).unwrap_or(false),
        }
    }
}

/// A container's readiness probe, as the kubelet runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub check: ProbeCheck,
    /// `initialDelaySeconds`.
    pub initial_delay: Duration,
    /// `periodSeconds` (the kubelet's default is 10 s).
    pub period: Duration,
    /// `timeoutSeconds` (default 1 s).
    pub timeout: Duration,
    /// Consecutive failures before the pod leaves its Services' endpoints (default 3).
    pub failure_threshold: u32,
    /// Consecutive successes before it is ready again (default 1).
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// gRPC health `Check` for this service name (`""`: the server as a whole).
    Grpc(String),
    /// `GET` on the main port.
    Http(String),
}

/// A Deployment, to be started as `replicas` local processes.
#[derive(Debug, Clone)]
pub struct Workload {
    pub origin: Origin,
    pub key: Key,
    pub replicas: u32,
    /// The pod template's labels: what Services and subsets select.
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub container: String,
    /// The suite binary, from the image name (`mesh-shop/product:0.1.0` → `product`).
    pub binary: String,
    pub ports: Vec<ContainerPort>,
    pub env: Vec<EnvVar>,
    /// The container's readiness probe; `None`: localmesh checks gRPC health or `/healthz`.
    pub readiness: Option<Readiness>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    /// Downward API `metadata.name`.
    PodName,
    /// Downward API `metadata.namespace`.
    PodNamespace,
    /// Downward API `spec.nodeName`.
    NodeName,
    /// Secret/ConfigMap references and other fields: left unset locally (reported as not emulated).
    Unresolved,
}

/// One local pod of a workload, with its environment resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub workload: Key,
    pub name: String,
    pub env: Vec<(String, String)>,
}

impl Workload {
    /// The pods to start: `<deployment>-<n>` for n in 0..replicas, each with the Downward-API env
    /// resolved (`node` stands in for `spec.nodeName`).
    pub fn pods(&self, node: &str) -> Vec<Pod> {
        (0..self.replicas)
            .map(|i| {
                let name = format!("{}-{i}", self.key.name);
                let env = self
                    .env
                    .iter()
                    .filter_map(|e| {
                        let v = match &e.value {
                            EnvValue::Literal(v) => v.clone(),
                            EnvValue::PodName => name.clone(),
                            EnvValue::PodNamespace => self.key.namespace.clone(),
                            EnvValue::NodeName => node.to_string(),
                            EnvValue::Unresolved => return None,
                        };
                        Some((e.name.clone(), v))
                    })
                    .collect();
                Pod {
                    workload: self.key.clone(),
                    name,
                    env,
                }
            })
            .collect()
    }
}

impl Mesh {
    pub fn service(&self, key: &Key) -> Option<&Service> {
        self.services.iter().find(|s| &s.key == key)
    }

    /// The DestinationRule for a Service (the first one, as Istio keeps the oldest).
    pub fn destination_rule(&self, service: &Key) -> Option<&DestinationRule> {
        self.destination_rules.iter().find(|d| &d.host == service)
    }

    /// Every local pod, in workload order.
    pub fn pods(&self, node: &str) -> Vec<Pod> {
        self.workloads.iter().flat_map(|w| w.pods(node)).collect()
    }
}
