//! Spans: the gateway's and each sidecar hop's, as Istio's Envoys make them, and the pods' own
//! (received over OTLP). In the order spans flow: [`context`] reads and writes trace headers,
//! [`span`] is the one span model, [`receive`] takes the pods' OTLP, [`packed`] is how the
//! [`store`] keeps each recent trace (one buffer), [`otlp`] exports to a user's collector,
//! [`jaeger`] answers Jaeger's query API. [`Tracer`] is what the proxy holds: where finished spans
//! go.

pub mod context;
pub mod jaeger;
pub mod otlp;
pub mod packed;
pub mod receive;
pub mod span;
pub mod store;

use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, Registry};

pub use context::{Parent, SpanId, TraceId};
pub use span::Span;
use store::Store;

/// `--span-queue`: finished spans waiting for the exporter; beyond it spans are dropped (and
/// counted in `localmesh_spans_dropped_total`) rather than slow a request.
pub const DEFAULT_QUEUE: usize = 8192;

/// Where localmesh's own spans go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Kept here, for the console.
    Store(Arc<Store>),
    /// An OTLP/gRPC collector's URL.
    Otlp(String),
}

/// Where finished proxy spans go. Reporting never waits and never wakes another task per span:
/// spans go straight into the store (one short lock), or into a bounded buffer that the exporter
/// drains on its own schedule.
#[derive(Debug, Clone)]
pub struct Tracer {
    out: Out,
    dropped: IntCounter,
}

#[derive(Debug, Clone)]
enum Out {
    Store(Arc<Store>),
    Export(Arc<otlp::Outbox>),
}

impl Tracer {
    /// A tracer sending to `sink`; with an OTLP collector, it also starts the exporter task (call
    /// inside a Tokio runtime).
    pub fn new(registry: &Registry, sink: Sink, queue: usize) -> prometheus::Result<Tracer> {
        let dropped = IntCounter::new(
            "localmesh_spans_dropped_total",
            "Proxy spans dropped because the export queue was full",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let out = match sink {
            Sink::Store(s) => Out::Store(s),
            Sink::Otlp(endpoint) => {
                let outbox = Arc::new(otlp::Outbox::new(queue.max(1)));
                tokio::spawn(otlp::export(outbox.clone(), endpoint));
                Out::Export(outbox)
            }
        };
        Ok(Tracer { out, dropped })
    }

    /// Whether finished spans are kept here: they may then be reported packed.
    pub fn packs(&self) -> bool {
        matches!(self.out, Out::Store(_))
    }

    /// Adds spans packed by the caller to the store (see [`Tracer::packs`]); without a store
    /// they are counted as dropped.
    pub fn report_packed(&self, batch: store::Packed) {
        match &self.out {
            Out::Store(s) => s.insert_packed(batch),
            Out::Export(_) => self.dropped.inc_by(batch.spans.len() as u64),
        }
    }

    /// Sends finished spans on (one store insert for all); a full export queue drops them.
    pub fn report_all(&self, spans: Vec<Span>) {
        match &self.out {
            Out::Store(s) => s.insert(spans),
            Out::Export(o) => {
                for span in spans {
                    if !o.push(span) {
                        self.dropped.inc();
                    }
                }
            }
        }
    }
}

/// Whether a new trace is sampled at `percent` (Envoy's random sampling, decided where a request
/// arrives without a sampling decision).
pub fn sample(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random::<f64>() * 100.0 < percent)
}

/// A `Mutex<Vec<T>>` taken whole: what a batch consumer swaps out.
pub(crate) fn take_all<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *crate::lock(m))
}
