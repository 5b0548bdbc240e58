use std::{process::ExitCode, sync::Arc};

use payment::{Config, Faults, server};
use service_runtime::Listeners;

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::run_service(
        "payment",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let store = server::open_store(&cfg).await?;
            let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            let faults = Arc::new(Faults::new(cfg.latency, cfg.failure_percent, cfg.error_percent));
            server::run(cfg, faults, store, telemetry.registry.clone(), listeners, stop).await
        },
    )
    .await
}
