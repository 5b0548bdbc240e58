//! Listeners and downstream connections: the accept loops of the gateway and sidecar listeners,
//! each connection served with hyper, and bounded as an edge Envoy bounds them: a cap on open connections, a TLS
//! handshake timeout, a request-headers timeout, and an idle timeout for connections with no
//! request in progress. Without these a slow or idle client holds a socket (and its memory) for
//! ever, and enough of them take every file descriptor.
//!
//! Envoy's names and defaults (`HttpConnectionManager`): `common_http_protocol_options.idle_timeout`
//! is 1 hour for downstream connections and is counted only while no stream is active;
//! `request_headers_timeout` has no default (its edge guide recommends bounding it);
//! `listener_filters_timeout` (the TLS inspector's wait for a ClientHello) is 15 s; a listener's
//! or the overload manager's `max_connections` closes the connections beyond it
//! (`downstream_cx_overflow`). Upstream, Istio's `connectionPool.http.idleTimeout` defaults to
//! 1 hour: pooled connections idle that long are closed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use super::limits::{Admission, Limits, Permit, default_max_connections};
use super::{BoxError, Hop, HopKind, Proxy, Running, plaintext};
use crate::identity::Identity;
use crate::model::Listener;
use http_body_util::BodyExt as _;

/// How long a connection that was asked to close may take to finish what it is doing (Envoy's
/// `drain_timeout` default is 5 s).
const DRAIN: Duration = Duration::from_secs(5);

