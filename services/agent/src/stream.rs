//! One AgentSync stream: connect, open with the agent's metadata, ping every
//! interval, report each pong, and say why the stream ended.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use proto::product::{AgentPing, AgentPong, product_service_client::ProductServiceClient};
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    time::MissedTickBehavior,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Status, Streaming,
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::Endpoint,
};

/// Pings queued for the request body; more means the stream is stuck.
const PING_BUFFER: usize = 8;
/// Sent pings awaiting their pong, for the round-trip time.
const MAX_IN_FLIGHT: usize = 1024;
/// How long the server may take to answer the stream's opening.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// After the agent half-closes, how long the server may take to end the stream.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a stream sends and how long it runs.
pub struct Params<'a> {
    pub endpoint: &'a Endpoint,
    pub agent_version: &'a AsciiMetadataValue,
    pub agent_id: &'a AsciiMetadataValue,
    pub interval: Duration,
    /// Stop after this many pongs in all (across streams); 0 = never.
    pub pings: u64,
}

/// Counters the stream updates as it goes (they outlive the stream).
#[derive(Debug, Default)]
pub struct Counters {
    /// The last sequence number sent; sequence numbers run across streams.
    pub seq: u64,
    pub pings_sent: u64,
    pub pongs: u64,
    pub streams_opened: u64,
}

#[derive(Debug)]
pub enum End {
    /// The stop future resolved.
    Stopped,
    /// `--pings` pongs arrived.
    PingsReached,
    /// Connect failed or the stream ended; reconnect. `pongs` = on this stream.
    Failed { reason: String, pongs: u64 },
}

/// Runs one stream until it ends or `stop` resolves. Call it inside the
/// stream's span: the trace context of that span goes out as metadata.
pub async fn run<S>(p: &Params<'_>, counters: &mut Counters, stop: &mut S, observer: &mut impl FnMut(&AgentPong)) -> End
where
    S: Future<Output = ()> + Unpin,
{
    let channel = tokio::select! {
        biased;
        () = &mut *stop => return End::Stopped,
        res = p.endpoint.connect() => match res {
            Ok(c) => c,
            Err(e) => return End::Failed { reason: format!("connect failed: {}", error_chain(&e)), pongs: 0 },
        },
    };
    let mut client = ProductServiceClient::new(channel);

    let (tx, rx) = mpsc::channel::<AgentPing>(PING_BUFFER);
    let mut request = Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    md.insert("agent-version", p.agent_version.clone());
    md.insert("agent-id", p.agent_id.clone());
    telemetry::propagation::inject_metadata(md);

    let response = tokio::select! {
        biased;
        () = &mut *stop => return End::Stopped,
        res = tokio::time::timeout(OPEN_TIMEOUT, client.agent_sync(request)) => match res {
            Ok(Ok(r)) => r,
            Ok(Err(status)) => {
                return End::Failed { reason: format!("stream refused: {}", describe_status(&status)), pongs: 0 };
            }
            Err(_) => {
                return End::Failed { reason: format!("no answer to the stream's opening within {OPEN_TIMEOUT:?}"), pongs: 0 };
            }
        },
    };
    counters.streams_opened += 1;
    let (server_version, server_pod) = served_by_headers(response.metadata());
    tracing::info!(server_version, server_pod, "Stream opened");
    let mut inbound = response.into_inner();

    let mut ticker = tokio::time::interval(p.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight = BTreeMap::<u64, Instant>::new();
    let mut pongs = 0u64;
    loop {
        tokio::select! {
            biased;
            () = &mut *stop => {
                close(tx, inbound).await;
                return End::Stopped;
            }
            msg = inbound.message() => match msg {
                Ok(Some(pong)) => {
                    pongs += 1;
                    counters.pongs += 1;
                    log_pong(&pong, in_flight.remove(&pong.seq));
                    observer(&pong);
                    if p.pings > 0 && counters.pongs >= p.pings {
                        tracing::info!(pongs = counters.pongs, "Received {} pongs; closing the stream", counters.pongs);
                        close(tx, inbound).await;
                        return End::PingsReached;
                    }
                }
                Ok(None) => return End::Failed { reason: "the server ended the stream (status OK)".into(), pongs },
                Err(status) => {
                    return End::Failed { reason: format!("the stream failed: {}", describe_status(&status)), pongs };
                }
            },
            _ = ticker.tick() => {
                let seq = counters.seq + 1;
                let ping = AgentPing { seq, message: "ping".into(), sent_at: Some(SystemTime::now().into()) };
                match tx.try_send(ping) {
                    Ok(()) => {
                        counters.seq = seq;
                        counters.pings_sent += 1;
                        in_flight.insert(seq, Instant::now());
                        if in_flight.len() > MAX_IN_FLIGHT {
                            in_flight.pop_first();
                        }
                        tracing::info!(seq, "Sent ping seq={seq}");
                    }
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(queued = PING_BUFFER, "The request stream is not moving; skipping this ping");
                    }
                    // The request body is gone: the next message() says why.
                    Err(TrySendError::Closed(_)) => {}
                }
            }
        }
    }
}

fn log_pong(pong: &AgentPong, sent: Option<Instant>) {
    let (server_version, server_pod) = pong
        .served_by
        .as_ref()
        .map_or(("unknown", "unknown"), |s| (s.version.as_str(), s.pod.as_str()));
    let rtt_ms = sent.map(|t| (t.elapsed().as_secs_f64() * 10_000.0).round() / 10.0);
    tracing::info!(
        server_version,
        server_pod,
        seq = pong.seq,
        rtt_ms,
        stream_pongs = pong.stream_pongs,
        "Received pong from server={server_version}/{server_pod} seq={}",
        pong.seq
    );
}

/// Half-closes the request stream and lets the server finish its side, so
/// the server sees the agent leave rather than a reset stream.
async fn close(tx: mpsc::Sender<AgentPing>, mut inbound: Streaming<AgentPong>) {
    drop(tx);
    let drained = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            match inbound.message().await {
                Ok(Some(pong)) => tracing::debug!(seq = pong.seq, "Late pong after closing"),
                Ok(None) => return "ended".to_string(),
                Err(status) => return describe_status(&status),
            }
        }
    })
    .await;
    match drained {
        Ok(how) => tracing::info!(server = %how, "Stream closed"),
        Err(_) => tracing::info!("Stream closed (the server did not end it within {CLOSE_GRACE:?})"),
    }
}

/// `x-version` and `x-served-by` of the response headers, when the server sets them.
fn served_by_headers(md: &MetadataMap) -> (&str, &str) {
    let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    (get(telemetry::grpc::VERSION), get(telemetry::grpc::SERVED_BY))
}

/// `UNAVAILABLE: server is shutting down; reconnect`, plus the transport
/// error under the status, if any.
pub fn describe_status(status: &Status) -> String {
    let mut out = format!("{}: {}", code_name(status.code()), status.message());
    if let Some(src) = std::error::Error::source(status) {
        let chain = error_chain(src);
        if !status.message().contains(&chain) {
            out.push_str(" (");
            out.push_str(&chain);
            out.push(')');
        }
    }
    out
}

pub use telemetry::error_chain;

pub use telemetry::grpc::name_of as code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_grpc() {
        let s = Status::unavailable("server is shutting down; reconnect");
        assert_eq!(describe_status(&s), "UNAVAILABLE: server is shutting down; reconnect");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let s = Status::from_error(Box::new(io));
        assert!(
            describe_status(&s).contains("connection reset"),
            "{}",
            describe_status(&s)
        );
    }
}
