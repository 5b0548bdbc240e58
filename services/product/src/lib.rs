//! ProductService v1/v2: the catalog over gRPC, a price feed and the agents'
//! bidi channel. `main.rs` is a thin wrapper; tests start it in-process.

pub mod agents;
pub mod catalog;
pub mod config;
pub mod faults;
pub mod server;
pub mod service;
pub mod watch;

pub use config::Config;
pub use server::{Handle, spawn};

/// The binary's body (`main.rs` only calls it). It lives in the library so that the server is
/// compiled once, here, and not again for the binary: an optimised build does not share generic
/// code between crates (docs/local.md, "Two build profiles").
#[tokio::main]
pub async fn main() -> std::process::ExitCode {
    service_runtime::run_service(
        "product",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let catalog = server::load_catalog(&cfg)?;
            let listeners = service_runtime::Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            server::run(cfg, catalog, telemetry.grpc.clone(), listeners, stop).await
        },
    )
    .await
}
