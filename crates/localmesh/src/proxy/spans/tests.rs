use super::*;
use crate::model::Key;
use crate::trace::span::LazyTags as _;

fn info<'a>(h: &'a HeaderMap) -> RequestInfo<'a> {
    RequestInfo {
        headers: h,
        method: "POST",
        scheme: "https",
        authority: "sit-gateway.tcex.com.vn",
        path: "/product.ProductService/GetProduct",
        protocol: "HTTP/2",
        peer: "127.0.0.1",
        request_id: "r-1",
        grpc: true,
    }
}

fn tracer() -> (Tracer, Arc<crate::trace::store::Store>) {
    let store = Arc::new(crate::trace::store::Store::new(crate::trace::store::Limits::default()));
    let tracer = Tracer::new(
        &prometheus::Registry::new(),
        crate::trace::Sink::Store(store.clone()),
        16,
    )
    .unwrap();
    (tracer, store)
}

fn gateway() -> Identity {
    Identity::gateway(&Key::new("gateway", "public-api-gateway"), "gw-0")
}

/// The store's packed spans and the exported spans' lazy tags are written by one function;
/// this keeps the two paths from drifting apart.
#[test]
fn packed_and_exported_proxy_spans_carry_the_same_tags() {
    let (tracer, store) = tracer();
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("grpcurl/1.8.6"));
    h.insert("grpc-timeout", HeaderValue::from_static("5S"));
    let on = ProxyTracing {
        sampling: 100.0,
        report: true,
    };
    let cluster = "outbound|50051|v2|product-service.default.svc.cluster.local";
    let mut t = RequestTrace::start(&HeaderMap::new(), &gateway(), on, false);
    t.describe(&info(&h), || "op".into());
    t.set_upstream_cluster(cluster.into());
    let failed = Outcome {
        status: 200,
        grpc_status: Some("14"),
        grpc_message: Some("upstream connect error"),
        flags: "URX",
        request_bytes: 12,
        response_bytes: 0,
    };
    t.finish(&tracer, &failed);
    let packed = store
        .find(&crate::trace::store::Query::default())
        .pop()
        .expect("one trace");
    let lazy = ProxyTags::new(
        &Arc::new(RequestTags::new(&info(&h))),
        Some(&Arc::from(cluster)),
        &failed,
    );
    let want = lazy.tags();
    let Tags::Owned(got) = &packed.spans[0].tags else {
        panic!("the store gives spans as read");
    };
    assert_eq!(got, &want);
    let text = |key: &str| packed.spans[0].tag_text(key);
    assert_eq!(text("grpc.message").as_deref(), Some("upstream connect error"));
    assert_eq!(text("user_agent").as_deref(), Some("grpcurl/1.8.6"));
    assert_eq!(text("error").as_deref(), Some("true"), "UNAVAILABLE is an error");
}

#[test]
fn a_sampled_caller_is_continued_and_an_unsampled_one_is_not_recorded() {
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
    );
    let off = ProxyTracing {
        sampling: 100.0,
        report: true,
    };
    let t = RequestTrace::start(&h, &gateway(), off, false);
    assert_eq!(t.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
    assert!(!t.sampled && !t.recording(), "the caller's 00 flag wins over 100 %");

    let t = RequestTrace::start(&HeaderMap::new(), &gateway(), off, false);
    assert!(t.sampled && t.recording(), "a new trace at 100 %");
    let none = ProxyTracing {
        sampling: 0.0,
        report: true,
    };
    assert!(!RequestTrace::start(&HeaderMap::new(), &gateway(), none, false).sampled);
    assert!(
        !RequestTrace::start(&HeaderMap::new(), &gateway(), off, true).sampled,
        "health checks are never traced"
    );
}

