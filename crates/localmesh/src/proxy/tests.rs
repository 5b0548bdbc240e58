//! The request path against a scripted upstream, with paused time: the retry decision for every
//! `retryOn` token the manifests use, per-try and route timeouts, outlier ejection and return,
//! breaker overflow, request bodies kept for retries by size, and what reaches the pod. The
//! script stands where [`upstream::Clients`] stands in `localmesh up` (the [`upstream::Upstream`]
//! seam), as linkerd2-proxy tests its retry middleware against mock services.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;
use tower::util::BoxCloneSyncService;

use super::upstream::{AttemptError, Dial, Upstream};
use super::*;
use crate::model::{RetryOn, RetryPolicy};

/// What a scripted pod does with one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Grpc(Code),
    Http(u16),
    ConnectFailure,
    Refused,
    Reset,
    /// Never answers (a stopped pod).
    Hang,
    /// Answers OK after a second.
    Slow,
}

/// One attempt as the pod saw it.
#[derive(Debug, Clone)]
struct Seen {
    pod: SocketAddr,
    authority: String,
    body: Bytes,
    attempt_count: Option<String>,
}

type Script = Arc<dyn Fn(SocketAddr, usize) -> Answer + Send + Sync>;

struct Harness {
    proxy: Arc<Proxy>,
    seen: Arc<Mutex<Vec<Seen>>>,
    pods: Vec<Arc<Endpoint>>,
}

/// Answers as `script` says (given the pod and how many attempts came before), after reading
/// the attempt's whole body.
fn scripted(script: Script, seen: Arc<Mutex<Vec<Seen>>>) -> Upstream {
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<ProxyBody>| {
        let script = script.clone();
        let seen = seen.clone();
        async move {
            let dial = *req.extensions().get::<Dial>().expect("every attempt names its pod");
            let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
            let attempt_count = req
                .headers()
                .get("x-envoy-attempt-count")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let n = {
                let mut seen = crate::lock(&seen);
                seen.push(Seen {
                    pod: dial.addr,
                    authority,
                    body: Bytes::new(),
                    attempt_count,
                });
                seen.len() - 1
            };
            let answer = script(dial.addr, n);
            let io = |m: &str| -> BoxError { Box::new(std::io::Error::other(m.to_string())) };
            match answer {
                Answer::ConnectFailure => return Err(AttemptError::Connect(io("connection refused"))),
                Answer::Refused => return Err(AttemptError::Refused(io("REFUSED_STREAM"))),
                Answer::Hang => std::future::pending::<()>().await,
                Answer::Slow => tokio::time::sleep(Duration::from_secs(1)).await,
                _ => {}
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            crate::lock(&seen)[n].body = body;
            let resp = match answer {
                Answer::Reset => return Err(AttemptError::Reset(io("connection reset"))),
                Answer::Grpc(code) => Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", code as i32),
                Answer::Http(status) => Response::builder().status(status),
                Answer::Slow => Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", Code::Ok as i32),
                _ => unreachable!("handled above"),
            };
            let empty = http_body_util::Empty::new().map_err(|e: std::convert::Infallible| match e {});
            Ok::<_, AttemptError>(resp.body(empty.boxed_unsync()).expect("a valid response"))
        }
    }))
}

/// The repo's mesh with the `premium` route of product-vs (sidecar, v2 subset) retried as
/// `retry` says, two product-v2 pods, and the proxy over the scripted upstream.
fn harness(retry: RetryPolicy, limits: limits::Limits, tweak: impl FnOnce(&mut Mesh), script: Script) -> Harness {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut mesh = crate::load(&root).expect("the repo's manifests load");
    let vs = mesh
        .virtual_services
        .iter_mut()
        .find(|v| v.origin.object.ends_with("/product-vs"))
        .expect("product-vs");
    let premium = vs
        .routes
        .iter_mut()
        .find(|r| r.name.as_deref() == Some("premium"))
        .expect("the premium route");
    premium.retry = retry;
    tweak(&mut mesh);
    let endpoints = Arc::new(Endpoints::new());
    let v2 = mesh
        .workloads
        .iter()
        .find(|w| w.key.name == "product-v2")
        .expect("product-v2")
        .clone();
    let pods = ["product-v2-a", "product-v2-b"]
        .iter()
        .enumerate()
        .map(|(i, pod)| endpoints.add_pod(&v2, *pod, SocketAddr::from(([127, 0, 0, 1], 1001 + i as u16))))
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = scripted(script, seen.clone());
    let proxy = Proxy::with_upstream(mesh, endpoints, ObserveOptions::default(), limits, upstream).expect("proxy");
    Harness { proxy, seen, pods }
}

