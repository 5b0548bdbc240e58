use std::process::ExitCode;

use frontend::{
    Config,
    server::{self, App},
};
use service_runtime::Listeners;

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::run_service(
        "frontend",
        Config::from_args(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let app = App::new(&cfg, telemetry.registry.clone())?;
            let listeners = Listeners::bind(cfg.bind_addr, cfg.port, cfg.metrics_port).await?;
            server::run(cfg, app, listeners, stop).await
        },
    )
    .await
}
