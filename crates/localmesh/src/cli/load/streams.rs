//! `--hold-streams`: AgentSync streams opened through the target before the run and held, idle,
//! until it ends.

use std::sync::Arc;
use std::time::Instant;

use proto::product::product_service_client::ProductServiceClient;
use proto::product::{AgentPing, AgentPong};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use super::{CALL_TIMEOUT, Header, LoadArgs, STREAMS_PER_CONNECTION, StreamsSummary, connect};

/// The held streams: each task ends when `stop` says so (`None`) or when its stream ends first
/// (cut: why).
pub(super) struct HeldStreams {
    summary: StreamsSummary,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<Option<String>>,
}

impl HeldStreams {
    /// Ends every stream (each request side ends, as an agent hanging up, and the stream is
    /// dropped) and counts those that had ended already.
    pub(super) async fn release(mut self) -> StreamsSummary {
        let _ = self.stop.send(true);
        let mut cut = 0;
        while let Some(r) = self.tasks.join_next().await {
            if let Some(why) = r.unwrap_or_else(|_| Some("Panicked".into())) {
                cut += 1;
                *self.summary.cut_by.entry(why).or_default() += 1;
            }
        }
        self.summary.cut = cut;
        self.summary.held = self.summary.opened.saturating_sub(cut);
        self.summary
    }
}

/// One AgentSync stream through `client`, open end to end: its ping sent and the pong read. The
/// request side then stays open with nothing more to send until `stop` turns true.
async fn open_stream(
    mut client: ProductServiceClient<Channel>,
    headers: Arc<Vec<Header>>,
    n: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tonic::Streaming<AgentPong>, tonic::Status> {
    let ping = AgentPing {
        seq: 1,
        message: "localmesh load".into(),
        sent_at: Some(std::time::SystemTime::now().into()),
    };
    let outbound = futures_util::stream::unfold((Some(ping), stop), |(ping, mut stop)| async move {
        match ping {
            Some(ping) => Some((ping, (None, stop))),
            None => {
                let _ = stop.wait_for(|s| *s).await;
                None
            }
        }
    });
    let mut req = tonic::Request::new(outbound);
    for Header(k, v) in headers.iter() {
        req.metadata_mut().append(k.clone(), v.clone());
    }
    if let Ok(id) = AsciiMetadataValue::try_from(format!("localmesh-load-{n}")) {
        req.metadata_mut().insert("agent-id", id);
    }
    let opened = async {
        let mut stream = client.agent_sync(req).await?.into_inner();
        match stream.message().await? {
            Some(_pong) => Ok(stream),
            None => Err(tonic::Status::unavailable("the stream ended before its first pong")),
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, opened)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no pong within 10 s")))
}

/// Opens `args.hold_streams` streams and holds them until [`HeldStreams::release`].
pub(super) async fn hold_streams(args: &LoadArgs) -> anyhow::Result<HeldStreams> {
    let started = Instant::now();
    let wanted = args.hold_streams;
    let connections = wanted.div_ceil(STREAMS_PER_CONNECTION);
    let clients = connect(args, connections).await?;
    let headers = Arc::new(args.headers.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut opening = tokio::task::JoinSet::new();
    for n in 0..wanted {
        let client = clients[(n / STREAMS_PER_CONNECTION) as usize].clone();
        opening.spawn(open_stream(client, headers.clone(), n, stopped.clone()));
    }
    let mut summary = StreamsSummary {
        requested: wanted,
        connections,
        ..StreamsSummary::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Ok(mut stream)) => {
                summary.opened += 1;
                let mut stopped = stopped.clone();
                let released = stopped.clone();
                tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stopped.wait_for(|s| *s) => return None,
                            m = stream.message() => {
                                let why = match m {
                                    Ok(Some(_)) => continue,
                                    Ok(None) => "Ok".to_string(),
                                    Err(status) => format!("{:?}", status.code()),
                                };
                                // Ended by the release itself (its request side ended first, and
                                // the server closed the stream before this task saw `stop`).
                                if *released.borrow() {
                                    return None;
                                }
                                return Some(why);
                            }
                        }
                    }
                });
            }
            Ok(Err(status)) => *summary.open_errors.entry(format!("{:?}", status.code())).or_default() += 1,
            Err(_) => *summary.open_errors.entry("Panicked".into()).or_default() += 1,
        }
    }
    summary.open_secs = started.elapsed().as_secs_f64();
    // On stderr whatever the output format: `make bench` waits for this line.
    eprintln!(
        "localmesh load: {} AgentSync streams open over {connections} connection(s) ({} failed to open); the run starts",
        summary.opened,
        u64::from(wanted) - summary.opened
    );
    Ok(HeldStreams { summary, stop, tasks })
}
