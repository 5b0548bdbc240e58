//! The data plane over real sockets: the REAL repo manifests, in-process product servers on port 0
//! registered as endpoints, the TLS gateway and the h2c sidecar listener, and tonic clients.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use localmesh::identity::Identity;
use localmesh::model::{Key, Listener, Mesh};
use localmesh::proxy::{self, Endpoint, Endpoints, GATEWAY_HOST, LocalCa, Proxy, Running, listen};
use product::{Config, Handle};
use proto::order::GetOrderRequest;
use proto::order::order_service_client::OrderServiceClient;
use proto::product::product_service_client::ProductServiceClient;
use proto::product::{AgentPing, GetProductRequest};
use telemetry::GrpcMetrics;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Uri};

use testkit::copy_tree;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Pod {
    handle: Option<Handle>,
    endpoint: Arc<Endpoint>,
}

struct Env {
    proxy: Arc<Proxy>,
    gateway: Running,
    sidecar: Running,
    ca: LocalCa,
    pods: Vec<Pod>,
    _dir: tempfile::TempDir,
}

async fn start_pod(mesh: &Mesh, endpoints: &Endpoints, workload: &str, cfg: Config) -> Pod {
    let pod = cfg.identity.pod.clone();
    let metrics = GrpcMetrics::new(&telemetry::metrics::Registry::new()).expect("metrics");
    let handle = product::spawn(cfg, metrics).await.expect("product server starts");
    let w = mesh
        .workloads
        .iter()
        .find(|w| w.key.name == workload)
        .unwrap_or_else(|| panic!("workload {workload} in the manifests"));
    let endpoint = endpoints.add_pod(w, pod.as_str(), handle.addr);
    Pod {
        handle: Some(handle),
        endpoint,
    }
}

fn https_listener(mesh: &Mesh, ca: &LocalCa) -> Listener {
    let mut l = mesh
        .listeners
        .iter()
        .find(|l| l.name == "https")
        .expect("https listener")
        .clone();
    let tls = l.tls.as_mut().expect("the https listener has TLS");
    tls.cert_file = ca.cert.clone();
    tls.key_file = ca.key.clone();
    l
}

/// product-v1 with two pods (`product-v1-a`, `-b`), product-v2 with one (`product-v2-a`).
async fn env() -> Env {
    env_with(Config::for_test("v1", "product-v1-a")).await
}

/// [`env`] with `product-v1-a` configured by the caller.
async fn env_with(v1_a: Config) -> Env {
    env_with_mesh(v1_a, |_| {}).await
}

/// [`env_with`] over the repo's manifests as changed by `tweak`.
async fn env_with_mesh(v1_a: Config, tweak: impl FnOnce(&mut Mesh)) -> Env {
    env_with_limits(v1_a, tweak, listen::Limits::default()).await
}

/// [`env_with_mesh`] with the listeners' connection bounds.
async fn env_with_limits(v1_a: Config, tweak: impl FnOnce(&mut Mesh), limits: listen::Limits) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut mesh = localmesh::load(&root()).expect("the repo's manifests load");
    tweak(&mut mesh);
    let endpoints = Arc::new(Endpoints::new());
    let pods = vec![
        start_pod(&mesh, &endpoints, "product-v1", v1_a).await,
        start_pod(&mesh, &endpoints, "product-v1", Config::for_test("v1", "product-v1-b")).await,
        start_pod(&mesh, &endpoints, "product-v2", Config::for_test("v2", "product-v2-a")).await,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = proxy::ensure_local_ca(dir.path()).expect("local CA");
    let listener = https_listener(&mesh, &ca);
    let tls = proxy::server_config(&listener).expect("TLS config");
    let proxy = Proxy::with_limits(mesh, endpoints, proxy::ObserveOptions::default(), limits).expect("proxy");
    let gateway = proxy
        .serve_gateway(
            listener,
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            Some(tls),
        )
        .expect("gateway");
    let sidecar = proxy
        .serve_sidecar(
            Arc::new(Identity::sidecar(
                &Key::new("default", "frontend"),
                "frontend-test",
                &[
                    ("app".to_string(), "frontend".to_string()),
                    ("version".into(), "v1".into()),
                ]
                .into_iter()
                .collect(),
            )),
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        )
        .expect("sidecar");
    Env {
        proxy,
        gateway,
        sidecar,
        ca,
        pods,
        _dir: dir,
    }
}

async fn gateway_channel(env: &Env) -> Channel {
    let ca = std::fs::read(&env.ca.ca_cert).expect("ca.crt");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(GATEWAY_HOST);
    tonic::transport::Endpoint::from_shared(format!("https://{}", env.gateway.addr))
        .expect("url")
        .origin(Uri::from_static("https://sit-gateway.tcex.com.vn"))
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gateway")
}

async fn sidecar_channel(env: &Env) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", env.sidecar.addr))
        .expect("url")
        .origin(Uri::from_static("http://product-service:50051"))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the sidecar")
}

/// One GetProduct; returns (version, pod) from the body, checking the headers agree.
async fn get(client: &mut ProductServiceClient<Channel>, premium: bool) -> Result<(String, String), tonic::Status> {
    let mut req = tonic::Request::new(GetProductRequest {
        product_id: "123".into(),
    });
    if premium {
        req.metadata_mut()
            .insert("user-type", "premium".parse().expect("ascii"));
    }
    let resp = client.get_product(req).await?;
    let upstream = resp
        .metadata()
        .get("x-localmesh-upstream")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert!(
        resp.metadata().get("x-served-by").is_some(),
        "the app's x-served-by is kept"
    );
    let served = resp.into_inner().served_by.expect("served_by");
    assert_eq!(
        upstream.as_deref(),
        Some(served.pod.as_str()),
        "x-localmesh-upstream names the pod"
    );
    Ok((served.version, served.pod))
}

