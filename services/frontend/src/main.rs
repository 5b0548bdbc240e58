use std::process::ExitCode;

use frontend::{
    Config,
    server::{self, App},
};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::lifecycle::run_service(
        "frontend",
        Config::from_env(),
        |c| c.identity.clone(),
        async |cfg, telemetry, stop| {
            let app = App::new(&cfg, telemetry.registry.clone())?;
            let listeners = server::bind(&cfg).await?;
            server::run(cfg, app, listeners, stop).await
        },
    )
    .await
}
