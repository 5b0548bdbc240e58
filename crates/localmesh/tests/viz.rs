//! `localmesh stat`, `tap` and `top` as a user runs them: the real binary against a fake admin
//! port serving canned `/api/stat` JSON and a `/tap` NDJSON stream built from the crate's own
//! types (so a change of the admin's format breaks these tests, not the users).

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use localmesh::stats::{Stat, StatRow, WorkloadInfo};
use localmesh::tap::{Filter, TapEvent};
use serde_json::{Value, json};

type Queries = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A fake admin port on 127.0.0.1:0, served until dropped.
struct FakeAdmin {
    addr: String,
    /// The query pairs of every request, in order.
    queries: Queries,
    _rt: tokio::runtime::Runtime,
}

impl FakeAdmin {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let queries = Queries::default();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let app = Router::new()
            .route("/api/stat", get(stat))
            .route("/tap", get(tap))
            .with_state(queries.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAdmin { addr, queries, _rt: rt }
    }

    fn last_query(&self) -> Vec<(String, String)> {
        self.queries.lock().expect("lock").last().cloned().expect("a request")
    }
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": msg }))).into_response()
}

fn canned_stat() -> Stat {
    let row = |workload: &str, version: &str, pods, requests, success, rps, p: Option<[f64; 3]>| StatRow {
        of: WorkloadInfo {
            namespace: "default".into(),
            workload: workload.into(),
            app: workload.split('-').next().unwrap_or(workload).to_string() + "-service",
            version: version.into(),
            pods,
            ready: pods,
        },
        requests,
        success_rate: success,
        rps,
        p50_ms: p.map(|p| p[0]),
        p95_ms: p.map(|p| p[1]),
        p99_ms: p.map(|p| p[2]),
    };
    Stat {
        window_seconds: 30.0,
        rows: vec![
            row("frontend", "v1", 2, 0, None, 0.0, None),
            row(
                "product-v1",
                "v1",
                2,
                395,
                Some(0.9875),
                13.1666,
                Some([1.26, 4.8, 9.96]),
            ),
            row("product-v2", "v2", 1, 98, Some(0.75), 3.2666, Some([40.0, 48.0, 49.6])),
        ],
    }
}

/// As the real admin: the window is checked with the same function, a bad one is a 400.
async fn stat(State(q): State<Queries>, Query(pairs): Query<Vec<(String, String)>>) -> Response {
    q.lock().expect("lock").push(pairs.clone());
    if let Some((_, w)) = pairs.iter().find(|(k, _)| k == "window")
        && let Err(e) = localmesh::stats::parse_window(w)
    {
        return bad_request(format!("parameter 'window': {e}"));
    }
    axum::Json(canned_stat()).into_response()
}

fn event(path: &str, pod: &str, version: &str, grpc: &str, latency_ms: f64, premium: bool) -> TapEvent {
    TapEvent {
        time: "2026-01-02T10:11:12.345Z".into(),
        proxy: "gateway".into(),
        source: "public-api-gateway-istio".into(),
        route: "HTTPRoute gateway/product-grpc spec.rules[0].matches[0]".into(),
        method: "POST".into(),
        authority: "sit-gateway.tcex.com.vn".into(),
        path: path.into(),
        destination: "product-service.default.svc.cluster.local".into(),
        upstream_pod: pod.into(),
        upstream_version: version.into(),
        status: 200,
        grpc_status: Some(grpc.into()),
        response_flags: "-".into(),
        latency_ms,
        request_id: format!("req-{pod}-{latency_ms}"),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        headers: if premium {
            vec![("user-type".into(), "premium".into())]
        } else {
            Vec::new()
        },
    }
}

const GET: &str = "/product.ProductService/GetProduct";
const LIST: &str = "/product.ProductService/ListProducts";

/// The stream's lines (without newlines) for `filter`: four requests with a lag notice after the
/// second. The first carries a field this version does not know, as a newer admin might send:
/// `--json` must pass it on as is, and the text output must still show the event.
fn tap_lines(filter: &Filter) -> Vec<String> {
    let events = [
        Some(event(GET, "product-v1-0", "v1", "0", 3.2, false)),
        Some(event(GET, "product-v2-0", "v2", "14", 40.1, true)),
        None,
        Some(event(LIST, "product-v1-1", "v1", "0", 7.5, false)),
        Some(event(GET, "product-v1-1", "v1", "0", 1.1, false)),
    ];
    events
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Some(e) if filter.matches(&e) => {
                let mut v = serde_json::to_value(&e).expect("json");
                if i == 0 {
                    v["served_over"] = json!("h2");
                }
                Some(v.to_string())
            }
            Some(_) => None,
            None => Some(json!({"lagged": 5, "message": "tap fell behind; 5 requests not shown"}).to_string()),
        })
        .collect()
}

