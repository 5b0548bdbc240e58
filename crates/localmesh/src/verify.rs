//! `localmesh verify`: the documented journeys through the public gateway only (so it works
//! against `localmesh up` and a cluster alike), printed as a pass/fail table.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use proto::order::GetOrderRequest;
use proto::order::order_service_client::OrderServiceClient;
use proto::product::product_service_client::ProductServiceClient;
use proto::product::{AgentPing, GetProductRequest};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::model::RouteAction;

/// The v2 share of the gateway's default `product.ProductService` route (80/20) when no `--root`
/// is given to read it from.
pub const DEFAULT_V2_SHARE: f64 = 0.2;

/// How long one journey may take before it is reported as failed.
const JOURNEY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The gateway's address, `HOST:PORT`.
    pub target: String,
    /// The CA that signed the gateway's certificate (PEM).
    pub cacert: PathBuf,
    /// `:authority` and SNI.
    pub authority: String,
    /// GetProduct calls for the split check.
    pub n: usize,
    /// The expected share of product v2 in the weighted split.
    pub v2_share: f64,
    /// Jaeger's query API (the local console, or the cluster's Jaeger through a port-forward).
    pub jaeger: String,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// `localmesh verify`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The gateway's TLS listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub target: String,
    /// The CA that signed the gateway certificate.
    #[arg(long, default_value = "gateway/certs/ca.crt")]
    pub cacert: PathBuf,
    /// The gateway host: SNI, :authority and Host.
    #[arg(long, default_value = "sit-gateway.tcex.com.vn")]
    pub authority: String,
    /// GetProduct calls over one connection for the weighted-split check.
    #[arg(short = 'n', default_value_t = 1000)]
    pub n: usize,
    /// Read the expected v1/v2 weights from this repository's manifests instead of using 80/20.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Jaeger's query API, where the order's trace is looked up: localmesh's console, or the
    /// cluster's Jaeger (`kubectl -n istio-system port-forward svc/tracing 16686:80`).
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    pub jaeger: String,
}