/// A connection's requests in progress, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    /// Requests whose headers were complete (0: still waiting for the first).
    seen: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` when the last request ended.
    idle_since_ms: AtomicU64,
}

/// A request in progress; it ends when its response body is done (or dropped).
#[derive(Debug)]
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            active: AtomicUsize::new(0),
            seen: AtomicU64::new(0),
            started: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.seen.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// How long the connection has had nothing in progress, and the bound that applies: the
    /// request-headers timeout until a first request arrived, then the idle timeout.
    fn idle(&self, limits: &Limits) -> Option<(Duration, Duration)> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let idle = self.started.elapsed().saturating_sub(since);
        let bound = if self.seen.load(Ordering::Relaxed) == 0 {
            limits.request_headers
        } else {
            limits.idle
        };
        Some((idle, bound))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request [`InProgress`] until it ends.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        guard: Option<InProgress>,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: InProgress) -> Self {
        Tracked {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let out = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = out {
            this.guard.take();
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `io` with `make`'s service (given the connection's
/// [`Activity`]), closing the connection gracefully when it has had no request in progress for
/// the bound that applies, and at once if it does not finish within [`DRAIN`] after that.
pub async fn serve<I, S, B>(io: I, limits: Limits, make: impl FnOnce(Arc<Activity>) -> S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Activity::new();
    let service = make(activity.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_headers);
    if let Some(every) = limits.http2_keepalive {
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(every)
            .keep_alive_timeout(limits.http2_keepalive_timeout);
    }
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // Checked a few times per bound, at most once a second.
    let tick = (limits.request_headers.min(limits.idle) / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(tick) => {
                let Some((idle, bound)) = activity.idle(&limits) else { continue };
                if idle < bound {
                    continue;
                }
                tracing::debug!(idle_ms = idle.as_millis() as u64, "closing an idle downstream connection");
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
                return;
            }
        }
    }
}

impl Proxy {
    /// Serves a gateway listener on `tcp` (routes still match on the listener's model port): with
    /// `tls` (see [`server_config`]) TLS 1.2/1.3 terminated here, SNI checked, ALPN `h2` and
    /// `http/1.1`; without, plaintext (the `http` listener, whose route redirects to HTTPS).
    pub fn serve_gateway(
        self: &Arc<Self>,
        listener: Listener,
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Running> {
        let addr = tcp.local_addr()?;
        crate::lock(&self.published).insert(listener.port, addr.port());
        let acceptor = tls.map(TlsAcceptor::from);
        let refusal: Arc<str> = plaintext::reason(listener.hostname.as_deref().unwrap_or("*"), addr.port()).into();
        let identity = Arc::new(Identity::gateway(
            &listener.gateway,
            &crate::identity::replica_name(&format!("{}-istio", listener.gateway.name), &listener.gateway.name),
        ));
        let name: Arc<str> = format!("gateway {}", listener.name).into();
        let hop = self.hop(HopKind::Gateway(Arc::new(listener)), identity);
        let proxy = self.clone();
        let task = tokio::spawn(accept_loop(tcp, move |stream, peer| {
            let acceptor = acceptor.clone();
            let proxy = proxy.clone();
            let hop = hop.clone();
            let refusal = refusal.clone();
            let permit = proxy.admission.admit(&name);
            async move {
                let Some(_permit) = permit else {
                    return;
                };
                let Some(acceptor) = acceptor else {
                    return proxy.serve_connection(hop, stream, peer).await;
                };
                // The plaintext check and the handshake, bounded: a client that sends nothing or
                // half a ClientHello is closed.
                let handshake = async {
                    if plaintext::starts_in_plaintext(&stream).await {
                        return Err(stream);
                    }
                    Ok(acceptor.accept(stream).await)
                };
                match tokio::time::timeout(proxy.limits.tls_handshake, handshake).await {
                    Err(_) => tracing::debug!("gateway TLS handshake timed out (--tls-handshake-timeout)"),
                    Ok(Err(stream)) => {
                        tracing::debug!("plaintext on the TLS gateway; answered with the reason");
                        plaintext::refuse(stream, refusal).await;
                    }
                    Ok(Ok(Ok(tls))) => proxy.serve_connection(hop, tls, peer).await,
                    Ok(Ok(Err(e))) => tracing::debug!(error = %e, "gateway TLS handshake failed"),
                }
            }
        }));
        Ok(Running { addr, task })
    }

    /// Serves a plaintext (h2c and HTTP/1.1) sidecar listener for calls from the pod `source`.
    pub fn serve_sidecar(self: &Arc<Self>, source: Arc<Identity>, tcp: TcpListener) -> io::Result<Running> {
        self.serve_sidecar_hop(self.hop(HopKind::Sidecar(None), source), tcp)
    }

    /// A sidecar listener for one upstream: every request on it is routed as if its `:authority`
    /// were `host` (e.g. `product-service:50051`, `api.payment-provider.com`), whatever the caller
    /// sent. This is how `localmesh up` points a pod's `PRODUCT_SERVICE_ADDR` at
    /// `http://127.0.0.1:<port>` while routing stays by Service host.
    pub fn serve_sidecar_for_host(
        self: &Arc<Self>,
        source: Arc<Identity>,
        host: &str,
        tcp: TcpListener,
    ) -> io::Result<Running> {
        self.serve_sidecar_hop(self.hop(HopKind::Sidecar(Some(Arc::from(host))), source), tcp)
    }

    pub(super) fn hop(&self, kind: HopKind, source: Arc<Identity>) -> Hop {
        Hop {
            kind,
            telemetry: self.mesh().proxy_telemetry(&source.namespace, &source.labels),
            source,
        }
    }

    fn serve_sidecar_hop(self: &Arc<Self>, hop: Hop, tcp: TcpListener) -> io::Result<Running> {
        let addr = tcp.local_addr()?;
        let proxy = self.clone();
        let task = tokio::spawn(accept_loop(tcp, move |stream, peer| {
            let permit = proxy.admission.admit("sidecar");
            let serve = proxy.clone().serve_connection(hop.clone(), stream, peer);
            async move {
                if let Some(_permit) = permit {
                    serve.await;
                }
            }
        }));
        Ok(Running { addr, task })
    }

    async fn serve_connection<I>(self: Arc<Self>, hop: Hop, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        serve(io, limits, move |activity| {
            hyper::service::service_fn(move |req| {
                let proxy = self.clone();
                let hop = hop.clone();
                let in_progress = activity.begin();
                async move {
                    let req = req.map(|b: Incoming| b.map_err(BoxError::from).boxed_unsync());
                    let resp = proxy.handle(hop, peer.ip(), req).await;
                    Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, in_progress)))
                }
            })
        })
        .await;
    }
}

/// Accepts connections until the task is aborted; aborting also ends the open connections.
async fn accept_loop<F, Fut>(tcp: TcpListener, on_conn: F)
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        match tcp.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                while conns.try_join_next().is_some() {}
                conns.spawn(on_conn(stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_progress() {
        let limits = Limits {
            request_headers: Duration::from_secs(2),
            idle: Duration::from_secs(60),
            ..Limits::default()
        };
        let a = Activity::new();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (idle, bound) = a.idle(&limits).expect("nothing in progress");
        assert_eq!(
            (idle, bound),
            (Duration::from_secs(1), Duration::from_secs(2)),
            "first request pending"
        );
        let r = a.begin();
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(a.idle(&limits).is_none(), "a long request is not idleness");
        drop(r);
        tokio::time::advance(Duration::from_secs(5)).await;
        let (idle, bound) = a.idle(&limits).expect("idle again");
        assert_eq!((idle, bound), (Duration::from_secs(5), Duration::from_secs(60)));
    }
}
