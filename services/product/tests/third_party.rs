//! The product service as third-party clients see it: `buf curl` (a Go gRPC
//! client using server reflection v1) and Python grpcio with reflection
//! v1alpha and no generated code (`tests/clients/reflect_client.py`), each run
//! as a child process against an in-process server.
//!
//! The clients come from `make tools` (a venv at `<workspace>/.venv`, or at
//! `$SUITE_VENV`). Without them these tests fail, saying so; they never skip.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::{io::AsyncReadExt, process::Command};

const VERSION: &str = "v2";
const POD: &str = "product-v2-test-0";
/// Longest any single client process may run before the test gives up on it.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// `buf curl` exits with the gRPC status code shifted left by three bits.
const fn buf_exit(grpc_code: i32) -> i32 {
    grpc_code << 3
}

// ---------------------------------------------------------------------------
// Locating and running the tools

fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn venv() -> PathBuf {
    match std::env::var_os("SUITE_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => workspace_root().join(".venv"),
    }
}

/// `<venv>/bin/<name>`, or a failure telling the reader how to get it.
fn tool_in(venv: &Path, name: &str) -> PathBuf {
    let path = venv.join("bin").join(name);
    assert!(
        path.is_file(),
        "third-party test client {} is missing: run `make tools` in the workspace root \
         (or point SUITE_VENV at a venv made from scripts/requirements-test.txt)",
        path.display()
    );
    path
}

fn tool(name: &str) -> PathBuf {
    tool_in(&venv(), name)
}

struct Run {
    /// The exit code; a death by signal fails the test.
    code: i32,
    stdout: String,
    stderr: String,
    what: String,
}

impl Run {
    /// Everything about the run, for assertion messages.
    fn show(&self) -> String {
        format!(
            "{}\nexit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    /// stdout as a sequence of JSON documents (buf prints one per message).
    fn json_docs(&self) -> Vec<Value> {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.show()))
    }

    /// stdout as exactly one JSON document.
    fn json(&self) -> Value {
        let mut docs = self.json_docs();
        assert_eq!(docs.len(), 1, "expected one JSON document:\n{}", self.show());
        docs.remove(0)
    }

    /// The `{"code": …, "message": …}` error buf prints on stderr.
    fn buf_error(&self) -> (String, String) {
        let start = self
            .stderr
            .find('{')
            .unwrap_or_else(|| panic!("no JSON error on stderr:\n{}", self.show()));
        let v: Value = serde_json::Deserializer::from_str(&self.stderr[start..])
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("stderr error is not JSON:\n{}", self.show()));
        (str_at(&v, "/code").to_owned(), str_at(&v, "/message").to_owned())
    }
}

fn describe(cmd: &Command) -> String {
    let c = cmd.as_std();
    let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("$ {} {}", c.get_program().to_string_lossy(), args.join(" "))
}

async fn run(mut cmd: Command) -> Run {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}\ndid not finish within {TOOL_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}\ncannot be started: {e}; run `make tools`"));
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    };
    assert!(
        out.status.code().is_some(),
        "killed by a signal ({}):\n{}",
        out.status,
        run.show()
    );
    run
}

/// `buf curl` speaking gRPC over h2c.
fn buf_curl() -> Command {
    let mut cmd = Command::new(tool("buf"));
    cmd.args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"]);
    cmd
}

fn method_url(h: &product::Handle, method: &str) -> String {
    format!("{}/product.ProductService/{method}", h.url())
}

// ---------------------------------------------------------------------------
// JSON helpers

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {}", serde_json::to_string_pretty(v).unwrap()))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string in {v}"))
}

/// An integer that may be a JSON number or, for 64-bit protobuf fields, a string.
fn int_at(v: &Value, pointer: &str) -> i64 {
    match at(v, pointer) {
        Value::Number(n) => n.as_i64().expect("integer"),
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{pointer} = {s:?} is not an integer")),
        other => panic!("{pointer} is not an integer: {other}"),
    }
}

/// The `served_by` block: this pod, this version. `name` is the JSON field
/// name, which differs between clients (`servedBy` or `served_by`).
fn assert_served_by_this_pod(v: &Value, name: &str) {
    let sb = at(v, &format!("/{name}"));
    assert_eq!(str_at(sb, "/service"), "product", "{sb}");
    assert_eq!(str_at(sb, "/version"), VERSION, "{sb}");
    assert_eq!(str_at(sb, "/pod"), POD, "{sb}");
    assert_eq!(str_at(sb, "/node"), "test-node", "{sb}");
    assert_eq!(str_at(sb, "/namespace"), "default", "{sb}");
}

