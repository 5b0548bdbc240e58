//! Pod logs are rotated by size with a bounded number of files, as the kubelet rotates container
//! logs (`--log-max-size`, `--log-max-files`): a noisy pod (a shell script, restarted once) under
//! the real supervisor, the real `localmesh up` over the suite's binaries, and the flags' errors.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use localmesh::logs::Rotation;
use localmesh::model::ProbeCheck;
use localmesh::pods::{PodOptions, PodSpec, Supervisor};
use localmesh::proxy::Endpoints;

mod common;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The files of `pod` in `dir` (`<pod>.log`, `<pod>.log.1`, ...), sorted by name.
fn files_of(dir: &Path, pod: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the log directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{pod}.log")))
        .collect();
    names.sort();
    names
}

/// Checks what every log file must be: at most `max` bytes, whole lines of JSON, mode 0640.
/// Returns its lines.
fn checked_lines(path: &Path, max: u64) -> Vec<serde_json::Value> {
    let len = std::fs::metadata(path).expect("metadata").len();
    assert!(len <= max, "{} is {len} bytes, over {max}", path.display());
    assert_eq!(mode(path), 0o640, "{}", path.display());
    let text = std::fs::read_to_string(path).expect("read");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-line",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not a whole JSON line ({e}): {l}", path.display()))
        })
        .collect()
}

/// Prints 2000 lines of about 110 bytes to stdout, one to stderr, a last one to stdout; exits 3
/// on its first run (so it is restarted) and stays up on the second.
const NOISY: &str = r#"#!/bin/sh
echo x >> "$0.runs"
run=$(($(wc -l < "$0.runs")))
i=0
while [ $i -lt 2000 ]; do
  echo "{\"run\":$run,\"n\":$i,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"
  i=$((i+1))
done
echo "{\"run\":$run,\"stderr\":\"last\"}" >&2
echo "{\"run\":$run,\"done\":true}"
[ "$run" -ge 2 ] || exit 3
exec sleep 60
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_pods_log_is_rotated_to_max_files_of_max_size_with_the_newest_lines_current() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("noisy.sh");
    std::fs::write(&script, NOISY).expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let logs = dir.path().join("data/logs");
    let log = logs.join("noisy-0.log");

    let mesh = localmesh::load(&common::root()).expect("the repo's manifests");
    let spec = PodSpec {
        workload: Arc::new(mesh.workloads[0].clone()),
        template: "static".into(),
        name: "noisy-0".into(),
        binary: script.clone(),
        env: Vec::new(),
        readiness: None,
        // Nothing listens: the pod is never ready, which does not matter here.
        start_check: ProbeCheck::Http("/healthz".into()),
        drain: Duration::from_secs(1),
        log: log.clone(),
    };
    let rotation = Rotation {
        max_size: 16 << 10,
        max_files: 3,
    };
    let opts = PodOptions {
        bin_dir: dir.path().to_path_buf(),
        data_dir: dir.path().join("data"),
        node: "localhost".into(),
        otlp_endpoint: None,
    };
    let sup = Supervisor::new(Arc::new(Endpoints::new()), rotation, opts, None);
    sup.start_static(spec).expect("the pod's ports");

    // Its second run's last line, in the current file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains(r#"{"run":2,"done":true}"#)) {
        assert!(
            Instant::now() < deadline,
            "the second run's last line reached {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sup.status()["noisy-0"].restarts, 1, "{:?}", sup.status());

    // Two runs of about 220 KB each, in 16 KiB files: only the newest 3 files are left.
    assert_eq!(
        files_of(&logs, "noisy-0"),
        ["noisy-0.log", "noisy-0.log.1", "noisy-0.log.2"]
    );
    assert_eq!(mode(&logs), 0o750);
    let mut lines = Vec::new();
    for p in [logs.join("noisy-0.log.2"), logs.join("noisy-0.log.1"), log.clone()] {
        lines.extend(checked_lines(&p, 16 << 10));
    }
    // Oldest to newest, none lost between the files: the second run's lines counting up to 1999,
    // then its stderr line and its last line, at the end of the current file.
    let tail = &lines[lines.len() - 2..];
    assert_eq!(tail[0], serde_json::json!({"run": 2, "stderr": "last"}));
    assert_eq!(tail[1], serde_json::json!({"run": 2, "done": true}));
    let numbered: Vec<i64> = lines[..lines.len() - 2]
        .iter()
        .map(|v| {
            assert_eq!(v["run"], 2, "only the second run's lines are left: {v}");
            v["n"].as_i64().expect("n")
        })
        .collect();
    assert!(numbered.len() > 300, "about 3 × 16 KiB of lines: {}", numbered.len());
    let first = numbered[0];
    assert_eq!(
        numbered,
        (first..2000).collect::<Vec<_>>(),
        "consecutive, ending at 1999"
    );

    sup.shutdown().await;
    assert!(log.is_file());
}

