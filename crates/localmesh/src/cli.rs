//! The `localmesh` command line. `localmesh lint` compiles the repo's manifests into the routing
//! model and prints it; `localmesh up` starts the pods, the sidecars and the TLS gateway from it.
//! It lives in the library, with `main.rs` only calling [`main`], so that what `up` runs is
//! compiled once, here, and not again for the binary (an optimised build does not share generic
//! code between crates): a quicker `make build`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
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
    /// gateway and an admin port; edits of the files are pushed live (routing, replicas, rolling
    /// updates); Ctrl-C or SIGTERM stops everything with a bounded drain.
    Up {
        /// The repository root (holding gateway/ and manifests/).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Where the service binaries (product, order, payment, frontend) are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Pod logs (logs/<pod>.log, rotated: see --log-max-size) and data (the order service's
        /// SQLite file).
        #[arg(long, default_value = ".data/localmesh")]
        data_dir: PathBuf,
        /// The TLS gateway listener (the cluster's :443).
        #[arg(long, default_value_t = 8443)]
        gateway_port: u16,
        /// Also serve the gateway's plaintext listener (its HTTPS redirect) on this port.
        #[arg(long)]
        http_port: Option<u16>,
        /// /stats/prometheus, /clusters, /config_dump, /sd, /tap, /api/stat (Envoy's admin port).
        #[arg(long, default_value_t = 15000)]
        admin_port: u16,
        /// The console: traces, the service graph and Jaeger's query API (Jaeger's port).
        #[arg(long, default_value_t = 16686)]
        console_port: u16,
        /// The OTLP/gRPC receiver for the pods' spans (when OTEL_EXPORTER_OTLP_ENDPOINT is unset).
        #[arg(long, default_value_t = 4317)]
        otlp_port: u16,
        /// How many traces the console keeps (the oldest go first).
        #[arg(long, default_value_t = crate::trace::store::DEFAULT_MAX_TRACES, value_parser = clap::value_parser!(u64).range(1..=10_000_000).map(|n| n as usize))]
        max_traces: usize,
        /// The console's memory for spans, e.g. 64MiB (the oldest traces go first).
        #[arg(long, default_value = "64MiB", value_parser = crate::size::parse_at_least_1mib)]
        max_trace_bytes: usize,
        /// The largest OTLP export request the receiver takes, e.g. 4MiB.
        #[arg(long, default_value = "4MiB", value_parser = crate::size::parse_at_least_1mib)]
        otlp_max_message: usize,
        /// Finished proxy spans waiting to be exported (with OTEL_EXPORTER_OTLP_ENDPOINT); beyond
        /// it they are dropped.
        #[arg(long, default_value_t = crate::trace::DEFAULT_QUEUE, value_parser = clap::value_parser!(u64).range(1..=10_000_000).map(|n| n as usize))]
        span_queue: usize,
        /// Requests a `localmesh tap` or `top` may fall behind by before it misses some.
        #[arg(long, default_value_t = crate::tap::DEFAULT_BUFFER, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
        tap_buffer: usize,
        /// How long every pod gets to become ready.
        #[arg(long, default_value_t = 60)]
        ready_timeout_secs: u64,
        /// Each worker thread gives the allocator's free memory back to the system when idle, at
        /// most this often, e.g. 1s (Envoy's `memory_allocator_manager.memory_release_interval`).
        #[arg(long, default_value = "1s", value_parser = crate::duration::parse_positive)]
        memory_release_interval: std::time::Duration,
        /// Worker threads of the gateway and sidecars, as Envoy's `--concurrency`: 0 gives one
        /// per CPU (Envoy's default); 1 to 1024 exactly that many. On a machine the pods and
        /// clients share, fewer threads spend less CPU per request (docs/local.md, "make bench").
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
        concurrency: u16,
        #[command(flatten)]
        connections: crate::proxy::listen::Limits,
        #[command(flatten)]
        logs: crate::logs::Rotation,
        /// Write the JSON access log (a line per request) to this file instead of stdout (or
        /// localmesh's log), rotated by --log-max-size and --log-max-files, e.g.
        /// .data/localmesh/logs/access.log.
        #[arg(long)]
        access_log: Option<PathBuf>,
        /// What stdout shows: text for a person (the JSON log lines then go to
        /// <data-dir>/logs/localmesh.log, rotated by --log-max-size and --log-max-files), or the
        /// JSON log lines for a program.
        #[arg(long, value_enum, default_value_t = crate::up::Output::Auto)]
        output: crate::up::Output,
    },
    /// Run the documented journeys through the TLS gateway and print a pass/fail table;
    /// exits non-zero on any failure.
    Verify(crate::verify::VerifyArgs),
    /// Offer gRPC load to the TLS gateway (open loop with --rate, closed loop with
    /// --concurrency) and print throughput, latency percentiles, errors and the version split.
    Load(load::LoadArgs),
    /// Success rate, RPS and latency per Deployment and version from a running `localmesh up`.
    Stat(crate::viz::stat::StatArgs),
    /// The busiest paths, live from a running `localmesh up`'s requests (like `linkerd viz top`).
    Top(crate::viz::top::TopArgs),
    /// Requests as they pass a running `localmesh up`'s gateway and sidecars, one line each.
    Tap(crate::viz::tap::TapArgs),
}

