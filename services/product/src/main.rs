use std::process::ExitCode;

use product::{
    Config,
    server::{self, Listeners},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("product: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match telemetry::Settings::from_env(cfg.identity.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("product: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("product: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let catalog = server::load_catalog(&cfg)?;
        let listeners = Listeners::bind(&cfg).await?;
        server::run(cfg, catalog, telemetry.grpc.clone(), listeners, async {
            let sig = telemetry::shutdown::signal_received().await;
            tracing::info!(signal = sig, "signal received");
        })
        .await
    }
    .await;
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "product service stopped");
            eprintln!("product: {e:#}");
            ExitCode::FAILURE
        }
    }
}