fn localmesh_up(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .arg("up")
        .args(args)
        .output()
        .expect("localmesh runs")
}

#[test]
fn the_log_flags_have_defaults_and_bad_values_are_refused_naming_the_flag() {
    let help = String::from_utf8_lossy(&localmesh_up(&["--help"]).stdout).into_owned();
    for needle in ["--log-max-size", "[default: 10MiB]", "--log-max-files", "[default: 5]"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    for (args, why) in [
        (["--log-max-size", "512"], "minimum of 1KiB"),
        (["--log-max-size", "10XB"], "unknown size unit"),
        (["--log-max-files", "1"], "2..=1000"),
        (["--log-max-files", "many"], "invalid digit"),
    ] {
        let out = localmesh_up(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]) && stderr.contains(why), "{args:?}: {stderr}");
    }
}

/// The pods' files under `logs` whose name starts with `prefix`, by pod.
fn pods_with(logs: &Path, prefix: &str) -> Vec<String> {
    let mut pods: Vec<String> = std::fs::read_dir(logs)
        .expect("logs")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")
                .filter(|p| p.starts_with(prefix))
                .map(str::to_owned)
        })
        .collect();
    pods.sort();
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_rotates_the_suites_pod_logs_by_its_flags() {
    use proto::product::GetProductRequest;
    use proto::product::product_service_client::ProductServiceClient;

    let root = common::root();
    let data = tempfile::tempdir().expect("tempdir");
    let flags = [("--log-max-size", "4KiB"), ("--log-max-files", "3")];
    let up = common::Up::start_on(data.path(), &root, &[], &flags);
    up.printed("rotated at 4KiB, 3 files each");
    let logs: PathBuf = data.path().join("logs");

    // About 550 bytes of log a request in the product pod that answers it. The last one carries a
    // trace id of ours (the gateway makes its own request ids, as Istio's edge does).
    const LAST_TRACE: &str = "6c6f67732d746573742d6c6173742121";
    let mut client = ProductServiceClient::new(common::gateway_channel(&root, up.gateway).await);
    let mut last_pod = String::new();
    for i in 0..=300 {
        let mut req = tonic::Request::new(GetProductRequest {
            product_id: "123".into(),
        });
        if i == 300 {
            let traceparent = format!("00-{LAST_TRACE}-00f067aa0ba902b7-01");
            req.metadata_mut()
                .insert("traceparent", traceparent.parse().expect("ascii"));
        }
        let reply = client.get_product(req).await.expect("GetProduct through the gateway");
        last_pod = reply.into_inner().served_by.expect("served_by").pod;
    }

    // The newest request is in the current file of the pod that served it.
    let current = logs.join(format!("{last_pod}.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&current).is_ok_and(|t| t.contains(LAST_TRACE)) {
        assert!(
            Instant::now() < deadline,
            "the last request's line reached {}: {}",
            current.display(),
            std::fs::read_to_string(&current).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(mode(&logs), 0o750);
    let product_pods = pods_with(&logs, "product-");
    assert_eq!(product_pods.len(), 3, "{product_pods:?}");
    // Every pod: at most 3 files of at most 4 KiB of whole lines, mode 0640.
    for pod in pods_with(&logs, "") {
        let files = files_of(&logs, &pod);
        assert!(files.len() <= 3, "{pod}: {files:?}");
        for f in &files {
            checked_lines(&logs.join(f), 4 << 10);
        }
    }
    // Each product pod logged far more than 3 × 4 KiB: rotated, the oldest deleted.
    for pod in &product_pods {
        let expected = [format!("{pod}.log"), format!("{pod}.log.1"), format!("{pod}.log.2")];
        assert_eq!(files_of(&logs, pod), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_can_go_to_its_own_rotated_file() {
    use proto::product::GetProductRequest;
    use proto::product::product_service_client::ProductServiceClient;

    let root = common::root();
    let data = tempfile::tempdir().expect("tempdir");
    let access = data.path().join("logs").join("access.log");
    let access_flag = access.display().to_string();
    let flags = [
        ("--log-max-size", "4KiB"),
        ("--log-max-files", "3"),
        ("--access-log", access_flag.as_str()),
    ];
    let up = common::Up::start_on(data.path(), &root, &[], &flags);
    let mut client = ProductServiceClient::new(common::gateway_channel(&root, up.gateway).await);
    for _ in 0..100 {
        let req = tonic::Request::new(GetProductRequest {
            product_id: "123".into(),
        });
        client.get_product(req).await.expect("GetProduct through the gateway");
    }
    let logs = data.path().join("logs");
    // A line per request (gateway and sidecar hops) of about 700 bytes: far more than 3 × 4 KiB,
    // so rotated, the oldest deleted, every file whole JSON lines of the access log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_of(&logs, "access").len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", files_of(&logs, "access"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        files_of(&logs, "access"),
        ["access.log", "access.log.1", "access.log.2"]
    );
    for f in files_of(&logs, "access") {
        for line in checked_lines(&logs.join(&f), 4 << 10) {
            assert_eq!(line["message"], "access", "{f}: {line}");
        }
    }
    // And none on stdout, where the other log lines still go.
    let mut on_stdout = 0;
    while let Ok(v) = up.lines.recv_timeout(Duration::from_millis(300)) {
        if v["message"] == "access" {
            on_stdout += 1;
        }
    }
    assert_eq!(on_stdout, 0, "access lines went to the file only");
}

/// Telemetry resources turn a proxy's access log and metrics off as Istio's do: the gateway's
/// `accessLogging: [{disabled: true}]` (targetRefs the Gateway) silences its lines while the
/// sidecars keep theirs, and the frontend's `metrics` override disabling ALL_METRICS takes away
/// the series its sidecar reports, as source and as destination, while the gateway's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_turns_a_proxys_access_log_and_metrics_off() {
    const QUIET: &str = "    - name: envoy
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: gateway-quiet, namespace: gateway}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: public-api-gateway}
  accessLogging:
  - disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: frontend-no-metrics, namespace: default}
spec:
  selector: {matchLabels: {app: frontend}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - disabled: true
";
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(
        copy.path(),
        &[("manifests/istio/telemetry.yaml", "    - name: envoy\n", QUIET)],
    );
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
    let options = localmesh::verify::VerifyOptions {
        gateway: localmesh::gateway_client::GatewayTarget {
            target: format!("127.0.0.1:{}", up.gateway),
            cacert: root.join("gateway/certs/ca.crt"),
            authority: localmesh::proxy::GATEWAY_HOST.into(),
        },
        n: 1,
        v2_share: 0.2,
        jaeger: String::new(),
    };
    for _ in 0..5 {
        let answer = localmesh::verify::https(&options, "GET", "/api/products/123", &[], "")
            .await
            .expect("GET /api/products/123 through the gateway");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let (mut gateway_lines, mut sidecar_lines) = (0, 0);
    while let Ok(v) = up.lines.recv_timeout(Duration::from_millis(500)) {
        if v["message"] == "access" {
            match v["hop"].as_str() {
                Some("gateway") => gateway_lines += 1,
                _ => sidecar_lines += 1,
            }
        }
    }
    assert_eq!(gateway_lines, 0, "the gateway's access log is off");
    assert!(
        sidecar_lines >= 5,
        "the frontend's sidecar still logs its calls: {sidecar_lines}"
    );

    let text = common::admin_get(up.admin, "/stats/prometheus").await;
    let gateway = testkit::sample(
        &text,
        "istio_requests_total",
        &[("reporter", "source"), ("destination_app", "frontend")],
    );
    assert!(
        gateway.is_some_and(|n| n >= 5.0),
        "the gateway reports its requests:\n{text}"
    );
    for (reporter, side) in [("source", "source_app"), ("destination", "destination_app")] {
        let frontend = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .find(|l| l.contains(&format!("reporter=\"{reporter}\"")) && l.contains(&format!("{side}=\"frontend\"")));
        assert_eq!(frontend, None, "the frontend's sidecar reports nothing as {reporter}");
    }
}
