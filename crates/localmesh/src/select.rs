//! Route, backend and endpoint selection: pure functions of the [`Mesh`] and a request. Randomness
//! comes from the caller, so every decision is reproducible in tests.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use crate::build::resolve_host;
use crate::model::{
    Backend, ConnectionPool, Fault, GatewayRoute, HeaderMatch, Listener, LoadBalancer, Mesh, MeshRoute, PathMatch,
    RequestMatch, RetryPolicy, Service, StringMatch, TrafficPolicy, VirtualService,
};
use crate::proxy::Endpoint;

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    /// `:authority` / `Host` without the port.
    pub authority: Option<String>,
    /// The port the caller dialled (Istio `match.port`).
    pub port: Option<u16>,
}

impl Request {
    /// `path_and_query` as on the request line (`/a/b?x=1`).
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (path_and_query, None),
        };
        Request {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query,
            ..Request::default()
        }
    }

    /// A gRPC call: `POST /package.Service/Method` with `content-type: application/grpc`.
    pub fn grpc(path: &str) -> Self {
        Request::new("POST", path).header("content-type", "application/grpc")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Some(strip_port(authority).to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// A header's value; repeated headers are joined with `,` as Envoy matches them.
    pub fn header_value(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }

    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

fn strip_port(authority: &str) -> &str {
    // `[::1]:443` keeps its brackets; `host:443` loses the port.
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(e) => value == e,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_full_match(value),
        }
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(e) => path == e,
            PathMatch::SegmentPrefix(p) => {
                p == "/" || path == p || (path.starts_with(p.as_str()) && path[p.len()..].starts_with('/'))
            }
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_full_match(path),
        }
    }
}

impl HeaderMatch {
    fn matches_header(&self, req: &Request) -> bool {
        req.header_value(&self.name).is_some_and(|v| self.value.matches(&v))
    }
}

impl RequestMatch {
    pub fn matches(&self, req: &Request) -> bool {
        self.path.as_ref().is_none_or(|p| p.matches(&req.path))
            && self.method.as_ref().is_none_or(|m| m.matches(&req.method))
            && self
                .authority
                .as_ref()
                .is_none_or(|a| req.authority.as_deref().is_some_and(|v| a.matches(v)))
            && self.port.is_none_or(|p| req.port == Some(p))
            && self.headers.iter().all(|h| h.matches_header(req))
            && !self.without_headers.iter().any(|h| h.matches_header(req))
            && self
                .query_params
                .iter()
                .all(|q| req.query_value(&q.name).is_some_and(|v| q.value.matches(v)))
    }
}

/// Whether a Gateway API hostname (maybe `*.x`) matches a request host; a wildcard needs a label.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The listener for a connection on `port` with SNI / Host `host`: an exact hostname beats a
/// wildcard, which beats a listener without hostname.
pub fn listener<'m>(mesh: &'m Mesh, port: u16, host: &str) -> Option<&'m Listener> {
    let host = strip_port(host);
    mesh.listeners
        .iter()
        .filter(|l| l.port == port)
        .filter_map(|l| {
            let rank = match &l.hostname {
                None => 0,
                Some(h) if host_matches(h, host) => 1 + usize::from(!h.starts_with('*')) + h.len(),
                Some(_) => return None,
            };
            Some((rank, l))
        })
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, l)| l)
}

/// Gateway API precedence, highest first: hostname specificity, Exact path, longest prefix, method,
/// most headers, most query parameters; then load order (the oldest route, then rule and match order).
type Rank = (usize, u8, usize, bool, usize, usize, Reverse<usize>);

fn rank(r: &GatewayRoute, host: &str) -> Option<Rank> {
    let host_rank = if r.hostnames.is_empty() {
        0
    } else {
        r.hostnames
            .iter()
            .filter(|h| host_matches(h, host))
            .map(|h| 1 + usize::from(!h.starts_with('*')) * 1000 + h.len())
            .max()?
    };
    let m = &r.matcher;
    let (kind, len) = match &m.path {
        Some(PathMatch::Exact(p)) => (3, p.len()),
        Some(PathMatch::SegmentPrefix(p) | PathMatch::Prefix(p)) => (2, p.len()),
        Some(PathMatch::Regex(_)) => (1, 0),
        None => (2, 1),
    };
    Some((
        host_rank,
        kind,
        len,
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
        Reverse(r.order),
    ))
}

/// The HTTPRoute match that wins for `req` on a listener, by Gateway API precedence.
pub fn gateway_route<'l>(listener: &'l Listener, host: &str, req: &Request) -> Option<&'l GatewayRoute> {
    let host = strip_port(host);
    listener
        .routes
        .iter()
        .filter(|r| r.matcher.matches(req))
        .filter_map(|r| Some((rank(r, host)?, r)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r)| r)
}

/// Why the gateway has nothing for a request (Envoy answers 404 `NR` to both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayMiss {
    NoListener,
    NoRoute,
}

