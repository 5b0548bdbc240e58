//! The alert rules in `observability/prometheus/mesh-shop-alerts.yml`: `promtool check rules` accepts
//! them, their unit tests in `observability/prometheus/tests/` pass (`promtool test rules`), every
//! alert has a case where it fires and one where it must not, and a careless edit of an expression
//! (planted in a copy) makes the unit tests fail on that alert and only that one.
//! Needs promtool (Debian's `prometheus` package, installed by `make tools`); a missing promtool
//! fails the test, not skips it.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RULES: &str = "observability/prometheus/mesh-shop-alerts.yml";
const TESTS: &str = "observability/prometheus/tests";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tool args` in `dir`; returns (success, stdout + stderr). A tool that is not installed
/// fails the test and says how to install it.
fn run_tool(tool: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = match Command::new(tool).args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{tool} is not installed ({e}): run `make tools` (scripts/install-system-deps.sh installs \
             Debian's prometheus package, which provides promtool)"
        ),
        Err(e) => panic!("running {tool}: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    run_tool("promtool", args, dir)
}

/// The unit-test files, relative to the repo root, sorted. Never empty.
fn test_files() -> Vec<String> {
    let dir = repo_root().join(TESTS);
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yml"))
        .map(|name| format!("{TESTS}/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yml in {TESTS}: the rules would pass untested");
    files
}

fn yaml(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The rules of every group in the rules file.
fn rules() -> Vec<Value> {
    let doc = yaml(&repo_root().join(RULES));
    doc["groups"]
        .as_array()
        .expect("groups: a list")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules: a list").clone())
        .collect()
}

/// The names of the alerts in the rules file. Never empty.
fn alert_names() -> BTreeSet<String> {
    let names: BTreeSet<String> = rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(!names.is_empty(), "no alert in {RULES}");
    names
}

/// The names of the alerts that failed in `promtool test rules` output (`alertname: X, time: ...`).
fn failed_alerts(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("alertname: "))
        .filter_map(|rest| rest.split(',').next())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn promtool_accepts_the_rules() {
    let (ok, out) = promtool(&["check", "rules", RULES], &repo_root());
    assert!(ok, "promtool check rules {RULES} failed:\n{out}");
    let count = rules().len();
    assert!(out.contains(&format!("SUCCESS: {count} rules found")), "{out}");
}

#[test]
fn the_rules_pass_their_unit_tests() {
    let files = test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = promtool(&args, &repo_root());
    assert!(ok, "promtool test rules failed:\n{out}");
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "one SUCCESS per test file expected:\n{out}"
    );
}

/// Every alert has a case where it fires (with its labels and rendered annotations) and a test
/// group where it must never fire (every case of it `exp_alerts: []`; a "still pending" case in a
/// firing group does not count), and no case names an alert the rules do not have.
#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let alerts = alert_names();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in test_files() {
        let doc = yaml(&repo_root().join(&file));
        let groups = doc["tests"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: tests: a list"));
        for group in groups {
            let mut fires_here = BTreeSet::new();
            let mut named_here = BTreeSet::new();
            for case in group["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: a case without alertname"));
                assert!(alerts.contains(name), "{file}: {name} is not an alert of {RULES}");
                named_here.insert(name.to_string());
                let exp = case["exp_alerts"].as_array().map(Vec::as_slice).unwrap_or_default();
                for alert in exp {
                    let annotations = &alert["exp_annotations"];
                    assert!(
                        annotations["summary"].is_string() && annotations["description"].is_string(),
                        "{file}: {name} fires without the rendered summary and description"
                    );
                    assert!(
                        alert["exp_labels"]["severity"].is_string(),
                        "{file}: {name} fires without severity"
                    );
                }
                if !exp.is_empty() {
                    fires_here.insert(name.to_string());
                }
            }
            quiet.extend(named_here.difference(&fires_here).cloned());
            fires.extend(fires_here);
        }
    }
    let never_fires: Vec<_> = alerts.difference(&fires).collect();
    let never_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(never_fires.is_empty(), "alerts with no firing case: {never_fires:?}");
    assert!(
        never_quiet.is_empty(),
        "alerts with no test group where they must stay quiet: {never_quiet:?}"
    );
}

/// Copies the rules and the unit tests into a tempdir (same layout), replaces `from` with `to` in
/// the rule of `alert` only, and runs the unit tests there. The planted rules stay valid PromQL, so
/// only the unit tests can catch the edit: they must fail, naming `alert` and no other.
fn assert_planted_fault_caught(alert: &str, from: &str, to: &str) {
    let root = repo_root();
    let dir = tempfile::tempdir().expect("a tempdir");
    fs::create_dir_all(dir.path().join(TESTS)).expect("creating the test dir");
    for file in test_files() {
        fs::copy(root.join(&file), dir.path().join(&file)).unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }

    let rules = fs::read_to_string(root.join(RULES)).expect("reading the rules");
    let start = rules
        .find(&format!("- alert: {alert}\n"))
        .unwrap_or_else(|| panic!("no alert {alert} in {RULES}"));
    // The rule ends where the next rule or group begins.
    let rest = &rules[start + 1..];
    let end = ["- alert: ", "- record: ", "- name: "]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map_or(rules.len(), |n| start + 1 + n);
    let block = &rules[start..end];
    assert!(
        block.contains(from),
        "{alert}: {from:?} is not in its rule; update this planting:\n{block}"
    );
    let planted = format!("{}{}{}", &rules[..start], block.replace(from, to), &rules[end..]);
    fs::write(dir.path().join(RULES), planted).expect("writing the planted rules");

    let (ok, out) = promtool(&["check", "rules", RULES], dir.path());
    assert!(ok, "{alert}: the planted rule should still be valid:\n{out}");

    let files = test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = promtool(&args, dir.path());
    assert!(
        !ok,
        "{alert}: {from:?} -> {to:?} went unnoticed by the unit tests:\n{out}"
    );
    let failed = failed_alerts(&out);
    assert_eq!(
        failed,
        BTreeSet::from([alert.to_string()]),
        "{alert}: {from:?} -> {to:?} should fail that alert's cases, and only those:\n{out}"
    );
}

#[test]
fn a_tenfold_error_threshold_is_caught() {
    assert_planted_fault_caught("ProductVersionErrorRateHigh", "> 0.05", "> 0.5");
}

#[test]
fn the_gateways_view_instead_of_the_destinations_is_caught() {
    assert_planted_fault_caught(
        "ProductVersionErrorRateHigh",
        "reporter=\"destination\"",
        "reporter=\"source\"",
    );
}

#[test]
fn counting_client_errors_as_order_failures_is_caught() {
    assert_planted_fault_caught(
        "OrderErrorRateHigh",
        "grpc_code!~\"OK|NotFound|InvalidArgument|AlreadyExists\"",
        "grpc_code!=\"OK\"",
    );
}

#[test]
fn counting_every_callers_failures_as_the_gateways_is_caught() {
    assert_planted_fault_caught(
        "GatewayUpstreamFailures",
        "source_workload=\"public-api-gateway-istio\",",
        "",
    );
}

#[test]
fn counting_streaming_calls_in_unary_latency_is_caught() {
    assert_planted_fault_caught(
        "ProductVersionLatencyHigh",
        ",grpc_method=~\"GetProduct|ListProducts\"",
        "",
    );
}

#[test]
#[should_panic(expected = "run `make tools`")]
fn a_missing_promtool_fails_and_says_make_tools() {
    run_tool("promtool-not-installed", &["--version"], &repo_root());
}
