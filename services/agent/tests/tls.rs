//! The agent over real TLS: a test CA, a server certificate for the
//! gateway's host name only, and `--authority` to reach it by IP.

mod common;

use std::time::Duration;

use agent::Ended;
use common::{GATEWAY_HOST, LIMIT, TestPki, TlsServer};
use tokio::time::timeout;

#[tokio::test]
async fn authority_override_passes_the_certificate_check() {
    let pki = TestPki::new("ok");
    let server = TlsServer::start(&pki, "product-v1-tls").await;
    let mut settings = common::settings(&server.url());
    settings.cacert = Some(pki.ca_file.clone());
    settings.authority = Some(GATEWAY_HOST.into());
    settings.pings = 3;

    let mut pods = Vec::new();
    let summary = timeout(
        LIMIT,
        agent::run(settings, std::future::pending(), |p| {
            pods.push(p.served_by.as_ref().map(|s| s.pod.clone()).unwrap_or_default())
        }),
    )
    .await
    .expect("3 pongs in time")
    .expect("agent runs");

    assert_eq!(summary.ended, Ended::PingsReached, "{summary:?}");
    assert_eq!(summary.reconnects, 0, "{summary:?}");
    assert_eq!(pods, ["product-v1-tls"; 3]);
    let authorities = server.authorities.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(authorities, [GATEWAY_HOST], "the :authority the server saw");
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_server_name_keeps_retrying_without_pongs() {
    let pki = TestPki::new("mismatch");
    let server = TlsServer::start(&pki, "product-v1-tls").await;
    let mut settings = common::settings(&server.url());
    settings.cacert = Some(pki.ca_file.clone());

    let mut pongs = 0;
    let summary = timeout(
        LIMIT,
        agent::run(settings, tokio::time::sleep(Duration::from_millis(1200)), |_| {
            pongs += 1
        }),
    )
    .await
    .expect("stops in time")
    .expect("agent runs");

    assert_eq!(summary.ended, Ended::Stopped, "{summary:?}");
    assert_eq!((pongs, summary.pongs, summary.streams_opened), (0, 0, 0), "{summary:?}");
    assert!(summary.reconnects >= 2, "retries with backoff: {summary:?}");
    let first = summary.recent_errors.first().map(String::as_str).unwrap_or_default();
    assert!(
        first.contains("connect failed") && first.contains("not valid for name"),
        "{first}"
    );
    assert!(
        server.authorities.lock().map(|a| a.is_empty()).unwrap_or(false),
        "no call got through"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let trusted = TestPki::new("trusted");
    let other = TestPki::new("other");
    let server = TlsServer::start(&other, "product-v1-tls").await;
    let mut settings = common::settings(&server.url());
    settings.cacert = Some(trusted.ca_file.clone());
    settings.authority = Some(GATEWAY_HOST.into());

    let summary = timeout(
        LIMIT,
        agent::run(settings, tokio::time::sleep(Duration::from_millis(500)), |_| {}),
    )
    .await
    .expect("stops in time")
    .expect("agent runs");
    assert_eq!((summary.pongs, summary.streams_opened), (0, 0), "{summary:?}");
    assert!(summary.reconnects >= 1, "{summary:?}");
    server.shutdown().await;
}
