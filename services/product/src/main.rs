use std::process::ExitCode;

use product::{Config, server};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::lifecycle::run_service(
        "product",
        Config::from_env(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let catalog = server::load_catalog(&cfg)?;
            let listeners = server::bind(&cfg).await?;
            server::run(cfg, catalog, telemetry.grpc.clone(), listeners, stop).await
        },
    )
    .await
}
