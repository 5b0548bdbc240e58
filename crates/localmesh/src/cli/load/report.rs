//! What `localmesh load` prints at the end: the run's summary, as text or JSON.

use std::collections::BTreeMap;

/// The summary printed at the end (`--json` prints it as is).
#[derive(serde::Serialize)]
pub struct Summary {
    pub target: String,
    pub mode: &'static str,
    pub concurrency: Option<u32>,
    pub rate: Option<f64>,
    pub connections: u32,
    pub duration_secs: f64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<String, u64>,
    pub versions: BTreeMap<String, u64>,
    pub methods: BTreeMap<&'static str, u64>,
    /// With `--hold-streams`: what became of the streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamsSummary>,
}

/// The AgentSync streams `--hold-streams` held through the run.
#[derive(serde::Serialize, Debug, Clone, Default)]
pub struct StreamsSummary {
    /// `--hold-streams`.
    pub requested: u32,
    /// Opened end to end (the pong to the first ping read) before the run started.
    pub opened: u64,
    /// Still open when the run ended: `opened - cut`.
    pub held: u64,
    /// Opened, then ended by the server or the connection during the run.
    pub cut: u64,
    /// Why they were cut: the gRPC code of the error, or `Ok` for a stream the server ended.
    pub cut_by: BTreeMap<String, u64>,
    /// Failed to open, by gRPC code.
    pub open_errors: BTreeMap<String, u64>,
    pub connections: u32,
    /// How long opening them took.
    pub open_secs: f64,
}

#[derive(serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match (self.rate, self.concurrency) {
            (Some(r), _) => format!("open loop, {r} req/s offered"),
            (_, Some(c)) => format!("closed loop, concurrency {c}"),
            _ => self.mode.to_string(),
        };
        writeln!(
            f,
            "target {} ({mode}, {} connection(s), {:.1} s)",
            self.target, self.connections, self.duration_secs
        )?;
        writeln!(
            f,
            "requests    {} ({} ok, {} failed)",
            self.requests, self.ok, self.failed
        )?;
        writeln!(f, "throughput  {:.1} req/s", self.throughput_rps)?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (mean {:.2})",
            l.p50, l.p90, l.p99, l.max, l.mean
        )?;
        let methods: Vec<String> = self.methods.iter().map(|(m, n)| format!("{m} {n}")).collect();
        writeln!(f, "methods     {}", methods.join(", "))?;
        if self.errors.is_empty() {
            writeln!(f, "errors      none")?;
        } else {
            let e: Vec<String> = self.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
            writeln!(f, "errors      {}", e.join(", "))?;
        }
        let v: Vec<String> = self
            .versions
            .iter()
            .map(|(v, n)| format!("{v} {n} ({:.1}%)", 100.0 * *n as f64 / self.ok.max(1) as f64))
            .collect();
        writeln!(
            f,
            "versions    {}",
            if v.is_empty() { "none".into() } else { v.join(", ") }
        )?;
        if let Some(st) = &self.streams {
            let by = |m: &BTreeMap<String, u64>| {
                let v: Vec<String> = m.iter().map(|(c, n)| format!("{c} {n}")).collect();
                if v.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", v.join(", "))
                }
            };
            writeln!(
                f,
                "streams     {} AgentSync held to the end ({} of {} opened over {} connection(s) in {:.1} s{}; {} cut during the run{})",
                st.held,
                st.opened,
                st.requested,
                st.connections,
                st.open_secs,
                by(&st.open_errors),
                st.cut,
                by(&st.cut_by),
            )?;
        }
        Ok(())
    }
}
