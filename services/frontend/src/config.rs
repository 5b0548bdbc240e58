//! The frontend's settings, read once from the environment.

use std::{net::IpAddr, time::Duration};

use telemetry::{ConfigError, Identity, env};
use tonic::transport::Uri;

pub const DEFAULT_PRODUCT_ADDR: &str = "http://product-service:50051";
pub const DEFAULT_ORDER_ADDR: &str = "http://order-service:50051";
/// axum's own default: an order is a few hundred bytes, the form less.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 << 20;
/// How much of a refused body is read and discarded at most: a few 10 MiB uploads' worth, in at
/// most 5 s.
pub const DEFAULT_LINGER_MAX_BYTES: usize = 64 << 20;
pub const DEFAULT_LINGER_TIMEOUT_MS: u64 = 5000;
/// `MAX_BODY_BYTES` from 1 KiB to 1 GiB.
pub const MAX_BODY_BYTES_RANGE: std::ops::RangeInclusive<usize> = (1 << 10)..=(1 << 30);

#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    pub bind_addr: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    /// `PRODUCT_SERVICE_ADDR`, e.g. `http://product-service:50051`.
    pub product_addr: String,
    /// `ORDER_SERVICE_ADDR`, e.g. `http://order-service:50051`.
    pub order_addr: String,
    /// `BACKEND_TIMEOUT_MS`: the deadline of every gRPC call.
    pub backend_timeout: Duration,
    /// `MESH_HISTORY`: how many product calls `/mesh` remembers.
    pub mesh_history: usize,
    /// `MAX_BODY_BYTES`: the largest request body (an order's JSON, the order form) read; a
    /// larger one is answered 413 naming this limit.
    pub max_body_bytes: usize,
    /// `LINGER_MAX_BYTES`: after an answer that left the request body unread (a 413), how much
    /// more of it is read and discarded so that a client still sending reads the answer instead
    /// of a reset (nginx's lingering close). 0: none.
    pub linger_max_bytes: usize,
    /// `LINGER_TIMEOUT_MS`: how long that reading may take in all.
    pub linger_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind_addr = env::bind_addr()?;
        Ok(Self {
            identity: Identity::from_env("frontend")?,
            bind_addr,
            port: env::port("PORT", 8080)?,
            metrics_port: env::port("METRICS_PORT", 9464)?,
            product_addr: backend_addr("PRODUCT_SERVICE_ADDR", DEFAULT_PRODUCT_ADDR)?,
            order_addr: backend_addr("ORDER_SERVICE_ADDR", DEFAULT_ORDER_ADDR)?,
            backend_timeout: Duration::from_millis(env::parse("BACKEND_TIMEOUT_MS", 5000u64, 1..=600_000)?),
            mesh_history: env::parse("MESH_HISTORY", 200usize, 1..=100_000)?,
            max_body_bytes: env::parse("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, MAX_BODY_BYTES_RANGE)?,
            linger_max_bytes: env::parse("LINGER_MAX_BYTES", DEFAULT_LINGER_MAX_BYTES, 0..=1 << 30)?,
            linger_timeout: Duration::from_millis(env::parse(
                "LINGER_TIMEOUT_MS",
                DEFAULT_LINGER_TIMEOUT_MS,
                0..=600_000,
            )?),
            shutdown_grace: env::seconds("SHUTDOWN_GRACE_SECS", 10, 3600)?,
        })
    }

    /// Settings for an in-process frontend on ephemeral ports, calling the
    /// given backends (`http://127.0.0.1:port`).
    pub fn for_test(product_addr: String, order_addr: String) -> Self {
        Self {
            identity: Identity::for_test("frontend", "v1", "frontend-t"),
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            metrics_port: 0,
            product_addr,
            order_addr,
            backend_timeout: Duration::from_secs(5),
            mesh_history: 200,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            linger_max_bytes: DEFAULT_LINGER_MAX_BYTES,
            linger_timeout: Duration::from_millis(DEFAULT_LINGER_TIMEOUT_MS),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A backend address must be an absolute `http://` URL: tonic needs the
/// scheme, a bare `host:port` would otherwise fail only at the first call, and
/// TLS between pods is the mesh's job (mTLS in the sidecars), not the app's.
fn backend_addr(variable: &str, default: &str) -> Result<String, ConfigError> {
    let raw = env::string(variable, default)?;
    check_backend_addr(&raw).map_err(|why| ConfigError::new(variable, &raw, why))?;
    Ok(raw)
}

pub(crate) fn check_backend_addr(raw: &str) -> Result<Uri, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|e| format!("expected a URL such as {DEFAULT_PRODUCT_ADDR} ({e})"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err(format!(
            "expected a plaintext http:// URL such as {DEFAULT_PRODUCT_ADDR}: in the mesh the sidecars add mTLS"
        )),
        _ => Err(format!(
            "expected an http:// URL with a host and port, such as {DEFAULT_PRODUCT_ADDR}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_need_a_scheme_and_a_host() {
        assert!(check_backend_addr("http://product-service:50051").is_ok());
        assert!(check_backend_addr("http://10.0.0.1:8080").is_ok());
        for bad in [
            "product-service:50051",
            "ftp://x:1",
            "http://",
            "not a url",
            "https://x:443",
        ] {
            assert!(check_backend_addr(bad).is_err(), "{bad} was accepted");
        }
    }
}
