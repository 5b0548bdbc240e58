//! The frontend's settings, read once at startup from its flags and environment
//! (`frontend --help` lists every variable and its default).

use std::{net::IpAddr, time::Duration};

use clap::Parser;
use service_runtime::settings::ProductServiceAddr;
use service_runtime::{Caller, ConfigError, ServiceSettings, backend_url, env, settings};
use telemetry::Identity;
use tonic::transport::Uri;

pub use service_runtime::settings::DEFAULT_PRODUCT_ADDR;
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

/// The shop's web front: HTML pages and a JSON API over ProductService and OrderService.
#[derive(Debug, Clone, Parser)]
#[command(name = "frontend", version, mut_arg("port", settings::default_port("8080")))]
pub struct Settings {
    #[command(flatten)]
    pub service: ServiceSettings,

    #[command(flatten)]
    pub product: ProductServiceAddr,

    /// OrderService: plaintext http://, the sidecars add mTLS.
    #[arg(long = "order-service-addr", env = "ORDER_SERVICE_ADDR", value_name = "ORDER_SERVICE_ADDR",
          default_value = DEFAULT_ORDER_ADDR, value_parser = backend_addr)]
    pub order_addr: String,

    /// The deadline of every gRPC call, in milliseconds, from 1 to 600000.
    #[arg(long = "backend-timeout-ms", env = "BACKEND_TIMEOUT_MS", value_name = "BACKEND_TIMEOUT_MS",
          default_value = "5000", value_parser = env::millis_in(1..=600_000))]
    pub backend_timeout: Duration,

    /// How many product calls /mesh remembers, from 1 to 100000.
    #[arg(long = "mesh-history", env = "MESH_HISTORY", value_name = "MESH_HISTORY",
          default_value_t = 200, value_parser = env::number_in(1..=100_000usize))]
    pub mesh_history: usize,

    /// The largest request body read, from 1024 to 1073741824 bytes; a larger one is answered 413.
    #[arg(long = "max-body-bytes", env = "MAX_BODY_BYTES", value_name = "MAX_BODY_BYTES",
          default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = env::number_in(MAX_BODY_BYTES_RANGE))]
    pub max_body_bytes: usize,

    /// After a 413, how much more of the body is read and discarded so that the client reads the
    /// answer instead of a reset, from 0 (none) to 1073741824 bytes.
    #[arg(long = "linger-max-bytes", env = "LINGER_MAX_BYTES", value_name = "LINGER_MAX_BYTES",
          default_value_t = DEFAULT_LINGER_MAX_BYTES, value_parser = env::number_in(0..=1usize << 30))]
    pub linger_max_bytes: usize,

    /// How long that reading may take in all, in milliseconds, from 0 to 600000.
    #[arg(long = "linger-timeout-ms", env = "LINGER_TIMEOUT_MS", value_name = "LINGER_TIMEOUT_MS",
          default_value = "5000", value_parser = env::millis_in(0..=600_000))]
    pub linger_timeout: Duration,
}

impl Config {
    /// The process's settings; a value clap refuses has already stopped it with code 2.
    pub fn from_args() -> Result<Self, ConfigError> {
        Self::from_settings(settings::parse())
    }

    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            identity: s.service.identity("frontend"),
            bind_addr: s.service.bind_addr,
            port: s.service.port,
            metrics_port: s.service.metrics_port,
            product_addr: s.product.product_addr,
            order_addr: s.order_addr,
            backend_timeout: s.backend_timeout,
            mesh_history: s.mesh_history,
            max_body_bytes: s.max_body_bytes,
            linger_max_bytes: s.linger_max_bytes,
            linger_timeout: s.linger_timeout,
            shutdown_grace: s.service.shutdown_grace,
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

/// `PRODUCT_SERVICE_ADDR` and `ORDER_SERVICE_ADDR`, by the suite's rule for backends
/// ([`service_runtime::backend_url`]).
fn backend_addr(raw: &str) -> Result<String, String> {
    check_backend_addr(raw)?;
    Ok(raw.to_owned())
}

pub(crate) fn check_backend_addr(raw: &str) -> Result<Uri, String> {
    backend_url(raw, Caller::InMesh, DEFAULT_PRODUCT_ADDR)
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
