//! Reading a server's Prometheus `/metrics` the way a scraper does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /metrics` over a plain TCP connection; panics unless it answers 200.
pub async fn scrape(addr: impl tokio::net::ToSocketAddrs) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the scrape");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the scrape");
    assert!(out.starts_with("HTTP/1.1 200"), "metrics answered: {out}");
    out
}

/// The value of the sample whose line starts with `name{` and holds every label pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it returns Some, for up to ten seconds.
pub async fn eventually<T>(mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}
