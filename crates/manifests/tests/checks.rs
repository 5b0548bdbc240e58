//! Every check against the fixtures: the good set passes all of them, and each planted fault in
//! `fixtures/faults/<name>/` (one file replacing its namesake in `fixtures/good/`) makes exactly the
//! intended check fire, naming the object and the field.

use std::path::{Path, PathBuf};

use manifests::check::{self, CHECKS, Finding};
use manifests::{Manifests, load_files};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The good set with the fault's files swapped in.
fn load_variant(fault: Option<&str>) -> Manifests {
    let good = yaml_files(&fixtures().join("good"));
    let overrides = fault
        .map(|f| yaml_files(&fixtures().join("faults").join(f)))
        .unwrap_or_default();
    let files: Vec<PathBuf> = good
        .into_iter()
        .map(|g| {
            overrides
                .iter()
                .find(|o| o.file_name() == g.file_name())
                .cloned()
                .unwrap_or(g)
        })
        .collect();
    assert!(
        overrides.iter().all(|o| files.contains(o)),
        "a fault file has no namesake in good/: {overrides:?}"
    );
    load_files(&files).unwrap_or_else(|e| panic!("fixtures load: {e}"))
}

fn show(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("\n  {f}")).collect()
}

#[test]
fn the_good_fixtures_pass_every_check() {
    let m = load_variant(None);
    assert!(m.len() >= 15, "only {} objects loaded", m.len());
    let findings = check::check_all(&m);
    assert!(findings.is_empty(), "good fixtures have findings:{}", show(&findings));
}

/// (fault dir, check that must fire, object it must name, field path it must name, words in the reason)
const FAULTS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "vs-subset-missing",
        "virtual_service_subsets",
        "VirtualService default/product-vs",
        "spec.http[1].route[1].destination.subset",
        "`v3`",
    ),
    (
        "dr-labels-unmatched",
        "destination_rule_subset_labels",
        "DestinationRule default/product-service",
        "spec.subsets[1].labels",
        "v2-beta",
    ),
    (
        "backend-missing-service",
        "http_route_backend_refs",
        "HTTPRoute default/product-grpc",
        "spec.rules[1].backendRefs[1].name",
        "product-service-v3 does not exist",
    ),
    (
        "backend-wrong-port",
        "http_route_backend_refs",
        "HTTPRoute default/frontend",
        "spec.rules[0].backendRefs[0].port",
        "no port 80",
    ),
    (
        "weights-90",
        "route_weights",
        "HTTPRoute default/product-grpc",
        "spec.rules[1].backendRefs[*].weight",
        "add up to 90",
    ),
    (
        "vs-weights-90",
        "route_weights",
        "VirtualService default/product-vs",
        "spec.http[1].route[*].weight",
        "add up to 90",
    ),
    (
        "grpc-port-named-http",
        "grpc_ports",
        "Service default/product-service",
        "spec.ports[0].name",
        "named `http`",
    ),
    (
        "grpc-port-no-appprotocol",
        "grpc_ports",
        "Service default/product-service-v2",
        "spec.ports[0].appProtocol",
        "appProtocol: grpc",
    ),
    (
        "gateway-host",
        "gateway_matches_seed",
        "Gateway gateway/public-api-gateway",
        "spec.listeners[0].hostname",
        "uat-gateway",
    ),
    (
        "gateway-secret",
        "gateway_matches_seed",
        "Gateway gateway/public-api-gateway",
        "spec.listeners[0].tls.certificateRefs",
        "other-cert",
    ),
    (
        "gateway-port",
        "gateway_matches_seed",
        "Gateway gateway/public-api-gateway",
        "spec.listeners[0].port",
        "8443",
    ),
    (
        "authz-missing-sa",
        "authorization_principals",
        "AuthorizationPolicy default/product-service-callers",
        "spec.rules[0].from[0].source.principals[1]",
        "default/frontend-web",
    ),
    (
        "container-no-probes",
        "container_hardening",
        "Deployment default/frontend",
        "spec.template.spec.containers[0].readinessProbe",
        "no readinessProbe",
    ),
    (
        "container-no-resources",
        "container_hardening",
        "Deployment default/frontend",
        "spec.template.spec.containers[0].resources.limits.memory",
        "no limits.memory",
    ),
    (
        "container-root",
        "container_hardening",
        "Deployment default/frontend",
        "spec.template.spec.containers[0].securityContext.runAsNonRoot",
        "runAsNonRoot: true",
    ),
    (
        "redirect-no-port",
        "redirect_ports",
        "HTTPRoute default/https-redirect",
        "spec.rules[0].filters[0].requestRedirect.port",
        "no port",
    ),
    (
        "health-unrouted",
        "gateway_grpc_services",
        "HTTPRoute default/frontend",
        "spec.rules",
        "/grpc.health.v1.Health/Check falls",
    ),
    (
        "gateway-retry",
        "gateway_retries",
        "HTTPRoute default/product-grpc",
        "spec.rules[1].retry",
        "retries an order or a stream",
    ),
];

