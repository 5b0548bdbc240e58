//! Assembles the router behind the telemetry middleware and runs it through
//! a graceful stop: stop accepting, finish in-flight requests within
//! `SHUTDOWN_GRACE_SECS`, then return so `main` can flush telemetry.

use std::{future::Future, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware,
    response::Response,
    routing::{get, post},
};
use service_runtime::{Listeners, serve};
use telemetry::{http::HttpObserver, metrics::Registry};
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    backends::GrpcBackends,
    config::Config,
    extract::{self, Linger},
    health,
    mesh::MeshHistory,
    pages,
    state::AppState,
    templates::Templates,
};

/// Every route of the frontend, behind `telemetry::http::observe`. Bodies are read up to
/// `MAX_BODY_BYTES`; past it the extractors' rejection becomes a 413, and what the answer left
/// unread is read (up to `LINGER_MAX_BYTES`, `LINGER_TIMEOUT_MS`) before it goes out (see
/// `extract`).
pub fn router(state: AppState, observer: HttpObserver, linger: Linger) -> Router {
    let body_limit = DefaultBodyLimit::max(state.max_body_bytes);
    Router::new()
        .route("/", get(pages::home))
        .route("/products/{id}", get(pages::product))
        .route("/orders", post(pages::place_order))
        .route("/orders/{id}", get(pages::order))
        .route("/mesh", get(pages::mesh))
        .route("/api/products", get(api::list_products))
        .route("/api/products/{id}", get(api::get_product))
        .route("/api/orders", post(api::create_order))
        .route("/api/orders/{id}", get(api::get_order))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(fallback)
        .layer(body_limit)
        .layer(middleware::from_fn_with_state(linger, extract::linger))
        .with_state(state)
        .layer(middleware::from_fn_with_state(observer, telemetry::http::observe))
}

async fn fallback(State(s): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        api::not_found(path)
    } else {
        pages::not_found(&s, req.headers(), path)
    }
}

/// The frontend, assembled and registered in its metrics registry, before
/// any port is bound: a broken template or a duplicate metric fails here.
pub struct App {
    router: Router,
    registry: Registry,
    draining: CancellationToken,
}

impl App {
    pub fn new(cfg: &Config, registry: Registry) -> anyhow::Result<Self> {
        let draining = CancellationToken::new();
        let mesh = Arc::new(MeshHistory::new(cfg.mesh_history));
        let backends = Arc::new(GrpcBackends::new(cfg, &registry, mesh.clone())?);
        let observer = HttpObserver::new(&cfg.identity, &registry).context("registering the HTTP metrics")?;
        let state = AppState::new(
            backends,
            Templates::new()?,
            mesh,
            &cfg.identity,
            draining.clone(),
            cfg.max_body_bytes,
        );
        let linger = Linger {
            max_bytes: cfg.linger_max_bytes,
            timeout: cfg.linger_timeout,
        };
        Ok(Self {
            router: router(state, observer, linger),
            registry,
            draining,
        })
    }
}

/// Serves until `stop` resolves, then drains (see the module doc).
pub async fn run(
    cfg: Config,
    app: App,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let App {
        router: app,
        registry,
        draining,
    } = app;
    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let metrics_task = tokio::spawn(telemetry::metrics::serve(
        registry,
        listeners.metrics,
        draining.clone().cancelled_owned(),
    ));
    tracing::info!(
        http = %addr,
        metrics = %metrics_addr,
        product = %cfg.product_addr,
        order = %cfg.order_addr,
        backend_timeout_ms = cfg.backend_timeout.as_millis() as u64,
        "frontend listening"
    );
    let res = serve::serve_http(listeners.main, app, stop, &draining, cfg.shutdown_grace).await;
    // Already cancelled unless the server failed; `/metrics` stops with it.
    draining.cancel();
    let _ = metrics_task.await;
    res
}

/// A server running in this process, for tests and tools.
pub type Handle = service_runtime::ServerHandle;

/// Binds the configured ports (0 = ephemeral) and serves in the background.
pub async fn spawn(cfg: Config, registry: Registry) -> anyhow::Result<Handle> {
    let app = App::new(&cfg, registry)?;
    let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
    let addr = listeners.main.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    Ok(Handle::spawn(addr, metrics_addr, |stop| run(cfg, app, listeners, stop)))
}