// ---------------------------------------------------------------------------
// The server's own account, from /metrics

async fn handled(h: &product::Handle, service: &str, method: &str, code: &str) -> f64 {
    let text = common::metrics(h).await;
    common::sample(
        &text,
        "grpc_server_handled_total",
        &[("grpc_service", service), ("grpc_method", method), ("grpc_code", code)],
    )
    .unwrap_or(0.0)
}

/// Waits until the server has closed every WatchPrices stream and counted
/// at least one as cancelled by the client.
async fn assert_watch_streams_closed_by_client(h: &product::Handle) {
    common::eventually(async || {
        let text = common::metrics(h).await;
        let open = common::sample(
            &text,
            "grpc_server_open_streams",
            &[
                ("grpc_service", "product.ProductService"),
                ("grpc_method", "WatchPrices"),
            ],
        )?;
        let cancelled = common::sample(
            &text,
            "grpc_server_handled_total",
            &[("grpc_method", "WatchPrices"), ("grpc_code", "Canceled")],
        )?;
        (open == 0.0 && cancelled >= 1.0).then_some(())
    })
    .await;
}

// ===========================================================================
// buf curl

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_lists_services_over_reflection_v1_and_v1alpha() {
    let h = common::start(VERSION, POD).await;

    // Plain `--list-services`: buf picks reflection v1 first.
    let r = run({
        let mut c = buf_curl();
        c.args(["--list-services", &h.url()]);
        c
    })
    .await;
    assert_eq!(r.code, 0, "{}", r.show());
    let services: Vec<&str> = r.stdout.lines().map(str::trim).collect();
    for want in ["product.ProductService", "grpc.health.v1.Health"] {
        assert!(services.contains(&want), "{want} not listed:\n{}", r.show());
    }

    // Each reflection protocol on its own, so a fallback cannot hide a missing one.
    for (proto, reflection_service) in [
        ("grpc-v1", "grpc.reflection.v1.ServerReflection"),
        ("grpc-v1alpha", "grpc.reflection.v1alpha.ServerReflection"),
    ] {
        let r = run({
            let mut c = buf_curl();
            c.args(["--reflect-protocol", proto, "--list-methods", &h.url()]);
            c
        })
        .await;
        assert_eq!(r.code, 0, "{}", r.show());
        let methods: Vec<&str> = r.stdout.lines().map(str::trim).collect();
        for want in [
            "product.ProductService/GetProduct",
            "product.ProductService/ListProducts",
            "product.ProductService/WatchPrices",
            "product.ProductService/AgentSync",
            "grpc.health.v1.Health/Check",
            "grpc.health.v1.Health/Watch",
        ] {
            assert!(methods.contains(&want), "{proto}: {want} not listed:\n{}", r.show());
        }
        assert!(
            handled(&h, reflection_service, "ServerReflectionInfo", "OK").await >= 1.0,
            "{proto}: the server counted no {reflection_service} call"
        );
    }
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_get_product_123_shows_v2_pod_rating_and_headers() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args([
            "-v",
            "-H",
            "x-request-id: buf-req-0001",
            "-d",
            r#"{"product_id": "123"}"#,
        ]);
        c.arg(method_url(&h, "GetProduct"));
        c
    })
    .await;
    assert_eq!(r.code, 0, "{}", r.show());
    let p = r.json();
    assert_eq!(str_at(&p, "/id"), "123", "{}", r.show());
    assert!(!str_at(&p, "/name").is_empty());
    assert_served_by_this_pod(&p, "servedBy");
    let avg = at(&p, "/rating/average").as_f64().expect("rating.average is a number");
    assert!((0.0..=5.0).contains(&avg), "rating.average {avg}");
    assert!(int_at(&p, "/rating/count") > 0, "{}", r.show());
    assert_eq!(str_at(&p, "/price/currencyCode"), "USD");

    // -v logs the RPC's response headers as `buf: < (#N) Name: value`, after
    // the reflection stream's; request headers are `>` lines.
    let rpc_log: String = r
        .stderr
        .split_once("Invoking RPC product.ProductService.GetProduct")
        .unwrap_or_else(|| panic!("no RPC in the verbose log:\n{}", r.show()))
        .1
        .lines()
        .filter(|l| l.contains("< (#"))
        .map(|l| l.to_ascii_lowercase() + "\n")
        .collect();
    for header in [
        format!("x-served-by: {}", POD.to_ascii_lowercase()),
        "x-version: v2".into(),
        "x-request-id: buf-req-0001".into(),
    ] {
        assert!(
            rpc_log.contains(&header),
            "response header {header:?} not shown:\n{}",
            r.show()
        );
    }
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_list_products_seed_request_gives_first_page_of_21() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args([
            "-d",
            r#"{"page_size": 10, "page_number": 1}"#,
            &method_url(&h, "ListProducts"),
        ]);
        c
    })
    .await;
    assert_eq!(r.code, 0, "{}", r.show());
    let v = r.json();
    let products = at(&v, "/products").as_array().expect("products is an array");
    assert_eq!(products.len(), 10, "{}", r.show());
    let ids: Vec<&str> = products.iter().map(|p| str_at(p, "/id")).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    assert!(
        products.iter().all(|p| p.get("rating").is_some()),
        "v2 products carry ratings:\n{}",
        r.show()
    );
    assert_eq!(int_at(&v, "/totalCount"), 21, "{}", r.show());
    assert_eq!(int_at(&v, "/page/pageSize"), 10);
    assert_eq!(int_at(&v, "/page/pageNumber"), 1);
    assert_eq!(int_at(&v, "/page/totalPages"), 3);
    assert_eq!(at(&v, "/page/hasNextPage"), &Value::Bool(true));
    assert_served_by_this_pod(&v, "servedBy");
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_unknown_id_exits_40_not_found() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args(["-d", r#"{"product_id": "nope"}"#, &method_url(&h, "GetProduct")]);
        c
    })
    .await;
    assert_eq!(r.code, buf_exit(5), "NOT_FOUND is exit 40:\n{}", r.show());
    assert!(r.stdout.trim().is_empty(), "{}", r.show());
    let (code, message) = r.buf_error();
    assert_eq!(code, "not_found", "{}", r.show());
    assert!(
        message.contains("nope") && message.contains("product_id"),
        "{}",
        r.show()
    );
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_empty_id_exits_24_invalid_argument_naming_product_id() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args(["-d", r#"{"product_id": ""}"#, &method_url(&h, "GetProduct")]);
        c
    })
    .await;
    assert_eq!(r.code, buf_exit(3), "INVALID_ARGUMENT is exit 24:\n{}", r.show());
    let (code, message) = r.buf_error();
    assert_eq!(code, "invalid_argument", "{}", r.show());
    assert!(message.contains("product_id"), "{}", r.show());
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_health_check_is_serving() {
    let h = common::start(VERSION, POD).await;
    for body in [r#"{}"#, r#"{"service": "product.ProductService"}"#] {
        let r = run({
            let mut c = buf_curl();
            c.args(["-d", body, &format!("{}/grpc.health.v1.Health/Check", h.url())]);
            c
        })
        .await;
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(str_at(&r.json(), "/status"), "SERVING", "{}", r.show());
    }
    let r = run({
        let mut c = buf_curl();
        c.args([
            "-d",
            r#"{"service": "no.such.Service"}"#,
            &format!("{}/grpc.health.v1.Health/Check", h.url()),
        ]);
        c
    })
    .await;
    assert_eq!(r.code, buf_exit(5), "unknown service is NOT_FOUND:\n{}", r.show());
    h.shutdown().await.unwrap();
}

