//! Routing decisions over the repository's real manifests, without sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use localmesh::model::{Key, Protocol, RetryOn, RouteAction};
use localmesh::select::{self, Sidecar};
use localmesh::{Mesh, Request};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mesh() -> Mesh {
    localmesh::load(&root()).unwrap_or_else(|e| panic!("{e}"))
}

const HOST: &str = "sit-gateway.tcex.com.vn";

/// The backend Service names of the gateway route chosen for `req` on the HTTPS listener.
fn gateway_backends(m: &Mesh, req: &Request) -> (Vec<(String, u32)>, Option<Duration>) {
    let (_, r) = select::gateway(m, 443, HOST, req).expect("a route");
    let RouteAction::Forward(b) = &r.action else {
        panic!("not forwarded: {:?}", r.action)
    };
    (
        b.iter().map(|b| (b.service.name.clone(), b.weight)).collect(),
        r.timeout,
    )
}

#[test]
fn premium_header_selects_v2_at_the_gateway() {
    let m = mesh();
    let req = Request::grpc("/product.ProductService/GetProduct").header("user-type", "premium");
    assert_eq!(
        gateway_backends(&m, &req),
        (vec![("product-service-v2".into(), 1)], Some(Duration::from_secs(5)))
    );
}

#[test]
fn agent_sync_follows_agent_version_with_full_match_regexes() {
    let m = mesh();
    for (version, want) in [
        (Some("v1.3"), "product-service-v1"),
        (Some("v2.1"), "product-service-v2"),
        (Some("x9"), "product-service-v1"),
        (Some("v2"), "product-service-v1"),
        (None, "product-service-v1"),
    ] {
        let mut req = Request::grpc("/product.ProductService/AgentSync").header("user-type", "premium");
        if let Some(v) = version {
            req = req.header("agent-version", v);
        }
        let (b, timeout) = gateway_backends(&m, &req);
        assert_eq!(b, vec![(want.to_string(), 1)], "agent-version {version:?}");
        assert_eq!(timeout, None, "a stream has no route timeout");
    }
}

#[test]
fn get_product_without_headers_splits_80_20() {
    let m = mesh();
    let req = Request::grpc("/product.ProductService/GetProduct");
    let (_, r) = select::gateway(&m, 443, "sit-gateway.tcex.com.vn:8443", &req).expect("route");
    let RouteAction::Forward(b) = &r.action else { panic!() };
    assert_eq!(select::total_weight(b), 100);
    let v2 = (0..100)
        .filter(|&draw| select::pick(b, draw).is_some_and(|x| x.service.name == "product-service-v2"))
        .count();
    assert_eq!(v2, 20, "a deterministic draw over 0..100 lands 20 times on v2");
    assert_eq!(
        select::pick(b, 0).map(|x| x.service.name.as_str()),
        Some("product-service-v1")
    );
    assert_eq!(
        select::pick(b, 99).map(|x| x.service.name.as_str()),
        Some("product-service-v2")
    );
}

