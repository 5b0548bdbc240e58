//! Readiness probes as the kubelet runs them against a local pod: gRPC health, HTTP GET or a TCP
//! connect, with the probe's timeout and thresholds.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::PROBE_PERIOD;
use crate::model::{ProbeCheck, Readiness};

/// One probe, as the kubelet runs it: gRPC health `Check(service)` must answer SERVING, an HTTP
/// GET must answer 2xx or 3xx, both within `timeout`.
pub(super) async fn probe(addr: SocketAddr, check: &ProbeCheck, timeout: Duration) -> bool {
    let run = async {
        match check {
            ProbeCheck::Grpc(service) => {
                let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
                    return false;
                };
                let Ok(channel) = ep.connect_timeout(timeout).connect().await else {
                    return false;
                };
                let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                let req = tonic_health::pb::HealthCheckRequest {
                    service: service.clone(),
                };
                matches!(client.check(req).await, Ok(r)
                    if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
            }
            ProbeCheck::Http(path) => {
                let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
                let Ok(uri) = format!("http://{addr}{path}").parse::<http::Uri>() else {
                    return false;
                };
                matches!(client.get(uri).await, Ok(r) if r.status().is_success() || r.status().is_redirection())
            }
        }
    };
    tokio::time::timeout(timeout, run).await.unwrap_or(false)
}

/// Probes every [`PROBE_PERIOD`] until the pod first passes (quicker than the kubelet's period, so
/// a local start does not wait for it).
pub(super) async fn until_ready(addr: SocketAddr, check: &ProbeCheck) {
    while !probe(addr, check, Duration::from_secs(1)).await {
        tokio::time::sleep(PROBE_PERIOD).await;
    }
}

/// The kubelet's view of a ready pod's probes: thresholds of consecutive results.
#[derive(Debug, Default)]
pub(super) struct ProbeState {
    pub(super) failures: u32,
    successes: u32,
}

impl ProbeState {
    /// Records a result; `Some(ready)` when the pod's readiness changes.
    pub(super) fn record(&mut self, r: &Readiness, passed: bool, ready: bool) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.successes += 1;
            (!ready && self.successes >= r.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (ready && self.failures >= r.failure_threshold).then_some(false)
        }
    }
}