/// The price updates of a WatchPrices stream for product "1": consecutive
/// sequence numbers from 1, this pod, a USD price.
fn assert_price_updates(updates: &[Value], served_by: &str, product_id: &str, sequence: &str) {
    for (i, u) in updates.iter().enumerate() {
        assert_eq!(str_at(u, &format!("/{product_id}")), "1", "{u}");
        assert_eq!(int_at(u, &format!("/{sequence}")), i as i64 + 1, "{u}");
        assert!(int_at(u, "/price/units") > 0, "{u}");
        assert_served_by_this_pod(u, served_by);
    }
}

/// A user watches prices and presses Ctrl-C after three updates.
#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_watch_prices_streams_until_interrupted() {
    let h = common::start(VERSION, POD).await;
    let mut cmd = buf_curl();
    cmd.args([
        "-d",
        r#"{"product_ids": ["1"], "interval_ms": 50}"#,
        &method_url(&h, "WatchPrices"),
    ]);
    let what = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}\ncannot be started: {e}; run `make tools`"));
    let mut stdout = child.stdout.take().unwrap();

    // buf prints each message as it arrives: read until three are complete.
    let mut text = String::new();
    let updates = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stdout.read(&mut buf).await.expect("read buf's stdout");
            assert!(n > 0, "{what}\nended before three updates; stdout so far:\n{text}");
            text.push_str(std::str::from_utf8(&buf[..n]).expect("utf-8"));
            let done: Vec<Value> = serde_json::Deserializer::from_str(&text)
                .into_iter::<Value>()
                .map_while(Result::ok)
                .collect();
            if done.len() >= 3 {
                return done;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}\nno three updates within 20 s; stdout so far:\n{text}"));
    assert_price_updates(&updates[..3], "servedBy", "productId", "sequence");

    // Ctrl-C: buf cancels the call and reports CANCELLED (exit 1 << 3).
    let pid = child.id().expect("buf is running") as libc::pid_t;
    // SAFETY: plain kill(2) on the child we spawned and have not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("buf exits after SIGINT")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(buf_exit(1)), "{what}\n{stderr}");
    assert!(stderr.contains("canceled"), "{what}\n{stderr}");

    // The server noticed the client leaving and closed the stream.
    assert_watch_streams_closed_by_client(&h).await;
    h.shutdown().await.unwrap();
}

