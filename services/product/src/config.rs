//! The product service's settings, read once at startup from its flags and environment
//! (`product --help` lists every variable and its default).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Parser;
use service_runtime::{ConfigError, ServiceSettings, settings};
use telemetry::Identity;

use crate::faults::Faults;

/// ProductService v1/v2: the catalog, the prices stream and the agents' bidi channel.
#[derive(Debug, Clone, Parser)]
#[command(name = "product", version, mut_arg("port", settings::default_port("50051")))]
pub struct Settings {
    #[command(flatten)]
    pub service: ServiceSettings,

    /// A JSON catalog to serve instead of the embedded one.
    #[arg(long, env = "CATALOG_PATH", value_name = "CATALOG_PATH")]
    pub catalog_path: Option<PathBuf>,

    #[command(flatten)]
    pub faults: Faults,
}

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
    /// The process's settings; a value clap refuses has already stopped it with code 2.
    pub fn from_args() -> Result<Self, ConfigError> {
        Self::from_settings(settings::parse())
    }

    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            identity: s.service.identity("product"),
            bind_addr: s.service.bind_addr,
            port: s.service.port,
            metrics_port: s.service.metrics_port,
            catalog_path: s.catalog_path,
            faults: s.faults,
            shutdown_grace: s.service.shutdown_grace,
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
