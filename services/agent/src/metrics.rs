//! Prometheus metrics of the agent: pongs by the version and pod that
//! answered, and when the last one arrived (a stale value means a stuck stream).

use std::time::{SystemTime, UNIX_EPOCH};

use proto::product::AgentPong;
use telemetry::prometheus::{Gauge, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct AgentMetrics {
    pongs: IntCounterVec,
    last_pong: Gauge,
}

impl AgentMetrics {
    pub fn new(registry: &Registry) -> telemetry::prometheus::Result<Self> {
        let pongs = IntCounterVec::new(
            Opts::new(
                "agent_pongs_total",
                "Pongs received, by the version and pod that served them.",
            ),
            &["server_version", "server_pod"],
        )?;
        let last_pong = Gauge::new("agent_last_pong_timestamp_seconds", "Unix time of the last pong.")?;
        registry.register(Box::new(pongs.clone()))?;
        registry.register(Box::new(last_pong.clone()))?;
        Ok(Self { pongs, last_pong })
    }

    pub fn observe(&self, pong: &AgentPong) {
        let (version, pod) = pong
            .served_by
            .as_ref()
            .map_or(("", ""), |s| (s.version.as_str(), s.pod.as_str()));
        self.pongs.with_label_values(&[version, pod]).inc();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_pong.set(now.as_secs_f64());
    }
}
