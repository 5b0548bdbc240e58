use std::process::ExitCode;

use order::{Config, server};
use service_runtime::Listeners;

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::run_service(
        "order",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let (store, state) = server::open_store(&cfg).await?;
            let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            server::run(cfg, store, state, telemetry.grpc.clone(), listeners, stop).await
        },
    )
    .await
}
