//! The ambient variant of the suite (`manifests/overlays/ambient`, `ambient-agents`, built from the
//! component `manifests/components/ambient`), rendered with `kubectl kustomize` as `make deploy
//! AMBIENT=1` applies it: what makes it ambient holds (namespace in the ambient data plane, no
//! sidecar settings, a waypoint, product-service enrolled in it, the east-west rules as an HTTPRoute
//! on the Service, no VirtualService for product, policies ztunnel can enforce), and every
//! cross-object check passes on the rendering alone. Faults planted in a copy of the tree are
//! reported by the same helper. Needs kubectl; a missing kubectl fails the tests, it does not skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use manifests::model::core::PodTemplateSpec;
use manifests::model::gateway_api::{HttpRoute, HttpRouteRule};
use manifests::{Manifests, Object, Resource, check_all, load_files, load_str};
use testkit::copy_tree;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubectl kustomize DIR`, parsed. `Err` carries kubectl's complaint.
fn render(dir: &Path) -> Result<Manifests, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl (needed by these tests): {e}"));
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
    let mut objects = load_str(&text, dir).map_err(|e| e.to_string())?;
    // As load_repo marks an overlay's objects: rendered from the kustomization directory.
    for o in &mut objects {
        o.source.rendered = true;
    }
    let mut m = Manifests::default();
    m.extend(objects);
    Ok(m)
}

fn render_ok(dir: &Path) -> Manifests {
    render(dir).unwrap_or_else(|e| panic!("{e}"))
}

/// One way a rendering falls short of the ambient variant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    /// Stable tag: `dataplane-mode`, `sidecar-injection`, `sidecar-settings`, `waypoint`,
    /// `use-waypoint`, `mesh-route`, `premium`, `canary`, `virtual-service`, `dr-tls`,
    /// `l7-on-ztunnel`, `waypoint-identity`.
    what: &'static str,
    detail: String,
}

fn problem(what: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        what,
        detail: detail.into(),
    }
}

const NS: &str = "default";
const PRODUCT: &str = "product-service";
const PORT: i64 = 50051;
const UNARY_TIMEOUT: &str = "5s";

/// Everything that keeps `m` (one rendered overlay) from being the suite on Istio's ambient data
/// plane. Empty means ambient.
fn ambient_problems(m: &Manifests) -> Vec<Problem> {
    let mut out = Vec::new();
    namespace(m, &mut out);
    pod_templates(m, &mut out);
    let waypoints = waypoints(m, &mut out);
    enrolment(m, &waypoints, &mut out);
    mesh_route(m, &mut out);
    classic_routing(m, &mut out);
    policies(m, &waypoints, &mut out);
    out
}

fn namespace(m: &Manifests, out: &mut Vec<Problem>) {
    let Some(ns) = m.namespaces().find(|n| n.name() == NS) else {
        out.push(problem("dataplane-mode", format!("no Namespace {NS} in the rendering")));
        return;
    };
    let labels = &ns.metadata.labels;
    if labels.get("istio.io/dataplane-mode").map(String::as_str) != Some("ambient") {
        out.push(problem(
            "dataplane-mode",
            format!("Namespace {NS} is not labelled istio.io/dataplane-mode: ambient ({labels:?})"),
        ));
    }
    for key in ["istio-injection", "istio.io/rev"] {
        if let Some(v) = labels.get(key) {
            out.push(problem(
                "sidecar-injection",
                format!("Namespace {NS} still has {key}: {v} (sidecars would be injected)"),
            ));
        }
    }
}

/// Keys that only a sidecar reads: pod labels/annotations under these prefixes.
const SIDECAR_PREFIXES: &[&str] = &["sidecar.istio.io/", "traffic.sidecar.istio.io/", "proxy.istio.io/"];

fn pod_templates(m: &Manifests, out: &mut Vec<Problem>) {
    for (o, t) in m.pod_templates() {
        let keys = t.metadata.labels.iter().chain(t.metadata.annotations.iter());
        for (k, v) in keys {
            if SIDECAR_PREFIXES.iter().any(|p| k.starts_with(p)) {
                let what = if k == "sidecar.istio.io/inject" && v == "true" {
                    "sidecar-injection"
                } else {
                    "sidecar-settings"
                };
                out.push(problem(what, format!("{}: pod template has {k}: {v}", o.id())));
            }
        }
        if t.spec.containers.iter().any(|c| c.name == "istio-proxy") {
            out.push(problem(
                "sidecar-injection",
                format!("{}: an istio-proxy container", o.id()),
            ));
        }
    }
}

/// The waypoints in the namespace, as (name, ServiceAccount).
fn waypoints(m: &Manifests, out: &mut Vec<Problem>) -> Vec<(String, String)> {
    let found: Vec<(String, String)> = m
        .gateways()
        .filter(|(o, gw)| {
            o.namespace() == NS
                && gw.spec.gateway_class_name.as_deref() == Some("istio-waypoint")
                && gw
                    .spec
                    .listeners
                    .iter()
                    .any(|l| l.port == 15008 && l.protocol == "HBONE")
        })
        .map(|(o, _)| {
            let sa = o
                .metadata
                .annotations
                .get("gateway.istio.io/service-account")
                .cloned()
                // A waypoint's ServiceAccount is named after its Gateway (no class suffix).
                .unwrap_or_else(|| o.name().to_string());
            (o.name().to_string(), sa)
        })
        .collect();
    if found.is_empty() {
        let gws: Vec<String> = m.gateways().map(|(o, _)| o.id()).collect();
        out.push(problem(
            "waypoint",
            format!("no Gateway of class istio-waypoint with an HBONE listener on 15008 in {NS} (Gateways: {gws:?})"),
        ));
    }
    found
}

fn enrolment(m: &Manifests, waypoints: &[(String, String)], out: &mut Vec<Problem>) {
    let ns_label = m
        .namespaces()
        .find(|n| n.name() == NS)
        .and_then(|n| n.metadata.labels.get("istio.io/use-waypoint").cloned());
    let Some((svc, _)) = m.service(NS, PRODUCT) else {
        out.push(problem("use-waypoint", format!("no Service {NS}/{PRODUCT}")));
        return;
    };
    // A Service's own label wins over the namespace's.
    let label = svc.metadata.labels.get("istio.io/use-waypoint").cloned().or(ns_label);
    match label {
        None => out.push(problem(
            "use-waypoint",
            format!("neither Service {PRODUCT} nor Namespace {NS} is labelled istio.io/use-waypoint"),
        )),
        Some(w) if !waypoints.iter().any(|(name, _)| *name == w) => out.push(problem(
            "use-waypoint",
            format!("{PRODUCT} uses waypoint {w:?}, which is not a waypoint in {NS}"),
        )),
        Some(_) => {}
    }
}

/// The HTTPRoutes attached to the Service product-service:50051 for mesh traffic.
fn product_mesh_routes(m: &Manifests) -> Vec<(&Object, &HttpRoute)> {
    m.http_routes()
        .filter(|(o, r)| {
            o.namespace() == NS
                && r.spec.parent_refs.iter().any(|p| {
                    p.group.as_deref() == Some("")
                        && p.kind.as_deref() == Some("Service")
                        && p.name == PRODUCT
                        && p.namespace.as_deref().is_none_or(|n| n == NS)
                        && p.port.is_none_or(|pt| pt == PORT)
                })
        })
        .collect()
}

/// Whether a rule applies to every path (no path match, or `PathPrefix /`).
fn any_path(rule: &HttpRouteRule, headers: &[(&str, &str)]) -> bool {
    let match_ok = |ms: &[manifests::model::gateway_api::HttpRouteMatch]| {
        if ms.is_empty() {
            return headers.is_empty();
        }
        ms.iter().any(|mt| {
            let path_ok = mt.path.as_ref().is_none_or(|p| {
                p.type_.as_deref().unwrap_or("PathPrefix") == "PathPrefix" && p.value.as_deref().unwrap_or("/") == "/"
            });
            let want: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let have: Vec<(String, String)> = mt
                .headers
                .iter()
                .filter(|h| h.type_.as_deref().unwrap_or("Exact") == "Exact")
                .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
                .collect();
            path_ok && mt.headers.len() == headers.len() && want.iter().all(|w| have.contains(w))
        })
    };
    match_ok(&rule.matches)
}

/// `{backend: weight}` of a rule (unset weight = 1).
fn split(rule: &HttpRouteRule) -> BTreeMap<String, i64> {
    rule.backend_refs
        .iter()
        .map(|b| (b.name.clone(), b.weight.unwrap_or(1)))
        .collect()
}

fn timeout(rule: &HttpRouteRule) -> Option<&str> {
    rule.timeouts.as_ref().and_then(|t| t.request.as_deref())
}

fn mesh_route(m: &Manifests, out: &mut Vec<Problem>) {
    let routes = product_mesh_routes(m);
    if routes.is_empty() {
        out.push(problem(
            "mesh-route",
            format!("no HTTPRoute with parentRef {{group: \"\", kind: Service, name: {PRODUCT}, port: {PORT}}}"),
        ));
        return;
    }
    let rules: Vec<&HttpRouteRule> = routes.iter().flat_map(|(_, r)| &r.spec.rules).collect();
    let premium = BTreeMap::from([("product-service-v2".to_string(), 1)]);
    if !rules
        .iter()
        .any(|r| any_path(r, &[("user-type", "premium")]) && split(r) == premium && timeout(r) == Some(UNARY_TIMEOUT))
    {
        out.push(problem(
            "premium",
            format!("no rule sends header user-type: premium to product-service-v2 only, with timeout {UNARY_TIMEOUT}"),
        ));
    }
    let canary = BTreeMap::from([
        ("product-service-v1".to_string(), 80),
        ("product-service-v2".to_string(), 20),
    ]);
    if !rules
        .iter()
        .any(|r| any_path(r, &[]) && split(r) == canary && timeout(r) == Some(UNARY_TIMEOUT))
    {
        let seen: Vec<BTreeMap<String, i64>> = rules.iter().filter(|r| any_path(r, &[])).map(|r| split(r)).collect();
        out.push(problem(
            "canary",
            format!("no catch-all rule splits 80/20 over product-service-v1/-v2 with timeout {UNARY_TIMEOUT} (catch-all splits: {seen:?})"),
        ));
    }
}

fn names_product(host: &str) -> bool {
    host == PRODUCT || host.starts_with(&format!("{PRODUCT}.{NS}"))
}

fn classic_routing(m: &Manifests, out: &mut Vec<Problem>) {
    for (o, vs) in m.virtual_services() {
        if vs.spec.hosts.iter().any(|h| names_product(h)) {
            out.push(problem(
                "virtual-service",
                format!("{} routes {PRODUCT}: the HTTPRoute replaces it on the waypoint", o.id()),
            ));
        }
    }
    for (o, dr) in m.destination_rules() {
        let mode = dr
            .spec
            .traffic_policy
            .as_ref()
            .and_then(|t| t.tls.as_ref())
            .and_then(|t| t.mode.as_deref());
        if mode == Some("ISTIO_MUTUAL") {
            out.push(problem(
                "dr-tls",
                format!(
                    "{}: tls.mode ISTIO_MUTUAL makes gateway and waypoint skip HBONE (istio/istio#53526)",
                    o.id()
                ),
            ));
        }
    }
}

/// The AuthorizationPolicies: none that ztunnel enforces may need L7 (it would deny everything), and
/// the pods behind an enrolled Service must admit the waypoint's identity wherever ALLOW policies
/// apply to them (traffic through the waypoint arrives with the waypoint's identity).
fn policies(m: &Manifests, waypoints: &[(String, String)], out: &mut Vec<Problem>) {
    let ztunnel_policies: Vec<_> = m
        .authorization_policies()
        .filter(|(o, ap)| o.namespace() == NS && ap.spec.target_refs.is_empty())
        .collect();
    for (o, ap) in &ztunnel_policies {
        let l7 = ap.spec.rules.iter().any(|r| {
            r.to.iter().any(|t| {
                let op = &t.operation;
                !(op.hosts.is_empty() && op.methods.is_empty() && op.paths.is_empty() && op.not_paths.is_empty())
            }) || r.when.iter().any(|w| {
                w.get("key")
                    .and_then(|k| k.as_str())
                    .is_some_and(|k| k.starts_with("request."))
            })
        });
        if l7 {
            out.push(problem(
                "l7-on-ztunnel",
                format!(
                    "{} is enforced by ztunnel but needs L7 (methods, paths, hosts or request.*): ztunnel denies all",
                    o.id()
                ),
            ));
        }
    }
    for (svc_obj, svc) in m.services().filter(|(o, _)| o.namespace() == NS) {
        let Some(w) = svc_obj.metadata.labels.get("istio.io/use-waypoint") else {
            continue;
        };
        let Some((_, sa)) = waypoints.iter().find(|(name, _)| name == w) else {
            continue;
        };
        let principal = format!("cluster.local/ns/{NS}/sa/{sa}");
        let pods: Vec<&PodTemplateSpec> = m
            .pod_templates()
            .filter(|(o, t)| {
                o.namespace() == NS
                    && !svc.spec.selector.is_empty()
                    && manifests::model::labels_contain(&t.metadata.labels, &svc.spec.selector)
            })
            .map(|(_, t)| t)
            .collect();
        for t in pods {
            let allows: Vec<_> = ztunnel_policies
                .iter()
                .filter(|(_, ap)| ap.spec.action.as_deref().unwrap_or("ALLOW") == "ALLOW")
                .filter(|(_, ap)| {
                    ap.spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| manifests::model::labels_contain(&t.metadata.labels, &s.match_labels))
                })
                .collect();
            // A rule without `from` (the metrics port) does not count: the waypoint's traffic
            // needs a rule that names it, unless no ALLOW policy applies at all.
            let named = allows.iter().any(|(_, ap)| {
                ap.spec
                    .rules
                    .iter()
                    .any(|r| r.from.iter().any(|f| f.source.principals.contains(&principal)))
            });
            if !allows.is_empty() && !named {
                let names: Vec<String> = allows.iter().map(|(o, _)| o.id()).collect();
                out.push(problem(
                    "waypoint-identity",
                    format!(
                        "pods {:?} behind {} (enrolled in waypoint {w}) do not admit {principal}; ALLOW policies: {names:?}",
                        t.metadata.labels.get("app"),
                        svc_obj.id()
                    ),
                ));
            }
        }
    }
}

fn show(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  [{}] {}", p.what, p.detail))
        .collect()
}

/// The IstioOperator `make istio AMBIENT=1` installs with, relative to the repository root.
const AMBIENT_OPERATOR: &str = "observability/istio/istio-operator-ambient.yaml";

fn operator(file: &str) -> (Object, serde_json::Value) {
    let mut objects = load_files(&[repo_root().join(file)])
        .unwrap_or_else(|e| panic!("{e}"))
        .objects;
    assert_eq!(objects.len(), 1, "{file}: one IstioOperator expected");
    let o = objects.remove(0);
    let Resource::Other(v) = &o.resource else {
        panic!("{file}: not an IstioOperator but {}", o.kind)
    };
    let v = v.clone();
    assert_eq!(o.kind, "IstioOperator", "{file}");
    (o, v)
}

fn assert_ambient(m: &Manifests, what: &str) {
    // As load_repo does with the sidecar mode's IstioOperator: the mesh settings join the
    // rendering (gateway_retries reads the default retry policy from them).
    let mut m = m.clone();
    m.extend([operator(AMBIENT_OPERATOR).0]);
    let m = &m;
    let problems = ambient_problems(m);
    assert!(problems.is_empty(), "{what} is not ambient:{}", show(&problems));
    let findings = check_all(m);
    let text: String = findings.iter().map(|f| format!("\n  {f}")).collect();
    assert!(findings.is_empty(), "{what}: {} finding(s):{text}", findings.len());
    for d in ["product-v1", "product-v2", "order", "frontend", "payment"] {
        assert!(
            m.deployments().any(|(o, _)| o.name() == d),
            "{what}: Deployment {d} missing"
        );
    }
}

#[test]
fn the_ambient_overlay_renders_the_suite_on_the_ambient_data_plane() {
    let m = render_ok(&repo_root().join("manifests/overlays/ambient"));
    assert_ambient(&m, "manifests/overlays/ambient");
    // The sidecar mode's other VirtualServices are gone too (order-vs, payment-provider): nothing of
    // the classic routing API is mixed with the HTTPRoutes on the waypoint.
    let vs: Vec<String> = m.virtual_services().map(|(o, _)| o.id()).collect();
    assert!(vs.is_empty(), "VirtualServices left: {vs:?}");
    // The north-south side is untouched.
    assert!(
        m.gateways()
            .any(|(o, _)| o.namespace() == "gateway" && o.name() == "public-api-gateway"),
        "public-api-gateway missing"
    );
    assert!(
        m.peer_authentications()
            .any(|(o, pa)| o.name() == "default"
                && pa.spec.mtls.as_ref().and_then(|t| t.mode.as_deref()) == Some("STRICT")),
        "PeerAuthentication STRICT missing"
    );
}

#[test]
fn the_ambient_agents_overlay_keeps_the_agents_outside_the_mesh() {
    let m = render_ok(&repo_root().join("manifests/overlays/ambient-agents"));
    assert_ambient(&m, "manifests/overlays/ambient-agents");
    for agent in ["agent-v1-1", "agent-v2-1"] {
        let (_, d) = m
            .deployments()
            .find(|(o, _)| o.name() == agent)
            .unwrap_or_else(|| panic!("Deployment {agent} missing"));
        assert_eq!(
            d.spec
                .template
                .metadata
                .labels
                .get("istio.io/dataplane-mode")
                .map(String::as_str),
            Some("none"),
            "{agent}: a client of the gateway from outside the mesh must opt out of ambient capture"
        );
    }
}

#[test]
fn the_helper_tells_the_sidecar_overlay_from_the_ambient_one() {
    // Every tag the helper knows fires on the sidecar variant, so a clean ambient rendering means
    // each property was looked at, not skipped.
    let ambient = render_ok(&repo_root().join("manifests/overlays/ambient"));
    assert!(
        ambient_problems(&ambient).is_empty(),
        "{}",
        show(&ambient_problems(&ambient))
    );
    let kind = render_ok(&repo_root().join("manifests/overlays/kind"));
    let problems = ambient_problems(&kind);
    for tag in [
        "dataplane-mode",
        "sidecar-injection",
        "sidecar-settings",
        "waypoint",
        "mesh-route",
        "virtual-service",
        "dr-tls",
        "l7-on-ztunnel",
    ] {
        assert!(
            problems.iter().any(|p| p.what == tag),
            "[{tag}] not reported for the sidecar overlay:{}",
            show(&problems)
        );
    }
}

#[test]
fn the_ambient_install_keeps_the_sidecar_mesh_config_on_the_ambient_profile() {
    let (_, ambient) = operator(AMBIENT_OPERATOR);
    let (_, sidecar) = operator("observability/istio/istio-operator.yaml");
    assert_eq!(
        ambient.pointer("/spec/meshConfig"),
        sidecar.pointer("/spec/meshConfig"),
        "{AMBIENT_OPERATOR}: meshConfig differs from observability/istio/istio-operator.yaml's"
    );
    assert_eq!(
        ambient.pointer("/spec/profile").and_then(|p| p.as_str()),
        Some("ambient")
    );
    // ServiceEntry hosts (api.payment-provider.com) resolve only through ztunnel's DNS proxy, to
    // the address istiod allocates.
    assert_eq!(
        ambient.pointer("/spec/values/cni/ambient/dnsCapture"),
        Some(&serde_json::Value::Bool(true))
    );
    assert_eq!(
        ambient
            .pointer("/spec/values/pilot/env/PILOT_ENABLE_IP_AUTOALLOCATE")
            .and_then(|p| p.as_str()),
        Some("true")
    );
}

/// Renders the ambient overlay of a copy of the repo in which `file` (relative to the repo root)
/// has its first `needle` replaced, and returns the helper's problems.
fn planted(file: &str, needle: &str, replacement: &str) -> Vec<Problem> {
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["manifests", "gateway"] {
        copy_tree(&repo_root().join(d), &tmp.path().join(d));
    }
    let path = tmp.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(
        text.contains(needle),
        "{file} has no {needle:?}: the planted fault went stale"
    );
    std::fs::write(&path, text.replacen(needle, replacement, 1)).expect("write");
    let m = render(&tmp.path().join("manifests/overlays/ambient"))
        .unwrap_or_else(|e| panic!("the planted copy must still render: {e}"));
    ambient_problems(&m)
}

fn assert_reported(tag: &str, file: &str, needle: &str, replacement: &str) {
    let problems = planted(file, needle, replacement);
    assert!(
        problems.iter().any(|p| p.what == tag),
        "[{tag}] not reported after changing {needle:?} in {file}:{}",
        show(&problems)
    );
}

const COMPONENT: &str = "manifests/components/ambient";

#[test]
fn an_untouched_copy_of_the_tree_is_ambient() {
    // The baseline for the planted faults below: the copy renders, and only the planted change
    // makes the helper complain.
    let problems = planted(&format!("{COMPONENT}/kustomization.yaml"), "Component", "Component");
    assert!(problems.is_empty(), "{}", show(&problems));
}

#[test]
fn a_namespace_without_the_dataplane_mode_label_is_reported() {
    assert_reported(
        "dataplane-mode",
        &format!("{COMPONENT}/patches/namespace.yaml"),
        "    istio.io/dataplane-mode: ambient\n",
        "",
    );
}

#[test]
fn a_namespace_that_keeps_sidecar_injection_is_reported() {
    assert_reported(
        "sidecar-injection",
        &format!("{COMPONENT}/patches/namespace.yaml"),
        "istio-injection: null",
        "istio-injection: enabled",
    );
}

#[test]
fn sidecar_annotations_left_on_the_pods_are_reported() {
    assert_reported(
        "sidecar-settings",
        &format!("{COMPONENT}/patches/workloads.yaml"),
        "        proxy.istio.io/config: null\n",
        "",
    );
}

#[test]
fn a_waypoint_of_the_wrong_class_is_reported() {
    assert_reported(
        "waypoint",
        &format!("{COMPONENT}/waypoint.yaml"),
        "gatewayClassName: istio-waypoint",
        "gatewayClassName: istio",
    );
}

#[test]
fn product_service_not_enrolled_in_the_waypoint_is_reported() {
    // The first label in services.yaml is product-service's.
    assert_reported(
        "use-waypoint",
        &format!("{COMPONENT}/patches/services.yaml"),
        "    istio.io/use-waypoint: waypoint\n",
        "",
    );
}

#[test]
fn a_mesh_route_attached_to_another_port_is_reported() {
    assert_reported(
        "mesh-route",
        &format!("{COMPONENT}/mesh-routes.yaml"),
        "    name: product-service\n    port: 50051",
        "    name: product-service\n    port: 50052",
    );
}

#[test]
fn a_premium_rule_on_the_wrong_header_is_reported() {
    assert_reported(
        "premium",
        &format!("{COMPONENT}/mesh-routes.yaml"),
        "  - matches:\n    - headers:\n      - {type: Exact, name: user-type, value: premium}",
        "  - matches:\n    - headers:\n      - {type: Exact, name: user-type, value: gold}",
    );
}

#[test]
fn a_canary_split_other_than_80_20_is_reported() {
    assert_reported(
        "canary",
        &format!("{COMPONENT}/mesh-routes.yaml"),
        "  - backendRefs:\n    - {name: product-service-v1, port: 50051, weight: 80}\n    - {name: product-service-v2, port: 50051, weight: 20}",
        "  - backendRefs:\n    - {name: product-service-v1, port: 50051, weight: 90}\n    - {name: product-service-v2, port: 50051, weight: 10}",
    );
}

#[test]
fn the_product_virtual_service_left_in_place_is_reported() {
    assert_reported(
        "virtual-service",
        &format!("{COMPONENT}/kustomization.yaml"),
        "- path: patches/delete-vs-product-vs.yaml\n",
        "",
    );
}

#[test]
fn istio_mutual_left_in_a_destination_rule_is_reported() {
    assert_reported(
        "dr-tls",
        &format!("{COMPONENT}/kustomization.yaml"),
        "- path: patches/destinationrule-tls.yaml\n  target:\n    group: networking.istio.io\n    kind: DestinationRule\n",
        "",
    );
}

#[test]
fn an_l7_rule_left_for_ztunnel_is_reported() {
    assert_reported(
        "l7-on-ztunnel",
        &format!("{COMPONENT}/patches/authorizationpolicies.yaml"),
        "        ports: [\"8080\"]\n",
        "        ports: [\"8080\"]\n        paths: [\"/v1/charges\"]\n",
    );
}

#[test]
fn product_pods_that_refuse_the_waypoint_identity_are_reported() {
    assert_reported(
        "waypoint-identity",
        &format!("{COMPONENT}/patches/authorizationpolicies.yaml"),
        "        - cluster.local/ns/default/sa/waypoint                   # frontend, order: via the waypoint\n",
        "",
    );
}
