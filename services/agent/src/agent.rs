//! The agent's life: one stream at a time, reconnecting with backoff after
//! any error, until the stop future resolves or `--pings` pongs arrived.

use std::{future::Future, pin::pin, time::Duration};

use anyhow::Context as _;
use proto::product::AgentPong;
use tonic::{metadata::AsciiMetadataValue, transport::Endpoint};
use tracing::Instrument as _;

use crate::{
    backoff::Backoff,
    config::Settings,
    endpoint,
    stream::{self, Counters, End, Params},
};

/// Reasons kept in `Summary::recent_errors`.
const RECENT_ERRORS: usize = 16;

/// A configured agent; `run` drives it.
pub struct Agent {
    settings: Settings,
    agent_id: String,
    endpoint: Endpoint,
    agent_version_md: AsciiMetadataValue,
    agent_id_md: AsciiMetadataValue,
}

/// How the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The stop future resolved (SIGTERM, SIGINT, a test).
    Stopped,
    /// `--pings` pongs arrived.
    PingsReached,
}

/// What happened during `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub ended: Ended,
    pub pings_sent: u64,
    pub pongs: u64,
    /// Streams the server accepted.
    pub streams_opened: u64,
    /// Reconnects scheduled after a failed connect or an ended stream.
    pub reconnects: u64,
    /// Why the last reconnects happened, oldest first (at most 16).
    pub recent_errors: Vec<String>,
}

impl Agent {
    /// Checks what clap cannot: the agent id, the CA file, the TLS settings.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let agent_id = settings.resolved_agent_id().map_err(anyhow::Error::msg)?;
        let agent_version_md = AsciiMetadataValue::try_from(settings.agent_version.as_str())
            .context("--agent-version cannot be sent as gRPC metadata")?;
        let agent_id_md =
            AsciiMetadataValue::try_from(agent_id.as_str()).context("--agent-id cannot be sent as gRPC metadata")?;
        let endpoint = endpoint::build(&settings)?;
        Ok(Self {
            settings,
            agent_id,
            endpoint,
            agent_version_md,
            agent_id_md,
        })
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Keeps one AgentSync stream open, reconnecting after any error, until
    /// `stop` resolves (the request stream is closed first) or `--pings`
    /// pongs arrived. `observer` sees every pong.
    pub async fn run(
        &self,
        stop: impl Future<Output = ()>,
        mut observer: impl FnMut(&AgentPong),
    ) -> anyhow::Result<Summary> {
        let s = &self.settings;
        let params = Params {
            endpoint: &self.endpoint,
            agent_version: &self.agent_version_md,
            agent_id: &self.agent_id_md,
            interval: s.interval,
            pings: s.pings,
        };
        tracing::info!(
            target_url = %s.target,
            authority = s.authority.as_deref(),
            agent_id = %self.agent_id,
            agent_version = %s.agent_version,
            interval_ms = s.interval.as_millis() as u64,
            pings = s.pings,
            "Agent starting"
        );

        let mut stop = pin!(stop);
        let mut counters = Counters::default();
        let mut backoff = Backoff::new();
        let mut reconnects = 0u64;
        let mut recent_errors = Vec::new();
        let summary = |ended, counters: &Counters, reconnects, recent_errors| Summary {
            ended,
            pings_sent: counters.pings_sent,
            pongs: counters.pongs,
            streams_opened: counters.streams_opened,
            reconnects,
            recent_errors,
        };

        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let span = tracing::info_span!(
                "agent_stream",
                attempt,
                agent_id = %self.agent_id,
                agent_version = %s.agent_version,
                target_url = %s.target,
            );
            let end = stream::run(&params, &mut counters, &mut stop, &mut observer)
                .instrument(span.clone())
                .await;
            let (reason, pongs) = match end {
                End::Stopped => return Ok(summary(Ended::Stopped, &counters, reconnects, recent_errors)),
                End::PingsReached => return Ok(summary(Ended::PingsReached, &counters, reconnects, recent_errors)),
                End::Failed { reason, pongs } => (reason, pongs),
            };
            if pongs > 0 {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            reconnects += 1;
            span.in_scope(|| {
                tracing::warn!(
                    reason = %reason,
                    delay_ms = delay.as_millis() as u64,
                    reconnects,
                    stream_pongs = pongs,
                    "Reconnecting in {}: {reason}",
                    format_delay(delay)
                )
            });
            if recent_errors.len() == RECENT_ERRORS {
                recent_errors.remove(0);
            }
            recent_errors.push(reason);
            tokio::select! {
                biased;
                () = &mut stop => return Ok(summary(Ended::Stopped, &counters, reconnects, recent_errors)),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Millisecond precision: `312ms`, `1s 250ms`.
fn format_delay(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

/// `Agent::new(settings)?.run(stop, observer)`.
pub async fn run(
    settings: Settings,
    stop: impl Future<Output = ()>,
    observer: impl FnMut(&AgentPong),
) -> anyhow::Result<Summary> {
    Agent::new(settings)?.run(stop, observer).await
}
