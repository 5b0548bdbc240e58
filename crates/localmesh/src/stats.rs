//! Rates, success and latency over a recent window, from the same
//! `istio_request_duration_milliseconds` histogram the admin port exports (its count is
//! `istio_requests_total`'s): sampled every [`SAMPLE_EVERY`], kept for [`MAX_WINDOW`], and read
//! as differences between the newest sample and the one a window ago, as Prometheus' `rate()` and
//! `histogram_quantile()` read them. Kiali's graph and `linkerd viz stat` are built the same way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::MetricFamily;
use serde::Serialize;
use tokio::time::Instant;

/// How often the histogram is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// The window of `/graph` and `/api/graph` when none is asked for (Kiali's default minute).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The longest window a query may ask for (`-t`, `window=`).
pub const MAX_WINDOW: Duration = Duration::from_secs(600);

/// The dimensions the graph and `stat` group by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Series {
    reporter: Arc<str>,
    source_app: Arc<str>,
    source_version: Arc<str>,
    source_workload: Arc<str>,
    destination_app: Arc<str>,
    destination_version: Arc<str>,
    destination_workload: Arc<str>,
    destination_namespace: Arc<str>,
    /// A server error: HTTP 5xx or none, or a gRPC status Envoy counts as an upstream error.
    failed: bool,
}

/// Cumulative values of one series.
#[derive(Debug, Clone, Default)]
struct Cum {
    count: u64,
    /// Cumulative counts per bucket upper bound (ms), the last being +Inf.
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    series: HashMap<Series, Cum>,
}

/// A window's worth of samples; [`Window::run`] keeps it filled.
#[derive(Debug, Default)]
pub struct Window {
    samples: Mutex<VecDeque<Sample>>,
    interned: Mutex<HashSet<Arc<str>>>,
}

impl Window {
    /// Samples `source` every [`SAMPLE_EVERY`] until the task is dropped.
    pub async fn run(self: Arc<Self>, source: impl Fn() -> Vec<MetricFamily>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.sample(&source(), Instant::now());
        }
    }

    fn intern(&self, s: &str) -> Arc<str> {
        let mut set = crate::lock(&self.interned);
        if let Some(v) = set.get(s) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(s);
        set.insert(v.clone());
        v
    }

    /// Adds one sample of the `istio_request_duration_milliseconds` families in `families`.
    pub fn sample(&self, families: &[MetricFamily], at: Instant) {
        let mut series: HashMap<Series, Cum> = HashMap::new();
        for mf in families
            .iter()
            .filter(|f| f.name() == "istio_request_duration_milliseconds")
        {
            for m in mf.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map_or("unknown", |l| l.value())
                };
                let code: u16 = label("response_code").parse().unwrap_or(0);
                let failed = code == 0 || code >= 500 || crate::grpc::is_upstream_error(label("grpc_response_status"));
                let key = Series {
                    reporter: self.intern(label("reporter")),
                    source_app: self.intern(label("source_app")),
                    source_version: self.intern(label("source_version")),
                    source_workload: self.intern(label("source_workload")),
                    destination_app: self.intern(label("destination_app")),
                    destination_version: self.intern(label("destination_version")),
                    destination_workload: self.intern(label("destination_workload")),
                    destination_namespace: self.intern(label("destination_workload_namespace")),
                    failed,
                };
                let h = m.get_histogram();
                let mut buckets: Vec<(f64, u64)> = h
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect();
                if buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                    buckets.push((f64::INFINITY, h.get_sample_count()));
                }
                let c = series.entry(key).or_default();
                c.count += h.get_sample_count();
                if c.buckets.is_empty() {
                    c.buckets = buckets;
                } else {
                    for (slot, (_, n)) in c.buckets.iter_mut().zip(buckets) {
                        slot.1 += n;
                    }
                }
            }
        }
        let mut samples = crate::lock(&self.samples);
        samples.push_back(Sample { at, series });
        while samples.len() > 2 && samples.front().is_some_and(|s| at.duration_since(s.at) > MAX_WINDOW) {
            samples.pop_front();
        }
    }

    /// Per-series increases over `window` (or as much of it as has been sampled), and the time
    /// they cover.
    fn deltas(&self, window: Duration) -> (Vec<(Series, Cum)>, Duration) {
        let samples = crate::lock(&self.samples);
        let Some(newest) = samples.back() else {
            return (Vec::new(), Duration::ZERO);
        };
        let oldest = samples
            .iter()
            .find(|s| newest.at.duration_since(s.at) <= window)
            .unwrap_or(newest);
        let covered = newest.at.duration_since(oldest.at);
        let mut out = Vec::new();
        for (k, now) in &newest.series {
            let before = oldest.series.get(k);
            let count = now.count.saturating_sub(before.map_or(0, |b| b.count));
            if count == 0 {
                continue;
            }
            let buckets = now
                .buckets
                .iter()
                .enumerate()
                .map(|(i, (le, n))| {
                    let b = before.and_then(|b| b.buckets.get(i)).map_or(0, |x| x.1);
                    (*le, n.saturating_sub(b))
                })
                .collect();
            out.push((k.clone(), Cum { count, buckets }));
        }
        (out, covered)
    }
}

