//! Configuration pushed while `localmesh up` runs: an edit of the HTTPRoute moves the split within
//! a second with nothing restarted; an invalid edit is refused, named, and the running
//! configuration stays; fixing the file clears the error.

use std::time::{Duration, Instant};

use proto::product::product_service_client::ProductServiceClient;

mod common;

const ROUTES: &str = "gateway/httproutes.yaml";
const V1_80: &str = "{name: product-service-v1, port: 50051, weight: 80}";
const V2_20: &str = "{name: product-service-v2, port: 50051, weight: 20}";

/// Applies the `(from, to)` replacements to the HTTPRoutes in one change.
fn edit(root: &std::path::Path, changes: &[(&str, &str)]) {
    let changes: Vec<(&str, &str, &str)> = changes.iter().map(|(f, t)| ("", *f, *t)).collect();
    common::edit(root, ROUTES, &changes);
}

/// Whether `v2` answers out of `n` fit a share of `p` for v2: within 4.5 standard deviations of
/// the binomial mean (a false alarm about once in 150,000 runs).
fn fits(v2: usize, n: usize, p: f64) -> bool {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    (v2 as f64 - mean).abs() <= 4.5 * sd
}

/// The next log line with `message`, within `within`.
fn line(up: &common::Up, message: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = up
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("a {message:?} log line within {within:?}"));
        if v["message"] == message {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_edits_are_pushed_live_and_invalid_ones_refused_with_the_field_named() {
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &[]);
    let data = tempfile::tempdir().expect("tempdir");
    let up = common::Up::start_with(data.path(), &root, &[]);
    let pids: Vec<i32> = up.pods.iter().map(|(_, p)| *p).collect();
    let mut client = ProductServiceClient::new(common::gateway_channel(&root, up.gateway).await);
    assert_eq!(common::config_dump(up.admin).await["config"]["version"], 1);
    let (v1, v2) = common::split(&mut client, 300).await;
    assert!(fits(v2, v1 + v2, 0.2), "80/20 to start with: {v1}/{v2}");

    // 0/100: every call that starts after the push goes to v2, on the same connection.
    edit(
        &root,
        &[
            (V1_80, "{name: product-service-v1, port: 50051, weight: 0}"),
            (V2_20, "{name: product-service-v2, port: 50051, weight: 100}"),
        ],
    );
    let pushed = line(&up, "configuration pushed", Duration::from_secs(5));
    assert_eq!(pushed["config_version"], 2, "{pushed}");
    assert_eq!(common::split(&mut client, 100).await, (0, 100));
    let c = common::config_dump(up.admin).await["config"].clone();
    assert_eq!(
        (c["version"].as_u64(), c["last_error"].is_null()),
        (Some(2), true),
        "{c}"
    );

    // An invalid weight is refused naming the file, the object and the field; 0/100 stays.
    edit(
        &root,
        &[(
            "{name: product-service-v2, port: 50051, weight: 100}",
            "{name: product-service-v2, port: 50051, weight: -5}",
        )],
    );
    let refused = line(
        &up,
        "configuration refused; the running configuration stays",
        Duration::from_secs(5),
    );
    let error = refused["error"].as_str().unwrap_or_default().to_string();
    for part in [ROUTES, "HTTPRoute default/product-grpc", "weight"] {
        assert!(error.contains(part), "{part:?} in {error}");
    }
    let c = common::config_dump(up.admin).await["config"].clone();
    assert_eq!(c["version"], 2, "{c}");
    assert!(c["last_error"].as_str().is_some_and(|e| e.contains("weight")), "{c}");
    assert_eq!(
        common::split(&mut client, 100).await,
        (0, 100),
        "the running configuration stays"
    );
    let page = common::admin_get(up.console, "/graph").await;
    assert!(
        page.contains("configuration change refused") && page.contains("weight"),
        "the console shows it"
    );

    // Fixed (50/50): pushed, the error cleared.
    edit(
        &root,
        &[
            (
                "{name: product-service-v1, port: 50051, weight: 0}",
                "{name: product-service-v1, port: 50051, weight: 50}",
            ),
            (
                "{name: product-service-v2, port: 50051, weight: -5}",
                "{name: product-service-v2, port: 50051, weight: 50}",
            ),
        ],
    );
    let pushed = line(&up, "configuration pushed", Duration::from_secs(5));
    assert_eq!(pushed["config_version"], 3, "{pushed}");
    assert!(common::config_dump(up.admin).await["config"]["last_error"].is_null());
    let page = common::admin_get(up.console, "/graph").await;
    assert!(
        !page.contains("configuration change refused"),
        "cleared in the console too"
    );
    let (v1, v2) = common::split(&mut client, 300).await;
    assert!(fits(v2, v1 + v2, 0.5), "50/50 now: {v1}/{v2}");

    // Nothing was restarted.
    let now: Vec<i32> = common::admin_get(up.admin, "/config_dump")
        .await
        .parse::<serde_json::Value>()
        .ok()
        .and_then(|d| {
            d["pods"]
                .as_object()
                .map(|p| p.values().filter_map(|p| p["pid"].as_i64()).map(|p| p as i32).collect())
        })
        .unwrap_or_default();
    let mut before = pids.clone();
    let mut after = now;
    before.sort();
    after.sort();
    assert_eq!(before, after, "the same pods");
}
