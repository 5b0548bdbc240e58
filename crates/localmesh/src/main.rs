//! `localmesh lint` compiles the repo's manifests into the routing model and prints it;
//! `localmesh up` starts the pods, the sidecars and the TLS gateway from it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod load;

#[derive(Parser)]
#[command(
    name = "localmesh",
    about = "Istio's gateway and sidecars on one machine, from the repo's manifests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load gateway/ and manifests/, print the compiled routing model and what is not emulated.
    Lint {
        /// The repository root (holding gateway/ and manifests/).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Start every Deployment's replicas as local processes, the sidecar listeners, the TLS
    /// gateway and an admin port; Ctrl-C or SIGTERM stops everything with a bounded drain.
    Up {
        /// The repository root (holding gateway/ and manifests/).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Where the service binaries (product, order, payment, frontend) are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Pod logs (logs/<pod>.log) and data (the order service's SQLite file).
        #[arg(long, default_value = ".data/localmesh")]
        data_dir: PathBuf,
        /// The TLS gateway listener (the cluster's :443).
        #[arg(long, default_value_t = 8443)]
        gateway_port: u16,
        /// Also serve the gateway's plaintext listener (its HTTPS redirect) on this port.
        #[arg(long)]
        http_port: Option<u16>,
        /// /stats/prometheus, /clusters, /config_dump.
        #[arg(long, default_value_t = 15000)]
        admin_port: u16,
        /// How long every pod gets to become ready.
        #[arg(long, default_value_t = 60)]
        ready_timeout_secs: u64,
    },
    /// Run the documented journeys through the TLS gateway and print a pass/fail table;
    /// exits non-zero on any failure.
    Verify(localmesh::verify::VerifyArgs),
    /// Offer gRPC load to the TLS gateway (open loop with --rate, closed loop with
    /// --concurrency) and print throughput, latency percentiles, errors and the version split.
    Load(load::LoadArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Up {
            root,
            bin_dir,
            data_dir,
            gateway_port,
            http_port,
            admin_port,
            ready_timeout_secs,
        } => {
            let opts = localmesh::up::UpOptions {
                root,
                bin_dir,
                data_dir,
                gateway_port,
                http_port,
                admin_port,
                ready_timeout: std::time::Duration::from_secs(ready_timeout_secs),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("localmesh: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                let telemetry = telemetry::Identity::from_env("localmesh")
                    .and_then(telemetry::Settings::from_env)
                    .map_err(anyhow::Error::from)
                    .and_then(|s| telemetry::init(&s));
                let telemetry = match telemetry {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("localmesh: {e}");
                        return ExitCode::from(2);
                    }
                };
                let result = localmesh::up::run(opts).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "localmesh up failed");
                    eprintln!("localmesh: {e}");
                }
                telemetry.shutdown();
                if result.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
        Command::Lint { root } => match localmesh::load(&root) {
            Ok(mesh) => {
                print!("{mesh}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("localmesh: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Verify(args) => localmesh::verify::main(args),
        Command::Load(args) => load::main(args),
    }
}
