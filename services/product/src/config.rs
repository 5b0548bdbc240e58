//! The product service's settings, read once from the environment.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use telemetry::{ConfigError, Identity, env};

use crate::faults::Faults;

#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    pub bind_addr: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    pub catalog_path: Option<PathBuf>,
    pub faults: Faults,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind_addr = env::bind_addr()?;
        Ok(Self {
            identity: Identity::from_env("product")?,
            bind_addr,
            port: env::port("PORT", 50051)?,
            metrics_port: env::port("METRICS_PORT", 9464)?,
            catalog_path: env::optional("CATALOG_PATH")?.map(PathBuf::from),
            faults: Faults::from_env()?,
            shutdown_grace: env::seconds("SHUTDOWN_GRACE_SECS", 10, 3600)?,
        })
    }

    /// Settings for an in-process server on ephemeral ports (tests, tools).
    pub fn for_test(version: &str, pod: &str) -> Self {
        Self {
            identity: Identity::for_test("product", version, pod),
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            metrics_port: 0,
            catalog_path: None,
            faults: Faults::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
