//! The external schema validators (`scripts/validate-manifests.sh`): the repo's manifests and the
//! good fixtures pass all of them, and each planted fault in `fixtures/schema-faults/` fails the
//! validator that is meant to catch it (and only that one where the others cannot see it).
//! Needs `make tools` (the .venv), kubectl and node; a missing tool fails the test, not skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the script; returns (success, stdout).
fn run(args: &[PathBuf]) -> (bool, String) {
    let out = Command::new(repo_root().join("scripts/validate-manifests.sh"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/validate-manifests.sh: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The PASS/FAIL word the script printed for a validator (by its line's name prefix).
fn verdict<'a>(output: &'a str, validator: &str) -> Option<&'a str> {
    output.lines().find_map(|l| {
        let (word, rest) = l.split_once(' ')?;
        (matches!(word, "PASS" | "FAIL" | "SKIP") && rest.starts_with(validator)).then_some(word)
    })
}

fn assert_all_pass(args: &[PathBuf]) {
    let (ok, out) = run(args);
    assert!(ok, "validators failed:\n{out}");
    for v in ["kustomize", "kubernetes-validate", "@kubernetes-models", "cloudcoil"] {
        assert_eq!(verdict(&out, v), Some("PASS"), "{v} did not pass:\n{out}");
    }
    assert!(out.trim_end().ends_with("4 passed, 0 failed"), "{out}");
}

#[test]
fn the_repo_manifests_pass_every_validator() {
    assert_all_pass(&[]);
}

#[test]
fn the_good_fixtures_pass_every_validator() {
    assert_all_pass(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good")]);
}

fn assert_fault(dir: &str, must_fail: &[&str], must_pass: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schema-faults")
        .join(dir);
    let (ok, out) = run(&[path]);
    assert!(!ok, "{dir}: the script exited 0:\n{out}");
    for v in must_fail {
        assert_eq!(verdict(&out, v), Some("FAIL"), "{dir}: {v} should fail:\n{out}");
    }
    for v in must_pass {
        assert_eq!(verdict(&out, v), Some("PASS"), "{dir}: {v} should pass:\n{out}");
    }
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("validate-manifests: ") && !last.ends_with(" 0 failed"),
        "{dir}: summary {last:?}"
    );
}

#[test]
fn a_broken_kustomization_fails_kustomize() {
    assert_fault("kustomize-broken", &["kustomize"], &[]);
}

#[test]
fn an_unknown_core_field_fails_kubernetes_validate_only() {
    assert_fault(
        "core-unknown-field",
        &["kubernetes-validate"],
        &["@kubernetes-models", "cloudcoil"],
    );
}

#[test]
fn a_gateway_api_range_error_fails_the_npm_models() {
    assert_fault(
        "gateway-api-range",
        &["@kubernetes-models"],
        &["kubernetes-validate", "cloudcoil"],
    );
}

#[test]
fn an_unknown_kind_fails_the_npm_models_and_cloudcoil() {
    assert_fault("unknown-kind", &["@kubernetes-models", "cloudcoil"], &[]);
}

#[test]
fn an_istio_type_error_fails_the_npm_models_and_cloudcoil() {
    assert_fault("istio-bad-type", &["@kubernetes-models", "cloudcoil"], &[]);
}

#[test]
fn an_unknown_istio_field_fails_cloudcoil_only() {
    assert_fault("istio-unknown-field", &["cloudcoil"], &["@kubernetes-models"]);
}