#[test]
fn other_gateway_paths() {
    let m = mesh();
    let order = Request::grpc("/order.OrderService/CreateOrder");
    assert_eq!(
        gateway_backends(&m, &order),
        (vec![("order-service".into(), 1)], Some(Duration::from_secs(10)))
    );
    let home = Request::new("GET", "/");
    assert_eq!(gateway_backends(&m, &home).0, vec![("frontend".into(), 1)]);
    // Element-wise prefix: a longer service name is not the product service.
    let x = Request::grpc("/product.ProductServiceX/GetProduct");
    assert_eq!(gateway_backends(&m, &x).0, vec![("frontend".into(), 1)]);
    let refl = Request::grpc("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    assert_eq!(gateway_backends(&m, &refl).0, vec![("product-service".into(), 1)]);
    assert!(select::gateway(&m, 443, "other.example.com", &home).is_err());
}

#[test]
fn the_http_listener_redirects_and_https_has_the_certificate() {
    let m = mesh();
    let (l, r) = select::gateway(&m, 80, HOST, &Request::new("GET", "/products/1")).expect("route");
    assert_eq!(l.protocol, Protocol::Http);
    let RouteAction::Redirect(rd) = &r.action else {
        panic!("{:?}", r.action)
    };
    assert_eq!((rd.scheme.as_deref(), rd.status), (Some("https"), 301));
    let https = select::listener(&m, 443, HOST).expect("https listener");
    let tls = https.tls.as_ref().expect("tls");
    assert_eq!(tls.secret, Key::new("gateway", "tcex-cert"));
    assert!(tls.cert_file.ends_with("gateway/certs/tls.crt"));
}

#[test]
fn east_west_product_vs_timeouts_and_retries() {
    let m = mesh();
    let get = Request::grpc("/product.ProductService/GetProduct");
    let s = select::sidecar(&m, "default", "product-service:50051", &get).expect("route");
    assert!(matches!(s, Sidecar::Route { .. }));
    assert_eq!(s.timeout(), Some(Duration::from_secs(5)));
    let r = s.retry();
    assert_eq!((r.attempts, r.per_try_timeout), (3, Some(Duration::from_secs(2))));
    for t in [
        RetryOn::Unavailable,
        RetryOn::Cancelled,
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
    ] {
        assert!(r.retries_on(t), "{t}");
    }
    let subsets: Vec<_> = s.backends().iter().map(|b| (b.subset.clone(), b.weight)).collect();
    assert_eq!(subsets, vec![(Some("v1".into()), 80), (Some("v2".into()), 20)]);

    let premium = get.clone().header("user-type", "premium");
    let s = select::sidecar(&m, "default", "product-service", &premium).expect("route");
    assert_eq!(s.backends()[0].subset.as_deref(), Some("v2"));

    let agent = Request::grpc("/product.ProductService/AgentSync").header("agent-version", "v2.0");
    let s = select::sidecar(&m, "default", "product-service.default.svc.cluster.local", &agent).expect("route");
    assert_eq!(s.timeout(), None);
    assert!(!s.retry().is_enabled());
    assert_eq!(s.backends()[0].subset.as_deref(), Some("v2"));
}

#[test]
fn a_host_without_virtual_service_goes_straight_to_its_service() {
    let m = mesh();
    let s = select::sidecar(&m, "default", "frontend:8080", &Request::new("GET", "/")).expect("route");
    let Sidecar::Direct { service, retry, .. } = &s else {
        panic!("{s:?}")
    };
    assert_eq!(service.key, Key::new("default", "frontend"));
    // No VirtualService: the mesh's defaultHttpRetryPolicy (observability/istio/istio-operator.yaml).
    assert_eq!(retry.attempts, 0);
    assert!(select::sidecar(&m, "default", "nowhere", &Request::new("GET", "/")).is_none());
    // The external payment host is routed by its VirtualService to the stand-in.
    let pay = Request::new("POST", "/v1/charges").port(80);
    let s = select::sidecar(&m, "default", "api.payment-provider.com", &pay).expect("route");
    assert_eq!(s.backends()[0].service, Key::new("default", "payment"));
    assert_eq!(s.timeout(), Some(Duration::from_secs(5)));
}

#[test]
fn destination_rule_subsets_map_to_the_deployments_pods() {
    let m = mesh();
    let get = Request::grpc("/product.ProductService/GetProduct");
    let s = select::sidecar(&m, "default", "product-service", &get).expect("route");
    // One pod of every Deployment, with its template's labels.
    let eps = localmesh::proxy::Endpoints::new();
    for (i, w) in m.workloads.iter().enumerate() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
        eps.add_pod(w, format!("{}-pod", w.key.name), addr);
    }
    for (b, want) in s.backends().iter().zip(["product-v1", "product-v2"]) {
        let w: Vec<_> = select::endpoints(&m, b, &eps.all())
            .iter()
            .map(|e| e.workload.name.clone())
            .collect();
        assert_eq!(w, vec![want.to_string()]);
        // Unary calls on 50051, streams on grpc-streams (50052): the same outlier detection,
        // separate open-request budgets.
        for (port, budget) in [(50051, 1000), (50052, 10000)] {
            let p = select::traffic_policy(&m, b, port);
            let o = p.outlier.expect("outlier detection");
            assert_eq!(
                (o.consecutive_5xx, o.consecutive_gateway, o.max_ejection_percent),
                (5, 3, 50)
            );
            assert_eq!(o.base_ejection, Duration::from_secs(30));
            assert_eq!(p.pool.http2_max_requests, Some(budget), "port {port}");
        }
    }
    let watch = Request::grpc("/product.ProductService/WatchPrices");
    let s = select::sidecar(&m, "default", "product-service", &watch).expect("route");
    assert!(s.backends().iter().all(|b| b.port == Some(50052)), "{:?}", s.backends());
}

