//! `AgentSync`: one long-lived bidi stream per agent. The agent names itself
//! with the `agent-version` and `agent-id` metadata when it opens the stream;
//! every ping gets a pong naming this pod, so stickiness is visible.

use std::time::SystemTime;

use proto::{
    common::ServedBy,
    product::{AgentPing, AgentPong},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming, metadata::MetadataMap};
use tracing::Instrument;

use crate::service::BoxStream;

const MAX_META_CHARS: usize = 128;

pub(crate) fn start(served_by: ServedBy, req: Request<Streaming<AgentPing>>) -> Result<BoxStream<AgentPong>, Status> {
    let agent_version = meta(req.metadata(), "agent-version")?;
    let agent_id = meta(req.metadata(), "agent-id")?;
    let mut inbound = req.into_inner();
    let span = tracing::info_span!("agent_stream", agent_id = %agent_id, agent_version = %agent_version);
    span.in_scope(|| {
        tracing::info!(
            "[{}/{}] Stream opened from agent-id={agent_id} agent-version={agent_version}",
            served_by.version,
            served_by.pod
        )
    });

    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(
        async move {
            let mut pongs = 0u64;
            let why = loop {
                let ping = tokio::select! {
                    _ = tx.closed() => break "response stream closed".to_string(),
                    m = inbound.message() => m,
                };
                let ping = match ping {
                    Ok(Some(p)) => p,
                    Ok(None) => break "agent closed the stream".to_string(),
                    Err(status) => break format!("agent stream failed: {}", status.message()),
                };
                tracing::info!(
                    seq = ping.seq,
                    "Received ping from agent-id={agent_id} message={}",
                    ping.message
                );
                pongs += 1;
                let pong = AgentPong {
                    seq: ping.seq,
                    message: "pong".into(),
                    agent_id: agent_id.clone(),
                    agent_version: agent_version.clone(),
                    received_at: Some(SystemTime::now().into()),
                    stream_pongs: pongs,
                    served_by: Some(served_by.clone()),
                };
                if tx.send(Ok(pong)).await.is_err() {
                    break "response stream closed".to_string();
                }
                tracing::info!(seq = ping.seq, "Sent pong to agent-id={agent_id}");
            };
            tracing::info!(pongs, reason = %why, "Stream closed from agent-id={agent_id}");
        }
        .instrument(span),
    );
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// A printable metadata value; absent means "unknown" (the gateway then
/// routes the stream to v1, as for any unrecognised version).
fn meta(md: &MetadataMap, key: &str) -> Result<String, Status> {
    let Some(v) = md.get(key) else {
        return Ok("unknown".into());
    };
    let s = v
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("metadata {key} must be printable ASCII")))?;
    if s.is_empty() || s.len() > MAX_META_CHARS || s.chars().any(|c| c.is_control()) {
        return Err(Status::invalid_argument(format!(
            "metadata {key} {s:?} must be 1 to {MAX_META_CHARS} printable characters"
        )));
    }
    Ok(s.to_owned())
}
