//! Assembles the gRPC server (ProductService, health, reflection v1 and
//! v1alpha, behind the telemetry layer) and runs it through a graceful stop.

use std::{future::Future, sync::Arc};

use proto::product::product_service_server::ProductServiceServer;
use service_runtime::{Listeners, lifecycle, serve};
use telemetry::{GrpcMetrics, grpc::GrpcServerLayer};
use tokio_util::sync::CancellationToken;

use crate::{catalog::Catalog, config::Config, service::ProductApi};

pub const SERVICE_NAME: &str = "product.ProductService";

/// Methods that stream, for the open-streams gauge.
const STREAMING_METHODS: &[&str] = &[
    "/product.ProductService/WatchPrices",
    "/product.ProductService/AgentSync",
];

pub fn load_catalog(cfg: &Config) -> anyhow::Result<Catalog> {
    Ok(match &cfg.catalog_path {
        Some(path) => Catalog::load(path)?,
        None => Catalog::embedded(),
    })
}

/// Serves until `stop` resolves, then: health NOT_SERVING, no new calls,
/// in-flight calls finish, open streams end with UNAVAILABLE, all within
/// `shutdown_grace`.
pub async fn run(
    cfg: Config,
    catalog: Catalog,
    metrics: GrpcMetrics,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let draining = CancellationToken::new();
    let api = ProductApi::new(Arc::new(catalog), &cfg.identity, cfg.faults);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProductServiceServer<ProductApi>>().await;
    let (reflection_v1, reflection_v1alpha) = lifecycle::reflection(&[proto::FILE_DESCRIPTOR_SET])?;

    let layer = GrpcServerLayer::new(&cfg.identity, metrics.clone(), draining.clone()).with_streaming_methods(
        STREAMING_METHODS
            .iter()
            .chain(lifecycle::COMMON_STREAMING_METHODS)
            .copied(),
    );

    let grpc_addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let metrics_task = tokio::spawn(telemetry::metrics::serve(
        metrics.registry.clone(),
        listeners.metrics,
        draining.clone().cancelled_owned(),
    ));

    let stopping = draining.clone();
    let server = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            ProductServiceServer::new(api).max_decoding_message_size(telemetry::grpc::DEFAULT_MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(serve::grpc_incoming(listeners.main), stopping.cancelled_owned());
    tracing::info!(
        grpc = %grpc_addr,
        metrics = %metrics_addr,
        version = %cfg.identity.version,
        faults = cfg.faults.is_active(),
        "product service listening"
    );
    let not_serving = serve::grpc_not_serving(&health, &[SERVICE_NAME]);
    serve::serve_until_stopped(server, stop, &draining, cfg.shutdown_grace, not_serving).await?;
    let _ = metrics_task.await;
    Ok(())
}

/// A server running in this process, for tests and tools.
pub type Handle = service_runtime::ServerHandle;

/// Binds the configured ports (0 = ephemeral) and serves in the background.
pub async fn spawn(cfg: Config, metrics: GrpcMetrics) -> anyhow::Result<Handle> {
    let catalog = load_catalog(&cfg)?;
    let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    Ok(Handle::spawn(addr, metrics_addr, |stop| {
        run(cfg, catalog, metrics, listeners, stop)
    }))
}
