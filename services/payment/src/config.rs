//! The payment stand-in's settings, read once from the environment.

use std::{net::IpAddr, time::Duration};

use telemetry::{ConfigError, Identity, env};

#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    pub bind_addr: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    /// Added before every charge is processed (`PAYMENT_LATENCY_MS`).
    pub latency: Duration,
    /// Share of charges declined with 402, 0 to 100 (`PAYMENT_FAILURE_PERCENT`).
    pub failure_percent: f64,
    /// Share of requests answered 503 without recording anything (`PAYMENT_ERROR_PERCENT`).
    pub error_percent: f64,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind_addr = env::bind_addr()?;
        Ok(Self {
            identity: Identity::from_env("payment")?,
            bind_addr,
            port: env::port("PORT", 8080)?,
            metrics_port: env::port("METRICS_PORT", 9464)?,
            latency: Duration::from_millis(env::parse("PAYMENT_LATENCY_MS", 0u64, 0..=600_000)?),
            failure_percent: env::parse("PAYMENT_FAILURE_PERCENT", 0.0f64, 0.0..=100.0)?,
            error_percent: env::parse("PAYMENT_ERROR_PERCENT", 0.0f64, 0.0..=100.0)?,
            shutdown_grace: env::seconds("SHUTDOWN_GRACE_SECS", 10, 3600)?,
        })
    }

    /// Settings for an in-process server on ephemeral ports, with no faults.
    pub fn for_test() -> Self {
        Self {
            identity: Identity::for_test("payment", "v1", "payment-test-0"),
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            metrics_port: 0,
            latency: Duration::ZERO,
            failure_percent: 0.0,
            error_percent: 0.0,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
