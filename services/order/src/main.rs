use std::process::ExitCode;

use order::{Config, server};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::lifecycle::run_service(
        "order",
        Config::from_env(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let (store, state) = server::open_store(&cfg).await?;
            let listeners = server::bind(&cfg).await?;
            server::run(cfg, store, state, telemetry.grpc.clone(), listeners, stop).await
        },
    )
    .await
}
