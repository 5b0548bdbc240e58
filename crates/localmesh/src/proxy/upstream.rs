//! The seam between the retry loop and the network. One attempt is one call of a
//! [`tower::Service`] ([`Upstream`]): a request whose [`Dial`] extension says which pod and how,
//! answered with the pod's response head or a typed [`AttemptError`]. The proxy's service is
//! [`Clients`] (hyper-util's pooled client); tests put a scripted service in its place and run
//! the retry loop, per-try timeouts, outlier ejection and the breakers with paused time, as
//! linkerd2-proxy tests its retries against mock services.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::util::BoxCloneSyncService;

use super::retry::AttemptEnd;
use super::{BoxError, ProxyBody};

/// What sends one attempt to one pod.
pub(crate) type Upstream = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, AttemptError>;

/// Which pod an attempt goes to and how: a request extension, so that the request's URI keeps the
/// client's `:authority` (Envoy forwards the original host unless a route rewrites it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Dial {
    pub addr: SocketAddr,
    /// HTTP/2 with prior knowledge (a gRPC or `http2` port), else HTTP/1.1.
    pub http2: bool,
    /// The cluster's `connectionPool.tcp.connectTimeout`, else Envoy's default (10 s).
    pub connect_timeout: Duration,
}

/// How an attempt failed before any response head arrived.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// No connection to the pod.
    Connect(BoxError),
    /// The pod never processed the request (REFUSED_STREAM, a GOAWAY, a request dropped unsent).
    Refused(BoxError),
    /// The connection or stream ended after the request was sent.
    Reset(BoxError),
}

impl AttemptError {
    pub(crate) fn end(&self) -> AttemptEnd {
        match self {
            AttemptError::Connect(_) => AttemptEnd::ConnectFailure,
            AttemptError::Refused(_) => AttemptEnd::Refused,
            AttemptError::Reset(_) => AttemptEnd::Reset,
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (AttemptError::Connect(e) | AttemptError::Refused(e) | AttemptError::Reset(e)) = self;
        f.write_str(&crate::error_chain(e.as_ref()))
    }
}

impl std::error::Error for AttemptError {}

/// Sorts a hyper-util client error into the attempt's end, from the typed errors in its chain.
fn classify(e: hyper_util::client::legacy::Error) -> AttemptError {
    if e.is_connect() {
        AttemptError::Connect(e.into())
    } else if is_refused(&e) {
        AttemptError::Refused(e.into())
    } else {
        AttemptError::Reset(e.into())
    }
}

/// A request the pod never processed, so safe to send again: an HTTP/2 stream reset with
/// REFUSED_STREAM or cut by a GOAWAY, or a request the client dropped before sending it (the
/// connection was closing). Read from the typed errors in the chain, never from their text.
pub(crate) fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away();
        }
        if s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        src = s.source();
    }
    false
}

/// The proxy's upstream: one pooled hyper-util client per pod and protocol. Each client's
/// connector dials its pod whatever the URI says, so the URI (and so `:authority` and `Host`)
/// stays the client's while connections are still pooled per pod.
#[derive(Clone)]
pub(crate) struct Clients {
    shared: Arc<Shared>,
}

struct Shared {
    /// Pooled connections idle this long are closed (`connectionPool.http.idleTimeout`).
    idle: Duration,
    clients: Mutex<HashMap<Dial, Client<PodConnector, ProxyBody>>>,
}

/// More clients than this (pods come and go) and the map starts over; connections in use stay open
/// with the requests that hold them.
const MAX_CLIENTS: usize = 4096;

