//! Helpers shared by the frontend's integration tests: real product (and,
//! where needed, order and payment) servers on port 0 in this process, a
//! real frontend in front of them, and a plain HTTP client.
#![allow(dead_code)]

use std::time::Duration;

use frontend::Config;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use telemetry::{GrpcMetrics, metrics::Registry};

pub async fn start_product(version: &str, pod: &str) -> product::Handle {
    start_product_with(product::Config::for_test(version, pod)).await
}

pub async fn start_product_with(cfg: product::Config) -> product::Handle {
    let metrics = GrpcMetrics::new(&Registry::new()).expect("metrics");
    product::spawn(cfg, metrics).await.expect("product server starts")
}

pub async fn start_frontend(cfg: Config) -> frontend::Handle {
    frontend::spawn(cfg, Registry::new()).await.expect("frontend starts")
}

/// A frontend over `product`, with an order address where nothing listens.
pub async fn frontend_over(product: &product::Handle) -> frontend::Handle {
    start_frontend(Config::for_test(product.url(), refused_addr().await)).await
}

/// `http://127.0.0.1:port` of a port that was free a moment ago, so a
/// connection there is refused.
pub async fn refused_addr() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// A client that shows redirects instead of following them.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn get(url: &str) -> Response {
    http().get(url).send().await.expect("GET")
}

/// Status and body text.
pub async fn get_text(url: &str) -> (StatusCode, String) {
    let res = get(url).await;
    let status = res.status();
    (status, res.text().await.expect("body"))
}

/// Status and JSON body.
pub async fn get_json(url: &str) -> (StatusCode, Value) {
    let res = get(url).await;
    json_of(res).await
}

pub async fn json_of(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.expect("body");
    assert!(ct.starts_with("application/json"), "content-type {ct:?} for {text}");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// The error JSON of the API, with the checks every error must pass: the
/// promised fields, the hop, and no raw gRPC status dump.
pub fn assert_error(body: &Value, hop: &str) {
    let text = body.to_string();
    assert_eq!(body["hop"], hop, "{text}");
    assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()), "{text}");
    assert!(body["detail"].as_str().is_some_and(|s| !s.is_empty()), "{text}");
    assert_no_grpc_dump(&text);
}

pub fn assert_no_grpc_dump(text: &str) {
    for raw in ["rpc error", "status:", "Status {", "message:"] {
        assert!(!text.contains(raw), "a raw gRPC status ({raw:?}) leaked: {text}");
    }
}

/// `GET /metrics` of a server's metrics port.
pub async fn metrics(addr: std::net::SocketAddr) -> String {
    let (status, text) = get_text(&format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200);
    text
}

// Each test binary uses its own subset of these.
#[allow(unused_imports)]
pub use testkit::{eventually, sample};

/// The whole shop in this process: product v2, the payment stand-in, order
/// (SQLite in a temp dir) and a frontend in front of product and order.
pub struct Shop {
    pub product: product::Handle,
    pub payment: payment::Handle,
    pub order: order::Handle,
    pub frontend: frontend::Handle,
    _data: tempfile::TempDir,
}

impl Shop {
    pub async fn start() -> Self {
        Self::start_with(payment::Config::for_test()).await
    }

    pub async fn start_with(payment_cfg: payment::Config) -> Self {
        let product = start_product("v2", "product-v2-t").await;
        let payment = payment::spawn(payment_cfg, Registry::new())
            .await
            .expect("payment server starts");
        let data = tempfile::tempdir().expect("temp dir");
        let order_cfg = order::Config::for_test(
            order::Database::Sqlite(data.path().join("orders.db")),
            product.url(),
            payment.url(),
        );
        let order = order::spawn(order_cfg, GrpcMetrics::new(&Registry::new()).expect("metrics"))
            .await
            .expect("order server starts");
        let frontend = start_frontend(Config::for_test(product.url(), order.url())).await;
        Self {
            product,
            payment,
            order,
            frontend,
            _data: data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.frontend.url())
    }
}
