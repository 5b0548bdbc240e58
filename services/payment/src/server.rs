//! Binds the ports, serves the API and `/metrics`, and stops gracefully.

use std::{future::Future, sync::Arc};

use anyhow::Context as _;
use telemetry::{http::HttpObserver, lifecycle::ServerHandle, prometheus::Registry};
use tokio_util::sync::CancellationToken;

use crate::{api, config::Config, faults::Faults};

pub use telemetry::lifecycle::Listeners;

/// Binds `PORT` and `METRICS_PORT` on `BIND_ADDR`.
pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
    Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await
}

/// Serves until `stop` resolves, then stops accepting and lets requests in
/// flight finish, within `shutdown_grace`.
pub async fn run(
    cfg: Config,
    faults: Arc<Faults>,
    registry: Registry,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let observer = HttpObserver::new(&cfg.identity, &registry)?;
    let app = Arc::new(api::App::new(&cfg.identity, faults.clone(), &registry)?);
    let router = api::router(app, observer);

    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let draining = CancellationToken::new();
    let metrics_task = tokio::spawn(telemetry::metrics::serve(
        registry,
        listeners.metrics,
        draining.clone().cancelled_owned(),
    ));
    tracing::info!(
        http = %addr,
        metrics = %metrics_addr,
        latency_ms = faults.latency().as_millis() as u64,
        failure_percent = faults.failure_percent(),
        error_percent = faults.error_percent(),
        "payment provider stand-in listening"
    );

    let stopping = draining.clone();
    let server = axum::serve(
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        axum::serve::ListenerExt::tap_io(listeners.main, |tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        router,
    )
    .with_graceful_shutdown(async move {
        stop.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stopping.cancel();
    });
    let mut server = tokio::spawn(async move { server.await });
    // The grace period starts when the stop does, not when the server does.
    tokio::select! {
        res = &mut server => {
            draining.cancel();
            let _ = metrics_task.await;
            return res.context("server task panicked")?.context("HTTP server failed");
        }
        () = draining.cancelled() => {}
    }
    match tokio::time::timeout(cfg.shutdown_grace, server).await {
        Ok(res) => res.context("server task panicked")?.context("HTTP server failed")?,
        Err(_) => tracing::warn!("drain took longer than SHUTDOWN_GRACE_SECS; closing the remaining connections"),
    }
    let _ = metrics_task.await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// A server running in this process, for tests and tools: the shared
/// handle plus the faults, changeable while the server runs.
pub struct Handle {
    server: ServerHandle,
    faults: Arc<Faults>,
}

impl std::ops::Deref for Handle {
    type Target = ServerHandle;
    fn deref(&self) -> &ServerHandle {
        &self.server
    }
}

impl std::ops::DerefMut for Handle {
    fn deref_mut(&mut self) -> &mut ServerHandle {
        &mut self.server
    }
}

impl Handle {
    /// Latency and failure shares, changeable while the server runs.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Stops and waits until requests in flight have finished.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await
    }
}

/// Binds the configured ports (0 = ephemeral) and serves in the background.
pub async fn spawn(cfg: Config, registry: Registry) -> anyhow::Result<Handle> {
    let listeners = bind(&cfg).await?;
    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let faults = Arc::new(Faults::new(cfg.latency, cfg.failure_percent, cfg.error_percent));
    let server = ServerHandle::spawn(addr, metrics_addr, |stop| {
        run(cfg, faults.clone(), registry, listeners, stop)
    });
    Ok(Handle { server, faults })
}