/// Runs `localmesh verify`: prints the table, exit 0 only when every journey passed.
pub fn main(args: VerifyArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let v2_share = match &args.root {
        None => DEFAULT_V2_SHARE,
        Some(root) => match v2_share_from(root, &args.authority) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("localmesh verify: cannot read the weights from {}: {e}", root.display());
                return ExitCode::from(2);
            }
        },
    };
    let opts = VerifyOptions {
        target: args.target,
        cacert: args.cacert,
        authority: args.authority,
        n: args.n,
        v2_share,
        jaeger: args.jaeger.trim_end_matches('/').to_string(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("localmesh: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = rt.block_on(run(&opts));
    print!("{}", render(&rows));
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed == 0 {
        println!("all {} journeys passed", rows.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} journeys failed", rows.len());
        ExitCode::FAILURE
    }
}

/// The v2 share of the gateway's GetProduct route as compiled from `root`'s manifests.
pub fn v2_share_from(root: &Path, authority: &str) -> Result<f64, String> {
    let mesh = crate::load(root).map_err(|e| e.to_string())?;
    let req = crate::Request::grpc("/product.ProductService/GetProduct");
    let (_, route) = crate::select::gateway(&mesh, 443, authority, &req)
        .map_err(|_| format!("no gateway route for GetProduct on {authority}:443"))?;
    let RouteAction::Forward(backends) = &route.action else {
        return Err("the GetProduct route redirects".into());
    };
    let total = crate::select::total_weight(backends);
    let v2: u32 = backends
        .iter()
        .filter(|b| b.service.name.ends_with("-v2") || b.subset.as_deref() == Some("v2"))
        .map(|b| b.weight)
        .sum();
    if total == 0 {
        return Err("the GetProduct route has no weight".into());
    }
    Ok(f64::from(v2) / f64::from(total))
}

/// Runs every journey, in order; never panics on a gateway that misbehaves or is absent.
pub async fn run(opts: &VerifyOptions) -> Vec<Row> {
    let mut rows = Vec::new();
    macro_rules! journey {
        ($name:expr, $fut:expr) => {{
            let r = match tokio::time::timeout(JOURNEY_TIMEOUT, $fut).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {}s", JOURNEY_TIMEOUT.as_secs())),
            };
            rows.push(match r {
                Ok(detail) => Row {
                    name: $name,
                    pass: true,
                    detail,
                },
                Err(detail) => Row {
                    name: $name,
                    pass: false,
                    detail,
                },
            });
        }};
    }
    journey!("reflection list", reflection_list(opts));
    journey!("GetProduct 123", get_product_once(opts));
    journey!("weighted split", weighted_split(opts));
    journey!("premium to v2", premium(opts));
    journey!("AgentSync by agent-version", agent_sync(opts));
    journey!("frontend home", frontend_home(opts));
    let mut request_id = None;
    journey!("order via frontend", async {
        let (detail, id) = order_journey(opts).await?;
        request_id = id;
        Ok(detail)
    });
    journey!("order trace in Jaeger", async {
        match &request_id {
            Some(id) => order_trace(opts, id).await,
            None => Err("no order was placed, or its answer carried no x-request-id".to_string()),
        }
    });
    rows
}

/// The table, one row per journey.
pub fn render(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max("JOURNEY".len());
    let mut out = format!("{:<w$}  {:<6}  DETAIL\n", "JOURNEY", "RESULT");
    for r in rows {
        let res = if r.pass { "PASS" } else { "FAIL" };
        out.push_str(&format!(
            "{:<w$}  {:<6}  {}\n",
            r.name,
            res,
            r.detail.replace('\n', " ")
        ));
    }
    out
}

fn status(what: &str, s: &tonic::Status) -> String {
    let mut m = format!("{what}: {:?}: {}", s.code(), s.message());
    if let Some(src) = s.source() {
        m.push_str(": ");
        m.push_str(&crate::error_chain(src));
    }
    m
}

/// One HTTP/2 connection to the gateway.
async fn channel(o: &VerifyOptions) -> Result<Channel, String> {
    let pem = std::fs::read(&o.cacert).map_err(|e| format!("cannot read {}: {e}", o.cacert.display()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name(o.authority.clone());
    let origin: Uri = format!("https://{}", o.authority)
        .parse()
        .map_err(|e| format!("authority {}: {e}", o.authority))?;
    Endpoint::from_shared(format!("https://{}", o.target))
        .map_err(|e| format!("target {}: {e}", o.target))?
        .origin(origin)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .tls_config(tls)
        .map_err(|e| format!("TLS config: {}", crate::error_chain(&e)))?
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the gateway at {}: {}",
                o.target,
                crate::error_chain(&e)
            )
        })
}

async fn reflection_list(o: &VerifyOptions) -> Result<String, String> {
    let mut client = ServerReflectionClient::new(channel(o).await?);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .map_err(|s| status("ServerReflectionInfo", &s))?
        .into_inner();
    let msg = stream
        .message()
        .await
        .map_err(|s| status("ServerReflectionInfo", &s))?
        .ok_or("the reflection stream ended without an answer")?;
    let names: Vec<String> = match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => return Err(format!("unexpected reflection answer: {other:?}")),
    };
    if names.iter().any(|n| n == "product.ProductService") {
        Ok(format!("{} services: {}", names.len(), names.join(", ")))
    } else {
        Err(format!("product.ProductService missing from {names:?}"))
    }
}

fn product_request(premium: bool) -> tonic::Request<GetProductRequest> {
    let mut req = tonic::Request::new(GetProductRequest {
        product_id: "123".into(),
    });
    if premium {
        req.metadata_mut()
            .insert("user-type", tonic::metadata::MetadataValue::from_static("premium"));
    }
    req
}

/// (version, pod) of one GetProduct "123".
async fn served(client: &mut ProductServiceClient<Channel>, premium: bool) -> Result<(String, String), String> {
    let p = client
        .get_product(product_request(premium))
        .await
        .map_err(|s| status("GetProduct", &s))?
        .into_inner();
    let sb = p.served_by.ok_or("GetProduct answered without served_by")?;
    Ok((sb.version, sb.pod))
}

