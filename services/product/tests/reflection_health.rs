//! Reflection (v1 and v1alpha) and grpc.health.v1, as grpcurl and probes use them.

mod common;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED: [&str; 2] = ["product.ProductService", "grpc.health.v1.Health"];

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use v1::{server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest};
    let h = common::start("v1", "product-v1-refl-0").await;
    let mut c = ServerReflectionClient::new(common::channel(&h).await);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut res = c
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        res.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a list response")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in EXPECTED.iter().chain(&[
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]) {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services_and_describes_them() {
    use v1alpha::{server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest};
    let h = common::start("v1", "product-v1-refl-0").await;
    let mut c = ServerReflectionClient::new(common::channel(&h).await);
    let reqs = [
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("product.ProductService".into())),
        },
    ];
    let mut res = c
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let first = res.next().await.unwrap().unwrap().message_response;
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = first else {
        panic!("not a list response: {first:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in EXPECTED {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let second = res.next().await.unwrap().unwrap().message_response;
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) = second else {
        panic!("not a file descriptor response: {second:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_is_serving_then_not_serving_once_shutdown_starts() {
    let mut h = common::start("v2", "product-v2-health-0").await;
    let mut c = HealthClient::new(common::channel(&h).await);
    for service in ["", "product.ProductService"] {
        let res = c
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(res.status(), ServingStatus::Serving, "service {service:?}");
    }
    let unknown = c
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut overall = c
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    let mut product = c
        .watch(HealthCheckRequest {
            service: "product.ProductService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.next().await.unwrap().unwrap().status(), ServingStatus::Serving);
    assert_eq!(product.next().await.unwrap().unwrap().status(), ServingStatus::Serving);

    h.begin_shutdown();
    assert_eq!(
        overall.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(
        product.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    // Then the watch streams end with a status that tells the client to go elsewhere.
    let end = overall.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    assert!(end.message().contains("shutting down"), "{}", end.message());
    h.shutdown().await.unwrap();
}
