//! A stand-in for the external payment provider of the e-commerce flow
//! (`api.payment-provider.com` in the seed): `POST /v1/charges` with an
//! `Idempotency-Key`, in the style of Stripe's API.
//!
//! Charges and their idempotency keys are kept in SQLite (`PAYMENT_DB_PATH`,
//! a file in WAL mode, mode 0600), so a restart forgets nothing younger
//! than `PAYMENT_KEY_RETENTION` (24 h by default); older keys are purged in
//! the background with their charges. It is a test double for a third
//! party, not a ledger. `main.rs` is a thin wrapper; tests start it
//! in-process with [`spawn`].

pub mod amount;
mod api;
pub mod config;
pub mod faults;
pub mod server;
mod store;

pub use config::{Config, Storage};
pub use faults::Faults;
pub use server::{Handle, spawn};

/// The binary's body (`main.rs` only calls it). It lives in the library so that the server is
/// compiled once, here, and not again for the binary: an optimised build does not share generic
/// code between crates (docs/local.md, "Two build profiles").
#[tokio::main]
pub async fn main() -> std::process::ExitCode {
    service_runtime::run_service(
        "payment",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let store = server::open_store(&cfg).await?;
            let listeners = service_runtime::Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            let faults = std::sync::Arc::new(Faults::new(cfg.latency, cfg.failure_percent, cfg.error_percent));
            server::run(cfg, faults, store, telemetry.registry.clone(), listeners, stop).await
        },
    )
    .await
}
