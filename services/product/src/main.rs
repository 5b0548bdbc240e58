use std::process::ExitCode;

use product::{Config, server};
use service_runtime::Listeners;

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::run_service(
        "product",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let catalog = server::load_catalog(&cfg)?;
            let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            server::run(cfg, catalog, telemetry.grpc.clone(), listeners, stop).await
        },
    )
    .await
}
