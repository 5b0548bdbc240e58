//! The repository's own manifests pass every check, both as kustomize renders them (when kubectl is
//! installed) and as raw files. A missing or empty manifest directory fails: it must never pass
//! vacuously.

use std::path::{Path, PathBuf};

use manifests::{Render, check_all, load_repo};
use testkit::copy_tree;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn assert_clean(render: &Render) {
    let m = load_repo(&repo_root(), render).unwrap_or_else(|e| panic!("loading the repo's manifests: {e}"));
    for kind in [
        "Deployment",
        "Service",
        "Gateway",
        "HTTPRoute",
        "VirtualService",
        "DestinationRule",
    ] {
        assert!(
            m.objects.iter().any(|o| o.kind == kind),
            "no {kind} in the repo's manifests ({render:?})"
        );
    }
    let findings = check_all(&m);
    let text: String = findings.iter().map(|f| format!("\n  {f}")).collect();
    assert!(
        findings.is_empty(),
        "{} finding(s) in the repo's manifests ({render:?}):{text}",
        findings.len()
    );
}

#[test]
fn the_raw_manifest_files_pass_every_check() {
    assert_clean(&Render::Never);
}

#[test]
fn the_kustomize_rendering_passes_every_check() {
    // Without kubectl this is the raw-file check again; `make test` machines have kubectl.
    assert_clean(&Render::Auto);
}

/// Replaces the first `needle` in any YAML file under `dir`, returning the file changed.
fn plant(dir: &Path, needle: &str, replacement: &str) -> PathBuf {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p)
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p)
            }
        }
    }
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        if text.contains(needle) {
            std::fs::write(&f, text.replacen(needle, replacement, 1)).expect("write");
            return f;
        }
    }
    panic!("no `{needle}` under {}", dir.display());
}

#[test]
fn faults_planted_in_a_copy_of_the_real_manifests_are_found() {
    // Proves the checks read the real layout (kustomize namespaces, file names), not only fixtures.
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["manifests", "gateway"] {
        copy_tree(&repo_root().join(d), &tmp.path().join(d));
    }
    plant(&tmp.path().join("manifests/istio"), "subset: v2", "subset: v9");
    plant(
        &tmp.path().join("manifests/base"),
        "appProtocol: grpc",
        "appProtocol: http",
    );
    for render in [Render::Never, Render::Auto] {
        let m = load_repo(tmp.path(), &render).unwrap_or_else(|e| panic!("{e}"));
        let findings = check_all(&m);
        let text: String = findings.iter().map(|f| format!("\n  {f}")).collect();
        for check in ["virtual_service_subsets", "grpc_ports"] {
            assert!(
                findings.iter().any(|f| f.check == check),
                "{render:?}: {check} did not fire:{text}"
            );
        }
    }
}

#[test]
fn missing_or_empty_manifest_directories_are_errors_not_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = load_repo(tmp.path(), &Render::Never)
        .expect_err("nothing to load")
        .to_string();
    assert!(err.contains("manifests/base") && err.contains("not found"), "{err}");
    for d in ["manifests/base", "manifests/istio", "gateway"] {
        std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
    }
    std::fs::write(tmp.path().join("manifests/base/kustomization.yaml"), "resources: []\n").expect("write");
    let err = load_repo(tmp.path(), &Render::Never)
        .expect_err("no objects")
        .to_string();
    assert!(err.contains("holds no Kubernetes objects"), "{err}");
}

/// Copies the manifests, the gateway and the IstioOperator of the repo into a tempdir.
fn repo_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["manifests", "gateway", "observability/istio"] {
        copy_tree(&repo_root().join(d), &tmp.path().join(d));
    }
    tmp
}

