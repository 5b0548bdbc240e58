//! `localmesh load`: a gRPC load generator against the TLS gateway. It offers load either on a
//! fixed timetable (`--rate`, open loop: a slow response does not delay the next request, and
//! latency is measured from the request's scheduled start) or with N requests always in flight
//! (`--concurrency`, closed loop), over `--connections` HTTP/2 connections, and prints the
//! request count, throughput, latency percentiles (hdrhistogram), errors by gRPC code and which
//! product version answered. With `--hold-streams N` it first opens N AgentSync bidi streams
//! through the same target (each sends one ping, reads its pong, then stays idle) and holds them
//! for the whole run, on connections of their own: what open streams cost a proxy while unary
//! calls go on (`make bench`'s "streams at scale").

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use proto::product::product_service_client::ProductServiceClient;
use proto::product::{GetProductRequest, ListProductsRequest};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;

use crate::gateway_client::GatewayTarget;

mod report;
mod streams;

pub use report::{Latency, StreamsSummary, Summary};
use streams::hold_streams;

/// Product ids GetProduct cycles through.
const GET_IDS: [&str; 21] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20",
    "123",
];
/// Every call gets this deadline, so a stuck upstream cannot hold the run open.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `--hold-streams` takes at most this many streams.
pub const MAX_HOLD_STREAMS: u32 = 100_000;
/// Held streams per HTTP/2 connection: within the common servers' concurrent-stream limits
/// (HAProxy 100, nginx 128, hyper 200), so no stream waits for a slot.
pub const STREAMS_PER_CONNECTION: u32 = 100;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub gateway: GatewayTarget,
    /// Open loop: requests per second on a fixed timetable, whatever the responses' latency.
    #[arg(long, conflicts_with = "concurrency", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Closed loop: requests kept in flight (the default mode, with 8).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// How long to offer load, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = service_runtime::env::parse_duration)]
    pub duration: Duration,
    /// HTTP/2 connections to spread the requests over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// Weighted methods: get (GetProduct, ids 1..20 and 123) and list (ListProducts page 1).
    #[arg(long, default_value = "get=8,list=2", value_parser = parse_mix)]
    pub mix: Mix,
    /// Extra request metadata, `-H 'user-type: premium'`; repeatable.
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<Header>,
    /// Plaintext HTTP/2 (h2c) to `--target`, e.g. straight to a pod, bypassing the gateway: the
    /// reference run of `make bench`. `--cacert` is then unused.
    #[arg(long)]
    pub plaintext: bool,
    /// Print the summary as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Before the run, open this many AgentSync streams through `--target` (each sends one ping
    /// and reads its pong, with the `-H` metadata and its own `agent-id`) and hold them, idle,
    /// until the run ends; 100 per HTTP/2 connection, on connections of their own. 0: none.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_HOLD_STREAMS))
    )]
    pub hold_streams: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    List,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GetProduct",
            Method::List => "ListProducts",
        }
    }
}

/// The request sequence: `get=8,list=2` is 8 GetProduct then 2 ListProducts, repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(Vec<Method>);

pub fn parse_mix(raw: &str) -> Result<Mix, String> {
    let mut slots = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not METHOD=WEIGHT (e.g. get=8,list=2)"))?;
        let method = match name.trim() {
            "get" | "GetProduct" => Method::Get,
            "list" | "ListProducts" => Method::List,
            other => return Err(format!("unknown method '{other}' (get or list)")),
        };
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight '{}' of {name} is not a whole number", weight.trim()))?;
        if weight > 1000 {
            return Err(format!("weight {weight} of {name} is over 1000"));
        }
        slots.extend(std::iter::repeat_n(method, weight as usize));
    }
    if slots.is_empty() {
        return Err("no method with a weight above 0 (e.g. get=8,list=2)".into());
    }
    Ok(Mix(slots))
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1_000_000.0 => Ok(r),
        _ => Err("expected requests per second above 0 (and at most 1000000)".into()),
    }
}

#[derive(Debug, Clone)]
pub struct Header(AsciiMetadataKey, AsciiMetadataValue);

pub fn parse_header(raw: &str) -> Result<Header, String> {
    let (k, v) = raw
        .split_once(':')
        .ok_or_else(|| format!("'{raw}' is not 'name: value'"))?;
    let key = AsciiMetadataKey::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("'{}' is not a valid metadata name", k.trim()))?;
    let value = AsciiMetadataValue::try_from(v.trim())
        .map_err(|_| format!("the value of '{}' is not printable ASCII", k.trim()))?;
    Ok(Header(key, value))
}

/// What a run measured.
struct Stats {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    versions: BTreeMap<String, u64>,
    methods: BTreeMap<&'static str, u64>,
}

