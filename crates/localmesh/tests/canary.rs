//! `scripts/canary.sh` against a running `localmesh up` on a copy of the repository: each step is
//! one push (the configuration version advances by one per step), and after the last, 0/100,
//! every call through the gateway reaches v2 and the sidecars' `canary` rule says 0/100 too. A bad
//! `--steps` value is refused naming the flag; weights changed by hand into lines the script does
//! not know are refused naming the file, with neither file touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use proto::product::product_service_client::ProductServiceClient;

mod common;

const ROUTES: &str = "gateway/httproutes.yaml";
const VS: &str = "manifests/istio/product-virtualservice.yaml";

/// The repository's own HTTPRoute lines for the gateway's 80/20, unary (50051) and WatchPrices
/// (50052).
const ROUTE_PAIRS: [(&str, &str); 2] = [
    (
        "    - {name: product-service-v1, port: 50051, weight: 80}\n",
        "    - {name: product-service-v2, port: 50051, weight: 20}\n",
    ),
    (
        "    - {name: product-service-v1, port: 50052, weight: 80}\n",
        "    - {name: product-service-v2, port: 50052, weight: 20}\n",
    ),
];
/// The VirtualService's `canary` rule as the repository has it.
const VS_CANARY: &str = "    - destination: {host: product-service.default.svc.cluster.local, subset: v1}
      weight: 80
    - destination: {host: product-service.default.svc.cluster.local, subset: v2}
      weight: 20
";
/// The VirtualService's `watch-prices` rule's destinations.
const VS_WATCH: &str =
    "    - destination: {host: product-service.default.svc.cluster.local, subset: v1, port: {number: 50052}}
      weight: 80
    - destination: {host: product-service.default.svc.cluster.local, subset: v2, port: {number: 50052}}
      weight: 20
";

fn script() -> PathBuf {
    common::root().join("scripts/canary.sh")
}

