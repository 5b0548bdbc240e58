//! The agent against in-process product servers over plaintext: a run of
//! pings, and a reconnect to a new pod when the server goes away.

mod common;

use std::time::Duration;

use agent::{Ended, Summary};
use common::{AGENT_ID, AGENT_VERSION, LIMIT};
use proto::product::AgentPong;
use tokio::{
    sync::{mpsc, oneshot},
    time::timeout,
};

#[tokio::test]
async fn ten_pings_ten_pongs_from_one_pod() {
    let server = common::start("v1", "product-v1-test-a").await;
    let mut settings = common::settings(&server.url());
    settings.pings = 10;

    let mut pongs = Vec::<AgentPong>::new();
    let summary = timeout(
        LIMIT,
        agent::run(settings, std::future::pending(), |p| pongs.push(p.clone())),
    )
    .await
    .expect("10 pongs within the time limit")
    .expect("agent runs");

    assert_eq!(summary.ended, Ended::PingsReached, "{summary:?}");
    assert_eq!(summary.pongs, 10, "{summary:?}");
    assert_eq!(summary.streams_opened, 1, "{summary:?}");
    assert_eq!(summary.reconnects, 0, "{summary:?}");
    assert_eq!(pongs.len(), 10);
    assert_eq!(
        pongs.iter().map(|p| p.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<u64>>()
    );
    assert_eq!(
        pongs.iter().map(|p| p.stream_pongs).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<u64>>()
    );
    for p in &pongs {
        let by = p.served_by.as_ref().expect("served_by");
        assert_eq!(
            (by.version.as_str(), by.pod.as_str()),
            ("v1", "product-v1-test-a"),
            "{p:?}"
        );
        assert_eq!(p.agent_id, AGENT_ID);
        assert_eq!(p.agent_version, AGENT_VERSION);
        assert_eq!(p.message, "pong");
    }
    server.shutdown().await.expect("server stops");
}

#[tokio::test]
async fn stop_ends_the_run_cleanly() {
    let server = common::start("v1", "product-v1-test-stop").await;
    let settings = common::settings(&server.url());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<u64>();
    let run = tokio::spawn(agent::run(
        settings,
        async {
            let _ = stop_rx.await;
        },
        move |p| {
            let _ = pong_tx.send(p.seq);
        },
    ));
    for _ in 0..3 {
        timeout(LIMIT, pong_rx.recv())
            .await
            .expect("a pong in time")
            .expect("agent alive");
    }
    let _ = stop_tx.send(());
    let summary = timeout(LIMIT, run)
        .await
        .expect("stops in time")
        .expect("no panic")
        .expect("agent runs");
    assert_eq!(summary.ended, Ended::Stopped, "{summary:?}");
    assert!(summary.pongs >= 3 && summary.reconnects == 0, "{summary:?}");
    // The agent half-closed and the server ended the stream: it drains at once.
    timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("no stream left open")
        .expect("server stops");
}

#[tokio::test]
async fn reconnects_to_a_new_server_on_the_same_port() {
    let first = common::start("v1", "product-v1-test-a").await;
    let port = first.addr.port();
    let settings = common::settings(&first.url());

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<AgentPong>();
    let run = tokio::spawn(agent::run(
        settings,
        async {
            let _ = stop_rx.await;
        },
        move |p| {
            let _ = pong_tx.send(p.clone());
        },
    ));

    let mut seen_a = Vec::new();
    while seen_a.len() < 3 {
        let p = timeout(LIMIT, pong_rx.recv())
            .await
            .expect("a pong in time")
            .expect("agent alive");
        assert_eq!(pod(&p), "product-v1-test-a");
        seen_a.push(p.seq);
    }

    // Graceful stop: the open stream ends with UNAVAILABLE, the agent lets go.
    timeout(LIMIT, first.shutdown())
        .await
        .expect("first server drains")
        .expect("first server stops");
    let mut cfg = product::Config::for_test("v1", "product-v1-test-b");
    cfg.port = port;
    let second = common::start_with(cfg).await;
    assert_eq!(second.addr.port(), port);

    let first_b = loop {
        let p = timeout(LIMIT, pong_rx.recv())
            .await
            .expect("a pong from the new server")
            .expect("agent alive");
        if pod(&p) == "product-v1-test-b" {
            break p;
        }
        // Pongs still in flight from the first pod may arrive before it drained.
        assert_eq!(pod(&p), "product-v1-test-a");
    };
    assert_eq!(first_b.stream_pongs, 1, "a new stream: {first_b:?}");
    assert!(
        first_b.seq > *seen_a.last().unwrap_or(&0),
        "sequence numbers keep rising: {first_b:?}"
    );
    for _ in 0..2 {
        let p = timeout(LIMIT, pong_rx.recv())
            .await
            .expect("more pongs")
            .expect("agent alive");
        assert_eq!(pod(&p), "product-v1-test-b");
    }

    let _ = stop_tx.send(());
    let summary: Summary = timeout(LIMIT, run)
        .await
        .expect("stops in time")
        .expect("no panic")
        .expect("agent runs");
    assert_eq!(summary.ended, Ended::Stopped);
    assert!(summary.reconnects >= 1, "{summary:?}");
    assert!(summary.streams_opened >= 2, "{summary:?}");
    assert!(
        summary
            .recent_errors
            .iter()
            .any(|e| e.contains("UNAVAILABLE") && e.contains("shutting down")),
        "the first reconnect should name the server's UNAVAILABLE: {summary:?}"
    );
    second.shutdown().await.expect("second server stops");
}

fn pod(p: &AgentPong) -> &str {
    p.served_by.as_ref().map_or("", |s| s.pod.as_str())
}
