//! Connection floods against a real `localmesh up`: after a flood of TLS clients, each with a
//! request through the gateway to the frontend (so the gateway also opens as many pod
//! connections), localmesh's memory returns to near where it started once the clients have gone,
//! `--upstream-idle-timeout` has closed the pooled pod connections and the allocator has given
//! the freed memory back. Memory is the process's anonymous resident memory: the pages of the
//! binary itself grow with whatever code has run and are not the proxy's to give back.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{HOST, Up};

type Client = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn tls(up: &Up) -> tokio_rustls::TlsConnector {
    let config = common::tls_client(&up.root.join("gateway/certs/ca.crt"), &[b"http/1.1"]);
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One client: TLS, then `GET /healthz` (the frontend answers it), its answer read, and the
/// connection kept open.
async fn client(port: u16, tls: tokio_rustls::TlsConnector) -> Option<Client> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from(HOST).ok()?;
    let mut s = tls.connect(name, tcp).await.ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0; 4096];
    let n = s.read(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf[..n])
        .starts_with("HTTP/1.1 200")
        .then_some(s)
}

/// `n` clients at once, all held until the result is dropped.
async fn flood(up: &Up, n: usize) -> Vec<Client> {
    let tls = tls(up);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(client(up.gateway, tls.clone()));
    }
    let held: Vec<Client> = set.join_all().await.into_iter().flatten().collect();
    assert!(
        held.len() * 10 >= n * 9,
        "most clients were served: {} of {n}",
        held.len()
    );
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_near_its_start_after_connection_floods() {
    let data = tempfile::tempdir().expect("tempdir");
    let flags = [("--upstream-idle-timeout", "2s"), ("--idle-timeout", "2s")];
    let up = Up::start_on(data.path(), &common::root(), &[], &flags);
    // A first small flood warms the allocator and the pools: the start is measured after it.
    drop(flood(&up, 50).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let start = up.anon_kib();

    let mut peak = start;
    for _ in 0..3 {
        let held = flood(&up, 400).await;
        peak = peak.max(up.anon_kib());
        drop(held);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The clients are gone; the pod connections they caused go after --upstream-idle-timeout,
    // and the allocator gives back what they used.
    let near = start + (start / 4).max(6 * 1024);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut after = up.anon_kib();
    while after > near && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = up.anon_kib();
    }
    eprintln!("localmesh anonymous memory: start {start} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak > start + 8 * 1024,
        "the floods cost memory while they lasted: {start} -> {peak} KiB"
    );
    assert!(
        after <= near,
        "memory returns near its start: {start} -> {peak} -> {after} KiB (at most {near})"
    );
}