/// 80/20 over `n` calls: both versions seen, v2 within a loose bound of 20% (±6 standard deviations).
async fn assert_split(client: &mut ProductServiceClient<Channel>, n: usize) -> BTreeSet<String> {
    let mut v2 = 0usize;
    let mut pods = BTreeSet::new();
    for _ in 0..n {
        let (version, pod) = get(client, false).await.expect("GetProduct");
        if version == "v2" {
            v2 += 1;
        }
        pods.insert(pod);
    }
    let sd = (n as f64 * 0.2 * 0.8).sqrt();
    let (lo, hi) = (n as f64 * 0.2 - 6.0 * sd, n as f64 * 0.2 + 6.0 * sd);
    assert!(
        (v2 as f64) > lo.max(0.0) && (v2 as f64) < hi,
        "v2 got {v2} of {n}, expected about 20% ({lo:.0}..{hi:.0})"
    );
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_routes_grpc_over_tls_with_the_80_20_split_and_premium_to_v2() {
    let env = env().await;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);

    let (_, pod) = get(&mut client, false)
        .await
        .expect("GetProduct 123 through the gateway");
    assert!(pod.starts_with("product-v"), "{pod}");

    let pods = assert_split(&mut client, 200).await;
    assert_eq!(
        pods,
        BTreeSet::from(["product-v1-a", "product-v1-b", "product-v2-a"].map(String::from)),
        "both v1 pods and the v2 pod serve"
    );

    for _ in 0..30 {
        let (version, _) = get(&mut client, true).await.expect("premium GetProduct");
        assert_eq!(version, "v2", "user-type: premium always reaches v2");
    }

    let text = telemetry::metrics::render(env.proxy.registry());
    for version in ["v1", "v2"] {
        let n = testkit::sample(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("source_app", proxy::GATEWAY_WORKLOAD),
                ("destination_version", version),
                ("request_protocol", "grpc"),
                ("response_code", "200"),
                ("grpc_response_status", "0"),
                ("response_flags", "-"),
            ],
        );
        assert!(
            n.is_some_and(|n| n > 0.0),
            "istio_requests_total for {version} in:\n{text}"
        );
    }
    assert!(text.contains("istio_request_duration_milliseconds_bucket"), "{text}");
    assert!(text.contains("destination_service=\"product-service-v2.default.svc.cluster.local\""));
}

