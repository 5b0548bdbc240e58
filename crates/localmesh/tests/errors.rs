//! Manifest errors stop the build and name file, kind/name and field; the lint binary agrees.

use std::path::{Path, PathBuf};
use std::process::Command;

use localmesh::{MeshError, Options};

use testkit::copy_tree;

fn build(yaml: &str) -> Result<localmesh::Mesh, MeshError> {
    let objects = manifests::load_str(yaml, Path::new("fixture.yaml"))?;
    let mut m = manifests::Manifests::default();
    m.extend(objects);
    localmesh::build(
        &m,
        &Options {
            cert_dir: PathBuf::from("certs"),
        },
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n---\n";

fn err(yaml: &str) -> String {
    build(yaml).expect_err("must fail").to_string()
}

#[test]
fn a_bad_regex_names_the_field() {
    let e = err(&format!(
        "{SERVICE}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n  hosts: [web]\n  http:\n  - match:\n    - headers:\n        x: {{regex: '(unclosed'}}\n    route:\n    - destination: {{host: web}}\n"
    ));
    for part in [
        "fixture.yaml doc 2",
        "VirtualService default/vs",
        "spec.http[0].match[0].headers.x.regex",
        "invalid regex",
    ] {
        assert!(e.contains(part), "{e:?} lacks {part:?}");
    }
}

#[test]
fn retry_tokens_with_spaces_and_bad_durations_are_rejected() {
    let e = err(&format!(
        "{SERVICE}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {{host: web}}\n    timeout: 5x\n    retries: {{attempts: 2, retryOn: 'unavailable, cancelled'}}\n"
    ));
    assert!(e.contains("spec.http[0].timeout") && e.contains("unknown unit"), "{e}");
    assert!(
        e.contains("spec.http[0].retries.retryOn") && e.contains("` cancelled`"),
        "{e}"
    );
}

#[test]
fn unknown_subsets_and_backends_are_errors() {
    let e = err(&format!(
        "{SERVICE}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {{host: web, subset: v9}}\n"
    ));
    assert!(e.contains("spec.http[0].route[0].destination.subset"), "{e}");
    let e = err(&format!(
        "{SERVICE}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: missing, port: 80}}]\n"
    ));
    assert!(
        e.contains("HTTPRoute default/r") && e.contains("spec.rules[0].backendRefs[0].name"),
        "{e}"
    );
}

#[test]
fn a_parse_error_names_the_file() {
    let e = err(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  http:\n  - route:\n    - destination: {host: web}\n      weight: eighty\n",
    );
    assert!(e.contains("fixture.yaml") && e.contains("weight"), "{e}");
}

#[test]
fn lint_exits_0_on_the_repo_and_non_zero_on_a_broken_copy() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lint = |root: &Path| {
        Command::new(env!("CARGO_BIN_EXE_localmesh"))
            .args(["lint", "--root"])
            .arg(root)
            .output()
            .expect("run localmesh")
    };
    let ok = lint(&repo);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        stdout.contains("product-service-v2") && stdout.contains("PeerAuthentication default/default"),
        "{stdout}"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["manifests", "gateway"] {
        copy_tree(&repo.join(d), &tmp.path().join(d));
    }
    let vs = tmp.path().join("manifests/istio/product-virtualservice.yaml");
    let text = std::fs::read_to_string(&vs).expect("read");
    std::fs::write(&vs, text.replacen("perTryTimeout: 2s", "perTryTimeout: 2 seconds", 1)).expect("write");
    let bad = lint(tmp.path());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    for part in [
        "manifests/istio/product-virtualservice.yaml",
        "VirtualService default/product-vs",
        "retries.perTryTimeout",
    ] {
        assert!(stderr.contains(part), "{stderr:?} lacks {part:?}");
    }
}

const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n";

#[test]
fn sampling_outside_0_to_100_names_the_field() {
    let e = err(&format!(
        "{TELEMETRY}metadata: {{name: t, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: jaeger}}]\n    randomSamplingPercentage: 150\n"
    ));
    for part in [
        "Telemetry istio-system/t",
        "spec.tracing[0].randomSamplingPercentage",
        "150",
    ] {
        assert!(e.contains(part), "{e:?} lacks {part:?}");
    }
}

#[test]
fn the_narrowest_telemetry_resource_decides_each_proxys_tracing() {
    let mesh = build(&format!(
        "{TELEMETRY}metadata: {{name: mesh, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: jaeger}}]\n    randomSamplingPercentage: 10\n---\n\
         {TELEMETRY}metadata: {{name: ns, namespace: shop}}\nspec:\n  tracing:\n  - randomSamplingPercentage: 50\n---\n\
         {TELEMETRY}metadata: {{name: quiet, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  tracing:\n  - disableSpanReporting: true\n---\n\
         {TELEMETRY}metadata: {{name: gw, namespace: gateway}}\nspec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: public}}]\n  tracing:\n  - randomSamplingPercentage: 100\n"
    ))
    .expect("valid");
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let t = |ns: &str, l: &[(&str, &str)]| {
        let p = mesh.proxy_tracing(ns, &labels(l));
        (p.sampling, p.report)
    };
    assert_eq!(t("default", &[("app", "web")]), (10.0, true), "the mesh-wide resource");
    assert_eq!(
        t("shop", &[("app", "api")]),
        (50.0, true),
        "the namespace's percentage, the mesh's provider"
    );
    assert_eq!(
        t("shop", &[("app", "web")]),
        (50.0, false),
        "the workload's reporting, the namespace's percentage"
    );
    assert_eq!(
        t("gateway", &[("gateway.networking.k8s.io/gateway-name", "public")]),
        (100.0, true),
        "a targetRef to the Gateway"
    );
    let none = build(SERVICE).expect("valid");
    let p = none.proxy_tracing("default", &labels(&[]));
    assert_eq!(
        (p.sampling, p.report),
        (1.0, false),
        "no Telemetry: Istio's 1 %, nothing reported"
    );
}

#[test]
fn telemetry_and_mesh_config_decide_each_proxys_access_log_and_metrics() {
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let operator = |file: &str| {
        format!(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {{name: istio, namespace: istio-system}}\nspec:\n  meshConfig: {{accessLogFile: \"{file}\"}}\n---\n"
        )
    };
    let mesh = build(&format!(
        "{}{TELEMETRY}metadata: {{name: mesh, namespace: istio-system}}\nspec:\n  accessLogging:\n  - providers: [{{name: envoy}}]\n---\n\
         {TELEMETRY}metadata: {{name: quiet, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  accessLogging:\n  - disabled: true\n  metrics:\n  - overrides:\n    - match: {{metric: ALL_METRICS, mode: CLIENT_AND_SERVER}}\n      disabled: true\n---\n\
         {TELEMETRY}metadata: {{name: partial, namespace: other}}\nspec:\n  metrics:\n  - overrides:\n    - match: {{metric: REQUEST_COUNT}}\n      disabled: true\n",
        operator("")
    ))
    .expect("valid");
    let t = |ns: &str, l: &[(&str, &str)]| {
        let p = mesh.proxy_telemetry(ns, &labels(l));
        (p.access_log, p.metrics)
    };
    assert_eq!(t("default", &[("app", "api")]), (true, true), "the mesh-wide provider");
    assert_eq!(
        t("shop", &[("app", "web")]),
        (false, false),
        "the workload's own resource"
    );
    assert!(!mesh.reports_metrics("shop", &labels(&[("app", "web")])));
    assert!(mesh.reports_metrics("shop", &labels(&[("app", "api")])));
    assert_eq!(
        t("other", &[]),
        (true, true),
        "one metric's override is not emulated: metrics stay on"
    );
    assert!(
        mesh.not_emulated
            .iter()
            .any(|n| n.to_string().contains("spec.metrics[0].overrides[0].match")),
        "and it says so: {:?}",
        mesh.not_emulated
    );

    let quiet = build(&format!("{}{SERVICE}", operator(""))).expect("valid");
    assert!(
        !quiet.proxy_telemetry("default", &labels(&[])).access_log,
        "accessLogFile \"\": no log"
    );
    let stdout = build(&format!("{}{SERVICE}", operator("/dev/stdout"))).expect("valid");
    assert!(
        stdout.proxy_telemetry("default", &labels(&[])).access_log,
        "accessLogFile names a file"
    );
    let none = build(SERVICE).expect("valid");
    assert!(
        none.proxy_telemetry("default", &labels(&[])).access_log,
        "no IstioOperator: on"
    );
    assert!(none.reports_metrics("default", &labels(&[])));
}

#[test]
fn port_level_settings_replace_the_rules_sections_for_their_port_as_istio_merges_them() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: default}\nspec:\n  host: web\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {http: {http2MaxRequests: 10}}\n    outlierDetection: {consecutiveGatewayErrors: 3, interval: 10s, baseEjectionTime: 30s}\n    portLevelSettings:\n    - port: {number: 9090}\n      connectionPool: {http: {http2MaxRequests: 500}}\n  subsets:\n  - name: a\n    labels: {version: a}\n  - name: b\n    labels: {version: b}\n    trafficPolicy:\n      connectionPool: {http: {http2MaxRequests: 20}}\n      portLevelSettings:\n      - port: {number: 9090}\n        connectionPool: {http: {http2MaxRequests: 900}}\n";
    let two_ports = SERVICE.replace(
        "[{name: http, port: 8080}]",
        "[{name: http, port: 8080}, {name: http-b, port: 9090}]",
    );
    let m = build(&format!("{two_ports}{dr}")).expect("builds");
    let backend = |subset: Option<&str>| localmesh::model::Backend {
        service: localmesh::model::Key::new("default", "web"),
        port: None,
        subset: subset.map(str::to_string),
        weight: 100,
    };
    let at = |subset, port| localmesh::select::traffic_policy(&m, &backend(subset), port).clone();
    // Port 8080 has no port settings: the rule's policy, and subset b's own pool over it.
    assert_eq!(at(None, 8080).pool.http2_max_requests, Some(10));
    assert_eq!(at(Some("a"), 8080).pool.http2_max_requests, Some(10));
    assert_eq!(at(Some("b"), 8080).pool.http2_max_requests, Some(20));
    assert!(
        at(Some("b"), 8080).outlier.is_some(),
        "b inherits the rule's outlierDetection"
    );
    // Port 9090: the port's settings replace every section; what they leave out is the default,
    // not the rule's ("port level policies do not inherit").
    let rule_9090 = at(None, 9090);
    assert_eq!(rule_9090.pool.http2_max_requests, Some(500));
    assert!(rule_9090.outlier.is_none(), "not inherited from the rule");
    assert_eq!(
        rule_9090.load_balancer,
        localmesh::model::LoadBalancer::LeastRequest,
        "Istio's default"
    );
    assert_eq!(
        at(Some("a"), 9090).pool.http2_max_requests,
        Some(500),
        "a has no policy: the rule's at 9090"
    );
    assert_eq!(
        at(Some("b"), 9090).pool.http2_max_requests,
        Some(900),
        "b's own port settings"
    );
}

#[test]
fn port_level_settings_without_a_port_number_are_an_error() {
    let e = err(&format!(
        "{SERVICE}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: default}}\nspec:\n  host: web\n  trafficPolicy:\n    portLevelSettings:\n    - connectionPool: {{http: {{http2MaxRequests: 5}}}}\n"
    ));
    assert!(e.contains("spec.trafficPolicy.portLevelSettings[0].port.number"), "{e}");
}

#[test]
fn an_httproute_retry_is_read_as_istio_reads_it_and_bad_values_name_the_field() {
    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n---\n";
    let route = |retry: &str| {
        format!(
            "{SERVICE}{GATEWAY}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: web, port: 8080}}]\n    timeouts: {{backendRequest: 2s}}\n    retry: {retry}\n"
        )
    };
    let m = build(&route("{codes: [503]}")).expect("valid");
    let r = &m.listeners[0].routes[0];
    assert_eq!(r.retry.attempts, 2, "Istio's default when attempts is unset");
    assert_eq!(r.retry.per_try_timeout, Some(std::time::Duration::from_secs(2)));
    assert!(r.retry.retries_on(localmesh::model::RetryOn::Status(503)));
    assert!(
        !build(&route("{attempts: 0}")).expect("valid").listeners[0].routes[0]
            .retry
            .is_enabled()
    );
    for (retry, field, why) in [
        ("{attempts: -1}", "spec.rules[0].retry.attempts", "not a count"),
        ("{codes: [200]}", "spec.rules[0].retry.codes[0]", "400 to 599"),
        ("{backoff: 1x}", "spec.rules[0].retry.backoff", "unknown unit"),
    ] {
        let e = err(&route(retry));
        assert!(
            e.contains("HTTPRoute default/r") && e.contains(field) && e.contains(why),
            "{retry}: {e}"
        );
    }
}