/// The same stream under a client deadline: buf prints what arrived, then
/// DEADLINE_EXCEEDED (exit 4 << 3).
#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_watch_prices_ends_at_client_deadline() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args(["--timeout", "3s", "-d", r#"{"product_ids": ["1"], "interval_ms": 50}"#]);
        c.arg(method_url(&h, "WatchPrices"));
        c
    })
    .await;
    assert_eq!(r.code, buf_exit(4), "{}", r.show());
    assert_eq!(r.buf_error().0, "deadline_exceeded", "{}", r.show());
    let updates = r.json_docs();
    assert!(
        updates.len() >= 3,
        "fewer than 3 updates in 3 s at 50 ms:\n{}",
        r.show()
    );
    assert_price_updates(&updates, "servedBy", "productId", "sequence");
    assert_watch_streams_closed_by_client(&h).await;
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_watch_prices_bad_interval_exits_24() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args([
            "-d",
            r#"{"product_ids": ["1"], "interval_ms": 5}"#,
            &method_url(&h, "WatchPrices"),
        ]);
        c
    })
    .await;
    assert_eq!(r.code, buf_exit(3), "{}", r.show());
    let (code, message) = r.buf_error();
    assert_eq!(code, "invalid_argument");
    assert!(message.contains("interval_ms"), "{}", r.show());
    h.shutdown().await.unwrap();
}

/// Bidi: buf sends every request document, half-closes, and prints the pongs.
#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_agent_sync_pongs_every_ping() {
    let h = common::start(VERSION, POD).await;
    let r = run({
        let mut c = buf_curl();
        c.args(["-H", "agent-id: buf-agent-7", "-H", "agent-version: v2"]);
        c.args([
            "-d",
            r#"{"seq": 1, "message": "a"} {"seq": 2, "message": "b"} {"seq": 3, "message": "c"}"#,
        ]);
        c.arg(method_url(&h, "AgentSync"));
        c
    })
    .await;
    assert_eq!(r.code, 0, "{}", r.show());
    let pongs = r.json_docs();
    assert_eq!(pongs.len(), 3, "{}", r.show());
    for (i, p) in pongs.iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(int_at(p, "/seq"), n, "{p}");
        assert_eq!(int_at(p, "/streamPongs"), n, "{p}");
        assert_eq!(str_at(p, "/message"), "pong");
        assert_eq!(str_at(p, "/agentId"), "buf-agent-7");
        assert_eq!(str_at(p, "/agentVersion"), "v2");
        assert_served_by_this_pod(p, "servedBy");
    }
    h.shutdown().await.unwrap();
}

