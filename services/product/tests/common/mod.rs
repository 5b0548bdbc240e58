//! Helpers shared by the product service's integration tests: in-process
//! servers on port 0 and real tonic clients.
#![allow(dead_code)]

use std::time::Duration;

use product::{Config, Handle};
use proto::product::product_service_client::ProductServiceClient;
use telemetry::GrpcMetrics;
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

// Each test binary uses its own subset of these.
#[allow(unused_imports)]
pub use testkit::{eventually, sample, scrape};

/// `GET /metrics` of an in-process server.
pub async fn metrics(h: &Handle) -> String {
    scrape(h.metrics_addr).await
}
