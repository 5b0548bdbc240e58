//! Helpers shared by the product service's integration tests: in-process
//! servers on port 0 and real tonic clients.
#![allow(dead_code)]

use std::time::Duration;

use product::{Config, Handle};
use proto::product::product_service_client::ProductServiceClient;
use telemetry::GrpcMetrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub async fn start(version: &str, pod: &str) -> Handle {
    start_with(Config::for_test(version, pod)).await
}

pub async fn start_with(cfg: Config) -> Handle {
    let metrics = GrpcMetrics::new(&prometheus_registry()).expect("metrics");
    product::spawn(cfg, metrics).await.expect("server starts")
}

fn prometheus_registry() -> telemetry::metrics::Registry {
    telemetry::metrics::Registry::new()
}

pub async fn channel(h: &Handle) -> Channel {
    tonic::transport::Endpoint::from_shared(h.url())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

pub async fn client(h: &Handle) -> ProductServiceClient<Channel> {
    ProductServiceClient::new(channel(h).await)
}

/// `GET /metrics` of an in-process server.
pub async fn metrics(h: &Handle) -> String {
    scrape(h.metrics_addr).await
}

/// `GET /metrics` over a plain TCP connection.
pub async fn scrape(addr: impl tokio::net::ToSocketAddrs) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "metrics answered: {out}");
    out
}

/// The value of the sample whose line starts with `name{` and holds every label pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it returns Some, for up to five seconds.
pub async fn eventually<T>(mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}
