//! The admin port (Envoy's is :15000): `/stats/prometheus`, `/clusters`, `/config_dump`, and what
//! the CLI and a real Prometheus read: `/api/stat` (`localmesh stat`), `/tap` (`localmesh tap`,
//! `top`: live requests as JSON lines), `/api/graph`, and `/sd` (Prometheus HTTP service
//! discovery of every pod's metrics port and this port).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use prometheus::IntGauge;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::pods::PodStatus;
use crate::proxy::Proxy;
use crate::stats::{self, Window, WorkloadInfo};
use crate::tap::Filter;

pub type PodTable = Arc<Mutex<BTreeMap<String, PodStatus>>>;

/// What the admin and console handlers read.
#[derive(Clone)]
pub struct Shared {
    pub proxy: Arc<Proxy>,
    /// The configuration running now (routing, version, last refused push).
    pub pushed: Arc<crate::push::Pushed>,
    pub pods: PodTable,
    pub window: Arc<Window>,
    /// The admin port's own address (a `/sd` target).
    pub admin: SocketAddr,
    /// Where spans go when not kept here (the console says so).
    pub export: Option<String>,
    store_gauges: Arc<[IntGauge; 4]>,
}

impl Shared {
    pub fn new(
        proxy: Arc<Proxy>,
        pushed: Arc<crate::push::Pushed>,
        pods: PodTable,
        window: Arc<Window>,
        admin: SocketAddr,
        export: Option<String>,
    ) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            proxy.registry().register(Box::new(g.clone()))?;
            Ok(g)
        };
        let store_gauges = Arc::new([
            gauge("localmesh_trace_store_traces", "Traces the console keeps")?,
            gauge("localmesh_trace_store_spans", "Spans the console keeps")?,
            gauge("localmesh_trace_store_bytes", "Approximate bytes of the kept spans")?,
            gauge(
                "localmesh_trace_store_evicted_traces",
                "Traces dropped to stay within the store's bounds",
            )?,
        ]);
        Ok(Shared {
            proxy,
            pushed,
            pods,
            window,
            admin,
            export,
            store_gauges,
        })
    }

    /// Every Deployment with its pod counts, for `stat`.
    fn workloads(&self) -> Vec<WorkloadInfo> {
        let eps = self.proxy.endpoints().all();
        // As pushed: replicas and Deployments follow the files.
        self.proxy
            .mesh()
            .workloads
            .iter()
            .map(|w| WorkloadInfo {
                namespace: w.key.namespace.clone(),
                workload: w.key.name.clone(),
                app: w.labels.get("app").cloned().unwrap_or_else(|| w.key.name.clone()),
                version: w.labels.get("version").cloned().unwrap_or_else(|| "unknown".into()),
                pods: w.replicas as usize,
                ready: eps.iter().filter(|e| e.workload == w.key && e.is_healthy()).count(),
            })
            .collect()
    }
}

pub fn text(status: StatusCode, ctype: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, ctype)], body).into_response()
}

pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    text(
        status,
        "application/json",
        serde_json::to_string_pretty(v).unwrap_or_default(),
    )
}

/// Serves the admin routes on `tcp` until the task is aborted.
pub fn serve(shared: Shared, tcp: TcpListener) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/stats/prometheus", get(prometheus_text))
        .route("/clusters", get(clusters))
        .route("/config_dump", get(config_dump))
        .route("/sd", get(sd))
        .route("/tap", get(tap))
        .route("/api/stat", get(stat))
        .route("/api/graph", get(graph));
    serve_router("admin", app, shared, tcp)
}

/// Serves `app` (with a 404 naming the path for anything else) until the task is aborted.
pub fn serve_router(
    what: &'static str,
    app: Router<Shared>,
    shared: Shared,
    tcp: TcpListener,
) -> tokio::task::JoinHandle<()> {
    let app = app
        .fallback(move |uri: axum::http::Uri| async move {
            text(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no {what} page {}\n", uri.path()),
            )
        })
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).await {
            tracing::warn!(error = %e, "the {what} port stopped");
        }
    })
}

async fn index() -> Response {
    text(
        StatusCode::OK,
        "text/plain",
        "/stats/prometheus\n/clusters\n/config_dump\n/sd\n/tap?path=&authority=&header=name:value&max=N\n/api/stat?window=30s\n/api/graph?window=60s\n"
            .into(),
    )
}

