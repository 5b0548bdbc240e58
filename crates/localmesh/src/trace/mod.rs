//! Spans: the gateway's and each sidecar hop's, as Istio's Envoys make them, and the pods' own
//! (received over OTLP). [`context`] reads and writes trace headers, [`span`] is the one span
//! model, [`store`] keeps recent traces, [`otlp`] receives and exports, [`jaeger`] answers Jaeger's
//! query API. [`Tracer`] is what the proxy holds: the sampling decision and the way out.

pub mod context;
pub mod jaeger;
pub mod otlp;
pub mod span;
pub mod store;

use prometheus::{IntCounter, Registry};
use tokio::sync::mpsc;

pub use context::{Parent, SpanId, TraceId};
pub use span::Span;

/// `--span-queue`: finished spans waiting for the store or the exporter; beyond it spans are
/// dropped (and counted in `localmesh_spans_dropped_total`) rather than slow a request.
pub const DEFAULT_QUEUE: usize = 8192;

/// Where finished proxy spans go, and how many were dropped on the way.
#[derive(Debug, Clone)]
pub struct Tracer {
    tx: mpsc::Sender<Span>,
    dropped: IntCounter,
}

impl Tracer {
    /// A tracer whose spans arrive on the returned receiver (see [`otlp::run_sink`]).
    pub fn new(registry: &Registry, queue: usize) -> prometheus::Result<(Tracer, mpsc::Receiver<Span>)> {
        let dropped = IntCounter::new(
            "localmesh_spans_dropped_total",
            "Proxy spans dropped because the span queue was full",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        Ok((Tracer { tx, dropped }, rx))
    }

    /// Sends a finished span on, never waiting: a full queue drops it.
    pub fn report(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// Whether a new trace is sampled at `percent` (Envoy's random sampling, decided where a request
/// arrives without a sampling decision).
pub fn sample(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random::<f64>() * 100.0 < percent)
}