/// Serves [`tap_lines`] filtered by the real `Filter`; then the stream stays open, as the real
/// one does while no traffic passes, unless `max` ends it.
async fn tap(State(q): State<Queries>, Query(pairs): Query<Vec<(String, String)>>) -> Response {
    q.lock().expect("lock").push(pairs.clone());
    let filter = match Filter::from_query(&pairs) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let max = match pairs.iter().find(|(k, _)| k == "max").map(|(_, v)| v.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => return bad_request("parameter 'max': expected a whole number of at least 1".into()),
    };
    let lines: Vec<String> = tap_lines(&filter).into_iter().map(|l| l + "\n").collect();
    let stream = futures_util::stream::iter(lines)
        .chain(futures_util::stream::pending())
        .take(max)
        .map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// Runs the real binary, failing the test instead of hanging when it does not end in 30 s.
fn localmesh(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn localmesh");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "localmesh {args:?} did not end in 30s; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("utf-8")
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn stat_json_prints_the_admins_json() {
    let admin = FakeAdmin::start();
    let out = localmesh(&["stat", "--admin", &admin.addr, "--json", "-t", "1m"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(v, serde_json::to_value(canned_stat()).expect("json"));
    assert!(stdout.starts_with("{\n  \"window_seconds\""), "pretty: {stdout}");
    assert_eq!(admin.last_query(), [("window".to_string(), "1m".to_string())]);
}

#[test]
fn stat_prints_a_table_per_deployment_and_version() {
    let admin = FakeAdmin::start();
    let out = localmesh(&["stat", "--admin", &admin.addr]);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "NAMESPACE   NAME         VERSION   MESHED   SUCCESS       RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
         default     frontend     v1           2/2         -         -             -             -             -\n\
         default     product-v1   v1           2/2    98.75%   13.2rps         1.3ms         4.8ms          10ms\n\
         default     product-v2   v2           1/1    75.00%    3.3rps          40ms          48ms          50ms\n"
    );
    assert_eq!(
        admin.last_query(),
        [("window".to_string(), "30s".to_string())],
        "the default window"
    );
    let wide = text(&localmesh(&["stat", "--admin", &admin.addr, "-o", "wide"]).stdout);
    let v1: Vec<&str> = wide.lines().nth(2).expect("row").split_whitespace().collect();
    assert_eq!(v1[0..2], ["default", "product-v1"], "{wide}");
    assert_eq!(
        v1[v1.len() - 2..],
        ["product-service", "395"],
        "wide adds APP and REQUESTS: {wide}"
    );
}

#[test]
fn a_window_the_admin_refuses_shows_its_message() {
    let admin = FakeAdmin::start();
    let out = localmesh(&["stat", "--admin", &admin.addr, "-t", "11m"]);
    assert_exit(&out, 2);
    assert_eq!(
        text(&out.stderr),
        "localmesh stat: the admin port refused the request: \
         parameter 'window': 11m is longer than the 600s of history localmesh keeps\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn tap_json_prints_the_admins_lines_up_to_max() {
    let admin = FakeAdmin::start();
    let out = localmesh(&["tap", "--admin", &admin.addr, "--json", "--max", "3"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines,
        tap_lines(&Filter::default())[..3],
        "the admin's lines as they came"
    );
    assert!(
        lines[0].contains(r#""served_over":"h2""#),
        "unknown fields kept: {}",
        lines[0]
    );
    assert_eq!(
        lines[2], r#"{"lagged":5,"message":"tap fell behind; 5 requests not shown"}"#,
        "a lag notice stays a JSON line"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(admin.last_query().contains(&("max".into(), "3".into())));
}

#[test]
fn tap_prints_one_line_per_request_and_lag_on_stderr() {
    let admin = FakeAdmin::start();
    let out = localmesh(&["tap", "--admin", &admin.addr, "--max", "5"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[0],
        "10:11:12.345Z gateway public-api-gateway-istio [HTTPRoute gateway/product-grpc spec.rules[0].matches[0]] \
         POST sit-gateway.tcex.com.vn/product.ProductService/GetProduct → product-v1-0 (v1) status=200 grpc=0 3.2ms"
    );
    assert!(
        lines[1].contains("→ product-v2-0 (v2) status=200 grpc=14 40ms"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("ListProducts → product-v1-1 (v1)"), "{}", lines[2]);
    assert_eq!(
        text(&out.stderr),
        "localmesh tap: tap fell behind; 5 requests not shown\n"
    );
}

#[test]
fn tap_filters_reach_the_admin() {
    let admin = FakeAdmin::start();
    let out = localmesh(&[
        "tap",
        "--admin",
        &admin.addr,
        "--path",
        "/product.ProductService/Get",
        "--header",
        "user-type: premium",
        "--max",
        "1",
        "-o",
        "wide",
    ]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("→ product-v2-0 (v2)") && stdout.contains(" id=req-product-v2-0-40.1 trace=0af7"),
        "{stdout}"
    );
    let q = admin.last_query();
    assert!(
        q.contains(&("path".into(), "/product.ProductService/Get".into())),
        "{q:?}"
    );
    assert!(q.contains(&("header".into(), "user-type:premium".into())), "{q:?}");
}

#[test]
fn top_json_aggregates_for_the_duration() {
    let admin = FakeAdmin::start();
    let started = Instant::now();
    let out = localmesh(&["top", "--admin", &admin.addr, "--json", "--duration", "2s"]);
    let took = started.elapsed();
    assert_exit(&out, 0);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "ran {took:?}"
    );
    let rows: Value = serde_json::from_str(&text(&out.stdout)).expect("a JSON array");
    assert_eq!(
        rows,
        json!([
            {"source": "public-api-gateway-istio", "destination": "product-service.default.svc.cluster.local",
             "method": "POST", "path": GET, "count": 3, "best_ms": 1.1, "worst_ms": 40.1, "last_ms": 1.1,
             "success_rate": 2.0 / 3.0},
            {"source": "public-api-gateway-istio", "destination": "product-service.default.svc.cluster.local",
             "method": "POST", "path": LIST, "count": 1, "best_ms": 7.5, "worst_ms": 7.5, "last_ms": 7.5,
             "success_rate": 1.0},
        ])
    );
    assert!(
        text(&out.stderr).contains("5 requests not shown (tap fell behind)"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !admin.last_query().iter().any(|(k, _)| k == "max"),
        "top reads until --duration"
    );
}

#[test]
fn top_prints_a_table_when_stdout_is_not_a_terminal() {
    let admin = FakeAdmin::start();
    let out = localmesh(&["top", "--admin", &admin.addr, "--duration", "1s", "--max-rows", "1"]);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "SOURCE                     DESTINATION               METHOD   PATH                                 COUNT    BEST   WORST    LAST   SUCCESS\n\
         public-api-gateway-istio   product-service.default   POST     /product.ProductService/GetProduct       3   1.1ms    40ms   1.1ms    66.67%\n"
    );
}

#[test]
fn an_unreachable_admin_port_is_named_with_what_to_do() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    for cmd in ["stat", "tap", "top"] {
        let out = localmesh(&[cmd, "--admin", &addr]);
        assert_exit(&out, 1);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot reach the admin port at {addr}"))
                && stderr.contains("localmesh up")
                && stderr.contains("--admin"),
            "{cmd}: {stderr}"
        );
    }
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    for (args, flag) in [
        (&["tap", "--header", "nocolon"][..], "--header"),
        (&["top", "--header", "nocolon"][..], "--header"),
        (&["tap", "--max", "0"][..], "--max"),
        (&["stat", "-t", "5 parsecs"][..], "--window"),
        (&["stat", "--admin", "15000"][..], "--admin"),
        (&["top", "--refresh", "10ms"][..], "--refresh"),
        (&["top", "--max-rows", "0"][..], "--max-rows"),
    ] {
        let out = localmesh(args);
        assert_exit(&out, 2);
        let stderr = text(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn every_limit_is_in_the_help() {
    for (cmd, flags) in [
        (
            "stat",
            &["--window", "--admin", "--json", "--output", "[default: 30s]"][..],
        ),
        (
            "tap",
            &["--path", "--authority", "--header", "--max", "--json", "--admin"][..],
        ),
        (
            "top",
            &[
                "--max-rows",
                "[default: 20]",
                "--max-paths",
                "--refresh",
                "[default: 1s]",
                "--duration",
                "10s",
                "--json",
            ][..],
        ),
    ] {
        let out = localmesh(&[cmd, "--help"]);
        assert_exit(&out, 0);
        let help = text(&out.stdout);
        for f in flags {
            assert!(help.contains(f), "{cmd} --help lacks {f}: {help}");
        }
    }
}