/// Runs the script as a person does (`scripts/canary.sh ...`, its own shebang).
fn canary(args: &[&str]) -> Output {
    Command::new(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", script().display()))
}

fn printed(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the script with `args`, which must fail naming `file` under `root` and each of `parts`,
/// with neither file touched.
fn refused_naming(root: &Path, args: &[&str], file: &str, parts: &[&str]) {
    let before = (read(root, ROUTES), read(root, VS));
    let out = canary(args);
    let shown = printed(&out);
    assert!(!out.status.success(), "refused:\n{shown}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = format!("{}/{file}", root.display());
    for part in std::iter::once(path.as_str()).chain(parts.iter().copied()) {
        assert!(stderr.contains(part), "{part:?} in the error:\n{shown}");
    }
    assert_eq!((read(root, ROUTES), read(root, VS)), before, "neither file touched");
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Replaces `file` under `root` in one rename, as one `kubectl apply`.
fn replace(root: &Path, file: &str, text: &str) {
    common::apply(&root.join(file), text);
}

/// The repository's HTTPRoutes with the gateway's v1/v2 weights set to `v1`/`v2`.
fn routes_at(v1: u32, v2: u32) -> String {
    let mut text = read(&common::root(), ROUTES);
    for (a, b) in ROUTE_PAIRS {
        assert!(text.contains(&format!("{a}{b}")), "{ROUTES} has {a}{b}");
        text = text.replacen(
            &format!("{a}{b}"),
            &format!(
                "{}{}",
                a.replace("weight: 80", &format!("weight: {v1}")),
                b.replace("weight: 20", &format!("weight: {v2}"))
            ),
            1,
        );
    }
    text
}

/// The repository's VirtualService with `canary` and `watch-prices` set to `v1`/`v2`.
fn vs_at(v1: u32, v2: u32) -> String {
    let mut text = read(&common::root(), VS);
    for pair in [VS_CANARY, VS_WATCH] {
        assert!(text.contains(pair), "{VS} has {pair}");
        let moved = pair.replacen("weight: 80", &format!("weight: {v1}"), 1).replacen(
            "weight: 20",
            &format!("weight: {v2}"),
            1,
        );
        text = text.replacen(pair, &moved, 1);
    }
    text
}

/// The `config_version` of every "configuration pushed" log line in the next `window`.
fn pushes_within(up: &common::Up, window: Duration) -> Vec<u64> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(v) = up
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if v["message"] == "configuration pushed" {
            seen.push(v["config_version"].as_u64().expect("config_version"));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_one_push_and_the_last_sends_every_call_to_v2() {
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
    assert_eq!(common::config_dump(up.admin).await["config"]["version"], 1);

    let admin = format!("127.0.0.1:{}", up.admin);
    let root_arg = root.to_str().expect("UTF-8 path");
    let out = canary(&[
        "--root",
        root_arg,
        "--admin",
        &admin,
        "--pause",
        "0",
        "--steps",
        "50/50 0/100",
    ]);
    let shown = printed(&out);
    assert!(out.status.success(), "the canary runs through:\n{shown}");

    // One push per step: the script renames both files back to back, so the watcher's debounce
    // gathers them. The log's pushes since the start, with time for a late one to show.
    assert_eq!(
        pushes_within(&up, Duration::from_millis(1500)),
        vec![2, 3],
        "one push per step (more: localmesh loaded the two files between their renames)\n{shown}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for moved in ["config version 1 -> 2", "config version 2 -> 3"] {
        assert!(stdout.contains(moved), "{moved:?} printed:\n{shown}");
    }
    let dump = common::config_dump(up.admin).await;
    assert_eq!(dump["config"]["version"], 3, "{}", dump["config"]);
    assert!(dump["config"]["last_error"].is_null(), "{}", dump["config"]);

    // Exactly the weights changed, in both files (the 50052 streams too), nothing else.
    assert_eq!(read(&root, ROUTES), routes_at(0, 100), "{ROUTES} after 0/100");
    assert_eq!(read(&root, VS), vs_at(0, 100), "{VS} after 0/100");

    // The gateway sends every call to v2; the sidecars' canary rule is 0/100 too.
    let mut client = ProductServiceClient::new(common::gateway_channel(&root, up.gateway).await);
    assert_eq!(
        common::split(&mut client, 40).await,
        (0, 40),
        "after 0/100 through the gateway"
    );
    let canary_rule = dump["routing"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .filter_map(|l| l.as_str())
                .find(|l| l.trim_start().starts_with("[canary]"))
        })
        .unwrap_or_default()
        .to_string();
    assert!(
        canary_rule.contains("subset v1 (0/100)") && canary_rule.contains("subset v2 (100/100)"),
        "product-vs canary rule pushed as 0/100: {canary_rule}"
    );
}

#[test]
fn a_bad_steps_value_is_refused_naming_the_flag_and_nothing_is_written() {
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    let before = (read(&root, ROUTES), read(&root, VS));
    // Nothing listens there: the flags are checked before localmesh is asked anything.
    let admin = format!("127.0.0.1:{}", common::free_port());
    for (steps, why) in [
        ("80/20 70/20", "add up to 100"),
        ("101/-1", "from 0 to 100"),
        ("fifty/fifty", "not V1/V2"),
    ] {
        let out = canary(&[
            "--root",
            root.to_str().expect("UTF-8 path"),
            "--admin",
            &admin,
            "--pause",
            "0",
            "--steps",
            steps,
        ]);
        let shown = printed(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--steps {steps:?} is a usage error:\n{shown}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let bad = steps.rsplit(' ').next().unwrap_or(steps);
        for part in ["--steps", bad, why] {
            assert!(
                stderr.contains(part),
                "{part:?} in the error for --steps {steps:?}:\n{shown}"
            );
        }
    }
    assert_eq!((read(&root, ROUTES), read(&root, VS)), before, "neither file touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_by_hand_beyond_recognition_are_refused_naming_the_file() {
    // By hand, every unary call through the gateway was sent to v2: one backendRef, no weights.
    let (v1, v2) = ROUTE_PAIRS[0];
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(
        copy.path(),
        &[(
            ROUTES,
            &format!("{v1}{v2}"),
            "    - {name: product-service-v2, port: 50051}\n",
        )],
    );
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
    let admin = format!("127.0.0.1:{}", up.admin);
    let root_arg = root.to_str().expect("UTF-8 path");
    let args = [
        "--root",
        root_arg,
        "--admin",
        &admin,
        "--pause",
        "0",
        "--steps",
        "50/50 0/100",
    ];

    refused_naming(&root, &args, ROUTES, &["product-grpc", "50051"]);
    let c = common::config_dump(up.admin).await["config"].clone();
    assert_eq!(
        (c["version"].as_u64(), c["last_error"].is_null()),
        (Some(1), true),
        "{c}"
    );

    // The HTTPRoute back as it was, and the VirtualService's canary rule now hand-set to v2 alone:
    // the script names that file, and leaves the HTTPRoute it could have changed alone too.
    replace(&root, ROUTES, &read(&common::root(), ROUTES));
    replace(
        &root,
        VS,
        &read(&root, VS).replacen(
            VS_CANARY,
            "    - destination: {host: product-service.default.svc.cluster.local, subset: v2}\n",
            1,
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = common::config_dump(up.admin).await["config"].clone();
        if c["version"].as_u64() > Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the hand edits pushed: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the watcher's debounce, in case the two renames made two pushes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pushed = common::config_dump(up.admin).await["config"].clone();
    assert!(pushed["last_error"].is_null(), "{pushed}");

    refused_naming(&root, &args, VS, &["product-vs", "canary"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        common::config_dump(up.admin).await["config"]["version"],
        pushed["version"],
        "nothing pushed"
    );
}
