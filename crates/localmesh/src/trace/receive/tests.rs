use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1 as pb;

use super::*;
use crate::trace::span::{Event, Span, Tags, Value};

fn attribute(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn request(spans: Vec<pb::Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", any_value::Value::StringValue("product".into())),
                    attribute("k8s.pod.name", any_value::Value::StringValue("product-v1-0".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![pb::ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn receive(req: &ExportTraceServiceRequest) -> (Store, Result<usize, String>) {
    let store = Store::default();
    let mut batch = Packed::default();
    let result = unpack(&req.encode_to_vec(), &Processes::default(), &mut batch);
    store.insert_packed(batch);
    (store, result)
}

#[test]
fn a_span_reads_as_the_sdk_sent_it() {
    let span = pb::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        name: "product.ProductService/GetProduct".into(),
        kind: pb::span::SpanKind::Server as i32,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 1_500,
        attributes: vec![
            attribute("rpc.system", any_value::Value::StringValue("grpc".into())),
            attribute("rpc.grpc.status_code", any_value::Value::IntValue(-4)),
            attribute("sampled", any_value::Value::BoolValue(true)),
            attribute("ratio", any_value::Value::DoubleValue(0.8)),
            attribute(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::IntValue(1)),
                    }],
                }),
            ),
            KeyValue {
                key: "no value".into(),
                value: None,
                ..Default::default()
            },
        ],
        events: vec![pb::span::Event {
            time_unix_nano: 1_200,
            name: "exception".into(),
            attributes: vec![attribute(
                "exception.message",
                any_value::Value::StringValue("boom".into()),
            )],
            ..Default::default()
        }],
        status: Some(pb::Status {
            code: pb::status::StatusCode::Error as i32,
            message: "deadline".into(),
        }),
        ..Default::default()
    };
    let (store, rejected) = receive(&request(vec![span]));
    assert_eq!(rejected, Ok(0));
    let s = store.get(TraceId([1; 16])).expect("kept").spans.remove(0);
    assert_eq!((s.span_id, s.parent), (SpanId([2; 8]), Some(SpanId([3; 8]))));
    assert_eq!(
        (s.kind, s.start_unix_nanos, s.duration_nanos),
        (Kind::Server, 1_000, 500)
    );
    assert_eq!((s.error, s.status_message.as_deref()), (true, Some("deadline")));
    assert_eq!(s.process.service, "product");
    assert_eq!(s.process.tag("k8s.pod.name"), Some(&Value::from("product-v1-0")));
    let Tags::Owned(tags) = &s.tags else {
        panic!("received tags are owned");
    };
    let tags: Vec<(String, Value)> = tags.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    assert_eq!(
        tags[..4],
        [
            ("rpc.system".to_string(), Value::from("grpc")),
            ("rpc.grpc.status_code".to_string(), Value::Int(-4)),
            ("sampled".to_string(), Value::Bool(true)),
            ("ratio".to_string(), Value::Float(0.8)),
        ]
    );
    assert_eq!(tags[4].0, "list");
    assert!(
        matches!(&tags[4].1, Value::Str(t) if t.contains("IntValue(1)")),
        "{tags:?}"
    );
    assert_eq!(tags.len(), 5, "an attribute without a value is skipped");
    assert_eq!(
        s.events,
        [Event {
            time_unix_nanos: 1_200,
            name: "exception".into(),
            tags: vec![("exception.message".into(), Value::from("boom"))],
        }]
    );
}

#[test]
fn a_proxy_span_survives_export_and_receipt() {
    let p = Arc::new(Process {
        service: "frontend.default".into(),
        tags: vec![("k8s.pod.name".into(), Value::from("frontend-0"))],
        span_tags: vec![("component".into(), Value::from("proxy"))],
    });
    let s = Span {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        parent: Some(SpanId([3; 8])),
        name: "frontend.default.svc.cluster.local:8080/*".into(),
        kind: Kind::Server,
        start_unix_nanos: 1_000,
        duration_nanos: 500,
        tags: Tags::Owned(vec![("http.status_code".into(), Value::from("200"))]),
        events: Vec::new(),
        error: true,
        status_message: None,
        process: p,
    };
    let (store, rejected) = receive(&crate::trace::otlp::encode(std::slice::from_ref(&s)));
    assert_eq!(rejected, Ok(0));
    let b = store.get(s.trace_id).expect("kept").spans.remove(0);
    assert_eq!((b.trace_id, b.span_id, b.parent), (s.trace_id, s.span_id, s.parent));
    assert_eq!((b.kind, b.duration_nanos, b.error), (Kind::Server, 500, true));
    assert_eq!(b.process.service, "frontend.default");
    assert_eq!(
        b.tag_text("component").as_deref(),
        Some("proxy"),
        "per-process span tags go on each span"
    );
    assert_eq!(b.process.tag("k8s.pod.name"), Some(&Value::from("frontend-0")));
}

#[test]
fn spans_with_bad_ids_are_rejected() {
    let (store, rejected) = receive(&request(vec![
        pb::Span {
            trace_id: vec![1; 3],
            span_id: vec![2; 8],
            ..Default::default()
        },
        pb::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        },
    ]));
    assert_eq!(rejected, Ok(1));
    assert_eq!(store.stats().spans, 1, "the good span is kept");
}

#[test]
fn a_malformed_request_is_an_error_that_says_where() {
    let good = request(vec![pb::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "op".into(),
        ..Default::default()
    }])
    .encode_to_vec();
    let processes = Processes::default();
    for cut in 1..good.len() {
        let mut batch = Packed::default();
        // Never a panic; a cut message is an error or (cut between fields) fewer spans.
        if unpack(&good[..cut], &processes, &mut batch).is_ok() {
            assert!(batch.spans.is_empty(), "cut at {cut}");
        }
    }
    let mut bad_name = pb::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    }
    .encode_to_vec();
    bad_name.extend_from_slice(&[(5 << 3) | 2, 2, 0xff, 0xfe]);
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &bad_name, &mut scope);
    let mut resource_spans = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut resource_spans);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &resource_spans, &mut req);
    let err = unpack(&req, &processes, &mut Packed::default()).expect_err("not UTF-8");
    assert_eq!(err, "resource_spans[0].scope_spans[0].spans[0]: name is not UTF-8");
}

#[tokio::test]
async fn the_receiver_stores_spans_and_refuses_a_request_over_its_limit() {
    let store = Arc::new(Store::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, task) = serve_receiver(store.clone(), tcp, 1 << 20).expect("receiver");
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let request = |note: &str| {
        request(vec![pb::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GetProduct".into(),
            attributes: vec![attribute("note", any_value::Value::StringValue(note.into()))],
            ..Default::default()
        }])
    };
    let answer = client.export(request("small")).await.expect("a small export");
    assert_eq!(answer.into_inner().partial_success, None);
    assert_eq!(store.stats().spans, 1);
    let err = client
        .export(request(&"x".repeat(2 << 20)))
        .await
        .expect_err("2 MiB over a 1 MiB limit");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(err.message().contains("limit"), "says the limit: {err}");
    assert_eq!(store.stats().spans, 1, "nothing of the refused request is kept");

    let bad = ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            scope_spans: vec![pb::ScopeSpans {
                spans: vec![pb::Span {
                    trace_id: vec![1; 4],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let partial = client.export(bad).await.expect("answered").into_inner().partial_success;
    assert_eq!(partial.map(|p| p.rejected_spans), Some(1));
    task.abort();
}