/// The findings of one check over a copy of the repo with one fault planted in `dir`.
fn findings_with(dir: &str, needle: &str, replacement: &str, check: &str, render: &Render) -> Vec<String> {
    let tmp = repo_copy();
    plant(&tmp.path().join(dir), needle, replacement);
    let m = load_repo(tmp.path(), render).unwrap_or_else(|e| panic!("{e}"));
    check_all(&m)
        .into_iter()
        .filter(|f| f.check == check)
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn a_redirect_without_its_port_is_found_on_kind_and_in_gateway() {
    // The raw gateway/ file: port 443 removed.
    let f = findings_with("gateway", "        port: 443\n", "", "redirect_ports", &Render::Never);
    assert!(
        f.iter()
            .any(|f| f.contains("frontend-https-redirect") && f.contains("no port")),
        "{f:?}"
    );
    // The kind overlay's patch: a port nothing publishes.
    let f = findings_with(
        "manifests/overlays/kind",
        "value: 8443",
        "value: 8880",
        "redirect_ports",
        &Render::Auto,
    );
    if which_kubectl() {
        assert!(f.iter().any(|f| f.contains("port 8880")), "{f:?}");
    }
}

#[test]
fn the_kind_host_port_matches_the_kind_cluster_config() {
    let config = std::fs::read_to_string(repo_root().join("scripts/cluster/kind-config.yaml")).expect("kind-config");
    let mapping = format!(
        "containerPort: 30443\n    hostPort: {}",
        manifests::check::KIND_HTTPS_HOST_PORT
    );
    assert!(
        config.contains(&mapping),
        "kind-config.yaml publishes 30443 elsewhere:\n{config}"
    );
    let options = std::fs::read_to_string(repo_root().join("gateway/public-gw-options.yaml")).expect("options");
    assert!(options.contains("nodePort: 30443"), "{options}");
}

#[test]
fn a_gateway_without_the_health_route_is_found() {
    let f = findings_with(
        "gateway",
        "    - path: {type: PathPrefix, value: /grpc.health.v1.Health}\n",
        "",
        "gateway_grpc_services",
        &Render::Never,
    );
    assert!(
        f.iter()
            .any(|f| f.contains("/grpc.health.v1.Health/Check") && f.contains("frontend")),
        "{f:?}"
    );
}

#[test]
fn a_gateway_retry_of_orders_is_found() {
    // Its own retry on the order route.
    let f = findings_with(
        "gateway",
        "    backendRefs:\n    - {name: order-service, port: 50051}\n",
        "    backendRefs:\n    - {name: order-service, port: 50051}\n    retry: {attempts: 2}\n",
        "gateway_retries",
        &Render::Never,
    );
    assert!(
        f.iter().any(|f| f.contains("order-grpc") && f.contains("retry")),
        "{f:?}"
    );
    // The mesh default left at Istio's, in the IstioOperator `make istio` installs.
    let tmp = repo_copy();
    let operator = tmp.path().join(manifests::MESH_CONFIG_FILE);
    let text = std::fs::read_to_string(&operator).expect("read");
    let policy = "    defaultHttpRetryPolicy:\n      attempts: 0\n";
    assert!(text.contains(policy), "{text}");
    std::fs::write(&operator, text.replacen(policy, "", 1)).expect("write");
    let m = load_repo(tmp.path(), &Render::Never).unwrap_or_else(|e| panic!("{e}"));
    let f: Vec<String> = check_all(&m)
        .into_iter()
        .filter(|f| f.check == "gateway_retries")
        .map(|f| f.to_string())
        .collect();
    assert!(
        f.iter()
            .any(|f| f.contains("IstioOperator") && f.contains("order-grpc")),
        "{f:?}"
    );
}

#[test]
fn the_unary_product_retry_is_allowed_only_while_exact_rules_take_the_streams() {
    // As the repo is: the prefix rules with `retry` never see a stream.
    let f = findings_with("gateway", "\n", "\n", "gateway_retries", &Render::Never);
    assert!(f.is_empty(), "{f:?}");
    // Without the header-less AgentSync rule, an agent without a v1/v2 version falls to the
    // retried prefix rule.
    let fallback = "  - matches:\n    - path: {type: Exact, value: /product.ProductService/AgentSync}\n    backendRefs:\n    - {name: product-service-v1, port: 50052}\n";
    let f = findings_with("gateway", fallback, "", "gateway_retries", &Render::Never);
    assert!(
        f.iter()
            .any(|f| f.contains("product-grpc") && f.contains(".retry") && f.contains("a stream")),
        "{f:?}"
    );
}

fn which_kubectl() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}
