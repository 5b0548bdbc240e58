//! What Envoy exports, with Istio's metric and label names, so the same PromQL (and Kiali's and
//! Grafana's queries) works locally: `reporter="source"` from the proxy a request entered (the
//! gateway or the caller's sidecar), `reporter="destination"` from the destination pod's sidecar,
//! once per attempt that reached it.

use std::sync::Arc;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::identity::Identity;
use crate::model::Key;

/// Istio's standard labels (`istio_requests_total`, `istio_request_duration_milliseconds`), in the
/// order [`Labels::values`] returns them.
pub const LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// The cluster id Istio reports without multi-cluster configuration.
const CLUSTER: &str = "Kubernetes";
const UNKNOWN: &str = "unknown";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

/// A Service a request was routed to, with its FQDN computed once.
#[derive(Debug, Clone)]
pub struct ServiceName {
    pub key: Key,
    pub fqdn: String,
}

impl From<&Key> for ServiceName {
    fn from(k: &Key) -> Self {
        ServiceName {
            key: k.clone(),
            fqdn: k.fqdn(),
        }
    }
}

/// One request's (or attempt's) labels.
#[derive(Debug, Clone)]
pub struct Labels {
    pub reporter: Reporter,
    pub source: Arc<Identity>,
    /// The pod that answered; `None` for local replies before any.
    pub destination: Option<Arc<Identity>>,
    pub service: Option<Arc<ServiceName>>,
    pub grpc: bool,
    pub response_code: u16,
    /// The gRPC status; `-` in the metric when the response carries none.
    pub grpc_response_status: Option<String>,
    pub response_flags: String,
}

impl Labels {
    fn values<'a>(&'a self, code: &'a str) -> [&'a str; 25] {
        let s = &self.source;
        let d = self.destination.as_deref();
        let dst = |f: fn(&Identity) -> &str| d.map_or(UNKNOWN, f);
        let svc = self.service.as_deref();
        let (reporter, security) = match self.reporter {
            Reporter::Source => ("source", UNKNOWN),
            // No mTLS between local hops (PeerAuthentication is not emulated).
            Reporter::Destination => ("destination", "none"),
        };
        [
            reporter,
            &s.workload,
            &s.namespace,
            UNKNOWN,
            &s.app,
            &s.version,
            CLUSTER,
            &s.canonical_service,
            &s.canonical_revision,
            dst(|i| &i.workload),
            dst(|i| &i.namespace),
            UNKNOWN,
            dst(|i| &i.app),
            dst(|i| &i.version),
            if d.is_some() { CLUSTER } else { UNKNOWN },
            dst(|i| &i.canonical_service),
            dst(|i| &i.canonical_revision),
            svc.map_or(UNKNOWN, |x| &x.fqdn),
            svc.map_or(UNKNOWN, |x| &x.key.name),
            svc.map_or(UNKNOWN, |x| &x.key.namespace),
            if self.grpc { "grpc" } else { "http" },
            code,
            // A gRPC stream cut short has no status: Envoy reports it as UNKNOWN (2).
            match (&self.grpc_response_status, self.grpc) {
                (Some(g), _) => g,
                (None, true) => "2",
                (None, false) => "-",
            },
            &self.response_flags,
            security,
        ]
    }
}

/// `istio_requests_total` and `istio_request_duration_milliseconds`.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl ProxyMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("istio_requests_total", "Requests, as Istio counts them"),
            LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds",
            )
            .buckets(BUCKETS.to_vec()),
            LABELS,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(ProxyMetrics { requests, duration })
    }

    pub fn record(&self, labels: &Labels, duration_ms: f64) {
        let code = labels.response_code.to_string();
        let values = labels.values(&code);
        self.requests.with_label_values(&values).inc();
        self.duration.with_label_values(&values).observe(duration_ms);
    }
}
