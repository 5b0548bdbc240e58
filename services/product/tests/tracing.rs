//! A caller's trace continues in the server span, exported over OTLP/gRPC
//! to an in-process collector. Each test runs in its own process (nextest),
//! so each owns the global telemetry.

mod common;

use std::time::Duration;

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use proto::product::{GetProductRequest, product_service_client::ProductServiceClient};
use tonic::{Request, metadata::MetadataValue};

/// A collector, this process's telemetry exporting to it, and a product server using it.
async fn traced_server(version: &str, pod: &str) -> (FakeCollectorServer, telemetry::Telemetry, product::Handle) {
    let collector = FakeCollectorServer::start().await.expect("collector");
    let cfg = product::Config::for_test(version, pod);
    let settings = telemetry::Settings {
        identity: cfg.identity.clone(),
        service_name: "product".into(),
        otlp_endpoint: Some(collector.endpoint()),
    };
    let tel = telemetry::init(&settings).expect("telemetry");
    let h = product::spawn(cfg, tel.grpc.clone()).await.unwrap();
    (collector, tel, h)
}

async fn traced_call(headers: &[(&'static str, &'static str)], product_id: &str) -> Vec<ExportedSpan> {
    let (mut collector, tel, h) = traced_server("v2", "product-v2-trace-0").await;
    let mut c = ProductServiceClient::new(common::channel(&h).await);
    let mut req = Request::new(GetProductRequest {
        product_id: product_id.into(),
    });
    for (k, v) in headers {
        req.metadata_mut().insert(*k, MetadataValue::from_static(v));
    }
    let _ = c.get_product(req).await;
    h.shutdown().await.unwrap();
    tel.shutdown();
    collector.exported_spans(1, Duration::from_secs(10)).await
}

fn server_span(spans: &[ExportedSpan]) -> &ExportedSpan {
    spans
        .iter()
        .find(|s| s.name == "product.ProductService/GetProduct")
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"))
}

/// The collector renders attribute values as `Some(AnyValue { value: Some(X) })`; this returns X.
fn attr(s: &ExportedSpan, key: &str) -> String {
    let raw = s
        .attributes
        .get(key)
        .unwrap_or_else(|| panic!("no attribute {key} in {:?}", s.attributes));
    raw.trim_start_matches("Some(AnyValue { value: Some(")
        .trim_end_matches(") })")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn w3c_traceparent_continues_in_the_server_span() {
    let spans = traced_call(
        &[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("x-request-id", "trace-req-1"),
        ],
        "123",
    )
    .await;
    let s = server_span(&spans);
    assert_eq!(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s.parent_span_id, "b7ad6b7169203331");
    assert!(s.kind.to_lowercase().contains("server"), "kind {}", s.kind);
    assert_eq!(attr(s, "rpc.method"), "StringValue(\"GetProduct\")");
    assert_eq!(attr(s, "rpc.grpc.status_code"), "IntValue(0)");
    assert_eq!(attr(s, "request_id"), "StringValue(\"trace-req-1\")");
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_headers_continue_the_trace_and_errors_are_recorded() {
    let spans = traced_call(
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
        "does-not-exist",
    )
    .await;
    let s = server_span(&spans);
    assert_eq!(s.trace_id, "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(s.parent_span_id, "a2fb4a1d1a96d312");
    assert_eq!(attr(s, "rpc.grpc.status_code"), "IntValue(5)");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probes_make_no_spans() {
    let (mut collector, tel, h) = traced_server("v1", "product-v1-probe-0").await;
    let channel = common::channel(&h).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "product.ProductService"] {
        for _ in 0..10 {
            let req = tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            };
            health.check(req).await.expect("health check");
        }
    }
    let mut c = ProductServiceClient::new(channel);
    c.get_product(GetProductRequest {
        product_id: "123".into(),
    })
    .await
    .expect("GetProduct");
    h.shutdown().await.unwrap();
    tel.shutdown();
    let spans = collector.exported_spans(21, Duration::from_secs(3)).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["product.ProductService/GetProduct"],
        "only the real call is traced"
    );
}
