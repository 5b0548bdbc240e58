//! Opens the charge store, binds the ports, serves the API and `/metrics`,
//! purges expired keys in the background, and stops gracefully.

use std::{future::Future, sync::Arc, time::Duration};

use service_runtime::{Listeners, ServerHandle, serve};
use telemetry::{http::HttpObserver, prometheus::Registry};
use tokio_util::sync::CancellationToken;

use crate::{api, config::Config, faults::Faults};

pub use crate::store::Store;

/// Opens (creating when missing) the store `PAYMENT_DB_PATH` names.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.storage, cfg.key_retention, cfg.db_timeout).await
}

/// Serves until `stop` resolves, then stops accepting and lets requests in
/// flight finish, within `shutdown_grace`.
/// The store is closed on the way out, whether the server stopped cleanly or not.
pub async fn run(
    cfg: Config,
    faults: Arc<Faults>,
    store: Store,
    registry: Registry,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Arc::new(api::App::new(
        &cfg.identity,
        faults.clone(),
        store,
        cfg.key_retention,
        &registry,
    )?);
    let result = serve(&cfg, &faults, app.clone(), registry, listeners, stop).await;
    app.store().close().await;
    result
}

async fn serve(
    cfg: &Config,
    faults: &Faults,
    app: Arc<api::App>,
    registry: Registry,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let observer = HttpObserver::new(&cfg.identity, &registry)?;
    let router = api::router(app.clone(), observer);

    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let draining = CancellationToken::new();
    let metrics_task = tokio::spawn(telemetry::metrics::serve(
        registry,
        listeners.metrics,
        draining.clone().cancelled_owned(),
    ));
    let purge_task = tokio::spawn(purge_expired(
        app.clone(),
        cfg.purge_interval,
        cfg.purge_batch,
        draining.clone(),
    ));
    tracing::info!(
        http = %addr,
        metrics = %metrics_addr,
        latency_ms = faults.latency().as_millis() as u64,
        failure_percent = faults.failure_percent(),
        error_percent = faults.error_percent(),
        db = app.store().label(),
        key_retention = %crate::config::show_duration(cfg.key_retention),
        "payment provider stand-in listening"
    );

    let res = serve::serve_http(listeners.main, router, stop, &draining, cfg.shutdown_grace).await;
    // Already cancelled unless the server failed; the background tasks stop with it.
    draining.cancel();
    let _ = metrics_task.await;
    let _ = purge_task.await;
    res
}

/// Purges expired keys at startup and then every `interval`, until `stop`.
/// Each pass deletes at most `batch` keys in one short statement, so charges
/// get the database between passes; a full pass is followed by another at
/// once, so a backlog drains without waiting for the next interval.
async fn purge_expired(app: Arc<api::App>, interval: Duration, batch: u32, stop: CancellationToken) {
    loop {
        while !stop.is_cancelled() {
            match app.purge_expired(batch).await {
                Ok(n) if n >= u64::from(batch) => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired idempotency keys failed; retrying at the next interval");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
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

/// Opens the store, binds the configured ports (0 = ephemeral) and serves
/// in the background. An unusable store or port fails here, not later.
pub async fn spawn(cfg: Config, registry: Registry) -> anyhow::Result<Handle> {
    let store = open_store(&cfg).await?;
    let listeners = match Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await {
        Ok(l) => l,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let faults = Arc::new(Faults::new(cfg.latency, cfg.failure_percent, cfg.error_percent));
    let server = ServerHandle::spawn(addr, metrics_addr, |stop| {
        run(cfg, faults.clone(), store, registry, listeners, stop)
    });
    Ok(Handle { server, faults })
}