async fn get_product_once(o: &VerifyOptions) -> Result<String, String> {
    let mut client = ProductServiceClient::new(channel(o).await?);
    let (version, pod) = served(&mut client, false).await?;
    if version.is_empty() || pod.is_empty() {
        return Err(format!("served_by incomplete: version {version:?}, pod {pod:?}"));
    }
    Ok(format!("served by product {version} · pod {pod}"))
}

async fn weighted_split(o: &VerifyOptions) -> Result<String, String> {
    if o.n == 0 {
        return Err("-n must be at least 1".into());
    }
    // One channel to one endpoint: one HTTP/2 connection, so the split is the gateway's, per request.
    let mut client = ProductServiceClient::new(channel(o).await?);
    let (mut v1, mut v2) = (0usize, 0usize);
    for _ in 0..o.n {
        match served(&mut client, false).await?.0.as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => return Err(format!("a product version that is neither v1 nor v2: {other:?}")),
        }
    }
    let (n, p) = (o.n as f64, o.v2_share);
    let expected = n * p;
    let bound = 4.0 * (n * p * (1.0 - p)).sqrt();
    let detail = format!(
        "n={} v1={v1} v2={v2} ({:.1}% v2, expected {:.1}% ± {:.1} calls)",
        o.n,
        100.0 * v2 as f64 / n,
        100.0 * p,
        bound
    );
    if (v2 as f64 - expected).abs() <= bound {
        Ok(detail)
    } else {
        Err(format!("split outside the 4σ bound: {detail}"))
    }
}