fn policy(attempts: u32, per_try: Option<Duration>, on: &[RetryOn]) -> RetryPolicy {
    RetryPolicy {
        attempts,
        per_try_timeout: per_try,
        retry_on: on.to_vec(),
    }
}

impl Harness {
    /// A premium GetProduct from the frontend's sidecar: the answer's gRPC code and pod (if any).
    async fn call(&self, body: ProxyBody) -> (Code, Option<String>, Response<ProxyBody>) {
        let source = Arc::new(crate::identity::Identity::sidecar(
            &crate::model::Key::new("default", "frontend"),
            "frontend-test",
            &[("app".to_string(), "frontend".to_string())].into_iter().collect(),
        ));
        let hop = self.proxy.hop(HopKind::Sidecar(None), source);
        let req = Request::post("http://product-service:50051/product.ProductService/GetProduct")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-type", "premium")
            .body(body)
            .expect("request");
        let resp = self
            .proxy
            .clone()
            .handle(hop, IpAddr::V4(Ipv4Addr::LOCALHOST), req)
            .await;
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::grpc::parse_status)
            // As a gRPC client reads an answer without one.
            .unwrap_or_else(|| crate::grpc::from_http(resp.status().as_u16()));
        let pod = resp
            .headers()
            .get("x-localmesh-upstream")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (code, pod, resp)
    }

    async fn unary(&self) -> (Code, Option<String>) {
        let (code, pod, _) = self.call(full("hello")).await;
        (code, pod)
    }

    fn attempts(&self) -> Vec<Seen> {
        crate::lock(&self.seen).clone()
    }
}

/// The grpc-message of a trailers-only answer, as a client reads it.
fn message(resp: &Response<ProxyBody>) -> String {
    tonic::Status::from_header_map(resp.headers())
        .map(|s| s.message().to_string())
        .unwrap_or_default()
}

fn full(s: &'static str) -> ProxyBody {
    Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|e: std::convert::Infallible| match e {})
        .boxed_unsync()
}

/// A request body fed by the test, frame by frame.
fn streamed() -> (mpsc::Sender<Bytes>, ProxyBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, BoxError>(http_body::Frame::data(b)));
    (tx, StreamBody::new(stream).boxed_unsync())
}

use tokio_stream::StreamExt as _;

fn always(a: Answer) -> Script {
    Arc::new(move |_, _| a)
}

/// The first attempt ends as `first`, later ones succeed.
fn first_then_ok(first: Answer) -> Script {
    Arc::new(move |_, n| if n == 0 { first } else { Answer::Grpc(Code::Ok) })
}