/// Listener and route for a request arriving at the gateway on `port` for `host`.
pub fn gateway<'m>(
    mesh: &'m Mesh,
    port: u16,
    host: &str,
    req: &Request,
) -> Result<(&'m Listener, &'m GatewayRoute), GatewayMiss> {
    let l = listener(mesh, port, host).ok_or(GatewayMiss::NoListener)?;
    let r = gateway_route(l, host, req).ok_or(GatewayMiss::NoRoute)?;
    Ok((l, r))
}

/// How a caller's sidecar routes a request.
#[derive(Debug, Clone)]
pub enum Sidecar<'m> {
    /// The first matching route of a VirtualService for the host.
    Route {
        vs: &'m VirtualService,
        route: &'m MeshRoute,
    },
    /// No VirtualService: straight to the Service, with the mesh's default retry and no timeout.
    Direct {
        service: &'m Service,
        backend: Backend,
        retry: RetryPolicy,
    },
}

impl Sidecar<'_> {
    pub fn backends(&self) -> &[Backend] {
        match self {
            Sidecar::Route { route, .. } => &route.backends,
            Sidecar::Direct { backend, .. } => std::slice::from_ref(backend),
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Sidecar::Route { route, .. } => route.timeout,
            Sidecar::Direct { .. } => None,
        }
    }

    pub fn retry(&self) -> &RetryPolicy {
        match self {
            Sidecar::Route { route, .. } => &route.retry,
            Sidecar::Direct { retry, .. } => retry,
        }
    }

    pub fn fault(&self) -> Option<&Fault> {
        match self {
            Sidecar::Route { route, .. } => route.fault.as_ref(),
            Sidecar::Direct { .. } => None,
        }
    }
}

/// The sidecar route for a call from a pod in `caller_namespace` to `authority` (`product-service`,
/// `product-service:50051`, an FQDN, or an external VirtualService host). `None`: Envoy's 404 `NR`.
pub fn sidecar<'m>(mesh: &'m Mesh, caller_namespace: &str, authority: &str, req: &Request) -> Option<Sidecar<'m>> {
    let host = strip_port(authority);
    let target = resolve_host(host, caller_namespace);
    let names_host = |vs: &VirtualService| {
        vs.hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host) || (target.is_some() && resolve_host(h, &vs.namespace) == target))
    };
    if let Some(vs) = mesh.virtual_services.iter().find(|vs| names_host(vs)) {
        let route = vs
            .routes
            .iter()
            .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.matches(req)))?;
        return Some(Sidecar::Route { vs, route });
    }
    let service = mesh.service(&target?)?;
    Some(Sidecar::Direct {
        service,
        backend: Backend {
            service: service.key.clone(),
            port: req.port,
            subset: None,
            weight: 1,
        },
        retry: mesh.default_retry.clone(),
    })
}

pub fn total_weight(backends: &[Backend]) -> u32 {
    backends.iter().map(|b| b.weight).sum()
}

/// The weighted pick for a draw `r` (reduced modulo the total weight: pass a uniform value in
/// `0..total_weight` for an exact split). `None` when every weight is 0 (Envoy answers 500).
pub fn pick(backends: &[Backend], r: u32) -> Option<&Backend> {
    let total = total_weight(backends);
    if total == 0 {
        return None;
    }
    let mut x = r % total;
    for b in backends {
        if x < b.weight {
            return Some(b);
        }
        x -= b.weight;
    }
    None
}

/// Istio's traffic policy without a DestinationRule.
const DEFAULT_POLICY: TrafficPolicy = TrafficPolicy {
    load_balancer: LoadBalancer::LeastRequest,
    outlier: None,
    pool: ConnectionPool {
        max_connections: None,
        connect_timeout: None,
        http1_max_pending_requests: None,
        http2_max_requests: None,
        max_retries: None,
    },
};

/// The traffic policy for a backend's traffic to Service port `port`: its subset's, else its
/// DestinationRule's (each with `portLevelSettings` applied), else Istio's default.
pub fn traffic_policy<'m>(mesh: &'m Mesh, backend: &Backend, port: u16) -> &'m TrafficPolicy {
    let Some(dr) = mesh.destination_rule(&backend.service) else {
        return &DEFAULT_POLICY;
    };
    backend
        .subset
        .as_ref()
        .and_then(|s| dr.subsets.iter().find(|x| &x.name == s))
        .map_or(dr.policy_at(port), |s| s.policy_at(port))
}

/// The endpoints behind a backend: the pods the Service's selector matches by their own labels
/// (as an EndpointSlice lists them, so a rollout that changes the labels moves its pods in or out),
/// narrowed by the subset's labels.
pub fn endpoints(mesh: &Mesh, backend: &Backend, all: &[Arc<Endpoint>]) -> Vec<Arc<Endpoint>> {
    let Some(svc) = mesh.service(&backend.service) else {
        return Vec::new();
    };
    if svc.selector.is_empty() {
        return Vec::new();
    }
    let subset_labels = backend.subset.as_ref().and_then(|s| {
        mesh.destination_rule(&backend.service)?
            .subsets
            .iter()
            .find(|x| &x.name == s)
            .map(|x| &x.labels)
    });
    all.iter()
        .filter(|e| {
            e.workload.namespace == svc.key.namespace
                && manifests::model::labels_contain(&e.labels, &svc.selector)
                && subset_labels.is_none_or(|l| manifests::model::labels_contain(&e.labels, l))
        })
        .cloned()
        .collect()
}