#[test]
fn hop_and_attempt_spans_chain_and_carry_envoys_tags() {
    let (tracer, store) = tracer();
    let h = HeaderMap::new();
    let on = ProxyTracing {
        sampling: 100.0,
        report: true,
    };
    let gw = gateway();
    let mut t = RequestTrace::start(&h, &gw, on, false);
    t.describe(&info(&h), || "op".into());
    t.set_upstream_cluster("outbound|50051||product-service-v1.default.svc.cluster.local".into());
    let labels = [
        ("app".to_string(), "product-service".to_string()),
        ("version".into(), "v1".into()),
    ]
    .into_iter()
    .collect();
    let pod = Identity::sidecar(&Key::new("default", "product-v1"), "product-v1-a", &labels);
    let to = Inbound {
        identity: Arc::new(pod),
        tracing: on,
        operation: "product-service-v1.default.svc.cluster.local:50051/*".into(),
        cluster: Arc::from("inbound|50051||"),
    };
    let failed = t.attempt();
    let mut up = HeaderMap::new();
    t.inject(&failed, &mut up);
    assert!(
        up["traceparent"]
            .to_str()
            .unwrap()
            .contains(&failed.span_id.to_string()),
        "the pod's parent is the attempt span"
    );
    let reset = Outcome {
        status: 200,
        grpc_status: Some("14"),
        flags: "UC",
        ..Outcome::default()
    };
    t.finish_attempt(&tracer, failed, &to, &reset);
    std::thread::sleep(std::time::Duration::from_millis(2));
    let ok = t.attempt();
    let good = Outcome {
        status: 200,
        grpc_status: Some("0"),
        flags: "-",
        ..Outcome::default()
    };
    t.finish_attempt(&tracer, ok, &to, &good);
    let hop_id = t.span_id;
    t.finish(&tracer, &good);

    let trace = store
        .find(&crate::trace::store::Query::default())
        .pop()
        .expect("one trace");
    assert_eq!(trace.spans.len(), 3);
    let by_id = |id: SpanId| trace.spans.iter().find(|s| s.span_id == id).expect("span").clone();
    let hop = by_id(hop_id);
    let mut attempts: Vec<_> = trace.spans.iter().filter(|s| s.span_id != hop_id).cloned().collect();
    attempts.sort_by_key(|s| s.start_unix_nanos);
    let (a1, a2) = (&attempts[0], &attempts[1]);
    assert_eq!(hop.parent, None);
    assert_eq!((a1.parent, a2.parent), (Some(hop_id), Some(hop_id)));
    assert_eq!((hop.kind, a1.kind), (Kind::Client, Kind::Server));
    assert_eq!(hop.process.service, "public-api-gateway-istio.gateway");
    assert_eq!(a1.process.service, "product-service.default");
    assert!(a1.is_error() && !a2.is_error(), "UNAVAILABLE is an upstream error");
    assert_eq!(a1.tag_text("response_flags").as_deref(), Some("UC"));
    assert_eq!(hop.tag_text("grpc.status_code").as_deref(), Some("0"));
    assert_eq!(
        hop.tag_text("http.url").as_deref(),
        Some("https://sit-gateway.tcex.com.vn/product.ProductService/GetProduct")
    );
    assert_eq!(hop.tag_text("guid:x-request-id").as_deref(), Some("r-1"));
    assert_eq!(
        hop.tag_text("upstream_cluster").as_deref(),
        Some("outbound|50051||product-service-v1.default.svc.cluster.local")
    );
    // Written out, the tags are Envoy's, in its order.
    let keys: Vec<String> = hop.all_tags().iter().map(|(k, _)| k.to_string()).collect();
    for k in [
        "guid:x-request-id",
        "http.url",
        "http.method",
        "downstream_cluster",
        "user_agent",
        "http.protocol",
        "peer.address",
        "grpc.path",
        "grpc.authority",
        "grpc.content_type",
        "request_size",
        "response_size",
        "upstream_cluster",
        "upstream_cluster.name",
        "http.status_code",
        "response_flags",
        "grpc.status_code",
        "node_id",
        "zone",
        "component",
        "istio.canonical_service",
        "istio.canonical_revision",
        "istio.namespace",
        "istio.mesh_id",
        "istio.cluster_id",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
    }
    assert!(!keys.iter().any(|x| x == "error"), "no error on an OK answer");
    assert_eq!(a1.tag_text("error").as_deref(), Some("true"));
    assert_eq!(a2.tag_text("upstream_cluster").as_deref(), Some("inbound|50051||"));
    assert_eq!(
        hop.tag_text("istio.canonical_service").as_deref(),
        Some("public-api-gateway-istio")
    );
    assert_eq!(a2.tag_text("istio.canonical_revision").as_deref(), Some("v1"));
}

#[test]
fn an_attempt_of_a_request_dropped_before_its_end_is_still_reported() {
    let (tracer, store) = tracer();
    let h = HeaderMap::new();
    let on = ProxyTracing {
        sampling: 100.0,
        report: true,
    };
    let mut t = RequestTrace::start(&h, &gateway(), on, false);
    t.describe(&info(&h), || "op".into());
    let to = Inbound {
        identity: Arc::new(gateway()),
        tracing: on,
        operation: "product-service.default.svc.cluster.local:50051/*".into(),
        cluster: Arc::from("inbound|50051||"),
    };
    let attempt = t.attempt();
    let id = attempt.span_id;
    t.finish_attempt(&tracer, attempt, &to, &Outcome::default());
    assert_eq!(store.stats().spans, 0, "held until the hop span ends");
    drop(t);
    let trace = store
        .find(&crate::trace::store::Query::default())
        .pop()
        .expect("one trace");
    assert_eq!(trace.spans.iter().map(|s| s.span_id).collect::<Vec<_>>(), [id]);
}

#[test]
fn a_proxy_that_does_not_report_sends_no_span_but_keeps_the_context() {
    let (tracer, store) = tracer();
    let quiet = ProxyTracing {
        sampling: 100.0,
        report: false,
    };
    let t = RequestTrace::start(&HeaderMap::new(), &gateway(), quiet, false);
    assert!(t.sampled);
    let mut up = HeaderMap::new();
    t.inject(&t.attempt(), &mut up);
    assert!(up["traceparent"].to_str().unwrap().ends_with("-01"));
    t.finish(&tracer, &Outcome::default());
    assert_eq!(store.stats().spans, 0);
}