async fn prometheus_text(State(s): State<Shared>) -> Response {
    if let Some(store) = s.proxy.store() {
        let st = store.stats();
        let [traces, spans, bytes, evicted] = &*s.store_gauges;
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        traces.set(n(st.traces));
        spans.set(n(st.spans));
        bytes.set(n(st.bytes));
        evicted.set(i64::try_from(st.evicted_traces).unwrap_or(i64::MAX));
    }
    let mut body = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&s.proxy.registry().gather(), &mut body) {
        Ok(()) => text(StatusCode::OK, "text/plain; version=0.0.4", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

async fn clusters(State(s): State<Shared>) -> Response {
    let mut body = String::new();
    for (ep, health) in s.proxy.endpoint_health() {
        let _ = writeln!(
            body,
            "{}::{}::pod::{}::version::{}::health_flags::{health}::rq_active::{}",
            ep.workload,
            ep.addr,
            ep.pod,
            ep.version(),
            ep.in_flight()
        );
    }
    text(StatusCode::OK, "text/plain", body)
}

async fn config_dump(State(s): State<Shared>) -> Response {
    let pods: serde_json::Map<String, serde_json::Value> = crate::lock(&s.pods)
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({
                    "deployment": p.workload.to_string(),
                    "pod_template_hash": p.template,
                    "version": p.labels.get("version"),
                    "terminating": p.terminating,
                    "pid": p.pid,
                    "addr": p.addr.map(|a| a.to_string()),
                    "metrics_addr": p.metrics_addr.map(|a| a.to_string()),
                    "ready": p.ready,
                    "restarts": p.restarts,
                    "last_exit": p.last_exit,
                }),
            )
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "routing": s.pushed.summary().lines().collect::<Vec<_>>(),
            "config": s.pushed.status(),
            "pods": pods,
        }),
    )
}

/// Prometheus HTTP SD: one target group per pod's `/metrics` with the labels the cluster's
/// `kubernetes-pods` relabelling gives (`app`, `version`, `pod`, `namespace`, the other pod labels
/// with `.`/`/`/`-` as `_`), and the admin port's `/stats/prometheus` (`istio_*`).
async fn sd(State(s): State<Shared>) -> Response {
    let table = crate::lock(&s.pods).clone();
    let mut groups = Vec::new();
    for (pod, st) in &table {
        let Some(metrics) = st.metrics_addr else {
            continue;
        };
        let mut labels = serde_json::Map::new();
        // The pod's own labels: during a rollout old and new pods differ.
        for (k, v) in &st.labels {
            let name: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            labels.insert(name, json!(v));
        }
        labels.insert("namespace".into(), json!(st.workload.namespace));
        labels.insert("pod".into(), json!(pod));
        groups.push(json!({"targets": [metrics.to_string()], "labels": labels}));
    }
    groups.push(json!({
        "targets": [s.admin.to_string()],
        "labels": {
            "app": "localmesh",
            "namespace": "istio-system",
            "pod": "localmesh",
            "__metrics_path__": "/stats/prometheus",
        },
    }));
    json_response(StatusCode::OK, &serde_json::Value::Array(groups))
}

/// `window=` (default 60 s), or the 400 answer naming the parameter.
fn window_param(q: &[(String, String)]) -> Result<Duration, Box<Response>> {
    match q.iter().find(|(k, _)| k == "window") {
        None => Ok(stats::DEFAULT_WINDOW),
        Some((_, v)) => stats::parse_window(v).map_err(|e| {
            Box::new(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("parameter 'window': {e}")}),
            ))
        }),
    }
}

async fn stat(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let window = match window_param(&q) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let v = serde_json::to_value(stats::stat(&s.window, window, &s.workloads())).unwrap_or_default();
    json_response(StatusCode::OK, &v)
}

pub async fn graph(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let window = match window_param(&q) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let v = serde_json::to_value(stats::graph(&s.window, window)).unwrap_or_default();
    json_response(StatusCode::OK, &v)
}

/// Live requests as JSON lines, filtered, ending after `max` events if given, or when the client
/// leaves (as `linkerd viz tap` runs until stopped).
async fn tap(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let filter = match Filter::from_query(&q) {
        Ok(f) => f,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
    };
    let max = match q.iter().find(|(k, _)| k == "max").map(|(_, v)| v.parse::<u64>()) {
        None => u64::MAX,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "parameter 'max': expected a whole number of at least 1"}),
            );
        }
    };
    let rx = s.proxy.tap().subscribe();
    let lines = BroadcastStream::new(rx)
        .filter_map(move |e| {
            let line = match e {
                Ok(ev) if filter.matches(&ev) => serde_json::to_string(&*ev).ok().map(|l| l + "\n"),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(
                    json!({"lagged": n, "message": format!("tap fell behind; {n} requests not shown")}).to_string()
                        + "\n",
                ),
            };
            std::future::ready(line)
        })
        .take(usize::try_from(max).unwrap_or(usize::MAX))
        .map(Ok::<_, Infallible>);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()))
}
