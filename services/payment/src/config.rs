//! The payment stand-in's settings, read once at startup from its flags and environment
//! (`payment --help` lists every variable and its default).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser;
use service_runtime::settings::DataDir;
use service_runtime::{ConfigError, ServiceSettings, env, settings};
use telemetry::Identity;

/// How long a key (and the charge it made) is kept by default: a day, as at Stripe.
pub const DEFAULT_KEY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Keys are kept at most a year: far beyond any retry, and no overflow in millisecond sums.
pub const MAX_KEY_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
pub const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_PURGE_BATCH: u32 = 1000;
pub const MAX_PURGE_BATCH: u32 = 100_000;
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_DB_TIMEOUT: Duration = Duration::from_secs(600);
/// The file's name under `DATA_DIR` when `PAYMENT_DB_PATH` is unset.
pub const DB_FILE: &str = "payment.db";

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
    /// Where charges and keys are kept (`PAYMENT_DB_PATH`, else `$DATA_DIR/payment.db`).
    pub storage: Storage,
    /// How long a key and its charge are kept (`PAYMENT_KEY_RETENTION`).
    pub key_retention: Duration,
    /// How often expired keys are purged (`PAYMENT_PURGE_INTERVAL`).
    pub purge_interval: Duration,
    /// At most this many keys deleted per purge pass (`PAYMENT_PURGE_BATCH`).
    pub purge_batch: u32,
    /// How long a request waits for the database before 503 (`PAYMENT_DB_TIMEOUT`).
    pub db_timeout: Duration,
}

/// Where charges and idempotency keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A SQLite file (created mode 0600, its directory 0700), kept across restarts.
    File(PathBuf),
    /// SQLite in memory: forgotten when the process exits. Only when asked
    /// for (`PAYMENT_DB_PATH=:memory:`, or [`Config::for_test`]).
    Memory,
}

impl Storage {
    /// `PAYMENT_DB_PATH` when set (a file path, or `:memory:`), else `payment.db` under `data_dir`.
    pub fn from_env_value(value: Option<&str>, data_dir: impl AsRef<Path>) -> Result<Self, ConfigError> {
        const VAR: &str = "PAYMENT_DB_PATH";
        let Some(raw) = value else {
            return Ok(Self::File(data_dir.as_ref().join(DB_FILE)));
        };
        let path = raw.trim();
        if path == ":memory:" {
            return Ok(Self::Memory);
        }
        if path.starts_with("sqlite:") || path.contains("://") {
            return Err(ConfigError::new(
                VAR,
                raw,
                "expected a file path such as /var/lib/payment/payment.db (not a URL), or :memory:",
            ));
        }
        if path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..") || path == "." || path == ".." {
            return Err(ConfigError::new(
                VAR,
                raw,
                "names a directory: expected the database file's path, such as /var/lib/payment/payment.db",
            ));
        }
        Ok(Self::File(PathBuf::from(path)))
    }

    /// For logs and messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Memory => ":memory:".into(),
        }
    }
}

/// The stand-in for the external payment provider: POST /v1/charges with idempotency keys,
/// kept in SQLite.
#[derive(Debug, Clone, Parser)]
#[command(name = "payment", version, mut_arg("port", settings::default_port("8080")))]
pub struct Settings {
    #[command(flatten)]
    pub service: ServiceSettings,