/// Picks among `in_flight.len()` healthy endpoints (each with its in-flight request count), as
/// Envoy's balancers do: `counter` drives round robin, `random` the random choices (its two halves
/// are LEAST_REQUEST's two candidates).
pub fn choose_endpoint(
    lb: &LoadBalancer,
    req: &Request,
    in_flight: &[u32],
    counter: u64,
    random: u64,
) -> Option<usize> {
    let n = in_flight.len() as u64;
    if n == 0 {
        return None;
    }
    let idx = match lb {
        LoadBalancer::RoundRobin => counter % n,
        LoadBalancer::Random => random % n,
        LoadBalancer::LeastRequest => {
            let (a, b) = ((random & 0xffff_ffff) % n, (random >> 32) % n);
            if in_flight[b as usize] < in_flight[a as usize] {
                b
            } else {
                a
            }
        }
        LoadBalancer::HashHeader(h) => match req.header_value(h) {
            Some(v) => fnv1a(v.as_bytes()) % n,
            None => random % n,
        },
    };
    usize::try_from(idx).ok()
}

/// A stable hash (unlike `DefaultHasher`, it does not change between runs), so a header value
/// keeps its endpoint across restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FullRegex;

    #[test]
    fn path_prefix_is_element_wise_and_istio_prefix_is_not() {
        let p = PathMatch::SegmentPrefix("/product.ProductService".into());
        assert!(p.matches("/product.ProductService/GetProduct"));
        assert!(p.matches("/product.ProductService"));
        assert!(!p.matches("/product.ProductServiceX"));
        assert!(PathMatch::Prefix("/product.ProductService".into()).matches("/product.ProductServiceX"));
        assert!(PathMatch::SegmentPrefix("/".into()).matches("/anything"));
    }

    #[test]
    fn regexes_must_match_the_whole_value() {
        let r = FullRegex::new(r"v1\.").expect("valid");
        assert!(!r.is_full_match("v1.2.3"), "RE2 full match, not search");
        let r = FullRegex::new(r"^v1\..*").expect("valid");
        assert!(r.is_full_match("v1.2.3") && !r.is_full_match("xv1.2"));
        // Alternation stays inside the anchors.
        let r = FullRegex::new("a|b").expect("valid");
        assert!(r.is_full_match("a") && !r.is_full_match("ab"));
    }

    #[test]
    fn headers_queries_and_absent_headers() {
        let m = RequestMatch {
            headers: vec![HeaderMatch {
                name: "user-type".into(),
                value: StringMatch::Exact("premium".into()),
            }],
            without_headers: vec![HeaderMatch {
                name: "x-debug".into(),
                value: StringMatch::Prefix("".into()),
            }],
            query_params: vec![HeaderMatch {
                name: "page".into(),
                value: StringMatch::Exact("2".into()),
            }],
            ..RequestMatch::default()
        };
        let req = Request::new("GET", "/p?page=2").header("User-Type", "premium");
        assert!(m.matches(&req), "header names are case-insensitive");
        assert!(!m.matches(&req.clone().header("x-debug", "1")));
        assert!(!m.matches(&Request::new("GET", "/p?page=3").header("user-type", "premium")));
        assert!(!m.matches(&Request::new("GET", "/p?page=2").header("user-type", "Premium")));
    }

    #[test]
    fn weights_split_deterministically_and_zero_weights_pick_nothing() {
        let b = |name: &str, weight| Backend {
            service: crate::model::Key::new("default", name),
            port: None,
            subset: None,
            weight,
        };
        let list = [b("a", 3), b("b", 0), b("c", 1)];
        let picks: Vec<_> = (0..4).map(|r| pick(&list, r).map(|x| x.service.name.clone())).collect();
        assert_eq!(picks, ["a", "a", "a", "c"].map(|s| Some(s.to_string())));
        assert_eq!(pick(&[b("z", 0)], 7), None);
    }

    #[test]
    fn balancers_are_deterministic_given_their_inputs() {
        let req = Request::new("GET", "/").header("x-user", "alice");
        assert_eq!(
            choose_endpoint(&LoadBalancer::RoundRobin, &req, &[0, 0, 0], 4, 0),
            Some(1)
        );
        // Two candidates (0 and 2): the one with fewer requests in flight wins.
        assert_eq!(
            choose_endpoint(&LoadBalancer::LeastRequest, &req, &[5, 0, 1], 0, 2 << 32),
            Some(2)
        );
        let hash = LoadBalancer::HashHeader("x-user".into());
        let first = choose_endpoint(&hash, &req, &[0; 5], 0, 1);
        assert!((0..10).all(|r| choose_endpoint(&hash, &req, &[0; 5], r, r) == first));
        assert_eq!(choose_endpoint(&LoadBalancer::Random, &req, &[], 0, 0), None);
    }
}
