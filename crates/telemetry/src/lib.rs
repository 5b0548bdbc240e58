//! Telemetry and identity shared by every service of the suite: JSON logs
//! with trace ids, OTLP trace export, W3C + B3 propagation, `x-request-id`,
//! Prometheus metrics, and the pod identity behind `ServedBy`. How a service starts and
//! stops (settings, sockets, the graceful drain) is the `service-runtime` crate's.

pub mod export;
pub mod grpc;
pub mod http;
mod identity;
mod logging;
pub mod metrics;
pub mod propagation;
pub mod var;

use std::time::Duration;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer as _, fmt::format::JsonFields, layer::SubscriberExt, util::SubscriberInitExt,
};

pub use var::ConfigError;

/// Every binary of the suite (they all link this crate) allocates with mimalloc. glibc's malloc
/// serialises threads that free what another thread allocated, as happens to every span (built
/// on a request's thread, freed by the exporter or the trace store): `make bench` found its locks
/// and consolidation the largest cost of localmesh's gateway with tracing on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An error with its sources, joined with ": ", each message once: the one formatter for error
/// chains in the workspace (a transport error alone often says only "transport error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

/// Returns the calling thread's free allocator memory to the OS, at most once per `every` per
/// thread (a cheap clock read otherwise): for a runtime's `on_thread_park`, so that what a
/// flood of connections allocated on one worker and freed on another does not stay resident.
/// Envoy can do the same with tcmalloc (bootstrap `memory_allocator_manager`: `bytes_to_release`
/// every `memory_release_interval`, 1 s by default; envoy `source/common/memory/stats.cc`,
/// `AllocatorManager`).
pub fn release_free_memory(every: std::time::Duration) {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST.get().is_some_and(|t| now.duration_since(t) < every) {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect only walks the calling thread's own heap and the allocator's free lists.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
pub use identity::{Identity, validate_version};
pub use metrics::GrpcMetrics;
pub use prometheus;

/// Defaults keep the exporter's own chatter (h2, tonic, the OTel SDK) out of
/// the log stream and out of the exported spans.
const DEFAULT_FILTER: &str =
    "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn,opentelemetry=warn,opentelemetry_sdk=warn";

/// What `init` needs; `from_env` reads the standard `OTEL_*` variables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub identity: Identity,
    /// `OTEL_SERVICE_NAME`, the binary's name when unset.
    pub service_name: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; no export at all when unset.
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    pub fn from_env(identity: Identity) -> Result<Self, ConfigError> {
        let service_name = var::string("OTEL_SERVICE_NAME", &identity.service)?;
        let otlp_endpoint = var::optional("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        if let Some(ep) = &otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                ep,
                "expected an http:// or https:// URL of an OTLP/gRPC receiver, e.g. http://jaeger-collector:4317",
            ));
        }
        Ok(Self {
            identity,
            service_name,
            otlp_endpoint,
        })
    }
}

/// Owns the providers; `shutdown` flushes what is buffered. Dropping it writes out the log lines
/// still queued.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    pub registry: prometheus::Registry,
    pub grpc: GrpcMetrics,
    _log_writers: Vec<tracing_appender::non_blocking::WorkerGuard>,
}

/// How many log lines may wait for the log writer's thread; a logger that finds it full waits
/// (nothing is dropped).
pub const LOG_QUEUE: usize = 16_384;

/// A log writer that hands each line to a thread of its own, which writes it to `out` and flushes
/// `out` whenever the queue is empty: a request never waits on a `write(2)`, and given a
/// [`std::io::BufWriter`], a burst of lines costs one. Lossless: a full queue ([`LOG_QUEUE`])
/// makes the logger wait. Keep the guard until exit: dropping it writes out what is still queued.
/// Envoy writes its access logs from a buffer as well, flushed every `--file-flush-interval-msec`
/// (envoy `source/server/options_impl.cc`; Istio's pilot-agent starts it with 1000).
pub fn log_writer<W>(
    out: W,
    thread: &str,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
)
where
    W: std::io::Write + Send + 'static,
{
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name(thread)
        .finish(out)
}

/// Stdout through a buffer for [`log_writer`]: the lines queued together go out in one write.
pub fn stdout_buffered() -> std::io::BufWriter<std::io::Stdout> {
    std::io::BufWriter::with_capacity(64 << 10, std::io::stdout())
}

/// Installs the global subscriber, propagator and tracer provider, the JSON log lines going to
/// stdout through [`log_writer`]. Call it inside a Tokio runtime: the OTLP exporter makes a lazy
/// tonic channel.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let (stdout, guard) = log_writer(stdout_buffered(), "log writer");
    init_with_writer(settings, stdout, vec![guard])
}

/// [`init`] with the JSON log lines written by `writer` instead (which may send some targets
/// elsewhere, e.g. localmesh's access log to its own rotated file); `guards` are the
/// [`log_writer`] guards behind it, kept until the [`Telemetry`] is dropped.
pub fn init_with_writer<W>(
    settings: &Settings,
    writer: W,
    guards: Vec<tracing_appender::non_blocking::WorkerGuard>,
) -> anyhow::Result<Telemetry>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    propagation::install();
    let id = &settings.identity;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", id.version.clone()),
            KeyValue::new("service.instance.id", id.pod.clone()),
            KeyValue::new("k8s.pod.name", id.pod.clone()),
            KeyValue::new("k8s.namespace.name", id.namespace.clone()),
            KeyValue::new("k8s.node.name", id.node.clone()),
        ])
        .build();

    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &settings.otlp_endpoint {
        let exporter = export::OtlpExporter::new(endpoint, Duration::from_secs(3))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let tracer_provider = builder.build();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Spans carry what a trace reader needs (the fields each layer records, the call's events);
    // source locations, thread ids, busy/idle times and the target would add a dozen attributes
    // and clock reads on every poll of every traced call. Context activation on entry is not
    // needed: propagation reads the span's context directly.
    let otel = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_context_activation(false)
        // The scope names the instrumenting library (OpenTelemetry's definition); a static name
        // also spares a copy of it on every span the SDK ends.
        .with_tracer(tracer_provider.tracer(env!("CARGO_PKG_NAME")))
        // Info events (each call's "finished" line) stay in the JSON log: the span already
        // carries the status and duration. Warnings and errors also become span events.
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() || *m.level() <= tracing::Level::WARN
        }));
    let fmt = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(logging::JsonLines::new(id))
        .with_writer(writer);
    // Several tests in one process may call init: the first subscriber stays.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init();

    let registry = prometheus::Registry::new();
    let grpc = GrpcMetrics::new(&registry)?;
    Ok(Telemetry {
        tracer_provider,
        registry,
        grpc,
        _log_writers: guards,
    })
}

impl Telemetry {
    /// Exports buffered spans (bounded by the exporter timeout) and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.tracer_provider.force_flush() {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        let _ = self.tracer_provider.shutdown();
    }
}
