//! Deployments follow their YAML while `localmesh up` runs, as the Deployment controller makes
//! them: a change of `replicas` scales, a changed pod template rolls out within `maxSurge` and
//! `maxUnavailable`, and neither fails a call made through the gateway meanwhile; an AgentSync
//! stream on a replaced pod ends with a clean status and reconnects to a new one. And the suite
//! starts many times in a row without a pod restarting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::product::product_service_client::ProductServiceClient;
use proto::product::{AgentPing, GetProductRequest};
use tokio::sync::Mutex;
use tonic::transport::Channel;

mod common;

const PRODUCT: &str = "manifests/base/product.yaml";

/// GetProduct calls through the gateway from a few clients at once until stopped: every answer's
/// pod, and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    served: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// `premium`: every other client sends `user-type: premium`, which the gateway routes to v2.
    async fn start(root: &std::path::Path, gateway: u16, clients: usize, premium: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..clients {
            let premium = premium && i % 2 == 1;
            let mut client = ProductServiceClient::new(common::gateway_channel(root, gateway).await);
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut req = tonic::Request::new(GetProductRequest {
                        product_id: "123".into(),
                    });
                    if premium {
                        req.metadata_mut()
                            .insert("user-type", "premium".parse().expect("ascii"));
                    }
                    match client.get_product(req).await {
                        Ok(r) => served
                            .lock()
                            .await
                            .push(r.into_inner().served_by.map(|s| s.pod).unwrap_or_default()),
                        Err(s) => failed.lock().await.push(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
            }));
        }
        Load {
            stop,
            tasks,
            served,
            failed,
        }
    }

    /// The pods that answered so far, with how many calls each.
    async fn pods(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for p in self.served.lock().await.iter() {
            *m.entry(p.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Stops the clients: (calls answered, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let n = self.served.lock().await.len();
        (n, self.failed.lock().await.clone())
    }
}

/// `localmesh up` on a copy of the repository's manifests (the temporary directories live as
/// long as the first item).
fn start() -> ((tempfile::TempDir, tempfile::TempDir), std::path::PathBuf, common::Up) {
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
    ((copy, data), root, up)
}

/// Polls `/config_dump` until `done` holds for `deployment`'s pods, within `within`.
async fn until(
    admin: u16,
    deployment: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let deadline = Instant::now() + within;
    loop {
        let pods = common::pods_of(admin, deployment).await;
        if done(&pods) {
            return pods;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}: {pods:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(pods: &[(String, serde_json::Value)]) -> usize {
    pods.iter()
        .filter(|(_, p)| p["ready"] == true && p["terminating"] == false)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_product_v2_up_and_down_under_load_fails_no_call() {
    let (_dirs, root, up) = start();
    let first = until(up.admin, "product-v2", Duration::from_secs(5), "one v2 pod", |p| {
        p.len() == 1 && ready(p) == 1
    })
    .await;
    let load = Load::start(&root, up.gateway, 4, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1 → 2: a second pod starts and, once ready, answers too.
    common::edit(&root, PRODUCT, &[("name: product-v2", "replicas: 1", "replicas: 2")]);
    let two = until(
        up.admin,
        "product-v2",
        Duration::from_secs(20),
        "two ready v2 pods",
        |p| p.len() == 2 && ready(p) == 2,
    )
    .await;
    let added = two
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| *n != first[0].0)
        .expect("a new pod");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !load.pods().await.contains_key(&added) {
        assert!(Instant::now() < deadline, "the new pod {added} answers calls");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 2 → 1: one leaves the Service first, then stops; the other keeps answering.
    common::edit(&root, PRODUCT, &[("name: product-v2", "replicas: 2", "replicas: 1")]);
    until(
        up.admin,
        "product-v2",
        Duration::from_secs(30),
        "one v2 pod left",
        |p| p.len() == 1 && ready(p) == 1,
    )
    .await;
    let (answered, failed) = load.finish().await;
    assert!(answered > 100, "the load ran: {answered} calls");
    assert!(
        failed.is_empty(),
        "{} of {answered} calls failed: {failed:?}",
        failed.len()
    );
}

/// Opens an AgentSync stream for an agent of `agent_version` and pings every 100 ms until the
/// stream ends: (the pods that answered, in order, and the status it ended with).
async fn agent(channel: Channel, agent_version: &str) -> (Vec<String>, tonic::Status) {
    let mut client = ProductServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("agent-version", agent_version.parse().expect("ascii"));
    req.metadata_mut()
        .insert("agent-id", "agent-rollout".parse().expect("ascii"));
    let pinger = tokio::spawn(async move {
        for seq in 0.. {
            let ping = AgentPing {
                seq,
                message: "ping".into(),
                sent_at: None,
            };
            if tx.send(ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut pongs = client.agent_sync(req).await.expect("AgentSync opens").into_inner();
    let mut pods = Vec::new();
    let end = loop {
        match pongs.message().await {
            Ok(Some(p)) => pods.push(p.served_by.map(|s| s.pod).unwrap_or_default()),
            Ok(None) => break tonic::Status::ok("the stream ended without a status"),
            Err(s) => break s,
        }
    };
    pinger.abort();
    (pods, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_of_product_v1_under_load_fails_no_call_and_moves_its_streams() {
    let (_dirs, root, up) = start();
    let before = until(up.admin, "product-v1", Duration::from_secs(5), "two v1 pods", |p| {
        p.len() == 2 && ready(p) == 2
    })
    .await;
    let old_hash = before[0].1["pod_template_hash"].clone();
    let old: BTreeSet<String> = before.iter().map(|(n, _)| n.clone()).collect();
    let load = Load::start(&root, up.gateway, 4, false).await;
    // An agent of v1, whose stream sticks to a v1 pod; and the real agent, which reconnects.
    let stream = tokio::spawn(agent(common::gateway_channel(&root, up.gateway).await, "v1.4"));
    let real_agent = std::process::Command::new(common::bin_dir().join("agent"))
        .arg("--target")
        .arg(format!("https://127.0.0.1:{}", up.gateway))
        .arg("--cacert")
        .arg(root.join("gateway/certs/ca.crt"))
        .args([
            "--authority",
            common::HOST,
            "--agent-version",
            "v1.5",
            "--interval",
            "100ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent starts");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new pod template (its log level): a rolling update, maxSurge 1, maxUnavailable 0.
    common::edit(
        &root,
        PRODUCT,
        &[(
            "name: product-v1",
            "{name: RUST_LOG, value: info}",
            "{name: RUST_LOG, value: \"info,h2=warn\"}",
        )],
    );
    // Through the rollout: never fewer than 2 ready (maxUnavailable 0), never more than 3 running
    // (maxSurge 1); done when both pods are of the new template and the old ones are gone.
    let deadline = Instant::now() + Duration::from_secs(40);
    let after = loop {
        let pods = common::pods_of(up.admin, "product-v1").await;
        let running = pods.iter().filter(|(_, p)| p["terminating"] == false).count();
        assert!(ready(&pods) >= 2, "maxUnavailable 0: {pods:?}");
        assert!(running <= 3, "maxSurge 1: {pods:?}");
        if pods.len() == 2 && ready(&pods) == 2 && pods.iter().all(|(_, p)| p["pod_template_hash"] != old_hash) {
            break pods;
        }
        assert!(Instant::now() < deadline, "the rollout ends within 40 s: {pods:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let new: BTreeSet<String> = after.iter().map(|(n, _)| n.clone()).collect();
    assert!(old.is_disjoint(&new), "every pod replaced: {old:?} → {new:?}");

    // The stream's pod was replaced: it ended with UNAVAILABLE (the app's drain), not a reset.
    let (pods, end) = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream ends once its pod is stopped")
        .expect("agent task");
    assert!(
        !pods.is_empty() && old.contains(&pods[0]),
        "on an old pod first: {pods:?}"
    );
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    // The agent reconnects, to a new pod.
    let again = tokio::spawn(agent(common::gateway_channel(&root, up.gateway).await, "v1.4"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    again.abort();
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(real_agent.id() as i32, libc::SIGTERM) };
    let out = real_agent.wait_with_output().expect("agent output");
    let stopped = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "Agent stopped")
        .unwrap_or_else(|| panic!("the agent's summary: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{stopped}");
    assert!(
        stopped["reconnects"].as_u64() >= Some(1) && stopped["streams_opened"].as_u64() >= Some(2),
        "the agent's stream ended with its pod and it reconnected: {stopped}"
    );
    let load_pods = load.pods().await;
    let (answered, failed) = load.finish().await;
    assert!(answered > 100, "the load ran: {answered} calls");
    assert!(
        failed.is_empty(),
        "{} of {answered} calls failed: {failed:?}",
        failed.len()
    );
    for pod in &new {
        assert!(load_pods.contains_key(pod), "the new pod {pod} answers: {load_pods:?}");
    }

    // Each new pod was registered as ready before any request reached it (the log is one stream,
    // in order).
    let mut registered = BTreeSet::new();
    while let Ok(v) = up.lines.try_recv() {
        let pod = v["pod_name"]
            .as_str()
            .or(v["upstream_pod"].as_str())
            .unwrap_or_default();
        if v["message"] == "pod ready; endpoint registered" {
            registered.insert(pod.to_string());
        }
        if v["message"] == "access" && new.contains(pod) {
            assert!(registered.contains(pod), "traffic reached {pod} before it was ready");
        }
    }
    assert_eq!(registered.intersection(&new).count(), 2, "{registered:?}");
}

#[test]
fn the_suite_starts_twenty_times_without_a_pod_restarting() {
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    // Four at a time: more pods binding ports at once than one start has.
    for round in 0..5 {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let data = tempfile::tempdir().expect("tempdir");
                    let mut up = common::Up::start_with(data.path(), &root, &[]);
                    let names: Vec<&String> = up.pods.iter().map(|(n, _)| n).collect();
                    let once: BTreeSet<&String> = names.iter().copied().collect();
                    let restarted = names.len() != once.len();
                    let st = up.stop();
                    (restarted, up.pods.clone(), st.success())
                })
            })
            .collect();
        for r in runs {
            let (restarted, pods, stopped) = r.join().expect("run");
            assert!(!restarted, "round {round}: a pod restarted during start-up: {pods:?}");
            assert!(stopped, "round {round}: localmesh up stopped cleanly");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deployment_starts_and_a_deleted_one_stops() {
    let (_dirs, root, up) = start();
    assert!(common::pods_of(up.admin, "product-v3").await.is_empty());

    // product-v3: product-v2's Deployment with the version changed, in a file of its own.
    let text = std::fs::read_to_string(root.join(PRODUCT)).expect("product.yaml");
    let v2 = text
        .split("\n---\n")
        .find(|d| d.contains("kind: Deployment") && d.contains("name: product-v2"))
        .expect("the product-v2 Deployment");
    let v3 = root.join("manifests/base/product-v3.yaml");
    common::apply(&v3, &v2.replace("v2", "v3"));
    let pods = until(up.admin, "product-v3", Duration::from_secs(20), "a ready v3 pod", |p| {
        p.len() == 1 && ready(p) == 1
    })
    .await;
    assert_eq!(pods[0].1["version"], "v3");

    std::fs::remove_file(&v3).expect("delete");
    until(up.admin, "product-v3", Duration::from_secs(30), "no v3 pod", |p| {
        p.is_empty()
    })
    .await;
    assert_eq!(
        common::pods_of(up.admin, "product-v2").await.len(),
        1,
        "the others stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weight_change_under_load_fails_no_call_and_cuts_no_stream() {
    let (_dirs, root, up) = start();
    let load = Load::start(&root, up.gateway, 4, false).await;
    let stream = tokio::spawn(agent(common::gateway_channel(&root, up.gateway).await, "v1.4"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 80/20 → 0/100 for unary calls and streams alike, in one change.
    common::edit(
        &root,
        "gateway/httproutes.yaml",
        &[
            (
                "",
                "{name: product-service-v1, port: 50051, weight: 80}",
                "{name: product-service-v1, port: 50051, weight: 0}",
            ),
            (
                "",
                "{name: product-service-v2, port: 50051, weight: 20}",
                "{name: product-service-v2, port: 50051, weight: 100}",
            ),
            (
                "",
                "{name: product-service-v1, port: 50052, weight: 80}",
                "{name: product-service-v1, port: 50052, weight: 0}",
            ),
            (
                "",
                "{name: product-service-v2, port: 50052, weight: 20}",
                "{name: product-service-v2, port: 50052, weight: 100}",
            ),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::config_dump(up.admin).await["config"]["version"] != 2 {
        assert!(Instant::now() < deadline, "pushed within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_push = load.served.lock().await.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after: Vec<String> = load.served.lock().await[at_push + 50..].to_vec();
    let (answered, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {answered} calls failed: {failed:?}",
        failed.len()
    );
    assert!(
        after.iter().all(|p| p.starts_with("product-v2-")),
        "calls started after the push go to v2: {after:?}"
    );
    // The open stream stays on the v1 pod it started on: a push does not cut it.
    assert!(!stream.is_finished(), "the stream is still open");
    stream.abort();
}
