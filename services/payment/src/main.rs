use std::{process::ExitCode, sync::Arc};

use payment::{Config, Faults, server};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::lifecycle::run_service(
        "payment",
        Config::from_env(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let store = server::open_store(&cfg).await?;
            let listeners = server::bind(&cfg).await?;
            let faults = Arc::new(Faults::new(cfg.latency, cfg.failure_percent, cfg.error_percent));
            server::run(cfg, faults, store, telemetry.registry.clone(), listeners, stop).await
        },
    )
    .await
}