async fn premium(o: &VerifyOptions) -> Result<String, String> {
    const CALLS: usize = 50;
    let mut client = ProductServiceClient::new(channel(o).await?);
    let mut pods = std::collections::BTreeSet::new();
    for i in 0..CALLS {
        let (version, pod) = served(&mut client, true).await?;
        if version != "v2" {
            return Err(format!(
                "call {} of {CALLS} with user-type: premium went to {version} ({pod})",
                i + 1
            ));
        }
        pods.insert(pod);
    }
    Ok(format!(
        "{CALLS}/{CALLS} on v2 ({})",
        pods.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// One AgentSync stream of `pings` pings; returns the (version, pod) of its pongs.
async fn agent_stream(
    client: &mut ProductServiceClient<Channel>,
    agent_version: &str,
    pings: u64,
) -> Result<Vec<(String, String)>, String> {
    let msgs: Vec<AgentPing> = (1..=pings)
        .map(|seq| AgentPing {
            seq,
            message: format!("verify ping {seq}"),
            sent_at: None,
        })
        .collect();
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    let md = req.metadata_mut();
    md.insert(
        "agent-version",
        agent_version.parse().map_err(|_| "agent-version is not ASCII")?,
    );
    md.insert(
        "agent-id",
        tonic::metadata::MetadataValue::from_static("localmesh-verify"),
    );
    let mut stream = client
        .agent_sync(req)
        .await
        .map_err(|s| status("AgentSync", &s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(pong) = stream.message().await.map_err(|s| status("AgentSync", &s))? {
        let sb = pong.served_by.ok_or("a pong without served_by")?;
        out.push((sb.version, sb.pod));
        if out.len() as u64 == pings {
            break;
        }
    }
    if out.len() as u64 != pings {
        return Err(format!("{pings} pings, {} pongs", out.len()));
    }
    Ok(out)
}

async fn agent_sync(o: &VerifyOptions) -> Result<String, String> {
    const PINGS: u64 = 5;
    let mut client = ProductServiceClient::new(channel(o).await?);
    let mut details = Vec::new();
    for (agent_version, want) in [("v1.3", "v1"), ("v2.1", "v2")] {
        let pongs = agent_stream(&mut client, agent_version, PINGS)
            .await
            .map_err(|e| format!("agent-version {agent_version}: {e}"))?;
        if let Some((v, p)) = pongs.iter().find(|(v, _)| v != want) {
            return Err(format!(
                "agent-version {agent_version}: a pong from {v} ({p}), want only {want}"
            ));
        }
        let first = &pongs[0].1;
        if let Some((_, p)) = pongs.iter().find(|(_, p)| p != first) {
            return Err(format!(
                "agent-version {agent_version}: one stream answered by {first} and {p}"
            ));
        }
        details.push(format!("{agent_version} → {want} ({first}, {PINGS} pongs)"));
    }
    Ok(details.join("; "))
}

/// An answer to [`https`].
#[derive(Debug, Clone)]
pub struct HttpsAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTPS/1.1 request through the gateway, with SNI and Host = the authority.
pub async fn https(
    o: &VerifyOptions,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpsAnswer, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(&o.cacert).map_err(|e| format!("cannot read {}: {e}", o.cacert.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", o.cacert.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", o.cacert.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(o.authority.clone()).map_err(|e| format!("authority {}: {e}", o.authority))?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&o.target))
        .await
        .map_err(|_| format!("cannot connect to the gateway at {}: timed out", o.target))?
        .map_err(|e| format!("cannot connect to the gateway at {}: {e}", o.target))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {} as {}: {e}", o.target, o.authority))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {}", crate::error_chain(&e)))?;
    tokio::spawn(conn);
    let port = o.target.rsplit_once(':').map(|(_, p)| p).unwrap_or("443");
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{}:{port}", o.authority));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .map_err(|_| format!("{method} {path}: no answer in 20 s"))?
        .map_err(|e| format!("{method} {path}: {}", crate::error_chain(&e)))?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: body: {}", crate::error_chain(&e)))?
        .to_bytes();
    Ok(HttpsAnswer {
        status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(200).collect();
    s.replace('\n', " ")
}

async fn frontend_home(o: &VerifyOptions) -> Result<String, String> {
    let HttpsAnswer { status: code, body, .. } = https(o, "GET", "/", &[], "").await?;
    if code != 200 {
        return Err(format!("GET / answered {code}: {}", snippet(&body)));
    }
    let Some(at) = body.find("served by product") else {
        return Err("GET / has no \"served by product\" badge".into());
    };
    let badge: String = body[at..].chars().take_while(|&c| c != '<').collect();
    Ok(format!("200, {}", badge.trim()))
}

/// Places an order (and again with the same key); returns the detail and the first answer's
/// `x-request-id` (the id the gateway used, echoed by the frontend).
async fn order_journey(o: &VerifyOptions) -> Result<(String, Option<String>), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let key = format!("localmesh-verify-{}-{nanos}", std::process::id());
    let body = r#"{"customer_id":"localmesh-verify","items":[{"product_id":"123","quantity":1}]}"#;
    let headers = [("content-type", "application/json"), ("idempotency-key", key.as_str())];
    let place = async || -> Result<(String, Option<String>), String> {
        let a = https(o, "POST", "/api/orders", &headers, body).await?;
        let (code, resp) = (a.status, a.body);
        if !(200..300).contains(&code) {
            return Err(format!("POST /api/orders answered {code}: {}", snippet(&resp)));
        }
        let v: serde_json::Value =
            serde_json::from_str(&resp).map_err(|e| format!("POST /api/orders: not JSON ({e}): {}", snippet(&resp)))?;
        let request_id = a
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match v["id"].as_str() {
            Some(id) if !id.is_empty() => Ok((id.to_owned(), request_id)),
            _ => Err(format!("POST /api/orders: no id in {}", snippet(&resp))),
        }
    };
    let (id, request_id) = place().await?;
    let mut client = OrderServiceClient::new(channel(o).await?);
    let order = client
        .get_order(GetOrderRequest { id: id.clone() })
        .await
        .map_err(|s| status(&format!("GetOrder {id}"), &s))?
        .into_inner();
    if order.id != id {
        return Err(format!("GetOrder {id} returned order {}", order.id));
    }
    let (again, _) = place().await.map_err(|e| format!("retry with the same key: {e}"))?;
    if again != id {
        return Err(format!("retry with key {key} gave order {again}, first was {id}"));
    }
    let by = order
        .served_by
        .map(|s| format!(" (GetOrder served by {} {})", s.version, s.pod))
        .unwrap_or_default();
    Ok((
        format!("order {id} placed, read back over gRPC, retry gave the same id{by}"),
        request_id,
    ))
}

/// The gateway's service name in Jaeger: Istio's proxies report as `<canonical service>.<namespace>`.
const GATEWAY_SERVICE: &str = "public-api-gateway-istio.gateway";
/// The apps one order crosses (matched against Jaeger service names up to the first `.` or `-`,
/// so both the apps, `order`, and their proxies, `order-service.default`, count).
const ORDER_APPS: [&str; 4] = ["frontend", "order", "product", "payment"];
/// How long the order's spans may take to reach Jaeger (the SDKs batch them).
const TRACE_WAIT: Duration = Duration::from_secs(20);

/// One order's trace in Jaeger's query API: found by the request id its answer carried, it must be
/// one trace with one root (the gateway's span), every parent present, and spans from every app.
async fn order_trace(o: &VerifyOptions, request_id: &str) -> Result<String, String> {
    let tags = serde_json::json!({"guid:x-request-id": request_id}).to_string();
    let query: String = [
        ("service", GATEWAY_SERVICE),
        ("tags", tags.as_str()),
        ("lookback", "1h"),
        ("limit", "5"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", query_escape(v)))
    .collect::<Vec<_>>()
    .join("&");
    let url = format!("{}/api/traces?{query}", o.jaeger);
    let deadline = tokio::time::Instant::now() + TRACE_WAIT;
    loop {
        let last = match jaeger_get(&url).await.and_then(|v| check_order_trace(&v)) {
            Ok(detail) => return Ok(detail),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("after {}s: {last}", TRACE_WAIT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// GET over plain HTTP (a port-forward or the local console), as JSON.
async fn jaeger_get(url: &str) -> Result<serde_json::Value, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("--jaeger {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--jaeger {url}: expected an http:// URL of Jaeger's query service"
        ));
    }
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| format!("Jaeger at {url} did not answer in 10 s"))?
        .map_err(|e| format!("cannot reach Jaeger at {}: {}", url, crate::error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("Jaeger's answer: {}", crate::error_chain(&e)))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "Jaeger answered {status} with no JSON ({e}): {}",
            snippet(&String::from_utf8_lossy(&body))
        )
    })?;
    if !status.is_success() {
        return Err(format!("Jaeger answered {status}: {}", v["errors"]));
    }
    Ok(v)
}

/// The trace checks on a Jaeger `/api/traces` answer.
pub fn check_order_trace(v: &serde_json::Value) -> Result<String, String> {
    let traces = v["data"].as_array().ok_or("Jaeger's answer has no data array")?;
    let [t] = traces.as_slice() else {
        return Err(format!("{} traces carry the order's request id, want 1", traces.len()));
    };
    let spans = t["spans"].as_array().ok_or("the trace has no spans")?;
    let service_of = |s: &serde_json::Value| {
        s["processID"]
            .as_str()
            .and_then(|p| t["processes"][p]["serviceName"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut services: Vec<String> = spans.iter().map(service_of).collect();
    services.sort();
    services.dedup();
    let missing: Vec<&str> = ORDER_APPS
        .iter()
        .copied()
        .filter(|app| !services.iter().any(|s| s.split(['.', '-']).next() == Some(app)))
        .collect();
    if !missing.is_empty() {
        return Err(format!("no spans yet from {missing:?} (services so far: {services:?})"));
    }
    let ids: std::collections::HashSet<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    let parents = |s: &serde_json::Value| -> Vec<String> {
        s["references"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["spanID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let roots: Vec<&serde_json::Value> = spans.iter().filter(|s| parents(s).is_empty()).collect();
    let orphans = spans
        .iter()
        .filter(|s| parents(s).iter().any(|p| !ids.contains(p.as_str())))
        .count();
    if orphans > 0 {
        return Err(format!("{orphans} spans name a parent that is not in the trace"));
    }
    let [root] = roots.as_slice() else {
        return Err(format!("{} root spans, want 1 (the gateway's)", roots.len()));
    };
    let root_service = service_of(root);
    if root_service != GATEWAY_SERVICE {
        return Err(format!("the root span is {root_service}'s, want {GATEWAY_SERVICE}'s"));
    }
    Ok(format!(
        "trace {}: {} spans, root {root_service} ({}), services {}",
        t["traceID"].as_str().unwrap_or("?"),
        spans.len(),
        root["operationName"].as_str().unwrap_or("?"),
        services.join(", ")
    ))
}
