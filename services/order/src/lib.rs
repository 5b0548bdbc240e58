//! OrderService: orders in SQL (an embedded SQLite file by default,
//! PostgreSQL via `DATABASE_URL`), priced line by line with ProductService
//! and charged once per order at the payment provider. `main.rs` is a thin
//! wrapper; tests start it in-process with [`spawn`].

pub mod config;
mod deadline;
mod health;
pub mod payments;
mod pricing;
pub mod request;
pub mod server;
mod service;
mod settler;
pub mod store;

pub use config::{Config, Database, SettleSettings};
pub use server::{Handle, spawn};

/// The binary's body (`main.rs` only calls it). It lives in the library so that the server is
/// compiled once, here, and not again for the binary: an optimised build does not share generic
/// code between crates (docs/local.md, "Two build profiles").
#[tokio::main]
pub async fn main() -> std::process::ExitCode {
    service_runtime::run_service(
        "order",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let (store, state) = server::open_store(&cfg).await?;
            let listeners = service_runtime::Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            server::run(cfg, store, state, telemetry.grpc.clone(), listeners, stop).await
        },
    )
    .await
}
