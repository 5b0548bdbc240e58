use super::probe::ProbeState;
use super::*;

#[test]
fn readiness_changes_only_after_the_thresholds() {
    let r = Readiness {
        check: ProbeCheck::Grpc(String::new()),
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        failure_threshold: 2,
        success_threshold: 2,
    };
    let mut s = ProbeState::default();
    assert_eq!(s.record(&r, false, true), None, "one failure is not enough");
    assert_eq!(s.record(&r, true, true), None, "a pass resets the count");
    assert_eq!(s.record(&r, false, true), None);
    assert_eq!(
        s.record(&r, false, true),
        Some(false),
        "two in a row: out of the Service"
    );
    assert_eq!(s.record(&r, true, false), None);
    assert_eq!(s.record(&r, true, false), Some(true), "two passes: back in");
}

#[test]
fn upstream_variables_point_at_the_pods_own_sidecar() {
    let mesh =
        crate::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).expect("the repo manifests");
    let mut spec = PodSpec {
        workload: Arc::new(mesh.workloads[0].clone()),
        template: "t".into(),
        name: "frontend-x".into(),
        binary: PathBuf::from("frontend"),
        env: vec![
            ("PRODUCT_SERVICE_ADDR".into(), "http://product-service:50051".into()),
            ("ORDER_SERVICE_ADDR".into(), "http://order-service:50051".into()),
            ("OTHER".into(), "http://product-service:50051".into()),
        ],
        readiness: None,
        start_check: ProbeCheck::Http("/healthz".into()),
        drain: Duration::from_secs(1),
        log: PathBuf::from("x.log"),
    };
    assert_eq!(spec.upstreams(), ["product-service:50051", "order-service:50051"]);
    spec.route_upstream("product-service:50051", SocketAddr::from(([127, 0, 0, 1], 4000)));
    assert_eq!(spec.env[0].1, "http://127.0.0.1:4000");
    assert_eq!(spec.env[1].1, "http://order-service:50051");
    assert_eq!(
        spec.env[2].1, "http://product-service:50051",
        "only the upstream variables"
    );
}
