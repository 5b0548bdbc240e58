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
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
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
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
    let before = until(up.admin, "product-v1", Duration::from_secs(5), "two v1 pods", |p| {
        p.len() == 2 && ready(p) == 2
    })
    .await;
    let old_hash = before[0].1["pod_template_hash"].clone();
    let old: BTreeSet<String> = before.iter().map(|(n, _)| n.clone()).collect();
    let load = Load::start(&root, up.gateway, 4, false).await;
    // An agent of v1, whose stream sticks to a v1 pod.
    let stream = tokio::spawn(agent(common::gateway_channel(&root, up.gateway).await, "v1.4"));
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    again.abort();
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