/// Requests, failures and latency buckets summed over several series.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    failed: u64,
    /// Cumulative counts per bucket upper bound (ms), as in [`Cum`].
    buckets: Vec<(f64, u64)>,
}

impl Tally {
    fn add(&mut self, s: &Series, c: &Cum) {
        self.requests += c.count;
        if s.failed {
            self.failed += c.count;
        }
        if self.buckets.is_empty() {
            self.buckets.extend_from_slice(&c.buckets);
        } else {
            for (slot, (_, n)) in self.buckets.iter_mut().zip(&c.buckets) {
                slot.1 += n;
            }
        }
    }
}

/// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the rank; the
/// +Inf bucket answers with the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut prev = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = (n - prev.1) as f64;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1 as f64) / in_bucket
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, n);
    }
    Some(prev.0)
}

/// A node of the versioned graph: an app at one version.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub id: String,
    pub app: String,
    pub version: String,
}

impl Node {
    fn new(app: &str, version: &str) -> Self {
        let id = if version == "unknown" {
            app.to_string()
        } else {
            format!("{app} {version}")
        };
        Node {
            id,
            app: app.to_string(),
            version: version.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub rps: f64,
    /// Failed share, 0 to 1.
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Graph {
    pub window_seconds: f64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

fn per_second(n: u64, covered: Duration) -> f64 {
    if covered.is_zero() {
        0.0
    } else {
        n as f64 / covered.as_secs_f64()
    }
}

/// The caller → callee edges seen by the proxies requests entered (`reporter="source"`).
pub fn graph(w: &Window, window: Duration) -> Graph {
    let (deltas, covered) = w.deltas(window);
    let mut edges: BTreeMap<(Node, Node), Tally> = BTreeMap::new();
    for (s, c) in deltas.iter().filter(|(s, _)| &*s.reporter == "source") {
        let from = Node::new(&s.source_app, &s.source_version);
        let to = Node::new(&s.destination_app, &s.destination_version);
        edges.entry((from, to)).or_default().add(s, c);
    }
    let mut nodes: Vec<Node> = edges.keys().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    nodes.sort();
    nodes.dedup();
    Graph {
        window_seconds: covered.as_secs_f64(),
        nodes,
        edges: edges
            .into_iter()
            .map(|((from, to), t)| Edge {
                source: from.id,
                target: to.id,
                rps: per_second(t.requests, covered),
                error_rate: t.failed as f64 / t.requests.max(1) as f64,
                p99_ms: quantile(0.99, &t.buckets),
                requests: t.requests,
            })
            .collect(),
    }
}

/// One row of `localmesh stat`: requests into a workload at one version.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StatRow {
    #[serde(flatten)]
    pub of: WorkloadInfo,
    pub requests: u64,
    /// `None` without traffic in the window.
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Stat {
    pub window_seconds: f64,
    pub rows: Vec<StatRow>,
}

/// A Deployment as `stat` lists it, traffic or not.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub namespace: String,
    pub workload: String,
    pub app: String,
    pub version: String,
    pub pods: usize,
    pub ready: usize,
}

/// Inbound traffic per destination workload over `window`, from `reporter="source"` (every request
/// a proxy routed to one of the workload's pods); `workloads` lists every Deployment, so idle ones
/// show too.
pub fn stat(w: &Window, window: Duration, workloads: &[WorkloadInfo]) -> Stat {
    let (deltas, covered) = w.deltas(window);
    let mut rows: Vec<StatRow> = workloads
        .iter()
        .map(|wl| {
            let mut t = Tally::default();
            for (s, c) in deltas.iter().filter(|(s, _)| {
                &*s.reporter == "source"
                    && *s.destination_workload == *wl.workload
                    && *s.destination_namespace == *wl.namespace
            }) {
                t.add(s, c);
            }
            let n = t.requests;
            StatRow {
                of: wl.clone(),
                requests: n,
                success_rate: (n > 0).then(|| (n - t.failed) as f64 / n as f64),
                rps: per_second(n, covered),
                p50_ms: quantile(0.5, &t.buckets),
                p95_ms: quantile(0.95, &t.buckets),
                p99_ms: quantile(0.99, &t.buckets),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.of.namespace, &a.of.workload).cmp(&(&b.of.namespace, &b.of.workload)));
    Stat {
        window_seconds: covered.as_secs_f64(),
        rows,
    }
}

/// A window such as `30s`, `1m` (a bare number is seconds), within [`MAX_WINDOW`].
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = service_runtime::env::parse_duration(s)?;
    if d > MAX_WINDOW {
        return Err(format!(
            "{s} is longer than the {}s of history localmesh keeps",
            MAX_WINDOW.as_secs()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::Key;
    use crate::proxy::metrics::{Reporter, ServiceName};
    use crate::proxy::{Labels, ProxyMetrics};

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = [(1.0, 0), (5.0, 50), (10.0, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(0.5, &b), Some(5.0));
        assert_eq!(quantile(0.99, &b), Some(9.9));
        assert_eq!(quantile(0.99, &[(10.0, 0), (f64::INFINITY, 5)]), Some(10.0));
        assert_eq!(quantile(0.5, &[(f64::INFINITY, 0)]), None);
    }

    #[test]
    fn the_graph_and_stat_come_from_the_exported_histogram() {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let gw = Arc::new(Identity::gateway(&Key::new("gateway", "public-api-gateway"), "gw"));
        let pod = |v: &str| {
            let labels = [
                ("app".to_string(), "product-service".to_string()),
                ("version".into(), v.into()),
            ]
            .into_iter()
            .collect();
            Arc::new(Identity::sidecar(
                &Key::new("default", format!("product-{v}")),
                "p",
                &labels,
            ))
        };
        let record = |to: &Arc<Identity>, grpc: &str, ms: f64| {
            metrics.record(
                &Labels {
                    reporter: Reporter::Source,
                    source: gw.clone(),
                    destination: Some(to.clone()),
                    service: Some(Arc::new(ServiceName::from(&Key::new("default", "product-service")))),
                    grpc: true,
                    response_code: 200,
                    grpc_response_status: Some(grpc.into()),
                    response_flags: "-".into(),
                },
                ms,
            )
        };
        let w = Window::default();
        let t0 = Instant::now();
        w.sample(&registry.gather(), t0);
        let (v1, v2) = (pod("v1"), pod("v2"));
        for _ in 0..80 {
            record(&v1, "0", 3.0);
        }
        for i in 0..20 {
            record(&v2, if i < 5 { "14" } else { "0" }, 40.0);
        }
        w.sample(&registry.gather(), t0 + Duration::from_secs(10));

        let g = graph(&w, Duration::from_secs(60));
        assert_eq!(g.window_seconds, 10.0);
        let e = |t: &str| g.edges.iter().find(|e| e.target == t).unwrap().clone();
        assert_eq!(e("product-service v1").requests, 80);
        assert_eq!(e("product-service v1").rps, 8.0);
        assert_eq!(e("product-service v2").error_rate, 0.25);
        assert!(e("product-service v2").p99_ms.unwrap() > 25.0);
        assert_eq!(e("product-service v1").source, "public-api-gateway-istio");

        let s = stat(
            &w,
            Duration::from_secs(60),
            &[
                ("product-v1", "product-service", "v1"),
                ("product-v2", "product-service", "v2"),
                ("frontend", "frontend", "v1"),
            ]
            .map(|(w, app, v)| WorkloadInfo {
                namespace: "default".into(),
                workload: w.into(),
                app: app.into(),
                version: v.into(),
                pods: 1,
                ready: 1,
            }),
        );
        let row = |n: &str| s.rows.iter().find(|r| r.of.workload == n).unwrap().clone();
        assert_eq!(row("product-v2").success_rate, Some(0.75));
        assert_eq!(row("product-v1").requests, 80);
        assert_eq!(row("frontend").success_rate, None, "no traffic: no rate");
        assert!(parse_window("11m").is_err());
        assert_eq!(parse_window("30s").unwrap(), Duration::from_secs(30));
    }
}
