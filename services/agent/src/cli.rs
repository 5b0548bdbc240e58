//! The `agent` binary: keeps an AgentSync stream to ProductService open and pings it.
//! Exit codes: 0 after SIGTERM/SIGINT or `--pings` pongs, 2 for bad settings. It lives in the
//! library, with `main.rs` only calling [`main`], so that the client stack is compiled once, here,
//! and not again for the binary (docs/local.md, "Two build profiles").

use std::process::ExitCode;

use crate::{Agent, Settings, metrics::AgentMetrics};

#[tokio::main]
pub async fn main() -> ExitCode {
    // tonic and rustls must agree on one crypto provider; Err means one is set.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Bad flags or variables: clap prints what is wrong and exits with 2.
    let settings = Settings::from_args();

    let mut identity = match telemetry::Identity::from_env("agent") {
        Ok(id) => id,
        Err(e) => return config_error(e),
    };
    // SERVICE_VERSION labels the agent's own log lines; by default they show
    // the version the agent announces to the server.
    match service_runtime::env::optional("SERVICE_VERSION") {
        Ok(Some(_)) => {}
        Ok(None) => identity.version = settings.agent_version.clone(),
        Err(e) => return config_error(e),
    }
    let telemetry_settings = match telemetry::Settings::from_env(identity) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let telemetry = match telemetry::init(&telemetry_settings) {
        Ok(t) => t,
        Err(e) => return config_error(format!("telemetry: {e:#}")),
    };

    let agent = match Agent::new(settings) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "invalid settings");
            telemetry.shutdown();
            return config_error(format!("{e:#}"));
        }
    };
    let metrics = match AgentMetrics::new(&telemetry.registry) {
        Ok(m) => m,
        Err(e) => return config_error(format!("metrics: {e}")),
    };
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    if let Some(port) = agent.settings().metrics_port {
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        match telemetry::metrics::bind(addr).await {
            Ok(listener) => {
                if let Ok(bound) = listener.local_addr() {
                    tracing::info!(metrics = %bound, "metrics listening");
                }
                tokio::spawn(telemetry::metrics::serve(
                    telemetry.registry.clone(),
                    listener,
                    metrics_stop.clone().cancelled_owned(),
                ));
            }
            Err(e) => {
                telemetry.shutdown();
                return config_error(format!("{e:#}"));
            }
        }
    }
    let stop = async {
        let signal = service_runtime::shutdown::signal_received().await;
        tracing::info!(signal, "{signal} received; closing the stream");
    };
    let result = agent.run(stop, |pong| metrics.observe(pong)).await;
    metrics_stop.cancel();
    let code = match result {
        Ok(s) => {
            tracing::info!(
                ended = ?s.ended,
                pings_sent = s.pings_sent,
                pongs = s.pongs,
                streams_opened = s.streams_opened,
                reconnects = s.reconnects,
                "Agent stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Agent failed");
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("agent: {e}");
    ExitCode::from(2)
}
