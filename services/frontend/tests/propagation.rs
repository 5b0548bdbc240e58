//! What the frontend passes on to product-service: the request id, the
//! routing headers the mesh matches on, the trace context and a deadline.
//! The product server here is the real ProductService implementation, behind
//! an interceptor that records the metadata each call arrived with.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use product::{catalog::Catalog, faults::Faults, service::ProductApi};
use proto::product::product_service_server::ProductServiceServer;
use tonic::{metadata::MetadataMap, transport::server::TcpIncoming};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// A real ProductService on port 0; returns its URL and what it saw.
async fn recording_product() -> (String, Arc<Mutex<Vec<MetadataMap>>>) {
    let identity = product::Config::for_test("v2", "product-v2-rec").identity;
    let api = ProductApi::new(Arc::new(Catalog::embedded()), &identity, Faults::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let svc = ProductServiceServer::with_interceptor(api, move |req: tonic::Request<()>| {
        record.lock().unwrap().push(req.metadata().clone());
        Ok(req)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (url, seen)
}

fn get_md<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn request_id_routing_headers_trace_context_and_deadline_reach_product() {
    // The global propagator and an OpenTelemetry layer, as in the binary;
    // without them there is no trace context to pass on.
    let identity = frontend::Config::for_test(String::new(), String::new()).identity;
    let settings = telemetry::Settings::from_env(identity).unwrap();
    let _telemetry = telemetry::init(&settings).unwrap();

    let (product_url, seen) = recording_product().await;
    let fe = start_frontend(frontend::Config::for_test(product_url, refused_addr().await)).await;

    let res = http()
        .get(format!("{}/api/products/123", fe.url()))
        .header("x-request-id", "req-frontend-test-1")
        .header("user-type", "premium")
        .header("x-user-id", "user-7")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .header("cookie", "session=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-request-id"],
        "req-frontend-test-1",
        "the request id round-trips"
    );
    let (_, body) = json_of(res).await;
    assert_eq!(body["served_by"]["pod"], "product-v2-rec");

    let md = seen.lock().unwrap().pop().expect("product-service was called");
    assert_eq!(get_md(&md, "x-request-id"), Some("req-frontend-test-1"));
    assert_eq!(
        get_md(&md, "user-type"),
        Some("premium"),
        "the mesh routes on user-type"
    );
    assert_eq!(get_md(&md, "x-user-id"), Some("user-7"));
    assert!(md.get("cookie").is_none(), "only the routing headers travel");

    // Same trace, new parent: the frontend's client span.
    let tp = get_md(&md, "traceparent").expect("traceparent is injected");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[1], TRACE_ID, "the caller's trace continues: {tp}");
    assert_ne!(parts[2], PARENT_SPAN, "the frontend adds its own spans: {tp}");

    // The deadline travels as grpc-timeout, at most BACKEND_TIMEOUT_MS (5 s).
    let timeout = telemetry::propagation::grpc_timeout(&md).expect("grpc-timeout is set");
    assert!(
        timeout <= Duration::from_secs(5) && timeout > Duration::from_secs(1),
        "{timeout:?}"
    );
}

#[tokio::test]
async fn a_request_without_an_id_gets_one_that_product_sees_too() {
    let (product_url, seen) = recording_product().await;
    let fe = start_frontend(frontend::Config::for_test(product_url, refused_addr().await)).await;

    let res = get(&format!("{}/", fe.url())).await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let md = seen.lock().unwrap().pop().expect("product-service was called");
    assert_eq!(get_md(&md, "x-request-id"), Some(id.as_str()));
    assert!(md.get("user-type").is_none(), "no routing header is invented");
    // The page's footer shows it too, to find the logs.
    let html = res.text().await.unwrap();
    assert!(html.contains(&id));
}