#[tokio::test(start_paused = true)]
async fn the_retry_decision_for_every_retry_on_token_the_manifests_use() {
    use Answer::{ConnectFailure, Grpc, Hang, Http, Refused, Reset};
    use RetryOn::{Cancelled, FiveXx, GatewayError, RefusedStream, RetriableStatusCodes, Status, Unavailable};
    let ends = [
        ConnectFailure,
        Refused,
        Reset,
        Hang,
        Grpc(Code::Unavailable),
        Grpc(Code::Cancelled),
        Grpc(Code::Internal),
        Grpc(Code::NotFound),
        Http(503),
    ];
    // For each token: the ends it retries, as Envoy's router documents `x-envoy-retry-on` and
    // `x-envoy-retry-grpc-on` (a per-try timeout counts as a reset under 5xx, gateway-error and
    // reset only; gRPC tokens read a trailers-only grpc-status).
    let table: &[(RetryOn, &[Answer])] = &[
        (RetryOn::ConnectFailure, &[ConnectFailure]),
        (RefusedStream, &[Refused]),
        (Unavailable, &[Grpc(Code::Unavailable), Reset]),
        (Cancelled, &[Grpc(Code::Cancelled)]),
        (Status(503), &[Http(503)]),
        (FiveXx, &[ConnectFailure, Refused, Reset, Hang, Http(503)]),
        (GatewayError, &[ConnectFailure, Refused, Reset, Hang, Http(503)]),
        (RetryOn::Reset, &[ConnectFailure, Refused, Reset, Hang]),
    ];
    for (token, retried) in table {
        for end in ends {
            let on: Vec<RetryOn> = match token {
                Status(_) => vec![RetriableStatusCodes, *token],
                t => vec![*t],
            };
            let h = harness(
                policy(1, Some(Duration::from_secs(1)), &on),
                limits::Limits::default(),
                |_| {},
                first_then_ok(end),
            );
            let (code, _) = h.unary().await;
            let attempts = h.attempts().len();
            let expect = retried.contains(&end);
            assert_eq!(attempts, if expect { 2 } else { 1 }, "{token} after {end:?}: {code:?}");
            if expect {
                assert_eq!(code, Code::Ok, "{token} after {end:?}: the retry answered");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_are_retried_within_the_route_timeout_only() {
    // premium: timeout 5s; perTryTimeout 2s; every pod hangs. Tries at 0 s, 2 s and 4 s; the
    // third is cut by the route's deadline at 5 s and not retried although one retry is left.
    let on = [RetryOn::FiveXx];
    let h = harness(
        policy(3, Some(Duration::from_secs(2)), &on),
        limits::Limits::default(),
        |_| {},
        always(Answer::Hang),
    );
    let start = Instant::now();
    let (code, _, resp) = h.call(full("x")).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "the route timeout bounds all tries"
    );
    assert_eq!(code, Code::Unavailable, "Envoy's 504 upstream request timeout, as gRPC");
    let msg = message(&resp);
    assert!(msg.contains("upstream request timeout"), "{msg:?}");
    let tries = h.attempts();
    assert_eq!(tries.len(), 3, "{tries:?}");
    let counts: Vec<_> = tries.iter().map(|s| s.attempt_count.clone()).collect();
    assert_eq!(counts, [None, Some("2".into()), Some("3".into())]);
    assert_ne!(tries[0].pod, tries[1].pod, "a retry prefers a pod not tried yet");

    // Without a per-try timeout, the only deadline is the route's: one try, never retried.
    let h = harness(
        policy(3, None, &on),
        limits::Limits::default(),
        |_| {},
        always(Answer::Hang),
    );
    let start = Instant::now();
    let (code, _) = h.unary().await;
    assert_eq!((code, start.elapsed()), (Code::Unavailable, Duration::from_secs(5)));
    assert_eq!(h.attempts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_of_timeouts_ejects_a_hung_pod_which_returns_after_the_ejection_time() {
    // No retries, perTryTimeout 1 s; product-v2-a hangs, -b answers. consecutiveGatewayErrors is
    // 3 and baseEjectionTime 30 s in the product-service DestinationRule.
    let hung = Arc::new(AtomicBool::new(true));
    let pod_a = SocketAddr::from(([127, 0, 0, 1], 1001));
    let script: Script = {
        let hung = hung.clone();
        Arc::new(move |pod, _| {
            if pod == pod_a && hung.load(Ordering::SeqCst) {
                Answer::Hang
            } else {
                Answer::Grpc(Code::Ok)
            }
        })
    };
    let h = harness(
        policy(0, Some(Duration::from_secs(1)), &[]),
        limits::Limits::default(),
        |_| {},
        script,
    );
    let a = h.pods[0].id;
    let mut timeouts = 0;
    for _ in 0..40 {
        match h.unary().await {
            (Code::Ok, pod) => assert_eq!(pod.as_deref(), Some("product-v2-b")),
            (code, _) => {
                assert_eq!(code, Code::Unavailable);
                timeouts += 1;
            }
        }
    }
    assert_eq!(timeouts, 3, "three gateway errors, then the pod is out");
    assert!(h.proxy.ejected().contains(&a), "product-v2-a is ejected");

    // It stays out while ejected, and comes back after baseEjectionTime (30 s).
    hung.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(h.proxy.ejected().contains(&a));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!h.proxy.ejected().contains(&a), "back after the ejection time");
    let mut served_by_a = 0;
    for _ in 0..20 {
        if h.unary().await.1.as_deref() == Some("product-v2-a") {
            served_by_a += 1;
        }
    }
    assert!(served_by_a > 0, "product-v2-a serves again");
}

#[tokio::test(start_paused = true)]
async fn a_full_cluster_overflows_at_once_and_a_retry_needs_the_retry_budget() {
    // http2MaxRequests 1: with one call held open by a hung pod, the next overflows (UO).
    let tight = |m: &mut Mesh| {
        for dr in &mut m.destination_rules {
            dr.policy.pool.http2_max_requests = Some(1);
            dr.policy.pool.max_retries = Some(0);
            for s in &mut dr.subsets {
                s.policy.pool.http2_max_requests = Some(1);
                s.policy.pool.max_retries = Some(0);
            }
        }
    };
    let h = Arc::new(harness(
        policy(2, None, &[RetryOn::Unavailable]),
        limits::Limits::default(),
        tight,
        Arc::new(|_, n| {
            if n == 0 {
                Answer::Hang
            } else {
                Answer::Grpc(Code::Unavailable)
            }
        }),
    ));
    let held = tokio::spawn({
        let h = h.clone();
        async move { h.unary().await }
    });
    tokio::task::yield_now().await;
    while h.attempts().is_empty() {
        tokio::task::yield_now().await;
    }
    let (code, _, resp) = h.call(full("x")).await;
    assert_eq!(code, Code::Unavailable);
    let msg = message(&resp);
    assert!(msg.contains("upstream overflow"), "{msg}");
    assert_eq!(h.attempts().len(), 1, "an overflowed call never reaches a pod");
    held.abort();

    // maxRetries 0: an UNAVAILABLE that retryOn retries is passed on, not retried (URX).
    let h = harness(
        policy(2, None, &[RetryOn::Unavailable]),
        limits::Limits::default(),
        tight,
        first_then_ok(Answer::Grpc(Code::Unavailable)),
    );
    assert_eq!(h.unary().await.0, Code::Unavailable);
    assert_eq!(h.attempts().len(), 1, "no retry budget");
}

#[tokio::test(start_paused = true)]
async fn a_slow_clients_call_is_retried_with_its_whole_body() {
    // The body arrives in two parts a second apart: it is kept (it is under the buffer limit), so
    // the UNAVAILABLE of the first attempt is retried, whatever the timing.
    let h = harness(
        policy(1, None, &[RetryOn::Unavailable]),
        limits::Limits::default(),
        |_| {},
        first_then_ok(Answer::Grpc(Code::Unavailable)),
    );
    let (tx, body) = streamed();
    let feed = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"hello ")).await.ok();
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(Bytes::from_static(b"world")).await.ok();
    });
    let (code, _, _) = h.call(body).await;
    feed.await.ok();
    assert_eq!(code, Code::Ok);
    let tries = h.attempts();
    assert_eq!(tries.len(), 2);
    assert_eq!(&tries[1].body[..], b"hello world", "the retry sent the whole body");
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_buffer_limit_is_forwarded_but_never_retried() {
    let limits = limits::Limits {
        per_request_buffer: 8,
        ..limits::Limits::default()
    };
    let h = harness(
        policy(2, None, &[RetryOn::Unavailable]),
        limits,
        |_| {},
        first_then_ok(Answer::Grpc(Code::Unavailable)),
    );
    let (code, _, _) = h.call(full("sixteen bytes!!!")).await;
    assert_eq!(code, Code::Unavailable, "the pod's answer, passed on");
    let tries = h.attempts();
    assert_eq!(tries.len(), 1);
    assert_eq!(&tries[0].body[..], b"sixteen bytes!!!", "forwarded whole");
}

#[tokio::test(start_paused = true)]
async fn the_pod_gets_the_clients_authority_and_the_attempt_its_address() {
    let h = harness(
        policy(0, None, &[]),
        limits::Limits::default(),
        |_| {},
        always(Answer::Grpc(Code::Ok)),
    );
    let (code, pod, _) = h.call(full("x")).await;
    assert_eq!(code, Code::Ok);
    let seen = &h.attempts()[0];
    assert_eq!(seen.authority, "product-service:50051", "Envoy keeps the original host");
    let ep = h
        .pods
        .iter()
        .find(|e| Some(&e.pod) == pod.as_ref())
        .expect("the pod that answered");
    assert_eq!(seen.pod, ep.addr, "the attempt dials the chosen pod");
    assert_eq!(&seen.body[..], b"x");
}

#[tokio::test(start_paused = true)]
async fn a_tap_shows_the_requests_that_begin_after_it_with_their_route() {
    // The first call is in flight when the tap starts: it has no route or headers recorded for
    // the tap, so it is not shown; the second begins after and is shown with its route.
    let h = Arc::new(harness(
        policy(0, None, &[]),
        limits::Limits::default(),
        |_| {},
        Arc::new(|_, n| if n == 0 { Answer::Slow } else { Answer::Grpc(Code::Ok) }),
    ));
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.unary().await }
    });
    while h.attempts().is_empty() {
        tokio::task::yield_now().await;
    }
    let mut tap = h.proxy.tap().subscribe();
    assert_eq!(h.unary().await.0, Code::Ok);
    assert_eq!(first.await.expect("join").0, Code::Ok);
    let shown = tap.try_recv().expect("the call that began after the tap");
    assert!(shown.route.contains("product-vs"), "{shown:?}");
    assert!(tap.try_recv().is_err(), "the call already in flight is not shown");
}
