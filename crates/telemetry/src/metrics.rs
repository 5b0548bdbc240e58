//! Prometheus metrics in the text format on `/metrics` (port `METRICS_PORT`).
//! Names follow go-grpc-prometheus, so existing Grafana panels apply.

use std::{future::Future, net::SocketAddr};

use axum::{Router, http::header, response::IntoResponse, routing::get};
pub use prometheus::Registry;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder};
use tokio::net::TcpListener;

/// Latency buckets in seconds, from 1 ms to 30 s: unary calls sit at the
/// low end, injected delays and timeouts at the high end.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub struct GrpcMetrics {
    pub registry: Registry,
    pub started: IntCounterVec,
    pub handled: IntCounterVec,
    pub handling_seconds: HistogramVec,
    pub open_streams: IntGaugeVec,
}

impl GrpcMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let started = IntCounterVec::new(
            Opts::new("grpc_server_started_total", "RPCs started on the server."),
            &["grpc_service", "grpc_method", "version"],
        )?;
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "RPCs completed on the server, by status code.",
            ),
            &["grpc_service", "grpc_method", "grpc_code", "version"],
        )?;
        let handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from the request to the last response frame.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["grpc_service", "grpc_method", "grpc_code", "version"],
        )?;
        let open_streams = IntGaugeVec::new(
            Opts::new("grpc_server_open_streams", "Streaming RPCs open now."),
            &["grpc_service", "grpc_method", "version"],
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(handling_seconds.clone()))?;
        registry.register(Box::new(open_streams.clone()))?;
        Ok(Self {
            registry: registry.clone(),
            started,
            handled,
            handling_seconds,
            open_streams,
        })
    }
}

/// The registry's content in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec fails only on invalid metric families, which the
    // typed constructors above rule out.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    registry: Registry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let body = render(&registry);
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    body,
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Binds the metrics port, naming the variable when that fails.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind METRICS_PORT on {addr}: {e}"))
}
