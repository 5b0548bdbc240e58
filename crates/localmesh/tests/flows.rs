//! Watching the flows of a real `localmesh up`: one order through the gateway is one trace rooted
//! at the gateway's span (read through the console's Jaeger API, and exported over OTLP to an
//! in-process collector), a premium call's trace shows product v2, a retried call shows one span
//! per attempt, probes make no traces, sampling follows the Telemetry resource, the console's
//! pages render in Chromium, the graph shows the 80/20 split, and a real Prometheus discovers
//! every pod through `/sd`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use localmesh::gateway_client::GatewayTarget;
use localmesh::verify::{self, HttpsAnswer, VerifyOptions};
use opentelemetry_proto::tonic::common::v1::any_value;
use proto::product::GetProductRequest;
use proto::product::product_service_client::ProductServiceClient;
use serde_json::Value;
use testkit::otlp::Collector;
use tonic::transport::Channel;

use common::{HOST, Up};

const GATEWAY: &str = "public-api-gateway-istio.gateway";
/// Every process one order crosses: each app and its proxy.
const ORDER_SERVICES: [&str; 9] = [
    GATEWAY,
    "frontend.default",
    "frontend",
    "order-service.default",
    "order",
    "product-service.default",
    "product",
    "payment.default",
    "payment",
];

fn gateway(up: &Up) -> VerifyOptions {
    VerifyOptions {
        gateway: GatewayTarget {
            target: format!("127.0.0.1:{}", up.gateway),
            cacert: up.root.join("gateway/certs/ca.crt"),
            authority: HOST.into(),
        },
        n: 1,
        v2_share: 0.2,
        jaeger: format!("http://127.0.0.1:{}", up.console),
    }
}

/// Places an order through the gateway; returns the request id its answer carries.
async fn place_order(up: &Up, key: &str) -> String {
    let a = order_answer(up, key).await;
    assert!((200..300).contains(&a.status), "{} {}", a.status, a.body);
    a.headers["x-request-id"].to_str().expect("ascii").to_string()
}

/// As `place_order`, in a copy where product fails on purpose: an order whose product calls
/// failed even after the retries is placed again under a new key (five tries).
async fn place_order_despite_faults(up: &Up, key: &str) -> String {
    let mut last = None;
    for n in 0..5 {
        let a = order_answer(up, &format!("{key}-{n}")).await;
        if (200..300).contains(&a.status) {
            return a.headers["x-request-id"].to_str().expect("ascii").to_string();
        }
        last = Some((a.status, a.body));
    }
    panic!("five orders failed; the last: {last:?}")
}

async fn order_answer(up: &Up, key: &str) -> HttpsAnswer {
    let body = r#"{"customer_id": "flows", "items": [{"product_id": "123", "quantity": 1}]}"#;
    let headers = [("content-type", "application/json"), ("idempotency-key", key)];
    verify::https(&gateway(up), "POST", "/api/orders", &headers, body)
        .await
        .expect("POST /api/orders through the gateway")
}

async fn channel(up: &Up) -> Channel {
    common::gateway_channel(&up.root, up.gateway).await
}

/// GetProduct 123 through the gateway: (version, pod, request id) of the answer, or the status.
async fn get_product(
    c: &mut ProductServiceClient<Channel>,
    headers: &[(&'static str, &str)],
) -> Result<(String, String, String), tonic::Status> {
    let mut req = tonic::Request::new(GetProductRequest {
        product_id: "123".into(),
    });
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().expect("ascii"));
    }
    let resp = c.get_product(req).await?;
    let rid = resp
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let sb = resp.into_inner().served_by.expect("served_by");
    Ok((sb.version, sb.pod, rid))
}