impl Clients {
    pub(crate) fn new(idle: Duration) -> Self {
        Clients {
            shared: Arc::new(Shared {
                idle,
                clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn client(&self, dial: Dial) -> Client<PodConnector, ProxyBody> {
        let mut clients = crate::lock(&self.shared.clients);
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&dial) {
            clients.clear();
        }
        clients
            .entry(dial)
            .or_insert_with(|| {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.set_connect_timeout(Some(dial.connect_timeout));
                // Its pool needs a timer to close idle connections at all: without one,
                // hyper-util keeps them until the peer goes.
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(self.shared.idle)
                    .http2_only(dial.http2)
                    .build(PodConnector {
                        pod: Uri::from_maybe_shared(format!("http://{}", dial.addr)).ok(),
                        http,
                    })
            })
            .clone()
    }

    pub(crate) fn into_upstream(self) -> Upstream {
        BoxCloneSyncService::new(self)
    }
}

impl tower::Service<Request<ProxyBody>> for Clients {
    type Response = Response<ProxyBody>;
    type Error = AttemptError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, AttemptError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let Some(dial) = req.extensions().get::<Dial>().copied() else {
            return Box::pin(async { Err(AttemptError::Connect("the attempt names no pod to dial".into())) });
        };
        let sent = self.client(dial).request(req);
        Box::pin(async move {
            let resp = sent.await.map_err(classify)?;
            Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()))
        })
    }
}

/// Dials one pod, whatever host the request names.
#[derive(Clone)]
struct PodConnector {
    pod: Option<Uri>,
    http: HttpConnector,
}

impl tower::Service<Uri> for PodConnector {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = <HttpConnector as tower::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, requested: Uri) -> Self::Future {
        self.http.call(self.pod.clone().unwrap_or(requested))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose cause is `source` (as hyper's errors wrap h2's).
    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<dyn std::error::Error + Send + Sync>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// A server on port 0 that answers every request with the host it was asked for.
    async fn host_echo() -> SocketAddr {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .or_else(|| {
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(
                        host,
                    ))))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.serve_connection(io, svc).await.ok();
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_pod_is_dialled_and_the_clients_host_kept_over_http2_and_http1() {
        use tower::ServiceExt as _;
        let pod = host_echo().await;
        let clients = Clients::new(Duration::from_secs(60));
        for http2 in [true, false] {
            let mut req = Request::get("http://shop.example:8080/products")
                .header("host", "shop.example:8080")
                .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed_unsync())
                .expect("request");
            if http2 {
                req.headers_mut().remove("host");
                *req.version_mut() = http::Version::HTTP_2;
            }
            req.extensions_mut().insert(Dial {
                addr: pod,
                http2,
                connect_timeout: Duration::from_secs(1),
            });
            let resp = clients.clone().oneshot(req).await.expect("the pod answers");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(
                &body[..],
                b"shop.example:8080",
                "http2={http2}: the pod saw the client's host"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure() {
        use tower::ServiceExt as _;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let mut req = Request::get("http://shop.example/")
            .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed_unsync())
            .expect("request");
        req.extensions_mut().insert(Dial {
            addr,
            http2: true,
            connect_timeout: Duration::from_secs(1),
        });
        let err = Clients::new(Duration::from_secs(60))
            .oneshot(req)
            .await
            .expect_err("nothing listens");
        assert_eq!(err.end(), AttemptEnd::ConnectFailure, "{err}");
    }

    #[test]
    fn refused_streams_are_read_from_the_http2_error_type() {
        let h2 = |r: h2::Reason| Wrapped("client error (SendRequest)", Some(Box::new(h2::Error::from(r))));
        assert!(is_refused(&h2(h2::Reason::REFUSED_STREAM)));
        assert!(!is_refused(&h2(h2::Reason::CANCEL)), "a reset after processing began");
        assert!(!is_refused(&h2(h2::Reason::INTERNAL_ERROR)));
        // Text is not a type: a message that merely mentions it is not a refusal.
        let lookalike = Wrapped("upstream said REFUSED_STREAM GoAway Canceled", None);
        assert!(!is_refused(&lookalike));
        let io = Wrapped(
            "connection reset",
            Some(Box::new(std::io::Error::other("reset by peer"))),
        );
        assert!(!is_refused(&io));
    }
}
