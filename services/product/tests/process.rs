//! The `product` binary as an operator runs it: JSON logs, config errors,
//! and a graceful stop on SIGTERM with a slow call and an open stream.

mod common;

use std::time::{Duration, Instant};

use proto::product::{AgentPing, GetProductRequest, product_service_client::ProductServiceClient};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdout, Command},
    sync::mpsc,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn product(envs: &[(&str, &str)]) -> Command {
    testkit::service_command(env!("CARGO_BIN_EXE_product"), envs)
}

/// Collects stdout lines in the background; returns the gRPC and metrics
/// addresses from the "listening" line, and the lines seen so far and later.
async fn listening(child: &mut Child) -> (String, String, mpsc::UnboundedReceiver<String>) {
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    let (ltx, lrx) = mpsc::unbounded_channel();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("startup log")
            .expect("stdout open");
        let _ = ltx.send(line.clone());
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "product service listening" {
            let grpc = v["grpc"].as_str().unwrap().to_owned();
            let metrics = v["metrics"].as_str().unwrap().to_owned();
            tokio::spawn(async move {
                while let Some(l) = rx.recv().await {
                    let _ = ltx.send(l);
                }
            });
            return (grpc, metrics, lrx);
        }
    }
}

#[tokio::test]
async fn sigterm_drains_a_slow_call_ends_streams_and_exits_0_within_the_grace_period() {
    let mut child = product(&[
        ("SERVICE_VERSION", "v1"),
        ("POD_NAME", "product-v1-7c9f8d6b5-x2k4q"),
        ("POD_NAMESPACE", "shop"),
        ("FAULT_DELAY_MS", "1500"),
        ("SHUTDOWN_GRACE_SECS", "5"),
    ])
    .spawn()
    .unwrap();
    let (addr, metrics_addr, mut logs) = listening(&mut child).await;
    let url = format!("http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let mut products = ProductServiceClient::new(channel.clone());
    let (ping_tx, ping_rx) = mpsc::channel(1);
    let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(ping_rx));
    req.metadata_mut()
        .insert("agent-version", MetadataValue::from_static("v1.1"));
    req.metadata_mut()
        .insert("agent-id", MetadataValue::from_static("agent-v1-1-a"));
    let mut pongs = products.agent_sync(req).await.unwrap().into_inner();
    ping_tx
        .send(AgentPing {
            seq: 1,
            message: "ping".into(),
            sent_at: None,
        })
        .await
        .unwrap();
    assert_eq!(pongs.next().await.unwrap().unwrap().seq, 1);

    let mut slow_client = products.clone();
    let slow = tokio::spawn(async move {
        let mut req = Request::new(GetProductRequest {
            product_id: "123".into(),
        });
        req.metadata_mut()
            .insert("x-request-id", MetadataValue::from_static("slow-call-1"));
        req.metadata_mut().insert(
            "traceparent",
            MetadataValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        slow_client.get_product(req).await
    });
    // The signal goes once the server has started the slow call.
    let started = r#"grpc_server_started_total{grpc_method="GetProduct""#;
    for i in 0.. {
        if common::scrape(metrics_addr.as_str())
            .await
            .lines()
            .any(|l| l.starts_with(started) && l.ends_with(" 1"))
        {
            break;
        }
        assert!(i < 100, "the slow call never reached the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = child.id().unwrap() as i32;
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::NotServing);
    let end = pongs.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("shutting down"));

    let done = slow.await.unwrap().expect("the in-flight call finishes");
    assert_eq!(done.get_ref().id, "123");

    // No new calls: a fresh connection is refused once the listener closes.
    let refused = async {
        for _ in 0..50 {
            let c = tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await;
            if c.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(refused.await, "new connections are refused during shutdown");

    let status = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(sent.elapsed() < Duration::from_secs(6));

    // Every line is JSON with the pod and version; the slow call's line
    // carries its request id and the caller's trace id.
    let mut lines = Vec::new();
    // The process has exited: read its stdout to the end (the channel closes at EOF).
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), logs.recv()).await {
        lines.push(serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")));
    }
    assert!(
        lines
            .iter()
            .all(|v| v["pod"] == "product-v1-7c9f8d6b5-x2k4q" && v["version"] == "v1")
    );
    let call = lines
        .iter()
        .find(|v| v["request_id"] == "slow-call-1" && v["grpc.code"] == "OK")
        .unwrap_or_else(|| panic!("no log line for the slow call in {lines:#?}"));
    assert_eq!(call["trace_id"], TRACE_ID);
    assert_eq!(call["span_id"].as_str().map(str::len), Some(16));
    assert!(lines.iter().any(|v| {
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("Stream opened from agent-id=agent-v1-1-a")
    }));
    assert!(lines.iter().any(|v| v["message"] == "shutdown complete"));
}

#[tokio::test]
async fn a_bad_setting_stops_startup_naming_the_variable() {
    for (var, value, words) in [
        ("FAULT_ABORT_PERCENT", "200", &["FAULT_ABORT_PERCENT", "0 to 100"][..]),
        ("FAULT_ABORT_CODE", "SLOW", &["FAULT_ABORT_CODE", "SLOW"][..]),
        ("PORT", "http", &["PORT", "number"][..]),
        ("SERVICE_VERSION", "1", &["SERVICE_VERSION"][..]),
        ("SHUTDOWN_GRACE_SECS", "-1", &["SHUTDOWN_GRACE_SECS"][..]),
    ] {
        let out = product(&[(var, value)]).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in words {
            assert!(err.contains(w), "{var}={value}: stderr {err:?} lacks {w:?}");
        }
    }
}

#[tokio::test]
async fn a_malformed_catalog_stops_startup_with_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("catalog-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("catalog.json");
    std::fs::write(
        &path,
        "{\n  \"currency\": \"USD\",\n  \"products\": [\n    {\"id\": \"1\", \"name\": \"A\", \"price\": \"-3\", \"stock\": 1}\n  ]\n}\n",
    )
    .unwrap();
    let out = product(&[("CATALOG_PATH", path.to_str().unwrap())])
        .output()
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("invalid catalog {}: line 4", path.display())),
        "{err}"
    );
    assert!(err.contains("products[0].price"), "{err}");

    let out = product(&[("CATALOG_PATH", "/nonexistent/catalog.json")])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read catalog /nonexistent/catalog.json"));
}

#[tokio::test]
async fn a_custom_catalog_is_served() {
    let dir = std::env::temp_dir().join(format!("catalog-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("catalog.json");
    std::fs::write(
        &path,
        r#"{"currency": "EUR", "products": [{"id": "sku-1", "name": "Kettle", "price": "12.5", "stock": 3}]}"#,
    )
    .unwrap();
    let mut child = product(&[("CATALOG_PATH", path.to_str().unwrap())]).spawn().unwrap();
    let (addr, _, _logs) = listening(&mut child).await;
    let mut c = ProductServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let p = c
        .get_product(GetProductRequest {
            product_id: "sku-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let price = p.price.unwrap();
    assert_eq!(
        (price.currency_code.as_str(), price.units, price.nanos),
        ("EUR", 12, 500_000_000)
    );
    std::fs::remove_dir_all(&dir).ok();
}