struct Shared {
    stats: Mutex<Stats>,
    done: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    fn record(&self, method: Method, latency: Duration, outcome: Result<String, tonic::Code>) {
        let mut s = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.latency_us
            .saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
        *s.methods.entry(method.name()).or_default() += 1;
        match outcome {
            Ok(version) => {
                s.ok += 1;
                let v = if version.is_empty() { "(none)".into() } else { version };
                *s.versions.entry(v).or_default() += 1;
            }
            Err(code) => {
                *s.errors.entry(format!("{code:?}")).or_default() += 1;
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a worker needs to issue request number `n`.
struct Plan {
    clients: Vec<ProductServiceClient<Channel>>,
    mix: Mix,
    headers: Vec<Header>,
}

impl Plan {
    async fn call(&self, n: u64) -> (Method, Result<String, tonic::Code>) {
        let mut client = self.clients[(n % self.clients.len() as u64) as usize].clone();
        let method = self.mix.0[(n % self.mix.0.len() as u64) as usize];
        let outcome = match method {
            Method::Get => {
                let id = GET_IDS[((n / self.mix.0.len() as u64) % GET_IDS.len() as u64) as usize];
                let req = self.request(GetProductRequest { product_id: id.into() });
                client
                    .get_product(req)
                    .await
                    .map(|r| r.into_inner().served_by.map(|s| s.version).unwrap_or_default())
            }
            Method::List => {
                let req = self.request(ListProductsRequest {
                    page_size: 10,
                    page_number: Some(1),
                });
                client
                    .list_products(req)
                    .await
                    .map(|r| r.into_inner().served_by.map(|s| s.version).unwrap_or_default())
            }
        };
        (method, outcome.map_err(|s| s.code()))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(CALL_TIMEOUT);
        for Header(k, v) in &self.headers {
            req.metadata_mut().append(k.clone(), v.clone());
        }
        req
    }
}

/// `count` HTTP/2 connections to the target, one client each.
async fn connect(args: &LoadArgs, count: u32) -> anyhow::Result<Vec<ProductServiceClient<Channel>>> {
    let endpoint = args.gateway.endpoint(args.plaintext)?;
    let mut clients = Vec::new();
    for _ in 0..count {
        // One Endpoint::connect is one HTTP/2 connection.
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to {} ({}): {e:?}",
                args.gateway.target,
                args.gateway.authority
            )
        })?;
        clients.push(ProductServiceClient::new(channel));
    }
    Ok(clients)
}

fn progress(duration: Duration) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{wide_bar}] {percent}% {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Runs the load and returns its summary; an error only when no connection could be made.
pub async fn run(args: &LoadArgs) -> anyhow::Result<Summary> {
    let clients = connect(args, args.connections).await?;
    let held = if args.hold_streams > 0 {
        Some(hold_streams(args).await?)
    } else {
        None
    };
    let plan = Arc::new(Plan {
        clients,
        mix: args.mix.clone(),
        headers: args.headers.clone(),
    });
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            ok: 0,
            errors: BTreeMap::new(),
            versions: BTreeMap::new(),
            methods: BTreeMap::new(),
        }),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let bar = progress(args.duration);
    let start = tokio::time::Instant::now();
    let end = start + args.duration;
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                let el = start.elapsed().min(end - start);
                bar.set_position(el.as_millis() as u64);
                bar.set_message(format!(
                    "{} req, {} failed",
                    shared.done.load(Ordering::Relaxed),
                    shared.failed.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mode;
    if let Some(rate) = args.rate {
        mode = "open";
        // Request i is due at start + i/rate, whatever happened to the ones before it; its
        // latency counts from when it was due, so a stalled server shows up in the percentiles.
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut tasks = tokio::task::JoinSet::new();
        let mut n: u64 = 0;
        loop {
            let due = start + period.mul_f64(n as f64);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due).await;
            let (plan, shared) = (plan.clone(), shared.clone());
            tasks.spawn(async move {
                let (method, outcome) = plan.call(n).await;
                shared.record(method, due.elapsed(), outcome);
            });
            n += 1;
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    } else {
        mode = "closed";
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency.unwrap_or(8) {
            let (plan, shared, next) = (plan.clone(), shared.clone(), next.clone());
            tasks.spawn(async move {
                while tokio::time::Instant::now() < end {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let (method, outcome) = plan.call(n).await;
                    shared.record(method, t.elapsed(), outcome);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let streams = match held {
        Some(h) => Some(h.release().await),
        None => None,
    };

    let s = shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ms = |us: u64| us as f64 / 1000.0;
    let h = &s.latency_us;
    let requests = h.len();
    let failed = requests - s.ok;
    Ok(Summary {
        target: args.gateway.target.clone(),
        mode,
        concurrency: args.rate.is_none().then(|| args.concurrency.unwrap_or(8)),
        rate: args.rate,
        connections: args.connections,
        duration_secs: elapsed.as_secs_f64(),
        requests,
        ok: s.ok,
        failed,
        throughput_rps: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        },
        errors: s.errors.clone(),
        versions: s.versions.clone(),
        methods: s.methods.clone(),
        streams,
    })
}

/// `localmesh load`: exit 0 whenever it connected, 1 when it could not connect at all.
pub fn main(args: LoadArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("localmesh: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string(&summary) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("localmesh: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("localmesh load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
