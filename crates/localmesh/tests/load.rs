//! `localmesh load` against a real `localmesh up`: a product-v1 pod is SIGKILLed mid-run; no call
//! fails (the product routes' `retry` sends the calls it held to another pod), the endpoint leaves
//! the Service, the 80/20 split holds, and the pod restarts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::Up;

/// `localmesh load --json` through `up`'s gateway for `duration` (8 calls at a time), running
/// while the test goes on; its output when it ends.
fn load_in_background(
    up: &Up,
    root: &std::path::Path,
    duration: &str,
) -> tokio::task::JoinHandle<std::io::Result<std::process::Output>> {
    let load = Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .args(["load", "--target", &format!("127.0.0.1:{}", up.gateway)])
        .arg("--cacert")
        .arg(root.join("gateway/certs/ca.crt"))
        .args(["--duration", duration, "--concurrency", "8", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("localmesh load starts");
    tokio::task::spawn_blocking(move || load.wait_with_output())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_survives_a_killed_product_v1_pod_and_keeps_the_split() {
    let root = common::root();
    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start(data.path());
    let (victim, victim_pid) = up
        .pods
        .iter()
        .find(|(name, _)| name.starts_with("product-v1-"))
        .cloned()
        .unwrap_or_else(|| panic!("a product-v1 pod among {:?}", up.pods));

    let load = load_in_background(&up, &root, "6s");

    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: SIGKILL to a product-v1 child of the localmesh this test started.
    assert_eq!(unsafe { libc::kill(victim_pid, libc::SIGKILL) }, 0, "kill {victim}");
    let killed_at = Instant::now();

    let out = load.await.expect("join").expect("localmesh load ran");
    assert!(out.status.success(), "load exits 0: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("load summary: {stdout}");
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary");

    let requests = s["requests"].as_u64().expect("requests");
    assert!(requests > 100, "a real run: {s}");
    // The product rules' `retry` (connect-failure, refused-stream, unavailable, cancelled): the
    // calls in flight on the pod at the SIGKILL, answered UNAVAILABLE as its sidecar would in a
    // cluster, and any sent to it before its exit is seen, go to the other v1 pod.
    assert_eq!(s["failed"].as_u64(), Some(0), "no call fails: {s}");
    let v1 = s["versions"]["v1"].as_u64().unwrap_or(0) as f64;
    let v2 = s["versions"]["v2"].as_u64().unwrap_or(0) as f64;
    assert!(v1 > 0.0 && v2 > 0.0, "both versions answered: {s}");
    let share = v2 / (v1 + v2);
    assert!((0.10..=0.32).contains(&share), "v2 takes about 20 %: {share:.3} in {s}");
    let lat = &s["latency_ms"];
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64(), "{lat}");
    assert!(lat["p99"].as_f64() <= lat["max"].as_f64(), "{lat}");

    // The pod comes back: a new "pod started" line for it, then healthy in /clusters.
    let mut restarted = None;
    while killed_at.elapsed() < Duration::from_secs(12) {
        match up.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(v) if v["message"] == "pod started" && v["pod_name"] == victim.as_str() => {
                restarted = v["pid"].as_i64();
                break;
            }
            _ => {}
        }
    }
    let new_pid = restarted.unwrap_or_else(|| panic!("{victim} restarted within 12 s"));
    assert_ne!(new_pid as i32, victim_pid, "a new process");
    let healthy = format!("::pod::{victim}::");
    loop {
        let clusters = common::admin_get(up.admin, "/clusters").await;
        if clusters
            .lines()
            .any(|l| l.contains(&healthy) && l.contains("::health_flags::healthy::"))
        {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "{victim} healthy again in /clusters: {clusters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(up);
}

/// `/clusters`' health flags of `pod`.
async fn health_of(admin: u16, pod: &str) -> String {
    let clusters = common::admin_get(admin, "/clusters").await;
    let needle = format!("::pod::{pod}::");
    clusters
        .lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| l.split("::health_flags::").nth(1))
        .and_then(|rest| rest.split("::").next())
        .unwrap_or_else(|| panic!("{pod} in /clusters: {clusters}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_product_v1_pod_is_ejected_under_load_and_returns_when_resumed() {
    use proto::product::GetProductRequest;
    use proto::product::product_service_client::ProductServiceClient;

    // The product routes' timeout (5 s) and the DestinationRules' baseEjectionTime (30 s),
    // shortened so that the test takes seconds; consecutiveGatewayErrors (3) as written.
    let copy = tempfile::tempdir().expect("tempdir");
    let routes = "gateway/httproutes.yaml";
    let rules = "manifests/istio/product-destinationrules.yaml";
    let root = common::repo_copy(
        copy.path(),
        &[
            (routes, "request: 5s", "request: 1s"),
            (routes, "request: 5s", "request: 1s"),
            (rules, "baseEjectionTime: 30s", "baseEjectionTime: 4s"),
            (rules, "baseEjectionTime: 30s", "baseEjectionTime: 4s"),
            (rules, "baseEjectionTime: 30s", "baseEjectionTime: 4s"),
        ],
    );
    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start_with(data.path(), &root, &[]);
    let (victim, pid) = up
        .pods
        .iter()
        .find(|(name, _)| name.starts_with("product-v1-"))
        .cloned()
        .unwrap_or_else(|| panic!("a product-v1 pod among {:?}", up.pods));
    assert_eq!(health_of(up.admin, &victim).await, "healthy");

    let load = load_in_background(&up, &root, "8s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // SAFETY: SIGSTOP to a product-v1 child of the localmesh this test started (resumed below).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "stop {victim}");
    let stopped_at = Instant::now();

    // Three calls time out on it (1 s each, in parallel under load): it is ejected.
    loop {
        if health_of(up.admin, &victim).await == "/failed_outlier_check" {
            break;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "{victim} ejected within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ejected_after = stopped_at.elapsed();
    let mut logged = None;
    while let Ok(v) = up.lines.recv_timeout(Duration::from_millis(500)) {
        if v["message"] == "endpoint ejected" {
            logged = Some(v);
            break;
        }
    }
    let logged = logged.expect("an \"endpoint ejected\" log line");
    assert_eq!(
        logged["upstream_pod"],
        victim.as_str(),
        "the line names the stopped pod: {logged}"
    );

    // The console's graph page lists it as ejected.
    let page = common::admin_get(up.console, "/graph").await;
    let row = page
        .split("<tr>")
        .find(|r| r.contains(&format!("<td>{victim}</td>")))
        .unwrap_or_else(|| panic!("{victim} in the console's pods"));
    assert!(row.contains("<b>ejected</b>"), "{row}");

    // While it stays stopped, calls are served by the others.
    let channel = common::gateway_channel(&root, up.gateway).await;
    let mut client = ProductServiceClient::new(channel);
    for _ in 0..30 {
        let req = GetProductRequest {
            product_id: "123".into(),
        };
        let served = client.get_product(req).await.expect("served while the pod is stopped");
        let pod = served.into_inner().served_by.expect("served_by").pod;
        assert_ne!(pod, victim, "the ejected pod gets no call");
    }

    let out = load.await.expect("join").expect("localmesh load ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("load summary: {stdout} (ejected after {ejected_after:?})");
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary");
    assert!(
        s["requests"].as_u64().expect("requests") > 200,
        "throughput recovered: {s}"
    );
    // Only the calls the stopped pod held until their 1 s timeout, and the ones sent to it before
    // its ejection, fail: a few dozen at most (GetProduct and ListProducts go through two
    // clusters, each with its own outlier state, as in Envoy). Without ejection it would be a
    // few hundred, and throughput would collapse.
    assert!(s["failed"].as_u64().expect("failed") <= 30, "{s}");
    // UNAVAILABLE for calls that timed out waiting for the stopped pod's answer; a call it was
    // answering when it stopped is cut when the route timeout passes (the stream is reset:
    // INTERNAL), as Envoy resets a stream whose response has started.
    let errors = s["errors"].as_object().expect("errors");
    assert!(errors.keys().all(|k| k == "Unavailable" || k == "Internal"), "{s}");

    // Resumed, it is back once its ejection time has passed.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "resume {victim}");
    loop {
        if health_of(up.admin, &victim).await == "healthy" {
            break;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(20), "{victim} healthy again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(up);
}

/// The `rq_active` of every product-v1 pod in `/clusters`, summed: the calls and streams the
/// gateway has open to them.
async fn v1_active(admin: u16) -> u64 {
    common::admin_get(admin, "/clusters")
        .await
        .lines()
        .filter(|l| l.starts_with("default/product-v1::"))
        .filter_map(|l| l.rsplit("::rq_active::").next()?.trim().parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_stay_open_through_the_run_beside_the_unary_figures() {
    use std::io::{BufRead, BufReader};
    const STREAMS: u64 = 150;
    let root = common::root();
    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start(data.path());
    let mut load = Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .args(["load", "--target", &format!("127.0.0.1:{}", up.gateway)])
        .arg("--cacert")
        .arg(root.join("gateway/certs/ca.crt"))
        .args(["--duration", "4s", "--concurrency", "2", "--json"])
        .args(["--hold-streams", &STREAMS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("localmesh load starts");
    let stderr = load.stderr.take().expect("stderr");
    let (tx, said) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("load: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let open = said
        .recv_timeout(Duration::from_secs(20))
        .expect("localmesh load says when its streams are open");
    assert!(
        open.contains(&format!(
            "{STREAMS} AgentSync streams open over 2 connection(s) (0 failed to open)"
        )),
        "{open}"
    );

    // While the unary run goes on, the gateway holds every stream to a v1 pod (AgentSync without
    // agent-version goes to v1), beside at most the 2 unary calls in flight; again later in the run.
    for at in [Duration::from_millis(500), Duration::from_secs(2)] {
        tokio::time::sleep(at).await;
        let active = v1_active(up.admin).await;
        assert!(
            (STREAMS..=STREAMS + 2).contains(&active),
            "{STREAMS} streams open through the gateway: {active} active on the v1 pods"
        );
    }

    let out = tokio::task::spawn_blocking(move || load.wait_with_output())
        .await
        .expect("join")
        .expect("localmesh load ran");
    assert!(out.status.success(), "load exits 0: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("load summary: {stdout}");
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary");
    // The unary figures, as without streams.
    assert!(s["requests"].as_u64().expect("requests") > 50, "a real unary run: {s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert!(s["throughput_rps"].as_f64().expect("throughput") > 0.0, "{s}");
    let lat = &s["latency_ms"];
    assert!(
        lat["p50"].as_f64() > Some(0.0) && lat["p50"].as_f64() <= lat["p99"].as_f64(),
        "{lat}"
    );
    // And the streams: all opened, none cut, all held to the end.
    let st = &s["streams"];
    assert_eq!(st["requested"], STREAMS, "{st}");
    assert_eq!(st["opened"], STREAMS, "{st}");
    assert_eq!(st["held"], STREAMS, "{st}");
    assert_eq!(st["cut"], 0, "{st}");
    assert_eq!(st["connections"], 2, "100 streams a connection: {st}");
    assert_eq!(st["open_errors"], serde_json::json!({}), "{st}");

    // Released with the run: the gateway's streams to the pods end.
    let ended = Instant::now();
    loop {
        let active = v1_active(up.admin).await;
        if active == 0 {
            break;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(5),
            "the streams end with the run: {active} still active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The text summary says so too.
    let text = Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .args(["load", "--target", &format!("127.0.0.1:{}", up.gateway)])
        .arg("--cacert")
        .arg(root.join("gateway/certs/ca.crt"))
        .args(["--duration", "500ms", "--hold-streams", "3"])
        .output()
        .expect("localmesh load runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("throughput  "), "{text}");
    assert!(
        text.contains("streams     3 AgentSync held to the end (3 of 3 opened over 1 connection(s)"),
        "{text}"
    );
    drop(up);
}

#[test]
fn bad_hold_streams_values_name_the_flag() {
    for bad in ["x", "-1", "100001", "1.5"] {
        let out = Command::new(env!("CARGO_BIN_EXE_localmesh"))
            .args(["load", "--hold-streams", bad])
            .output()
            .expect("localmesh load runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--hold-streams {bad} is refused: {err}");
        assert!(err.contains("--hold-streams"), "the error names the flag: {err}");
    }
}
