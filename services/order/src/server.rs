//! Assembles the gRPC server (OrderService, health, reflection v1 and
//! v1alpha, behind the telemetry layer) and runs it through a graceful stop.

use std::{future::Future, sync::Arc};

use proto::order::order_service_server::OrderServiceServer;
use service_runtime::{Listeners, lifecycle, serve};
use telemetry::{GrpcMetrics, grpc::GrpcServerLayer};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Database},
    health::{self, DbState},
    payments::Payments,
    pricing::Pricing,
    service::OrderApi,
    settler::Settler,
    store::Store,
};

pub const SERVICE_NAME: &str = "order.OrderService";

/// The store, opened and migrated. SQLite problems stop startup (a bad
/// DATA_DIR does not fix itself); an unreachable PostgreSQL does not: the
/// service starts NOT_SERVING and migrates once the database answers.
pub async fn open_store(cfg: &Config) -> anyhow::Result<(Store, Arc<DbState>)> {
    let store = Store::open(&cfg.database).await?;
    let state = Arc::new(DbState::default());
    if let Err(e) = state.migrate(&store).await {
        match cfg.database {
            Database::Sqlite(_) => anyhow::bail!("order database {}: {e}", store.label()),
            Database::Postgres(_) => tracing::warn!(
                database = %store.label(),
                error = %e,
                "order database not ready; starting NOT_SERVING and retrying"
            ),
        }
    }
    Ok((store, state))
}

/// Serves until `stop` resolves, then: health NOT_SERVING, no new calls,
/// in-flight calls finish, all within `shutdown_grace`.
pub async fn run(
    cfg: Config,
    store: Store,
    db_state: Arc<DbState>,
    metrics: GrpcMetrics,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let draining = CancellationToken::new();
    let pricing = Pricing::new(&cfg.product_addr)?;
    let payments = Payments::new(&cfg.payment_url, cfg.payment_timeout)?;
    let api = OrderApi::new(
        store.clone(),
        db_state.clone(),
        pricing,
        payments.clone(),
        &cfg.identity,
        cfg.product_timeout,
        &metrics.registry,
    )?;
    let settler = Settler::new(
        store.clone(),
        db_state.clone(),
        payments,
        cfg.settle,
        &metrics.registry,
        api.payment_attempts(),
    )?;

    let (health, health_service) = tonic_health::server::health_reporter();
    let serving = db_state.is_migrated();
    health::set(&health, serving).await;
    let watcher_stop = CancellationToken::new();
    let watcher = tokio::spawn(health::watch(
        store.clone(),
        db_state,
        health.clone(),
        cfg.db_check_interval,
        serving,
        watcher_stop.clone(),
    ));
    let settler = tokio::spawn(settler.run(watcher_stop.clone()));
    // The watcher must be gone before shutdown reports NOT_SERVING, or a
    // check finishing late could report SERVING again. The settler stops
    // with it: an order it was settling stays PENDING for the next pass.
    let stop = async move {
        stop.await;
        watcher_stop.cancel();
        let _ = watcher.await;
        let _ = settler.await;
    };

    let (reflection_v1, reflection_v1alpha) = lifecycle::reflection(&[proto::FILE_DESCRIPTOR_SET])?;
    let layer = GrpcServerLayer::new(&cfg.identity, metrics.clone(), draining.clone())
        .with_streaming_methods(lifecycle::COMMON_STREAMING_METHODS.iter().copied());

    let grpc_addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let metrics_task = tokio::spawn(telemetry::metrics::serve(
        metrics.registry.clone(),
        listeners.metrics,
        draining.clone().cancelled_owned(),
    ));

    let server = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(OrderServiceServer::new(api).max_decoding_message_size(telemetry::grpc::DEFAULT_MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(serve::grpc_incoming(listeners.main), draining.clone().cancelled_owned());
    tracing::info!(
        grpc = %grpc_addr,
        metrics = %metrics_addr,
        version = %cfg.identity.version,
        database = %store.label(),
        product = %cfg.product_addr,
        payment = %cfg.payment_url,
        settle_interval_ms = cfg.settle.interval.as_millis() as u64,
        settle_after_ms = cfg.settle.after.as_millis() as u64,
        settle_batch = cfg.settle.batch,
        settle_lease_ms = cfg.settle.lease.as_millis() as u64,
        "order service listening"
    );
    let not_serving = serve::grpc_not_serving(&health, &[SERVICE_NAME]);
    let res = serve::serve_until_stopped(server, stop, &draining, cfg.shutdown_grace, not_serving).await;
    let _ = metrics_task.await;
    store.close().await;
    res
}

/// A server running in this process, for tests and tools.
pub type Handle = service_runtime::ServerHandle;

/// Opens the store, binds the configured ports (0 = ephemeral) and serves
/// in the background.
pub async fn spawn(cfg: Config, metrics: GrpcMetrics) -> anyhow::Result<Handle> {
    let (store, state) = open_store(&cfg).await?;
    let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    Ok(Handle::spawn(addr, metrics_addr, |stop| {
        run(cfg, store, state, metrics, listeners, stop)
    }))
}
