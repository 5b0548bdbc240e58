//! Recording hops in front of the real product and payment servers: they
//! keep the headers of every request that passes, so a test can see what
//! the order service sent to the next hop.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum::response::IntoResponse as _;
use http::HeaderMap;
use tonic::transport::{Channel, server::TcpIncoming};
use tower::ServiceExt as _;

pub type Seen = Arc<Mutex<Vec<HeaderMap>>>;

pub fn seen(s: &Seen) -> Vec<HeaderMap> {
    s.lock().expect("lock").clone()
}

/// A gRPC hop for `product.ProductService` that forwards to `upstream`.
#[derive(Clone)]
struct GrpcRecorder {
    upstream: Channel,
    seen: Seen,
}

impl tonic::server::NamedService for GrpcRecorder {
    const NAME: &'static str = "product.ProductService";
}

impl tower::Service<http::Request<tonic::body::Body>> for GrpcRecorder {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.seen.lock().expect("lock").push(req.headers().clone());
        let upstream = self.upstream.clone();
        Box::pin(async move {
            Ok(upstream
                .oneshot(req)
                .await
                .unwrap_or_else(|e| tonic::Status::unavailable(format!("recorder: {e}")).into_http()))
        })
    }
}

/// Starts a recording gRPC hop in front of `upstream`; returns its URL.
pub async fn grpc(upstream: &str) -> (String, Seen) {
    let seen = Seen::default();
    let recorder = GrpcRecorder {
        upstream: super::channel(upstream).await,
        seen: seen.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(recorder)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (url, seen)
}

#[derive(Clone)]
struct HttpRecorder {
    upstream: String,
    seen: Seen,
}

/// Starts a recording HTTP hop in front of `upstream`; returns its URL.
pub async fn http(upstream: &str) -> (String, Seen) {
    let seen = Seen::default();
    let state = HttpRecorder {
        upstream: upstream.to_owned(),
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn forward(
    axum::extract::State(st): axum::extract::State<HttpRecorder>,
    req: axum::extract::Request,
) -> axum::response::Response {
    st.seen.lock().expect("lock").push(req.headers().clone());
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    headers.remove(http::header::HOST);
    let res = reqwest::Client::new()
        .request(parts.method, format!("{}{path}", st.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("upstream answers");
    let status = res.status();
    let mut headers = res.headers().clone();
    headers.remove(http::header::TRANSFER_ENCODING);
    let body = res.bytes().await.expect("upstream body");
    let mut out = (status, body).into_response();
    *out.headers_mut() = headers;
    out
}