/// Opens AgentSync, sends `pings` one at a time (each after the previous pong) and returns the
/// (version, pod) of every pong.
async fn agent_sync(channel: Channel, agent_version: &str, pings: u64) -> Vec<(String, String)> {
    let mut client = ProductServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("agent-version", agent_version.parse().expect("ascii"));
    req.metadata_mut().insert("agent-id", "agent-7".parse().expect("ascii"));
    tx.send(AgentPing {
        seq: 0,
        message: "hello".into(),
        sent_at: None,
    })
    .await
    .expect("first ping");
    let mut pongs = client.agent_sync(req).await.expect("AgentSync opens").into_inner();
    let mut seen = Vec::new();
    for seq in 0..pings {
        let pong = tokio::time::timeout(Duration::from_secs(10), pongs.message())
            .await
            .expect("a pong in time")
            .expect("stream ok")
            .expect("a pong");
        let s = pong.served_by.expect("served_by");
        seen.push((s.version, s.pod));
        if seq + 1 < pings {
            tx.send(AgentPing {
                seq: seq + 1,
                message: "ping".into(),
                sent_at: None,
            })
            .await
            .expect("ping");
        }
    }
    drop(tx);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_sync_streams_stick_to_the_version_of_their_agent() {
    let env = env().await;
    let channel = gateway_channel(&env).await;

    let v2 = agent_sync(channel.clone(), "v2.1", 5).await;
    assert_eq!(v2.len(), 5);
    assert!(
        v2.iter().all(|(v, p)| v == "v2" && p == "product-v2-a"),
        "every pong from the v2 pod: {v2:?}"
    );

    for _ in 0..4 {
        let v1 = agent_sync(channel.clone(), "v1.3", 4).await;
        let pods: BTreeSet<_> = v1.iter().map(|(_, p)| p.clone()).collect();
        assert!(v1.iter().all(|(v, _)| v == "v1"), "v1.3 goes to v1: {v1:?}");
        assert_eq!(pods.len(), 1, "one pod per stream: {v1:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_hello_for_another_host_is_refused() {
    let env = env().await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client(&env, &[b"h2", b"http/1.1"])));
    let handshake = async |name: &'static str| {
        let tcp = tokio::net::TcpStream::connect(env.gateway.addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from(name).expect("name");
        connector.connect(name, tcp).await
    };
    let ok = handshake(GATEWAY_HOST)
        .await
        .expect("the listener's own host is served");
    assert_eq!(ok.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let err = handshake("other.example.com")
        .await
        .expect_err("another SNI fails the handshake");
    // rustls refuses a ClientHello it has no certificate for with a fatal alert (access_denied).
    assert!(err.to_string().contains("fatal alert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_replies_name_the_path_or_the_service() {
    let env = env().await;

    // The sidecar has no route for an unknown host: UNIMPLEMENTED naming the path.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", env.sidecar.addr))
        .expect("url")
        .origin(Uri::from_static("http://nowhere-service:50051"))
        .connect()
        .await
        .expect("connect");
    let err = ProductServiceClient::new(ch)
        .get_product(GetProductRequest { product_id: "1".into() })
        .await
        .expect_err("no route");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("/product.ProductService/GetProduct"), "{err:?}");

    // order-service has no endpoint: UNAVAILABLE naming the Service.
    let err = OrderServiceClient::new(gateway_channel(&env).await)
        .get_order(GetOrderRequest { id: "o-1".into() })
        .await
        .expect_err("no endpoint");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("order-service"), "{err:?}");

    let text = telemetry::metrics::render(env.proxy.registry());
    assert!(
        testkit::sample(
            &text,
            "istio_requests_total",
            &[("response_flags", "NR"), ("grpc_response_status", "12")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        testkit::sample(
            &text,
            "istio_requests_total",
            &[("response_flags", "UH"), ("grpc_response_status", "14")]
        )
        .is_some(),
        "{text}"
    );
}

/// Calls GetProduct 200 times, stopping product-v1-a (without taking its endpoint out) before the
/// 21st: the failed calls, and who answered after the stop.
async fn calls_while_a_pod_goes_away(
    env: &mut Env,
    client: &mut ProductServiceClient<Channel>,
) -> (Vec<(usize, tonic::Status)>, BTreeMap<String, usize>) {
    let mut failures = Vec::new();
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..200 {
        if i == 20 {
            let handle = env.pods[0].handle.take().expect("running");
            handle.shutdown().await.expect("product-v1-a stops");
        }
        match get(client, false).await {
            Ok((_, pod)) if i >= 20 => *after.entry(pod).or_default() += 1,
            Ok(_) => {}
            Err(e) => failures.push((i, e)),
        }
    }
    assert_eq!(
        after.get("product-v1-a"),
        None,
        "the stopped pod serves nothing: {after:?}"
    );
    assert!(
        after.contains_key("product-v1-b") && after.contains_key("product-v2-a"),
        "{after:?}"
    );
    assert!(
        env.pods[0].endpoint.is_healthy(),
        "it was never marked down: retries and ejection did it"
    );
    (failures, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v1_pod_going_away_fails_no_unary_call_through_the_sidecar() {
    // product-vs retries connect failures: the caller never sees the pod go.
    let mut env = env().await;
    let mut client = ProductServiceClient::new(sidecar_channel(&env).await);
    let (failures, _) = calls_while_a_pod_goes_away(&mut env, &mut client).await;
    assert!(failures.is_empty(), "failed calls: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_gateway_a_pod_going_away_fails_no_unary_call() {
    // The product routes' `retry` (connect-failure, refused-stream, unavailable, cancelled, as
    // Istio converts an HTTPRoute retry): a call sent to the stopped pod goes to another.
    let mut env = env().await;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    let (failures, _) = calls_while_a_pod_goes_away(&mut env, &mut client).await;
    assert!(failures.is_empty(), "failed calls: {failures:?}");

    // Marking the last v1 endpoint down: the v1 share of the split now fails with UNAVAILABLE
    // naming the Service (a weighted backend never falls back to another), v2 still serves.
    assert!(env.proxy.endpoints().set_healthy(env.pods[1].endpoint.id, false));
    let (mut ok, mut uh) = (0, 0);
    for _ in 0..60 {
        match get(&mut client, false).await {
            Ok((version, _)) => {
                assert_eq!(version, "v2", "no healthy v1 endpoint is left");
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(
                    e.message().contains("product-service-v1.default.svc.cluster.local"),
                    "{e:?}"
                );
                uh += 1;
            }
        }
    }
    assert!(
        ok > 0 && uh > 0,
        "v2 answered {ok}, v1 had no healthy upstream {uh} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sidecar_routes_h2c_by_authority_with_the_virtual_service() {
    let env = env().await;
    let mut client = ProductServiceClient::new(sidecar_channel(&env).await);
    assert_split(&mut client, 200).await;
    for _ in 0..30 {
        let (version, _) = get(&mut client, true).await.expect("premium through the sidecar");
        assert_eq!(version, "v2");
    }
    let text = telemetry::metrics::render(env.proxy.registry());
    let n = testkit::sample(
        &text,
        "istio_requests_total",
        &[
            ("source_app", "frontend"),
            ("destination_service", "product-service.default.svc.cluster.local"),
            ("destination_version", "v2"),
            ("destination_workload", "product-v2"),
        ],
    );
    assert!(n.is_some_and(|n| n >= 30.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailers_only_unavailable_is_retried_on_another_pod_by_the_virtual_service() {
    let failing = || {
        let mut cfg = Config::for_test("v1", "product-v1-a");
        cfg.faults = product::faults::Faults {
            delay: Duration::ZERO,
            abort_percent: 100.0,
            abort_code: Some(tonic::Code::Unavailable),
        };
        cfg
    };
    let env = env_with(failing()).await;
    // The gateway's product routes retry `unavailable` too: no call gets the pod's UNAVAILABLE.
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    for _ in 0..40 {
        get(&mut client, false)
            .await
            .expect("retried on another pod at the gateway");
    }
    // Without the rules' `retry` (the mesh default, attempts 0), some calls get it.
    let no_retry = env_with_mesh(failing(), |m| {
        for l in &mut m.listeners {
            for r in &mut l.routes {
                r.retry = localmesh::model::RetryPolicy::none();
            }
        }
    })
    .await;
    let mut client = ProductServiceClient::new(gateway_channel(&no_retry).await);
    let mut unavailable = 0;
    for _ in 0..40 {
        if let Err(e) = get(&mut client, false).await {
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
            unavailable += 1;
        }
    }
    assert!(
        unavailable > 0,
        "without retries the gateway passes the pod's UNAVAILABLE on"
    );
    // product-vs retries unavailable on another pod: east-west callers never see it.
    let mut client = ProductServiceClient::new(sidecar_channel(&env).await);
    let mut pods = BTreeSet::new();
    for _ in 0..100 {
        let (_, pod) = get(&mut client, false)
            .await
            .expect("UNAVAILABLE from one pod is retried on another");
        pods.insert(pod);
    }
    assert!(!pods.contains("product-v1-a"), "{pods:?}");
    assert!(pods.contains("product-v1-b"), "{pods:?}");
    let text = telemetry::metrics::render(env.proxy.registry());
    assert!(
        testkit::sample(
            &text,
            "istio_requests_total",
            &[
                ("destination_version", "v1"),
                ("grpc_response_status", "0"),
                ("response_flags", "-")
            ]
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_sync_streams_through_the_sidecar() {
    let env = env().await;
    let v2 = agent_sync(sidecar_channel(&env).await, "v2.0", 4).await;
    assert!(v2.iter().all(|(v, p)| v == "v2" && p == "product-v2-a"), "{v2:?}");
    let v1 = agent_sync(sidecar_channel(&env).await, "v1.0", 4).await;
    let pods: BTreeSet<_> = v1.iter().map(|(_, p)| p.clone()).collect();
    assert!(v1.iter().all(|(v, _)| v == "v1") && pods.len() == 1, "{v1:?}");
}

/// An HTTP/1.1 pod on port 0 answering every request with `answer(request head)`: extra
/// response headers and the body.
async fn http1_pod<F>(answer: F) -> std::net::SocketAddr
where
    F: Fn(&http::request::Parts) -> (Vec<(&'static str, String)>, String) + Clone + Send + Sync + 'static,
{
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (parts, _) = req.into_parts();
                    let (headers, body) = answer(&parts);
                    async move {
                        let mut resp = http::Response::builder();
                        for (k, v) in headers {
                            resp = resp.header(k, v);
                        }
                        resp.body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP/1.1 pod that says who it is and which path it was asked for.
async fn http_pod(pod: &'static str) -> std::net::SocketAddr {
    http1_pod(move |p| {
        let body = format!("hello from {pod} for {}", p.uri.path());
        (vec![("x-served-by", pod.to_string())], body)
    })
    .await
}

/// Registers an endpoint of the frontend Deployment at `addr`.
fn add_frontend_pod(env: &Env, pod: &str, addr: std::net::SocketAddr) {
    let frontend = env
        .proxy
        .mesh()
        .workloads
        .iter()
        .find(|w| w.key.name == "frontend")
        .expect("frontend workload")
        .clone();
    env.proxy.endpoints().add_pod(&frontend, pod, addr);
}

/// A rustls client trusting the environment's local CA, offering `alpn`.
fn tls_client(env: &Env, alpn: &[&[u8]]) -> rustls::ClientConfig {
    common::tls_client(&env.ca.ca_cert, alpn)
}

/// A TLS connection to the gateway offering one ALPN protocol.
async fn tls_to_gateway(env: &Env, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = tls_client(env, &[alpn]);
    let tcp = tokio::net::TcpStream::connect(env.gateway.addr).await.expect("tcp");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(GATEWAY_HOST).expect("name"),
            tcp,
        )
        .await
        .expect("TLS")
}

/// One HTTP/1.1 request over TLS (ALPN http/1.1) to the gateway with the given Host.
async fn https_get(env: &Env, host: &str, path: &str) -> (http::StatusCode, http::HeaderMap, String) {
    https_get_with(env, host, path, &[]).await
}

/// [`https_get`] with more request headers.
async fn https_get_with(
    env: &Env,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let tls = tls_to_gateway(env, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    for (k, v) in extra {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_1_1_through_the_gateway_reaches_an_http_backend_and_unknown_hosts_get_404() {
    let env = env().await;
    add_frontend_pod(&env, "frontend-0", http_pod("frontend-0").await);

    let (status, headers, body) = https_get(&env, GATEWAY_HOST, "/products/7").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello from frontend-0 for /products/7");
    assert_eq!(
        headers.get("x-localmesh-upstream").map(|v| v.as_bytes()),
        Some(&b"frontend-0"[..])
    );
    assert_eq!(
        headers.get("x-served-by").map(|v| v.as_bytes()),
        Some(&b"frontend-0"[..])
    );

    let (status, _, body) = https_get(&env, "other.example.com", "/x").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/x"), "{body}");

    let text = telemetry::metrics::render(env.proxy.registry());
    assert!(
        testkit::sample(
            &text,
            "istio_requests_total",
            &[
                ("destination_workload", "frontend"),
                ("request_protocol", "http"),
                ("response_code", "200")
            ]
        )
        .is_some(),
        "{text}"
    );
}

/// Serves the gateway's HTTPS (without TLS: only its port matters here) and plain listeners of
/// the manifests under `root` on free ports; answers a GET to the plain one as curl sends it
/// (`Host` with the port), returning the status, the `Location` and both local ports.
async fn redirect_of(root: &std::path::Path) -> (u16, Option<String>, u16, u16) {
    let mesh = localmesh::load(root).expect("mesh");
    let listener = |name: &str| {
        mesh.listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name} listener"))
            .clone()
    };
    let (https, plain) = (listener("https"), listener("http"));
    let proxy = Proxy::new(mesh, Arc::new(Endpoints::new())).expect("proxy");
    let secure = proxy
        .serve_gateway(https, TcpListener::bind("127.0.0.1:0").await.expect("bind"), None)
        .expect("serve https");
    let running = proxy
        .serve_gateway(plain, TcpListener::bind("127.0.0.1:0").await.expect("bind"), None)
        .expect("serve http");
    let tcp = tokio::net::TcpStream::connect(running.addr).await.expect("tcp");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/products/1?x=2")
        .header("host", format!("sit-gateway.tcex.com.vn:{}", running.addr.port()))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (
        resp.status().as_u16(),
        location,
        secure.addr.port(),
        running.addr.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plain_http_listener_redirects_to_where_https_is_served() {
    // gateway/ names port 443: the listener localmesh serves on its own port.
    let (status, location, https, _) = redirect_of(&root()).await;
    assert_eq!(status, 301);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://sit-gateway.tcex.com.vn:{https}/products/1?x=2").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_without_a_port_keeps_the_request_port_as_envoy_does() {
    // The fault kind users met: `scheme: https` alone sends http://host:8880/ to https://host:8880/.
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["gateway", "manifests"] {
        copy_tree(&root().join(d), &tmp.path().join(d));
    }
    let routes = tmp.path().join("gateway/httproutes.yaml");
    let text = std::fs::read_to_string(&routes).expect("read");
    assert!(
        text.contains("        port: 443\n"),
        "the redirect's port is where the test expects it"
    );
    std::fs::write(&routes, text.replacen("        port: 443\n", "", 1)).expect("write");
    let (status, location, _, plain) = redirect_of(tmp.path()).await;
    assert_eq!(status, 301);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://sit-gateway.tcex.com.vn:{plain}/products/1?x=2").as_str())
    );
}

#[test]
fn the_local_ca_is_created_once_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let first = proxy::ensure_local_ca(&certs).expect("created");
    assert!(first.created);
    let pem = std::fs::read_to_string(&first.cert).expect("tls.crt");
    let again = proxy::ensure_local_ca(&certs).expect("kept");
    assert!(!again.created, "existing files are kept");
    assert_eq!(std::fs::read_to_string(&again.cert).expect("tls.crt"), pem);
    assert_eq!(again.ca_cert, certs.join("ca.crt"));
    assert_eq!(again.key, certs.join("tls.key"));
    proxy::load_certified_key(&again.cert, &again.key).expect("the pair loads");

    let err = proxy::load_certified_key(&certs.join("missing.crt"), &again.key).expect_err("missing file");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

/// Several `localmesh up` starting at once on a fresh checkout: one CA is made, and every caller
/// ends up with a server certificate that the CA on disk verifies.
#[test]
fn concurrent_starts_on_a_fresh_checkout_share_one_local_ca() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let created: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| proxy::ensure_local_ca(&certs).expect("local CA").created))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.crt")).expect("ca.crt") {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("verifier");
    let leaf = CertificateDer::from_pem_file(certs.join("tls.crt")).expect("tls.crt");
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(GATEWAY_HOST).expect("name"),
            &[],
            UnixTime::now(),
        )
        .expect("the CA on disk signed the certificate on disk");
    proxy::load_certified_key(&certs.join("tls.crt"), &certs.join("tls.key")).expect("key matches");
}

/// `connectionPool.http.http2MaxRequests` as Envoy's circuit breaker: open streams count, the
/// request over the limit gets UNAVAILABLE naming the limit (flag UO), and a closed stream frees
/// its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_http2_max_requests_overflow_with_uo() {
    use proto::product::WatchPricesRequest;

    // The streams' port (grpc-streams, 50052) of every product DestinationRule allows two open
    // requests; the unary port keeps its budget.
    let env = env_with_mesh(Config::for_test("v1", "product-v1-a"), |mesh| {
        for dr in &mut mesh.destination_rules {
            for p in dr.port_policies.values_mut() {
                p.pool.http2_max_requests = Some(2);
            }
            for s in &mut dr.subsets {
                for p in s.port_policies.values_mut() {
                    p.pool.http2_max_requests = Some(2);
                }
            }
        }
    })
    .await;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    let premium_watch = || {
        let mut req = tonic::Request::new(WatchPricesRequest {
            product_ids: vec!["1".into()],
            interval_ms: 100,
        });
        req.metadata_mut()
            .insert("user-type", "premium".parse().expect("ascii"));
        req
    };
    let open = |client: &mut ProductServiceClient<Channel>| {
        let req = premium_watch();
        let mut client = client.clone();
        async move {
            let mut stream = client.watch_prices(req).await?.into_inner();
            stream.message().await?;
            Ok::<_, tonic::Status>(stream)
        }
    };
    // Two premium streams fill the two slots of product-service-v2's stream cluster.
    let mut streams = Vec::new();
    for _ in 0..2 {
        streams.push(open(&mut client).await.expect("a stream"));
    }

    let err = open(&mut client).await.expect_err("a third stream overflows");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("upstream overflow"), "{err:?}");
    assert!(err.message().contains("http2MaxRequests"), "{err:?}");
    let metrics = telemetry::metrics::render(env.proxy.registry());
    assert!(metrics.contains("response_flags=\"UO\""), "{metrics}");
    // Unary calls have their own cluster (port 50051): served all along.
    assert_eq!(get(&mut client, true).await.expect("a unary call").0, "v2");

    drop(streams.remove(0));
    let started = std::time::Instant::now();
    loop {
        match open(&mut client).await {
            Ok(stream) => break streams.push(stream),
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the closed stream's slot never came free: {e:?}"),
        }
    }
    drop(streams);
}

/// A TCP relay in front of a pod that can be frozen: while paused it moves no byte either way,
/// which is what a proxy sees of a SIGSTOPped process (connections are accepted by the kernel,
/// nothing is answered). Resumed, it passes what it held.
struct Freezer {
    addr: std::net::SocketAddr,
    paused: tokio::sync::watch::Sender<bool>,
    /// Relayed connections still open (either way).
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// One relayed connection, open while either direction is.
struct Relayed(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Relayed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Freezer {
    async fn start(to: std::net::SocketAddr) -> Freezer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (paused, watch) = tokio::sync::watch::channel(false);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = open.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(to).await else {
                    continue;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let relayed = Arc::new(Relayed(count.clone()));
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(Self::pipe(dr, uw, watch.clone(), relayed.clone()));
                tokio::spawn(Self::pipe(ur, dw, watch.clone(), relayed));
            }
        });
        Freezer { addr, paused, open }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut paused: tokio::sync::watch::Receiver<bool>,
        _relayed: Arc<Relayed>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if paused.wait_for(|p| !p).await.is_err() {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    // Pass the close on, so the other side closes too.
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            };
            if paused.wait_for(|p| !p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn pause(&self, on: bool) {
        self.paused.send_replace(on);
    }
}

/// Puts product-v1-a behind a [`Freezer`]: its endpoint now points at the relay.
async fn behind_relay(env: &mut Env) -> Freezer {
    let relay = Freezer::start(env.pods[0].handle.as_ref().expect("running").addr).await;
    let endpoints = env.proxy.endpoints().clone();
    endpoints.remove(env.pods[0].endpoint.id);
    let mesh = env.proxy.mesh();
    let v1 = mesh
        .workloads
        .iter()
        .find(|w| w.key.name == "product-v1")
        .expect("product-v1");
    env.pods[0].endpoint = endpoints.add_pod(v1, "product-v1-a", relay.addr);
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_pod_is_ejected_by_its_timeouts_and_returns_after_its_ejection_time() {
    // The product routes' timeout and the DestinationRules' baseEjectionTime, shortened so that
    // the test takes seconds; consecutiveGatewayErrors (3) and maxEjectionPercent (50) as written.
    let mut env = env_with_mesh(Config::for_test("v1", "product-v1-a"), |m| {
        for r in m.listeners.iter_mut().flat_map(|l| &mut l.routes) {
            if r.timeout.is_some() {
                r.timeout = Some(Duration::from_millis(400));
            }
        }
        for dr in &mut m.destination_rules {
            let policies = std::iter::once(&mut dr.policy).chain(dr.subsets.iter_mut().map(|s| &mut s.policy));
            for o in policies.filter_map(|p| p.outlier.as_mut()) {
                o.base_ejection = Duration::from_secs(2);
            }
        }
    })
    .await;
    let freezer = behind_relay(&mut env).await;
    let hung = env.pods[0].endpoint.id;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    let served = assert_split(&mut client, 60).await;
    assert!(
        served.contains("product-v1-a"),
        "it serves before the freeze: {served:?}"
    );

    freezer.pause(true);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    while !env.proxy.ejected().contains(&hung) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never ejected; failures: {failures:?}"
        );
        if let Err(e) = get(&mut client, false).await {
            failures.push(e);
        }
    }
    assert_eq!(
        failures.len(),
        3,
        "consecutiveGatewayErrors timeouts, then ejected: {failures:?}"
    );
    for e in &failures {
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("upstream request timeout"), "{e:?}");
    }
    // While it stays frozen, every call is answered by the others.
    let mut after = BTreeSet::new();
    for _ in 0..40 {
        let (_, pod) = get(&mut client, false).await.expect("the ejected pod gets no call");
        after.insert(pod);
    }
    assert!(!after.contains("product-v1-a"), "{after:?}");
    assert!(
        env.proxy.ejected().contains(&hung),
        "still ejected within baseEjectionTime"
    );

    // Resumed, it comes back once the ejection time has passed.
    freezer.pause(false);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!env.proxy.ejected().contains(&hung), "the ejection has expired");
    let back = assert_split(&mut client, 80).await;
    assert!(back.contains("product-v1-a"), "the resumed pod serves again: {back:?}");
}

/// One HTTP/2 gRPC-typed POST over TLS to the gateway with the given `:path` (which need not be a
/// path: `*`); the status, grpc-status and grpc-message.
async fn h2_post(env: &Env, path: &str) -> (u16, Option<String>, Option<String>) {
    let tls = tls_to_gateway(env, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(GATEWAY_HOST)
        .path_and_query(path)
        .build()
        .expect("uri");
    let req = http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(hyper::body::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    // The message as a gRPC client reads it (percent-decoded).
    let message = tonic::Status::from_header_map(resp.headers()).map(|s| s.message().to_string());
    (resp.status().as_u16(), header("grpc-status"), message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_that_is_not_relative_is_answered_by_the_gateway_and_reaches_no_pod() {
    // Envoy serves relative paths only: `*` (or an absolute URI) gets a local 404, which gRPC
    // reads as UNIMPLEMENTED, before any route or upstream is tried.
    let env = env().await;
    let (status, grpc_status, message) = h2_post(&env, "*").await;
    assert_eq!(status, 200, "gRPC local replies are HTTP 200");
    assert_eq!(grpc_status.as_deref(), Some("12"), "UNIMPLEMENTED: {message:?}");
    let message = message.unwrap_or_default();
    assert!(message.contains("relative path"), "{message}");
    assert!(env.proxy.ejected().is_empty(), "no pod was blamed");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&env.proxy.registry().gather())
        .expect("metrics");
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert!(
        requests.iter().all(|l| !l.contains("reporter=\"destination\"")),
        "no attempt reached a pod: {requests:?}"
    );
    assert!(
        requests.iter().any(|l| l.contains("grpc_response_status=\"12\"")),
        "the local 404 is counted: {requests:?}"
    );
    // A real call still works on a fresh connection.
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    get(&mut client, false).await.expect("GetProduct");
}

/// Whether the peer closes `stream` within `within` (EOF or a reset), reading and discarding
/// whatever it sends first.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

fn short_limits() -> listen::Limits {
    listen::Limits {
        tls_handshake: Duration::from_millis(400),
        request_headers: Duration::from_millis(400),
        idle: Duration::from_millis(800),
        ..listen::Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_are_closed_within_their_timeouts_while_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let env = env_with_limits(Config::for_test("v1", "product-v1-a"), |_| {}, short_limits()).await;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    let connect = |addr| async move { tokio::net::TcpStream::connect(addr).await.expect("connect") };

    // Bare TCP on the TLS gateway and on a plaintext sidecar listener: nothing is ever sent.
    let mut bare_tls = connect(env.gateway.addr).await;
    let mut bare_plain = connect(env.sidecar.addr).await;
    // Half a TLS handshake: the first bytes of a ClientHello record, then nothing.
    let mut half_tls = connect(env.gateway.addr).await;
    half_tls
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .expect("write");
    // Half-sent HTTP/1.1 headers: the blank line never comes.
    let mut half_headers = connect(env.sidecar.addr).await;
    half_headers
        .write_all(b"GET / HTTP/1.1\r\nHost: product-service:50051\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    // A client that is served meanwhile.
    get(&mut client, false)
        .await
        .expect("served while slow clients hold connections");
    for (what, stream) in [
        ("bare TCP on the TLS gateway", &mut bare_tls),
        ("bare TCP on a sidecar listener", &mut bare_plain),
        ("half a TLS handshake", &mut half_tls),
        ("half-sent HTTP/1.1 headers", &mut half_headers),
    ] {
        assert!(closed_within(stream, Duration::from_secs(3)).await, "{what} is closed");
    }

    // An HTTP/2 connection idle after its request is closed after the idle timeout.
    let tcp = connect(env.sidecar.addr).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://product-service:50051/")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let _ = sender.send_request(req).await.expect("an answer");
    let closed = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection is closed by the proxy");

    get(&mut client, false).await.expect("the gateway still serves");
    let (open, refused) = env.proxy.connections();
    assert_eq!(refused, 0);
    assert!(open >= 1, "the served client's connection is open: {open}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_stream_is_not_cut_by_the_idle_timeout() {
    let env = env_with_limits(Config::for_test("v1", "product-v1-a"), |_| {}, short_limits()).await;
    // 7 s of a stream with a ping a second: longer than the idle timeout (0.8 s) plus the drain
    // a closing connection gets (5 s), so a connection closed under it would cut it.
    let pongs = agent_sync_slowly(gateway_channel(&env).await, 7, Duration::from_secs(1)).await;
    assert_eq!(pongs, 7, "a stream quieter than the idle timeout, but open, is kept");
}

/// AgentSync with `pings` pings sent `every` apart; the pongs received.
async fn agent_sync_slowly(channel: Channel, pings: u64, every: Duration) -> usize {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = ProductServiceClient::new(channel);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("agent-version", "v1.3".parse().expect("ascii"));
    req.metadata_mut()
        .insert("agent-id", "agent-slow".parse().expect("ascii"));
    let sender = tokio::spawn(async move {
        for seq in 0..pings {
            let ping = AgentPing {
                seq,
                message: "ping".into(),
                sent_at: None,
            };
            if tx.send(ping).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut stream = client.agent_sync(req).await.expect("AgentSync").into_inner();
    let mut pongs = 0;
    while let Ok(Some(_)) = stream.message().await {
        pongs += 1;
    }
    sender.await.expect("sender");
    pongs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_beyond_the_cap_is_refused_without_harming_connected_clients() {
    let limits = listen::Limits {
        max_connections: 6,
        ..listen::Limits::default()
    };
    let env = env_with_limits(Config::for_test("v1", "product-v1-a"), |_| {}, limits).await;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    get(&mut client, false).await.expect("GetProduct");
    // Five more connections that send nothing: the cap (6) is reached.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(tokio::net::TcpStream::connect(env.gateway.addr).await.expect("connect"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while env.proxy.connections().0 < 6 {
        assert!(std::time::Instant::now() < deadline, "{:?}", env.proxy.connections());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The flood: each further connection is closed at once.
    for _ in 0..20 {
        let mut extra = tokio::net::TcpStream::connect(env.gateway.addr).await.expect("connect");
        assert!(
            closed_within(&mut extra, Duration::from_secs(2)).await,
            "over the cap: closed"
        );
    }
    assert_eq!(env.proxy.connections(), (6, 20));
    // The connected client is unharmed.
    for _ in 0..10 {
        get(&mut client, false).await.expect("served during the flood");
    }
    // The held connections go: new clients are admitted again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while env.proxy.connections().0 > 1 {
        assert!(std::time::Instant::now() < deadline, "{:?}", env.proxy.connections());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut fresh = ProductServiceClient::new(gateway_channel(&env).await);
    get(&mut fresh, false).await.expect("a new client after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_upstream_connections_are_closed_after_the_upstream_idle_timeout() {
    let limits = listen::Limits {
        upstream_idle: Duration::from_millis(300),
        ..listen::Limits::default()
    };
    let mut env = env_with_limits(Config::for_test("v1", "product-v1-a"), |_| {}, limits).await;
    let relay = behind_relay(&mut env).await;
    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    let served = assert_split(&mut client, 60).await;
    assert!(served.contains("product-v1-a"), "{served:?}");
    let pooled = relay.open.load(std::sync::atomic::Ordering::SeqCst);
    assert!(pooled >= 1, "a pooled connection to the pod: {pooled}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while relay.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle pooled connection is closed within the upstream idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the next call opens a new one.
    let back = assert_split(&mut client, 60).await;
    assert!(back.contains("product-v1-a"), "{back:?}");
}

/// An HTTP/1.1 pod that answers with the request headers it received, one `name: value` a line.
async fn echo_pod() -> std::net::SocketAddr {
    http1_pod(|p| {
        let body = p
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect();
        (Vec::new(), body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_sanitises_what_an_external_client_sends_as_an_edge_envoy_does() {
    let env = env().await;
    add_frontend_pod(&env, "frontend-echo", echo_pod().await);
    let sent = [
        ("x-envoy-max-retries", "5"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
        ("x-envoy-internal", "true"),
        ("x-envoy-force-trace", "1"),
        ("x-envoy-decorator-operation", "spoofed"),
        ("x-envoy-downstream-service-cluster", "spoofed"),
        ("x-envoy-expected-rq-timeout-ms", "1"),
        ("x-forwarded-client-cert", "By=spoofed"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "chosen-by-the-client"),
        ("x-custom", "kept"),
    ];
    let (status, _, body) = https_get_with(&env, GATEWAY_HOST, "/", &sent).await;
    assert_eq!(status, 200, "{body}");
    let seen: BTreeMap<&str, &str> = body.lines().filter_map(|l| l.split_once(": ")).collect();
    for (name, _) in &sent[..10] {
        assert!(!seen.contains_key(name), "{name} from outside reached the pod: {body}");
    }
    assert_eq!(seen.get("x-forwarded-for"), Some(&"203.0.113.7,127.0.0.1"), "{body}");
    assert_eq!(seen.get("x-forwarded-proto"), Some(&"https"), "{body}");
    let id = seen.get("x-request-id").expect("an x-request-id");
    assert_ne!(*id, "chosen-by-the-client", "an external request id is replaced");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(seen.get("x-custom"), Some(&"kept"));
}

/// Calls GetProduct through the sidecar with product-v1-a frozen, the product routes' per-try
/// timeout at 300 ms and their `retryOn` extended by `extra`: the failures, and whether each came
/// within one per-try timeout (no retry) of its call.
async fn calls_to_a_frozen_pod(extra: &[localmesh::model::RetryOn]) -> Vec<(tonic::Status, Duration)> {
    let extra = extra.to_vec();
    let mut env = env_with_mesh(Config::for_test("v1", "product-v1-a"), move |m| {
        for vs in &mut m.virtual_services {
            for r in vs.routes.iter_mut().filter(|r| r.retry.per_try_timeout.is_some()) {
                r.retry.per_try_timeout = Some(Duration::from_millis(300));
                r.retry.retry_on.extend(extra.iter().cloned());
            }
        }
    })
    .await;
    let freezer = behind_relay(&mut env).await;
    freezer.pause(true);
    let mut client = ProductServiceClient::new(sidecar_channel(&env).await);
    let mut failures = Vec::new();
    // Until the pod is ejected (3 gateway errors) or 40 calls.
    for _ in 0..40 {
        let started = std::time::Instant::now();
        if let Err(e) = get(&mut client, false).await {
            failures.push((e, started.elapsed()));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_try_timeout_is_retried_only_where_retry_on_says_so() {
    // product-vs retries connect-failure, refused-stream, unavailable, cancelled: not a per-try
    // timeout (Envoy retries those on 5xx, gateway-error or reset). The calls the frozen pod
    // takes fail after one per-try timeout, until it is ejected.
    let failures = calls_to_a_frozen_pod(&[]).await;
    assert!(
        !failures.is_empty() && failures.len() <= 3,
        "1 to consecutiveGatewayErrors calls fail: {failures:?}"
    );
    for (e, took) in &failures {
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("upstream request timeout"), "{e:?}");
        assert!(*took < Duration::from_millis(550), "one attempt, not retried: {took:?}");
    }
    // With `reset` added, each such call is retried on another pod: none fails.
    let failures = calls_to_a_frozen_pod(&[localmesh::model::RetryOn::Reset]).await;
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    use tokio::io::AsyncWriteExt;
    let limits = listen::Limits {
        request_headers: Duration::from_secs(60),
        http2_keepalive: Some(Duration::from_millis(300)),
        http2_keepalive_timeout: Duration::from_millis(300),
        ..listen::Limits::default()
    };
    let env = env_with_limits(Config::for_test("v1", "product-v1-a"), |_| {}, limits).await;
    // An h2c client that says hello (preface and SETTINGS) and then never answers anything,
    // as a peer whose host went away would.
    let mut silent = tokio::net::TcpStream::connect(env.sidecar.addr).await.expect("connect");
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    silent.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("SETTINGS");
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "closed after an unanswered PING"
    );
    // A client that answers its pings (tonic's, through hyper) stays connected and served.
    let mut client = ProductServiceClient::new(sidecar_channel(&env).await);
    get(&mut client, false).await.expect("GetProduct");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    get(&mut client, false).await.expect("still served after several pings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_idle_streams_from_one_client_leave_unary_calls_served() {
    // Premium WatchPrices streams and premium GetProduct calls both go to product-service-v2,
    // whose DestinationRule allows 1000 open requests (http2MaxRequests; an open stream counts
    // until it ends). The streams are routed to the Service's grpc-streams port (50052), a
    // cluster with its own budget (portLevelSettings), so 1000 idle streams overflow nothing
    // the unary calls need.
    let env = env().await;
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(gateway_channel(&env).await);
    }
    let open = common::idle_premium_streams(&channels, 1000).await;
    assert_eq!(open.len(), 1000);

    let mut client = ProductServiceClient::new(gateway_channel(&env).await);
    for premium in [true, false] {
        for _ in 0..20 {
            let answer = get(&mut client, premium).await;
            assert!(answer.is_ok(), "premium={premium}, with 1000 streams open: {answer:?}");
        }
    }
    drop(open);
}
