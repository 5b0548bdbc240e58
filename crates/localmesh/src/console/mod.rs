//! The console (`--console-port`, Jaeger's 16686 by default): pages for a person with a browser
//! (`/traces`, `/traces/{id}`, `/graph`) and the same data as JSON, in the shapes of Jaeger's
//! query API (`/api/services`, `/api/traces`, ...) and a graph API (`/api/graph`), so scripts
//! written against the cluster's Jaeger run here unchanged.

mod pages;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::admin::{Shared, json_response, text};
use crate::stats;
use crate::trace::jaeger;
use crate::trace::span::now_unix_nanos;
use crate::trace::store::Query as TraceQuery;

/// Traces a `/traces` page lists unless `limit=` says otherwise (at most [`MAX_LIST`]).
pub const DEFAULT_LIST: usize = 50;
pub const MAX_LIST: usize = 1000;

/// Serves the console on `tcp` until the task is aborted.
pub fn serve(shared: Shared, tcp: TcpListener) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/", get(|| async { Redirect::to("/traces") }))
        .route("/traces", get(traces_page))
        .route("/traces/{id}", get(trace_page))
        .route("/graph", get(graph_page))
        .route("/api/services", get(api_services))
        .route("/api/services/{service}/operations", get(api_service_operations))
        .route("/api/operations", get(api_operations))
        .route("/api/traces", get(api_traces))
        .route("/api/traces/{id}", get(api_trace))
        .route("/api/graph", get(crate::admin::graph));
    crate::admin::serve_router("console", app, shared, tcp)
}

fn html(status: StatusCode, body: String) -> Response {
    text(status, "text/html; charset=utf-8", body)
}

fn param<'q>(q: &'q [(String, String)], name: &str) -> Option<&'q str> {
    q.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The list filters of `/traces`, as the form sends them.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub min_duration: Option<String>,
    pub errors_only: bool,
    pub limit: usize,
}

async fn traces_page(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let f = ListFilter {
        service: param(&q, "service").map(str::to_string),
        operation: param(&q, "operation").map(str::to_string),
        min_duration: param(&q, "minDuration").map(str::to_string),
        errors_only: param(&q, "errors").is_some_and(|v| v == "on" || v == "true"),
        limit: DEFAULT_LIST,
    };
    let mut problems = Vec::new();
    let limit = match param(&q, "limit").map(str::parse::<usize>) {
        None => DEFAULT_LIST,
        Some(Ok(n)) if (1..=MAX_LIST).contains(&n) => n,
        Some(_) => {
            problems.push(format!("limit: expected a number from 1 to {MAX_LIST}"));
            DEFAULT_LIST
        }
    };
    let min_duration = match f.min_duration.as_deref().map(jaeger::parse_go_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            problems.push(format!("minimum duration: {e}"));
            None
        }
    };
    let f = ListFilter { limit, ..f };
    let Some(store) = s.proxy.store() else {
        return html(StatusCode::OK, pages::exported(&s.export));
    };
    let query = TraceQuery {
        service: f.service.clone(),
        operation: f.operation.clone(),
        min_duration,
        errors_only: f.errors_only,
        limit,
        ..TraceQuery::default()
    };
    let summaries: Vec<_> = store.find(&query).iter().map(|t| t.summary()).collect();
    html(
        StatusCode::OK,
        pages::traces(&summaries, &f, &store.services(), &problems, store.stats()),
    )
}

async fn trace_page(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(store) = s.proxy.store() else {
        return html(StatusCode::OK, pages::exported(&s.export));
    };
    let Some(tid) = jaeger::parse_trace_id(&id) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::message(
                "Not a trace id",
                &format!("{id:?} is not a trace id (up to 32 hex digits)."),
            ),
        );
    };
    match store.get(tid) {
        Some(t) => html(StatusCode::OK, pages::trace(&t)),
        None => html(
            StatusCode::NOT_FOUND,
            pages::message(
                "Trace not found",
                &format!(
                    "No trace {id} here: it may be older than what the store keeps, or its spans have not arrived yet."
                ),
            ),
        ),
    }
}

async fn graph_page(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let (window, problem) = match param(&q, "window").map(stats::parse_window) {
        None => (stats::DEFAULT_WINDOW, None),
        Some(Ok(w)) => (w, None),
        Some(Err(e)) => (stats::DEFAULT_WINDOW, Some(format!("window: {e}"))),
    };
    // A refused configuration change is shown where the routing is watched.
    let refused = s
        .pushed
        .last_error()
        .map(|e| format!("configuration change refused, the running configuration stays: {e}"));
    let problem = match (problem, refused) {
        (Some(p), Some(r)) => Some(format!("{r}; {p}")),
        (p, r) => r.or(p),
    };
    html(
        StatusCode::OK,
        pages::graph(
            &stats::graph(&s.window, window),
            window,
            problem.as_deref(),
            &pages::pods(&s.proxy.endpoint_health()),
        ),
    )
}

fn api_error(status: StatusCode, msg: &str) -> Response {
    json_response(status, &jaeger::error(status.as_u16(), msg))
}

async fn api_services(State(s): State<Shared>) -> Response {
    let services = s.proxy.store().map(|st| st.services()).unwrap_or_default();
    let n = services.len();
    json_response(StatusCode::OK, &jaeger::envelope(json!(services), n))
}

async fn api_service_operations(State(s): State<Shared>, Path(service): Path<String>) -> Response {
    let ops: Vec<String> = s
        .proxy
        .store()
        .map(|st| st.operations(&service).into_iter().map(|(op, _)| op).collect())
        .unwrap_or_default();
    let mut ops = ops;
    ops.dedup();
    let n = ops.len();
    json_response(StatusCode::OK, &jaeger::envelope(json!(ops), n))
}

async fn api_operations(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let Some(service) = param(&q, "service") else {
        return api_error(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let kind = param(&q, "spanKind");
    let ops: Vec<serde_json::Value> = s
        .proxy
        .store()
        .map(|st| st.operations(service))
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, k)| kind.is_none_or(|want| k.is_some_and(|k| k == want)))
        .map(|(name, k)| json!({"name": name, "spanKind": k.unwrap_or("")}))
        .collect();
    let n = ops.len();
    json_response(StatusCode::OK, &jaeger::envelope(json!(ops), n))
}

async fn api_traces(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let (query, ids) = match jaeger::parse_query(&q, now_unix_nanos() / 1000) {
        Ok(v) => v,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(store) = s.proxy.store() else {
        return json_response(StatusCode::OK, &jaeger::envelope(json!([]), 0));
    };
    let traces = if ids.is_empty() {
        store.find(&query)
    } else {
        ids.into_iter().filter_map(|id| store.get(id)).collect()
    };
    let data: Vec<serde_json::Value> = traces.iter().map(jaeger::trace_json).collect();
    let n = data.len();
    json_response(StatusCode::OK, &jaeger::envelope(json!(data), n))
}

async fn api_trace(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(tid) = jaeger::parse_trace_id(&id) else {
        return api_error(StatusCode::BAD_REQUEST, &format!("{id:?} is not a trace id"));
    };
    match s.proxy.store().and_then(|st| st.get(tid)) {
        Some(t) => json_response(StatusCode::OK, &jaeger::envelope(json!([jaeger::trace_json(&t)]), 1)),
        None => api_error(StatusCode::NOT_FOUND, "trace not found"),
    }
}
