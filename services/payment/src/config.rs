//! The payment stand-in's settings, read once from the environment.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use telemetry::{ConfigError, Identity, env};

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
    pub fn from_env_value(value: Option<&str>, data_dir: &str) -> Result<Self, ConfigError> {
        const VAR: &str = "PAYMENT_DB_PATH";
        let Some(raw) = value else {
            return Ok(Self::File(PathBuf::from(data_dir).join(DB_FILE)));
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

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind_addr = env::bind_addr()?;
        let data_dir = env::string("DATA_DIR", ".data")?;
        Ok(Self {
            identity: Identity::from_env("payment")?,
            bind_addr,
            port: env::port("PORT", 8080)?,
            metrics_port: env::port("METRICS_PORT", 9464)?,
            latency: Duration::from_millis(env::parse("PAYMENT_LATENCY_MS", 0u64, 0..=600_000)?),
            failure_percent: env::parse("PAYMENT_FAILURE_PERCENT", 0.0f64, 0.0..=100.0)?,
            error_percent: env::parse("PAYMENT_ERROR_PERCENT", 0.0f64, 0.0..=100.0)?,
            shutdown_grace: env::seconds("SHUTDOWN_GRACE_SECS", 10, 3600)?,
            storage: Storage::from_env_value(env::optional("PAYMENT_DB_PATH")?.as_deref(), &data_dir)?,
            key_retention: bounded_duration("PAYMENT_KEY_RETENTION", DEFAULT_KEY_RETENTION, MAX_KEY_RETENTION)?,
            purge_interval: bounded_duration("PAYMENT_PURGE_INTERVAL", DEFAULT_PURGE_INTERVAL, MAX_PURGE_INTERVAL)?,
            purge_batch: env::parse("PAYMENT_PURGE_BATCH", DEFAULT_PURGE_BATCH, 1..=MAX_PURGE_BATCH)?,
            db_timeout: bounded_duration("PAYMENT_DB_TIMEOUT", DEFAULT_DB_TIMEOUT, MAX_DB_TIMEOUT)?,
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

/// A duration (`5s`, `250ms`, `24h`; a bare number is seconds), greater than zero and at most `max`.
fn bounded_duration(name: &str, default: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let d = env::duration(name, default)?;
    if d > max {
        let raw = env::optional(name)?.unwrap_or_default();
        return Err(ConfigError::new(
            name,
            &raw,
            format!("must be at most {}", show_duration(max)),
        ));
    }
    Ok(d)
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
