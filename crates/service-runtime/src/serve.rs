//! The one graceful stop of every server, gRPC (tonic) or HTTP (axum), and the accept side they
//! share: every accepted connection gets TCP_NODELAY, so small responses go out at once rather
//! than waiting on Nagle's algorithm.

use std::{
    future::{Future, IntoFuture as _},
    time::Duration,
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::{ServingStatus, server::HealthReporter};

/// Runs `server` until `stop` resolves, then: `on_stop` is awaited (a gRPC server reports
/// NOT_SERVING there, [`grpc_not_serving`]), `draining` cancelled (the server, shut down by it, stops
/// accepting; the gRPC layer ends open streams with UNAVAILABLE; background tasks stop), and
/// the calls in flight finish, all within `grace`. Past it the server is dropped, closing the
/// remaining connections.
pub async fn serve_until_stopped<E>(
    server: impl Future<Output = Result<(), E>>,
    stop: impl Future<Output = ()>,
    draining: &CancellationToken,
    grace: Duration,
    on_stop: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res.context("server failed"),
        () = stop => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, finishing the calls in flight"
    );
    on_stop.await;
    draining.cancel();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res.context("server failed while draining")?,
        Err(_) => tracing::warn!("drain took longer than SHUTDOWN_GRACE_SECS; closing the remaining connections"),
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// A gRPC server's part of the stop, for [`serve_until_stopped`]'s `on_stop`: health
/// NOT_SERVING for each of `services` and for `""`, so that clients and probes move away first.
pub async fn grpc_not_serving(health: &HealthReporter, services: &[&str]) {
    for name in services {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    health.set_service_status("", ServingStatus::NotServing).await;
}

/// The main listener as a tonic server's incoming connections.
pub fn grpc_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `router` on `listener` through [`serve_until_stopped`]; the server stops accepting
/// when `draining` is cancelled.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()>,
    draining: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(draining.clone().cancelled_owned())
        .into_future();
    serve_until_stopped(server, stop, draining, grace, std::future::ready(())).await
}