async fn console(up: &Up, path: &str) -> Value {
    let body = common::admin_get(up.console, path).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// The trace carrying `request_id`, from the console's Jaeger API, once it holds spans from every
/// one of `services` (the pods' SDKs send theirs within about a second).
async fn jaeger_trace(up: &Up, request_id: &str, services: &[&str]) -> Value {
    let tags = format!("%7B%22guid%3Ax-request-id%22%3A%22{request_id}%22%7D");
    let path = format!("/api/traces?service={GATEWAY}&tags={tags}&lookback=1h");
    let mut last = Value::Null;
    for _ in 0..80 {
        last = console(up, &path).await;
        if let Some(t) = last["data"].as_array().and_then(|d| d.first()) {
            let have: Vec<&str> = t["processes"]
                .as_object()
                .map(|p| p.values().filter_map(|v| v["serviceName"].as_str()).collect())
                .unwrap_or_default();
            if services.iter().all(|s| have.contains(s)) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no complete trace for request {request_id}: {last:#}")
}

/// A span of a Jaeger trace, flattened for assertions.
#[derive(Debug, Clone)]
struct JSpan {
    id: String,
    parent: Option<String>,
    service: String,
    name: String,
    tags: BTreeMap<String, String>,
    process_tags: BTreeMap<String, String>,
}

fn spans_of(trace: &Value) -> Vec<JSpan> {
    let tag_map = |v: &Value| -> BTreeMap<String, String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let val = match &t["value"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (t["key"].as_str().unwrap_or_default().to_string(), val)
            })
            .collect()
    };
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            let p = &trace["processes"][s["processID"].as_str().expect("processID")];
            JSpan {
                id: s["spanID"].as_str().expect("spanID").into(),
                parent: s["references"][0]["spanID"].as_str().map(str::to_string),
                service: p["serviceName"].as_str().expect("serviceName").into(),
                name: s["operationName"].as_str().expect("operationName").into(),
                tags: tag_map(&s["tags"]),
                process_tags: tag_map(&p["tags"]),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_run_shows_the_flows() {
    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start(data.path());
    // It tells where to watch: the console's pages, and stat/top/tap as the binary was started.
    let text = up.printed(&format!("http://127.0.0.1:{}/graph", up.console));
    let me = env!("CARGO_BIN_EXE_localmesh");
    for line in [
        format!("http://127.0.0.1:{}/traces", up.console),
        format!("{me} stat --admin 127.0.0.1:{}", up.admin),
        format!("{me} tap --admin 127.0.0.1:{}", up.admin),
    ] {
        assert!(text.contains(&line), "{line:?} in {text}");
    }

    // One order through the gateway: one trace, one root (the gateway's span), every parent
    // present, every hop's proxy spans and the apps' spans.
    let rid = place_order(&up, &format!("flows-{}", std::process::id())).await;
    let answer = jaeger_trace(&up, &rid, &ORDER_SERVICES).await;
    let detail = verify::check_order_trace(&answer).unwrap_or_else(|e| panic!("{e}: {answer:#}"));
    println!("{detail}");
    let spans = spans_of(&answer["data"][0]);
    let root = spans.iter().find(|s| s.parent.is_none()).expect("root");
    assert_eq!(root.service, GATEWAY);
    assert_eq!(
        root.name, "frontend.default.svc.cluster.local:8080/*",
        "the route's decorator"
    );
    for (k, v) in [
        ("span.kind", "client"),
        ("http.method", "POST"),
        ("http.status_code", "201"),
        ("response_flags", "-"),
        ("component", "proxy"),
        ("upstream_cluster", "outbound|8080||frontend.default.svc.cluster.local"),
        ("istio.canonical_service", "public-api-gateway-istio"),
        ("istio.namespace", "gateway"),
    ] {
        assert_eq!(
            root.tags.get(k).map(String::as_str),
            Some(v),
            "{k} on the gateway span: {root:#?}"
        );
    }
    assert_eq!(root.tags["guid:x-request-id"], rid);
    assert!(root.tags["http.url"].ends_with("/api/orders"), "{root:#?}");
    assert!(root.tags["node_id"].starts_with("router~"), "{root:#?}");
    let inbound = spans
        .iter()
        .find(|s| s.parent.as_deref() == Some(&root.id))
        .expect("the frontend's inbound span under the gateway's");
    assert_eq!(inbound.service, "frontend.default");
    assert_eq!(inbound.tags["span.kind"], "server");
    assert_eq!(inbound.tags["upstream_cluster"], "inbound|8080||");
    assert_eq!(inbound.tags["istio.canonical_revision"], "v1");
    let app = spans
        .iter()
        .find(|s| s.parent.as_deref() == Some(&inbound.id))
        .expect("the frontend app's span under its sidecar's");
    assert_eq!(
        (app.service.as_str(), app.name.as_str()),
        ("frontend", "POST /api/orders")
    );
    assert_eq!(app.process_tags["k8s.pod.name"], inbound.process_tags["k8s.pod.name"]);
    for (proxy, kind) in [("order-service.default", "client"), ("payment.default", "server")] {
        assert!(
            spans.iter().any(|s| s.service == proxy && s.tags["span.kind"] == kind),
            "a {kind} span of {proxy}"
        );
    }

    // A premium call's trace shows product v2, in the proxy's and the app's spans.
    let mut client = ProductServiceClient::new(channel(&up).await);
    let (version, pod, rid) = get_product(&mut client, &[("user-type", "premium")])
        .await
        .expect("premium");
    assert_eq!(version, "v2");
    let answer = jaeger_trace(&up, &rid, &[GATEWAY, "product-service.default", "product"]).await;
    let spans = spans_of(&answer["data"][0]);
    let sidecar = spans
        .iter()
        .find(|s| s.service == "product-service.default")
        .expect("inbound");
    assert_eq!(sidecar.tags["istio.canonical_revision"], "v2");
    assert_eq!(sidecar.process_tags["k8s.pod.name"], pod);
    let app = spans.iter().find(|s| s.service == "product").expect("app span");
    assert_eq!(app.process_tags["service.version"], "v2");
    assert_eq!(app.parent.as_deref(), Some(sidecar.id.as_str()));
    assert_eq!(
        spans.iter().find(|s| s.service == GATEWAY).expect("gateway span").name,
        "product-service-v2.default.svc.cluster.local:50051/*",
        "the premium route has one backend"
    );

    // The 80/20 split at the gateway, in the graph's JSON.
    for _ in 0..300 {
        get_product(&mut client, &[]).await.expect("GetProduct");
    }
    let (mut v1, mut v2) = (0u64, 0u64);
    for _ in 0..40 {
        let g = console(&up, "/api/graph?window=2m").await;
        let edge = |target: &str| {
            g["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["source"] == "public-api-gateway-istio" && e["target"] == target)
                .and_then(|e| e["requests"].as_u64())
                .unwrap_or(0)
        };
        (v1, v2) = (edge("product-service v1"), edge("product-service v2"));
        if v1 + v2 >= 301 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v2_share = v2 as f64 / (v1 + v2) as f64;
    println!(
        "graph: gateway → product v1 {v1}, v2 {v2} ({:.1}% v2)",
        v2_share * 100.0
    );
    // 300 unary calls at 20 % plus the premium one; 4σ ≈ 9 points.
    assert!(v1 + v2 >= 301, "the graph counted {v1} + {v2} of 301 calls");
    assert!((v2_share - 0.2).abs() < 0.1, "v2 share {v2_share}");

    // `localmesh stat` over the same window: the versions' requests and their success.
    let stat = cli(&up, &["stat", "--json", "-t", "2m"]).await;
    let stat: Value = serde_json::from_str(&stat).unwrap_or_else(|e| panic!("stat --json: {e}: {stat}"));
    let row = |w: &str| {
        stat["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["workload"] == w)
            .cloned()
            .unwrap_or_else(|| panic!("no {w} row in {stat:#}"))
    };
    let (r1, r2) = (row("product-v1"), row("product-v2"));
    let (n1, n2) = (
        r1["requests"].as_u64().unwrap_or(0),
        r2["requests"].as_u64().unwrap_or(0),
    );
    assert!(n1 + n2 >= 301, "stat counted {n1} + {n2}: {stat:#}");
    assert!(((n2 as f64 / (n1 + n2) as f64) - 0.2).abs() < 0.1, "{stat:#}");
    for r in [&r1, &r2] {
        assert_eq!(r["success_rate"], 1.0, "{r}");
        assert!(r["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{r}");
    }
    assert_eq!(
        (r1["version"].as_str(), r1["pods"].as_u64(), r1["ready"].as_u64()),
        (Some("v1"), Some(2), Some(2))
    );

    // `localmesh tap` sees the calls as they pass, filtered by header; `top` counts them by path.
    let tap = tokio::spawn(cli_owned(
        &up,
        &["tap", "--json", "--max", "3", "--header", "user-type:premium"],
    ));
    let top = tokio::spawn(cli_owned(&up, &["top", "--json", "--duration", "4s"]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..30 {
        let premium = if i % 5 == 0 { "premium" } else { "regular" };
        get_product(&mut client, &[("user-type", premium)])
            .await
            .expect("GetProduct");
    }
    let tapped = tap.await.expect("tap");
    let events: Vec<Value> = tapped
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 3, "{tapped}");
    for e in &events {
        assert_eq!(e["path"], "/product.ProductService/GetProduct", "{e}");
        assert_eq!(
            (e["proxy"].as_str(), e["upstream_version"].as_str()),
            (Some("gateway"), Some("v2")),
            "{e}"
        );
        assert!(
            e["upstream_pod"].as_str().is_some_and(|p| p.starts_with("product-v2-")),
            "{e}"
        );
        assert_eq!(
            (e["status"].as_u64(), e["grpc_status"].as_str()),
            (Some(200), Some("0")),
            "{e}"
        );
        assert_eq!(e["trace_id"].as_str().map(str::len), Some(32), "{e}");
    }
    let top = top.await.expect("top");
    let rows: Value = serde_json::from_str(&top).unwrap_or_else(|e| panic!("top --json: {e}: {top}"));
    // One row per destination Service: product-service-v1 and -v2 at the gateway.
    let gets: Vec<&Value> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["path"] == "/product.ProductService/GetProduct" && r["source"] == "public-api-gateway-istio")
        .collect();
    let counted: u64 = gets.iter().filter_map(|r| r["count"].as_u64()).sum();
    assert_eq!(counted, 30, "the 30 calls made while top ran: {rows:#}");
    assert!(gets.iter().any(|r| {
        r["destination"]
            .as_str()
            .is_some_and(|d| d.starts_with("product-service-v2"))
    }));

    // A bad parameter is answered with the parameter's name and the reason.
    for (port, path, field) in [
        (up.admin, "/tap?max=0", "'max'"),
        (up.admin, "/api/stat?window=soon", "'window'"),
        (up.console, "/api/graph?window=-1s", "'window'"),
        (up.console, "/api/traces?service=x&minDuration=fast", "minDuration"),
    ] {
        let body = common::admin_get(port, path).await;
        assert!(body.contains(field), "{path}: {body}");
    }

    // Prometheus HTTP SD: every pod's /metrics and the admin port, labelled as in the cluster.
    let sd: Value = serde_json::from_str(&common::admin_get(up.admin, "/sd").await).expect("SD JSON");
    let groups = sd.as_array().expect("a list of target groups");
    assert_eq!(groups.len(), 8, "7 pods and the admin port: {sd:#}");
    for g in groups {
        let labels = g["labels"].as_object().expect("labels");
        for l in ["app", "namespace", "pod"] {
            assert!(
                labels.get(l).and_then(Value::as_str).is_some_and(|v| !v.is_empty()),
                "{l} in {g}"
            );
        }
        assert_eq!(g["targets"].as_array().map(Vec::len), Some(1), "{g}");
    }
    assert!(
        groups
            .iter()
            .any(|g| g["labels"]["__metrics_path__"] == "/stats/prometheus")
    );
    assert!(
        groups
            .iter()
            .any(|g| g["labels"]["app"] == "product-service" && g["labels"]["version"] == "v2")
    );
    prometheus_scrapes_the_local_run(&up).await;

    // The console's pages in a real browser.
    let shots = testkit::browser::screenshot_dir("console-screenshots");
    let base = format!("http://127.0.0.1:{}", up.console);
    let list = testkit::browser::dom(&format!("{base}/traces?service=payment")).await;
    assert!(
        list.contains(GATEWAY) && list.contains("POST /api/orders"),
        "{}",
        short(&list)
    );
    testkit::browser::screenshot(&format!("{base}/traces"), &shots, "traces.png", 40_000).await;
    let tid = answer["data"][0]["traceID"].as_str().expect("traceID");
    let waterfall = testkit::browser::dom(&format!("{base}/traces/{tid}")).await;
    assert!(
        waterfall.contains("product-service.default") && waterfall.contains(&pod),
        "{}",
        short(&waterfall)
    );
    testkit::browser::screenshot(&format!("{base}/traces/{tid}"), &shots, "trace.png", 30_000).await;
    let graph = testkit::browser::dom(&format!("{base}/graph")).await;
    assert!(
        graph.contains("<svg") && graph.contains("product-service") && graph.contains("v2"),
        "{}",
        short(&graph)
    );
    testkit::browser::screenshot(&format!("{base}/graph"), &shots, "graph.png", 30_000).await;

    // Probes (the pods' readiness probes, the frontend's checks of its backends) made no trace:
    // every trace starts at the gateway, and no operation is a health check.
    let services = console(&up, "/api/services").await;
    for service in services["data"].as_array().expect("services") {
        let s = service.as_str().expect("name");
        let traces = console(&up, &format!("/api/traces?service={s}&limit=1000")).await;
        for t in traces["data"].as_array().expect("data") {
            let spans = spans_of(t);
            let root = spans.iter().find(|x| x.parent.is_none()).expect("a root");
            assert_eq!(root.service, GATEWAY, "a trace not started by a request: {spans:#?}");
            assert!(
                !spans
                    .iter()
                    .any(|x| x.name.contains("Health") || x.name.contains("healthz")),
                "a health check was traced: {spans:#?}"
            );
        }
    }
}

/// Runs `localmesh <args> --admin <up's admin port>` and returns its stdout; it must exit 0.
async fn cli(up: &Up, args: &[&str]) -> String {
    cli_owned(up, args).await
}

fn cli_owned(up: &Up, args: &[&str]) -> impl Future<Output = String> + Send + 'static {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_localmesh"));
    cmd.args(args).args(["--admin", &format!("127.0.0.1:{}", up.admin)]);
    async move {
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("localmesh runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{:?}: {}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// The page's text after its style sheet, cut to what a failure message can show.
fn short(page: &str) -> String {
    let body = page.split("</style>").last().unwrap_or(page);
    body.chars().take(3000).collect()
}

/// Debian's Prometheus, scraping what `/sd` lists, finds every target up and the gateway's
/// requests in `istio_requests_total`.
async fn prometheus_scrapes_the_local_run(up: &Up) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: localmesh\n  http_sd_configs:\n  - url: http://127.0.0.1:{}/sd\n    refresh_interval: 1s\n",
            up.admin
        ),
    )
    .expect("config");
    let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("prometheus is not installed: `make tools` installs it");
    let _prom = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let query =
        "sum(istio_requests_total%7Breporter%3D%22source%22%2Csource_workload%3D%22public-api-gateway-istio%22%7D)";
    let mut last = String::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(targets) = tokio::time::timeout(Duration::from_secs(2), common::try_get(port, "/api/v1/targets")).await
        else {
            continue;
        };
        let Some(targets) = targets.and_then(|t| serde_json::from_str::<Value>(&t).ok()) else {
            continue;
        };
        let active = targets["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let up_count = active.iter().filter(|t| t["health"] == "up").count();
        last = format!("{up_count} of {} targets up", active.len());
        if active.len() != 8 || up_count != 8 {
            continue;
        }
        let Some(v) = common::try_get(port, &format!("/api/v1/query?query={query}")).await else {
            continue;
        };
        let v: Value = serde_json::from_str(&v).unwrap_or_default();
        let n: f64 = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        if n > 300.0 {
            println!("prometheus: 8 targets up, {n} gateway requests");
            return;
        }
        last = format!("8 targets up, gateway requests {n}");
    }
    panic!("Prometheus did not scrape the local run: {last}");
}

#[derive(Debug, Clone)]
struct OSpan {
    trace: String,
    id: String,
    parent: String,
    service: String,
    attrs: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every span the collector accepted, flattened.
fn exported_spans(collector: &Collector) -> Vec<OSpan> {
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let mut out = Vec::new();
    for req in &collector.requests() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                out.push(OSpan {
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    service: service.clone(),
                    attrs: s.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_a_retry_shows_each_attempt() {
    let collector = Collector::start().await;
    // A copy of the manifests where half of product v1's calls fail with UNAVAILABLE (product-vs
    // retries those for east-west callers), sampled at 100 % by its own Telemetry resource.
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(
        copy.path(),
        &[
            (
                "manifests/base/product.yaml",
                r#"{name: FAULT_ABORT_PERCENT, value: "0"}"#,
                r#"{name: FAULT_ABORT_PERCENT, value: "50"}"#,
            ),
            (
                "manifests/istio/telemetry.yaml",
                "randomSamplingPercentage: 100.0",
                "randomSamplingPercentage: 100.0",
            ),
        ],
    );
    let data = tempfile::tempdir().expect("tempdir");
    let endpoint = collector.endpoint();
    let up = Up::start_with(data.path(), &root, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);

    let rid = place_order_despite_faults(&up, "otlp").await;
    let mut order = Vec::new();
    for _ in 0..80 {
        let all = exported_spans(&collector);
        let trace = all
            .iter()
            .find(|s| s.attrs.get("guid:x-request-id") == Some(&rid) && s.service == GATEWAY)
            .map(|s| s.trace.clone());
        order = all.into_iter().filter(|s| Some(&s.trace) == trace.as_ref()).collect();
        if ORDER_SERVICES.iter().all(|svc| order.iter().any(|s| s.service == *svc)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let services: Vec<&str> = order.iter().map(|s| s.service.as_str()).collect();
    for svc in ORDER_SERVICES {
        assert!(services.contains(&svc), "{svc} exported its span: {services:?}");
    }
    let roots: Vec<&OSpan> = order.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {order:#?}");
    assert_eq!(roots[0].service, GATEWAY);
    for s in &order {
        assert!(
            s.parent.is_empty() || order.iter().any(|p| p.id == s.parent),
            "the parent of {s:?} is in the trace"
        );
    }
    // The console keeps no traces when they are exported, and says where they went.
    let page = common::admin_get(up.console, "/traces").await;
    assert!(page.contains(&endpoint), "{page}");

    // A retried call: the gateway retries nothing, product-vs retries UNAVAILABLE; one inbound
    // span per attempt under the calling sidecar's span (the frontend's), the first failing.
    for _ in 0..30 {
        let _ = verify::https(&gateway(&up), "GET", "/api/products/123", &[], "").await;
    }
    let mut found = None;
    for _ in 0..40 {
        let all = exported_spans(&collector);
        found = all.iter().find_map(|hop| {
            let attempts: Vec<&OSpan> = all
                .iter()
                .filter(|s| s.parent == hop.id && s.service == "product-service.default")
                .collect();
            let failed = attempts
                .iter()
                .filter(|a| a.attrs.get("grpc.status_code").map(String::as_str) == Some("14"))
                .count();
            (attempts.len() >= 2 && failed >= 1 && hop.service != GATEWAY)
                .then(|| (attempts.len(), failed, hop.trace.clone()))
        });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (attempts, failed, trace) = found.expect("a GetProduct retried after UNAVAILABLE shows its attempts");
    println!("trace {trace}: {attempts} attempts, {failed} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_telemetry_resource() {
    let copy = tempfile::tempdir().expect("tempdir");
    // Sampled at 0 %, and half of product v1's calls fail with UNAVAILABLE (product-vs retries
    // those for the frontend) so that a followed trace shows its attempts through the console's API.
    let root = common::repo_copy(
        copy.path(),
        &[
            (
                "manifests/istio/telemetry.yaml",
                "randomSamplingPercentage: 100.0",
                "randomSamplingPercentage: 0.0",
            ),
            (
                "manifests/base/product.yaml",
                r#"{name: FAULT_ABORT_PERCENT, value: "0"}"#,
                r#"{name: FAULT_ABORT_PERCENT, value: "50"}"#,
            ),
        ],
    );
    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start_with(data.path(), &root, &[]);
    place_order_despite_faults(&up, "sampling-0").await;
    let mut client = ProductServiceClient::new(channel(&up).await);
    for _ in 0..20 {
        // Some fail (the gateway retries nothing): the point is only that none is traced.
        let _ = get_product(&mut client, &[]).await;
    }
    // The pods batch their spans for up to a second: give them three.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let services = console(&up, "/api/services").await;
    assert_eq!(
        services["data"],
        serde_json::json!([]),
        "nothing sampled at 0 %: {services}"
    );

    // A caller that sampled its trace is followed all the same (the sampled flag travels), and
    // a retried call shows, through the console's Jaeger API, one inbound span per attempt under
    // the calling sidecar's span (the frontend's: product-vs retries), a failed one among them.
    let parent = "b7ad6b7169203331";
    let mut followed = 0;
    let mut found = None;
    for n in 0..60u32 {
        let trace = format!(
            "{:032x}",
            0x0af7_6519_16cd_43dd_8448_eb21_0000_0000_u128 + u128::from(n)
        );
        let traceparent = format!("00-{trace}-{parent}-01");
        let answer = verify::https(
            &gateway(&up),
            "GET",
            "/api/products/123",
            &[("traceparent", traceparent.as_str())],
            "",
        )
        .await
        .expect("GET /api/products/123 through the gateway");
        if answer.status != 200 {
            continue;
        }
        let mut spans = Vec::new();
        for _ in 0..20 {
            let t = console(&up, &format!("/api/traces/{trace}")).await;
            if !t["data"].is_null() {
                spans = spans_of(&t["data"][0]);
                if spans.iter().any(|s| s.service == "product") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let gw = spans.iter().find(|s| s.service == GATEWAY).expect("the gateway's span");
        assert_eq!(gw.parent.as_deref(), Some(parent), "continues the caller's span");
        assert!(spans.iter().any(|s| s.service == "product"), "{spans:#?}");
        followed += 1;
        let retried = spans.iter().filter(|h| h.service != GATEWAY).find_map(|hop| {
            let attempts: Vec<&JSpan> = spans
                .iter()
                .filter(|s| s.parent.as_ref() == Some(&hop.id) && s.service == "product-service.default")
                .collect();
            let failed = attempts
                .iter()
                .filter(|a| a.tags.get("grpc.status_code").map(String::as_str) == Some("14"))
                .count();
            (attempts.len() >= 2 && failed >= 1).then_some((attempts.len(), failed))
        });
        if let Some((attempts, failed)) = retried {
            found = Some((trace, attempts, failed));
            break;
        }
    }
    println!("{followed} followed traces");
    let (trace, attempts, failed) = found.expect("a GetProduct retried after UNAVAILABLE shows its attempts");
    println!("trace {trace}: {attempts} attempts, {failed} failed");
}
