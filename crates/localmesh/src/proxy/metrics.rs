//! What Envoy exports, with Istio's metric and label names, so the same PromQL works locally.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Istio's standard labels, in the order [`Labels::values`] returns them.
pub const LABELS: &[&str] = &[
    "reporter",
    "source_app",
    "source_workload",
    "destination_app",
    "destination_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
];

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// One request's labels.
#[derive(Debug, Clone)]
pub struct Labels {
    pub reporter: &'static str,
    pub source_app: String,
    pub source_workload: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    /// The Service's FQDN.
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    /// `grpc` or `http`.
    pub request_protocol: &'static str,
    pub response_code: u16,
    /// `-` when the response carries no gRPC status.
    pub grpc_response_status: String,
    pub response_flags: String,
}

impl Labels {
    fn values(&self) -> [String; 14] {
        [
            self.reporter.to_string(),
            self.source_app.clone(),
            self.source_workload.clone(),
            self.destination_app.clone(),
            self.destination_version.clone(),
            self.destination_workload.clone(),
            self.destination_workload_namespace.clone(),
            self.destination_service.clone(),
            self.destination_service_name.clone(),
            self.destination_service_namespace.clone(),
            self.request_protocol.to_string(),
            self.response_code.to_string(),
            self.grpc_response_status.clone(),
            self.response_flags.clone(),
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
        let values = labels.values();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        self.requests.with_label_values(&refs).inc();
        self.duration.with_label_values(&refs).observe(duration_ms);
    }
}