    /// Added before every charge is processed, in milliseconds, from 0 to 600000.
    #[arg(long = "payment-latency-ms", env = "PAYMENT_LATENCY_MS", value_name = "PAYMENT_LATENCY_MS",
          default_value = "0", value_parser = env::millis_in(0..=600_000))]
    pub latency: Duration,

    /// The share of charges declined with 402, 0 to 100.
    #[arg(long = "payment-failure-percent", env = "PAYMENT_FAILURE_PERCENT", value_name = "PAYMENT_FAILURE_PERCENT",
          default_value = "0", value_parser = env::number_in(0.0..=100.0))]
    pub failure_percent: f64,

    /// The share of requests answered 503 without recording anything, 0 to 100.
    #[arg(long = "payment-error-percent", env = "PAYMENT_ERROR_PERCENT", value_name = "PAYMENT_ERROR_PERCENT",
          default_value = "0", value_parser = env::number_in(0.0..=100.0))]
    pub error_percent: f64,

    /// DATA_DIR/payment.db when PAYMENT_DB_PATH is unset.
    #[command(flatten)]
    pub data: DataDir,

    /// The SQLite file of charges and keys, or :memory:; unset: DATA_DIR/payment.db.
    #[arg(long = "payment-db-path", env = "PAYMENT_DB_PATH", value_name = "PAYMENT_DB_PATH")]
    pub db_path: Option<String>,

    /// How long a key and its charge are kept, at most 8760h.
    #[arg(long = "payment-key-retention", env = "PAYMENT_KEY_RETENTION", value_name = "PAYMENT_KEY_RETENTION",
          default_value = "24h", value_parser = env::duration_at_most(MAX_KEY_RETENTION, show_duration))]
    pub key_retention: Duration,

    /// How often expired keys are purged, at most 24h.
    #[arg(long = "payment-purge-interval", env = "PAYMENT_PURGE_INTERVAL", value_name = "PAYMENT_PURGE_INTERVAL",
          default_value = "60s", value_parser = env::duration_at_most(MAX_PURGE_INTERVAL, show_duration))]
    pub purge_interval: Duration,

    /// At most this many keys deleted per purge pass, from 1 to 100000.
    #[arg(long = "payment-purge-batch", env = "PAYMENT_PURGE_BATCH", value_name = "PAYMENT_PURGE_BATCH",
          default_value_t = DEFAULT_PURGE_BATCH, value_parser = env::number_in(1..=MAX_PURGE_BATCH))]
    pub purge_batch: u32,

    /// How long a request waits for the database before 503, at most 600s.
    #[arg(long = "payment-db-timeout", env = "PAYMENT_DB_TIMEOUT", value_name = "PAYMENT_DB_TIMEOUT",
          default_value = "5s", value_parser = env::duration_at_most(MAX_DB_TIMEOUT, show_duration))]
    pub db_timeout: Duration,
}

impl Config {
    /// The process's settings; a value clap refuses has already stopped it with code 2.
    pub fn from_args() -> Result<Self, ConfigError> {
        Self::from_settings(settings::parse())
    }

    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            identity: s.service.identity("payment"),
            bind_addr: s.service.bind_addr,
            port: s.service.port,
            metrics_port: s.service.metrics_port,
            latency: s.latency,
            failure_percent: s.failure_percent,
            error_percent: s.error_percent,
            shutdown_grace: s.service.shutdown_grace,
            storage: Storage::from_env_value(s.db_path.as_deref(), &s.data.data_dir)?,
            key_retention: s.key_retention,
            purge_interval: s.purge_interval,
            purge_batch: s.purge_batch,
            db_timeout: s.db_timeout,
        })
    }

    /// Settings for an in-process server on ephemeral ports, with no faults,
    /// keeping its charges in memory (each server its own): set `storage` to
    /// a [`Storage::File`] to test what survives a restart.
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
            storage: Storage::Memory,
            key_retention: DEFAULT_KEY_RETENTION,
            purge_interval: DEFAULT_PURGE_INTERVAL,
            purge_batch: DEFAULT_PURGE_BATCH,
            db_timeout: DEFAULT_DB_TIMEOUT,
        }
    }
}

/// A duration as the settings are written: whole hours as `24h`, else `1m 30s`, `250ms`.
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs > 0 && secs.is_multiple_of(3600) && d.subsec_nanos() == 0 {
        format!("{}h", secs / 3600)
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_as_written() {
        assert_eq!(show_duration(DEFAULT_KEY_RETENTION), "24h");
        assert_eq!(show_duration(MAX_KEY_RETENTION), "8760h");
        assert_eq!(show_duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn duration_defaults_are_the_constants() {
        // The defaults are written as text in the flags; the constants are what for_test uses.
        let s: Settings = settings::try_parse_from(["payment"]).unwrap();
        assert_eq!(
            (s.key_retention, s.purge_interval, s.db_timeout),
            (DEFAULT_KEY_RETENTION, DEFAULT_PURGE_INTERVAL, DEFAULT_DB_TIMEOUT)
        );
    }

    #[test]
    fn db_paths() {
        assert_eq!(
            Storage::from_env_value(None, "/var/lib/payment"),
            Ok(Storage::File("/var/lib/payment/payment.db".into()))
        );
        assert_eq!(
            Storage::from_env_value(None, ".data"),
            Ok(Storage::File(".data/payment.db".into()))
        );
        assert_eq!(
            Storage::from_env_value(Some("/tmp/p.db"), ".data"),
            Ok(Storage::File("/tmp/p.db".into()))
        );
        assert_eq!(Storage::from_env_value(Some(":memory:"), ".data"), Ok(Storage::Memory));
        for bad in [
            "sqlite:/tmp/p.db",
            "sqlite::memory:",
            "file:///tmp/p.db",
            "/var/lib/payment/",
            ".",
        ] {
            let e = Storage::from_env_value(Some(bad), ".data").unwrap_err();
            assert_eq!(e.variable, "PAYMENT_DB_PATH", "{bad}");
            assert_eq!(e.value, bad);
        }
    }
}