// ===========================================================================
// Python grpcio, reflection v1alpha, no generated code

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_reflection_client_sees_the_service() {
    const REQUEST_ID: &str = "py-req-7f3a";
    let h = common::start(VERSION, POD).await;
    let script = workspace_root().join("tests/clients/reflect_client.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let r = run({
        let mut c = Command::new(tool("python"));
        c.arg(&script)
            .arg(h.addr.to_string())
            .args(["--request-id", REQUEST_ID]);
        c.env("PYTHONDONTWRITEBYTECODE", "1");
        c
    })
    .await;
    assert_ne!(
        r.code,
        2,
        "Python grpcio modules are missing: run `make tools`\n{}",
        r.show()
    );
    let v = r.json();
    let problems = at(&v, "/problems").as_array().unwrap();
    assert!(
        problems.is_empty() && r.code == 0,
        "the client saw problems:\n{}",
        r.show()
    );
    let ctx = || r.show();

    // Reflection v1alpha listed the services and the methods' shapes.
    let services: Vec<&str> = at(&v, "/reflection/services")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "product.ProductService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&want), "{want} not listed: {services:?}");
    }
    let m = at(&v, "/reflection/product_methods");
    for (method, client_streaming, server_streaming) in [
        ("GetProduct", false, false),
        ("ListProducts", false, false),
        ("WatchPrices", false, true),
        ("AgentSync", true, true),
    ] {
        assert_eq!(
            at(m, &format!("/{method}/client_streaming")),
            &Value::Bool(client_streaming),
            "{m}"
        );
        assert_eq!(
            at(m, &format!("/{method}/server_streaming")),
            &Value::Bool(server_streaming),
            "{m}"
        );
    }

    // GetProduct "123": the body and the initial metadata.
    let g = at(&v, "/get_product");
    assert_eq!(str_at(g, "/code"), "OK");
    assert_eq!(str_at(g, "/response/id"), "123");
    assert_served_by_this_pod(at(g, "/response"), "served_by");
    assert!(
        at(g, "/response/rating/average").as_f64().is_some(),
        "v2 shows a rating:\n{}",
        ctx()
    );
    assert!(int_at(g, "/response/rating/count") > 0);
    assert_eq!(str_at(g, "/initial_metadata/x-served-by"), POD, "{}", ctx());
    assert_eq!(str_at(g, "/initial_metadata/x-version"), VERSION, "{}", ctx());
    assert_eq!(
        str_at(g, "/initial_metadata/x-request-id"),
        REQUEST_ID,
        "echoed:\n{}",
        ctx()
    );

    // ListProducts, first page of 21.
    let l = at(&v, "/list_products/response");
    assert_eq!(at(l, "/products").as_array().unwrap().len(), 10);
    assert_eq!(int_at(l, "/total_count"), 21);
    assert_served_by_this_pod(l, "served_by");

    // Health, overall and per service.
    assert_eq!(str_at(&v, "/health/"), "SERVING", "{}", ctx());
    assert_eq!(str_at(&v, "/health/product.ProductService"), "SERVING", "{}", ctx());

    // WatchPrices: three updates, then the client's own cancel.
    let w = at(&v, "/watch_prices");
    let updates = at(w, "/messages").as_array().unwrap();
    assert_eq!(updates.len(), 3);
    assert_price_updates(updates, "served_by", "product_id", "sequence");
    assert_eq!(str_at(w, "/initial_metadata/x-served-by"), POD);
    assert!(
        !str_at(w, "/initial_metadata/x-request-id").is_empty(),
        "a request id is made up when none is sent"
    );
    assert_eq!(str_at(w, "/after_cancel/code"), "CANCELLED");

    // AgentSync: a pong per ping, named after the agent's metadata.
    let pongs = at(&v, "/agent_sync/pongs").as_array().unwrap();
    assert_eq!(pongs.len(), 3);
    for (i, p) in pongs.iter().enumerate() {
        assert_eq!(int_at(p, "/seq"), i as i64 + 1);
        assert_eq!(str_at(p, "/agent_id"), "reflect-client");
        assert_served_by_this_pod(p, "served_by");
    }

    // Bad input: the code and a message naming the field.
    for (case, code, text) in [
        ("empty_product_id", "INVALID_ARGUMENT", "product_id"),
        ("unknown_product_id", "NOT_FOUND", "\"nope\""),
        ("watch_bad_interval", "INVALID_ARGUMENT", "interval_ms"),
        ("watch_unknown_id", "NOT_FOUND", "product_ids[1]"),
    ] {
        let e = at(&v, &format!("/errors/{case}"));
        assert_eq!(str_at(e, "/code"), code, "{case}: {e}");
        assert!(str_at(e, "/details").contains(text), "{case}: {e}");
    }

    // The server's side: reflection went over v1alpha only, and the
    // cancelled watch was closed and counted.
    let v1alpha = "grpc.reflection.v1alpha.ServerReflection";
    assert!(handled(&h, v1alpha, "ServerReflectionInfo", "OK").await >= 1.0);
    assert_eq!(
        handled(&h, "grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", "OK").await,
        0.0
    );
    assert_watch_streams_closed_by_client(&h).await;
    h.shutdown().await.unwrap();
}

// ===========================================================================
// The tools themselves

#[test]
fn missing_tools_fail_with_a_make_tools_hint() {
    let nowhere = std::env::temp_dir().join("no-such-suite-venv-for-third-party-tests");
    let err = std::panic::catch_unwind(|| tool_in(&nowhere, "buf")).expect_err("a missing tool must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("make tools") && msg.contains("bin/buf"), "{msg}");
}