/// Faults that rightly break a second rule too: a Gateway on another host no longer meets the
/// routes' hostnames.
/// A gRPC port without `appProtocol: grpc` no longer carries the gateway's gRPC paths, and an HTTPS
/// listener on another port is not where the redirect sends browsers.
const ALSO_FIRES: &[(&str, &str)] = &[
    ("gateway-host", "http_route_parents"),
    ("grpc-port-no-appprotocol", "gateway_grpc_services"),
    ("gateway-port", "redirect_ports"),
];

#[test]
fn each_planted_fault_fires_its_check_naming_object_and_field() {
    let mut failures = Vec::new();
    for &(fault, check, object, field, words) in FAULTS {
        let m = load_variant(Some(fault));
        let all = check::check_all(&m);
        let hit = all
            .iter()
            .any(|f| f.check == check && f.object == object && f.field == field && f.message.contains(words));
        // The fault must not leak into unrelated checks either: then the finding names the real cause.
        let others: Vec<&Finding> = all
            .iter()
            .filter(|f| f.check != check && !ALSO_FIRES.contains(&(fault, f.check)))
            .collect();
        if !hit || !others.is_empty() {
            failures.push(format!(
                "{fault}: wanted [{check}] {object} {field} ~ {words:?}; got:{}",
                show(&all)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_check_has_a_planted_fault_or_a_reason_not_to() {
    // Checks beyond the list are proven by the unit-level tests below.
    let extra = ["http_route_parents", "service_selectors", "workload_service_accounts"];
    for (name, _) in CHECKS {
        assert!(
            FAULTS.iter().any(|f| f.1 == *name) || extra.contains(name),
            "check {name} has no planted fault"
        );
    }
}

#[test]
fn findings_name_the_file_and_document() {
    let m = load_variant(Some("gateway-port"));
    let f = check::gateway_matches_seed(&m);
    let text = f.first().map(ToString::to_string).unwrap_or_default();
    assert!(text.contains("faults/gateway-port/gateway.yaml doc 3 (line"), "{text}");
}

#[test]
fn extra_checks_fire_too() {
    let m = load_variant(Some("backend-missing-service"));
    let mut objects = m.objects.clone();
    for o in &mut objects {
        if let manifests::Resource::Deployment(d) = &mut o.resource
            && o.metadata.name == "frontend"
        {
            d.spec.template.spec.service_account_name = Some("nobody".into());
            d.spec.template.metadata.labels.insert("app".into(), "web".into());
        }
        if let manifests::Resource::HTTPRoute(r) = &mut o.resource {
            r.spec.parent_refs[0].section_name = Some("nowhere".into());
        }
    }
    let m = Manifests { objects };
    let sa = check::workload_service_accounts(&m);
    assert!(
        sa.iter()
            .any(|f| f.object == "Deployment default/frontend" && f.message.contains("default/nobody")),
        "{}",
        show(&sa)
    );
    let sel = check::service_selectors(&m);
    assert!(
        sel.iter()
            .any(|f| f.object == "Service default/frontend" && f.field == "spec.selector"),
        "{}",
        show(&sel)
    );
    let parents = check::http_route_parents(&m);
    assert!(
        parents.iter().any(|f| f.field == "spec.parentRefs[0].sectionName"),
        "{}",
        show(&parents)
    );
}
