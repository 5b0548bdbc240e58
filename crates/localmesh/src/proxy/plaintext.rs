//! A client that speaks plaintext to the TLS gateway (`grpcurl -plaintext`, `curl http://...:8443`)
//! gets an answer saying why, instead of a bare TLS failure: the connection is served in plaintext
//! and every request on it gets UNAVAILABLE (gRPC) or 400 (HTTP) naming the listener and the fix.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::reply;

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a client may take to send its first byte before the TLS acceptor takes over.
const FIRST_BYTE: Duration = Duration::from_secs(2);

/// Whether the connection starts with something other than a TLS handshake. Waits for the first
/// byte (at most [`FIRST_BYTE`]); a client that sends nothing is left to the TLS acceptor.
pub async fn starts_in_plaintext(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(FIRST_BYTE, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE
    )
}

/// Why the connection is refused, for a listener `host:port`.
pub fn reason(host: &str, port: u16) -> String {
    format!(
        "{host}:{port} is a TLS listener and this connection is plaintext: use https:// \
         (grpcurl: drop -plaintext, add -cacert <ca.crt> -authority {host})"
    )
}

/// Serves the plaintext connection (HTTP/1.1 or h2c), answering every request with `reason`.
pub async fn refuse(stream: TcpStream, reason: Arc<str>) {
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/grpc"));
        let reason = reason.clone();
        async move { Ok::<_, Infallible>(reply::response(grpc, 400, tonic::Code::Unavailable, &reason)) }
    });
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!(error = %e, "plaintext connection on the TLS gateway ended with an error");
    }
}
