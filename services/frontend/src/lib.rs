//! The shop's web front: HTML pages and a JSON API over product-service and
//! order-service (gRPC), showing on every answer which version and pod of a
//! backend served it, and on `/mesh` how the calls split across versions.
//! `main.rs` is a thin wrapper; tests start it in-process with [`spawn`], or call
//! [`server::router`] directly over fake [`backends::Backends`] (`tests/router.rs`).

pub mod api;
pub mod backends;
pub mod config;
pub mod errors;
pub mod extract;
pub mod health;
pub mod input;
pub mod mesh;
pub mod pages;
pub mod server;
pub mod state;
pub mod templates;
pub mod views;

pub use config::Config;
pub use server::{Handle, spawn};

/// The binary's body (`main.rs` only calls it). It lives in the library so that the server is
/// compiled once, here, and not again for the binary: an optimised build does not share generic
/// code between crates (docs/local.md, "Two build profiles").
#[tokio::main]
pub async fn main() -> std::process::ExitCode {
    service_runtime::run_service(
        "frontend",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let app = server::App::new(&cfg, telemetry.registry.clone())?;
            let listeners = service_runtime::Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            server::run(cfg, app, listeners, stop).await
        },
    )
    .await
}