#[test]
fn pods_to_start_with_their_env() {
    let m = mesh();
    let opts = localmesh::pods::PodOptions {
        bin_dir: "bin".into(),
        data_dir: "data".into(),
        node: "localhost".into(),
        otlp_endpoint: None,
    };
    let replicas = |w: &str| m.workloads.iter().find(|x| x.key.name == w).map(|x| x.replicas);
    for (w, n) in [
        ("product-v1", 2),
        ("product-v2", 1),
        ("order", 1),
        ("frontend", 2),
        ("payment", 1),
    ] {
        assert_eq!(replicas(w), Some(n), "{w}");
    }
    assert_eq!(m.workloads.len(), 5, "postgres (a StatefulSet) is not started");
    let pod = |w: &str| {
        let w = m.workloads.iter().find(|x| x.key.name == w).expect("deployment");
        localmesh::pods::spec(&m, &std::sync::Arc::new(w.clone()), &opts)
    };
    let v2 = pod("product-v2");
    let env = |k: &str| v2.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(env("SERVICE_VERSION"), Some("v2"));
    // `<deployment>-<pod-template-hash>-<suffix>`, as a ReplicaSet names its pods.
    let name = env("POD_NAME").expect("POD_NAME");
    assert_eq!(name, v2.name);
    let parts: Vec<&str> = name.rsplitn(3, '-').collect();
    assert_eq!(
        (parts[2], parts[1], parts[0].len()),
        ("product-v2", v2.template.as_str(), 5)
    );
    assert_eq!(
        pod("product-v2").template,
        v2.template,
        "the same template, the same hash"
    );
    assert_ne!(pod("product-v1").template, v2.template);
    assert_eq!(env("POD_NAMESPACE"), Some("default"));
    assert_eq!(env("NODE_NAME"), Some("localhost"));
    assert_eq!(env("BIND_ADDR"), Some("127.0.0.1"));
    let order = pod("order");
    assert!(
        order.env.iter().all(|(n, _)| n != "DATABASE_URL"),
        "secret refs stay unset"
    );
}

#[test]
fn peer_authentication_strict_is_reported_as_not_emulated() {
    let m = mesh();
    let pa = m
        .not_emulated
        .iter()
        .find(|n| n.object.starts_with("PeerAuthentication"))
        .expect("reported");
    assert_eq!(pa.field, "spec.mtls.mode");
    assert!(pa.message.starts_with("STRICT"), "{pa}");
    assert!(pa.source.file.ends_with("manifests/istio/peerauthentication.yaml"));
    for kind in ["AuthorizationPolicy", "Telemetry", "ServiceEntry"] {
        assert!(m.not_emulated.iter().any(|n| n.object.starts_with(kind)), "{kind}");
    }
}

#[test]
fn the_gateway_retries_unary_product_calls_only() {
    let m = mesh();
    let retry = |path: &str, headers: &[(&str, &str)]| {
        let mut req = Request::grpc(path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (_, r) = select::gateway(&m, 443, HOST, &req).expect("route");
        r.retry.clone()
    };
    // The rules' `retry: {attempts: 2}`, as Istio converts it.
    for headers in [&[][..], &[("user-type", "premium")][..]] {
        let r = retry("/product.ProductService/GetProduct", headers);
        assert_eq!(r.attempts, 2, "{headers:?}");
        for t in [
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
            RetryOn::Unavailable,
            RetryOn::Cancelled,
        ] {
            assert!(r.retries_on(t), "{t}");
        }
        assert!(!r.retries_on(RetryOn::Reset), "a reset may have been processed");
    }
    // Streams and orders: the mesh default, attempts 0.
    for path in [
        "/product.ProductService/AgentSync",
        "/product.ProductService/WatchPrices",
        "/order.OrderService/CreateOrder",
    ] {
        assert!(!retry(path, &[]).is_enabled(), "{path}");
    }
}