/// Where `localmesh up`'s JSON log lines go: stdout (`--output json`, and `auto` off a terminal),
/// or `own_log` with the warnings and errors also on stderr, plainly (`--output human`); the access
/// log's lines to `--access-log` when it is set.
fn init_logs(
    s: &telemetry::Settings,
    own_log: Option<&Path>,
    access_log: Option<&Path>,
    rotation: crate::logs::Rotation,
) -> anyhow::Result<telemetry::Telemetry> {
    use tracing_subscriber::fmt::writer::MakeWriterExt as _;
    let access = |m: &tracing::Metadata<'_>| m.target() == crate::logs::ACCESS_TARGET;
    let open = |path: &Path, what: &str| {
        crate::logs::AccessLog::open(path, rotation).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
    };
    match (own_log, access_log) {
        (None, None) => telemetry::init(s),
        (None, Some(path)) => {
            let file = open(path, "--access-log")?;
            let (stdout, out_guard) = telemetry::log_writer(telemetry::stdout_buffered(), "log writer");
            let (file, file_guard) = telemetry::log_writer(file, "access log writer");
            let writer = stdout.with_filter(move |m| !access(m)).and(file.with_filter(access));
            telemetry::init_with_writer(s, writer, vec![out_guard, file_guard])
        }
        (Some(own), access_path) => {
            let (own, own_guard) = telemetry::log_writer(
                crate::logs::AccessLog::open(own, rotation).map_err(|e| {
                    anyhow::anyhow!("{e} (localmesh's log with --output human; --output json keeps it on stdout)")
                })?,
                "log writer",
            );
            let warnings =
                crate::up::PlainStderr.with_filter(|m: &tracing::Metadata<'_>| *m.level() <= tracing::Level::WARN);
            match access_path {
                None => telemetry::init_with_writer(s, own.and(warnings), vec![own_guard]),
                Some(path) => {
                    let (file, file_guard) = telemetry::log_writer(open(path, "--access-log")?, "access log writer");
                    let writer = own
                        .with_filter(move |m| !access(m))
                        .and(file.with_filter(access))
                        .and(warnings);
                    telemetry::init_with_writer(s, writer, vec![own_guard, file_guard])
                }
            }
        }
    }
}

pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Up {
            root,
            bin_dir,
            data_dir,
            gateway_port,
            http_port,
            admin_port,
            console_port,
            otlp_port,
            max_traces,
            max_trace_bytes,
            otlp_max_message,
            span_queue,
            tap_buffer,
            ready_timeout_secs,
            memory_release_interval,
            concurrency,
            connections,
            logs,
            access_log,
            output,
        } => {
            let human_log = output
                .is_human(std::io::stdout().is_terminal())
                .then(|| crate::up::log_file(&data_dir));
            let mut opts = crate::up::UpOptions {
                root,
                bin_dir,
                data_dir,
                gateway_port,
                http_port,
                admin_port,
                console_port,
                otlp_port,
                export: None,
                limits: crate::trace::store::Limits {
                    max_traces,
                    max_bytes: max_trace_bytes,
                },
                otlp_max_message,
                span_queue,
                tap_buffer,
                ready_timeout: std::time::Duration::from_secs(ready_timeout_secs),
                connections,
                logs,
                human_log: human_log.clone(),
            };
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.enable_all()
                .on_thread_park(move || telemetry::release_free_memory(memory_release_interval));
            // Envoy binds each connection to one worker thread for its life (its threading model,
            // envoyproxy.io/docs/envoy/latest/intro/arch_overview/intro/threading_model); tokio's
            // workers steal tasks from each other instead, so fewer of them means fewer hand-offs.
            if concurrency > 0 {
                rt.worker_threads(usize::from(concurrency));
            }
            let rt = rt.build();
            let rt = match rt {
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
                    .and_then(|s| {
                        opts.export = s.otlp_endpoint.clone();
                        init_logs(&s, human_log.as_deref(), access_log.as_deref(), logs)
                    });
                let telemetry = match telemetry {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("localmesh: {e}");
                        return ExitCode::from(2);
                    }
                };
                let result = crate::up::run(opts).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "{}", crate::up::FAILED);
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
        Command::Lint { root } => match crate::load(&root) {
            Ok(mesh) => {
                print!("{mesh}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("localmesh: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Verify(args) => crate::verify::main(args),
        Command::Load(args) => load::main(args),
        Command::Stat(args) => crate::viz::stat::main(args),
        Command::Top(args) => crate::viz::top::main(args),
        Command::Tap(args) => crate::viz::tap::main(args),
    }
}
