//! Liveness, readiness, graceful shutdown, and the binary's configuration
//! errors and signal handling.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;
use tokio::process::Command;

#[tokio::test]
async fn healthz_is_200_even_with_every_backend_down() {
    let fe = start_frontend(frontend::Config::for_test(refused_addr().await, refused_addr().await)).await;
    let (status, body) = get_json(&format!("{}/healthz", fe.url())).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["pod"], "frontend-t");
}

#[tokio::test]
async fn readyz_is_503_naming_the_hop_that_is_down() {
    let product = start_product("v2", "product-v2-t").await;
    // order-service is not running.
    let fe = frontend_over(&product).await;
    let (status, body) = get_json(&format!("{}/readyz", fe.url())).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "order-service");
    assert_eq!(body["checks"]["product-service"], "SERVING");
    assert!(
        body["checks"]["order-service"]
            .as_str()
            .unwrap()
            .starts_with("UNAVAILABLE"),
        "{body}"
    );
    assert!(
        body["advice"].as_str().unwrap().contains("ORDER_SERVICE_ADDR"),
        "{body}"
    );

    // With product-service gone as well, it is named first.
    product.shutdown().await.unwrap();
    let (status, body) = get_json(&format!("{}/readyz", fe.url())).await;
    assert_eq!(status, 503);
    assert_error(&body, "product-service");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_refuses_connections() {
    let mut cfg = product::Config::for_test("v2", "product-v2-slow");
    cfg.faults.delay = Duration::from_millis(1500);
    let product = start_product_with(cfg).await;
    let mut fe = frontend_over(&product).await;
    let url = fe.url();

    let slow = tokio::spawn({
        let url = url.clone();
        async move { get_json(&format!("{url}/api/products/123")).await }
    });
    // Shut down once product-service has the call.
    eventually(async || {
        let text = metrics(product.metrics_addr).await;
        sample(&text, "grpc_server_started_total", &[("grpc_method", "GetProduct")]).filter(|n| *n >= 1.0)
    })
    .await;
    fe.begin_shutdown();

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completes: {body}");
    assert_eq!(body["id"], "123");
    tokio::time::timeout(Duration::from_secs(10), fe.shutdown())
        .await
        .expect("drains within the grace period")
        .unwrap();
    let refused = http().get(format!("{url}/healthz")).send().await;
    assert!(refused.is_err(), "new connections are refused after shutdown");
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontend"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("POD_NAME", "frontend-bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    for (var, value, why) in [
        ("BACKEND_TIMEOUT_MS", "soon", "expected a number"),
        ("PRODUCT_SERVICE_ADDR", "product-service:50051", "http://"),
        ("ORDER_SERVICE_ADDR", "https://order:443", "mTLS"),
        ("MESH_HISTORY", "0", "must be from 1"),
        ("MAX_BODY_BYTES", "2MiB", "expected a number from 1024 to 1073741824"),
        ("MAX_BODY_BYTES", "100", "must be from 1024"),
        ("LINGER_MAX_BYTES", "2000000000", "must be from 0 to 1073741824"),
        ("LINGER_TIMEOUT_MS", "5s", "expected a number from 0 to 600000"),
        ("PORT", "80000", "expected a number"),
        ("SHUTDOWN_GRACE_SECS", "-1", "expected a number"),
    ] {
        let out = binary().env(var, value).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var) && stderr.contains(why), "{var}={value}: {stderr}");
    }
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_and_exits_0() {
    let mut cfg = product::Config::for_test("v2", "product-v2-slow");
    cfg.faults.delay = Duration::from_millis(1500);
    let product = start_product_with(cfg).await;
    let port = testkit::free_port().unwrap().to_string();
    let metrics_port = testkit::free_port().unwrap().to_string();
    let mut child = binary()
        .env("PORT", &port)
        .env("METRICS_PORT", &metrics_port)
        .env("BIND_ADDR", "127.0.0.1")
        .env("PRODUCT_SERVICE_ADDR", product.url())
        .env("ORDER_SERVICE_ADDR", refused_addr().await)
        .env("SHUTDOWN_GRACE_SECS", "5")
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    eventually(async || {
        let res = http().get(format!("{url}/healthz")).send().await.ok()?;
        (res.status() == 200).then_some(())
    })
    .await;
    let (status, text) = get_text(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("http_server_requests_total"), "{text}");

    let slow = tokio::spawn({
        let url = url.clone();
        async move { get_json(&format!("{url}/api/products/7")).await }
    });
    eventually(async || {
        let text = metrics(product.metrics_addr).await;
        sample(&text, "grpc_server_started_total", &[("grpc_method", "GetProduct")]).filter(|n| *n >= 1.0)
    })
    .await;
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completes: {body}");
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(sent.elapsed() < Duration::from_secs(8));
}
