//! The order service's settings, read once at startup from its flags and environment
//! (`order --help` lists every variable and its default).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser;
use service_runtime::settings::{DataDir, ProductServiceAddr};
use service_runtime::{Caller, ConfigError, ServiceSettings, backend_url, env, settings};
use telemetry::Identity;

/// Product calls never get more than this, and less when the caller's own
/// deadline is closer (the mesh's east-west timeout is 5 s too).
pub const PRODUCT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub identity: Identity,
    pub bind_addr: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    /// `PRODUCT_SERVICE_ADDR`, e.g. `http://product-service:50051`.
    pub product_addr: String,
    /// `PAYMENT_URL` without a trailing `/`; charges go to `{payment_url}/v1/charges`.
    pub payment_url: String,
    pub payment_timeout: Duration,
    pub product_timeout: Duration,
    pub database: Database,
    pub shutdown_grace: Duration,
    /// How often the database is pinged for the health status.
    pub db_check_interval: Duration,
    /// The background settler of PENDING orders.
    pub settle: SettleSettings,
}

/// The settler's settings: every `interval`, up to `batch` PENDING orders at
/// least `after` old are looked up at the provider and settled, each claimed
/// for `lease` so that one replica settles it at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleSettings {
    /// `ORDER_SETTLE_INTERVAL`: the pause between two passes.
    pub interval: Duration,
    /// `ORDER_SETTLE_AFTER`: the age an order reaches before the settler
    /// touches it, so CreateOrders still waiting on the provider are left alone.
    pub after: Duration,
    /// `ORDER_SETTLE_BATCH`: the most orders one pass looks at.
    pub batch: u32,
    /// `ORDER_SETTLE_LEASE`: how long a claimed order is the claimer's alone
    /// (its lookup and its charge each take at most PAYMENT_TIMEOUT_MS).
    pub lease: Duration,
    /// `ORDER_SETTLE_MAX_AGE`: older orders are left to a person. The
    /// provider forgets a key after a while (a day at Stripe and at the
    /// stand-in, PAYMENT_KEY_RETENTION): past that its 404 no longer means
    /// "never charged", and charging again could charge twice.
    pub max_age: Duration,
}

/// The defaults with the default PAYMENT_TIMEOUT_MS (3 s).
impl Default for SettleSettings {
    fn default() -> Self {
        Self::defaults_for(Duration::from_secs(3))
    }
}

pub const MAX_SETTLE_INTERVAL: Duration = Duration::from_secs(3600);
pub const MAX_SETTLE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_SETTLE_LEASE: Duration = Duration::from_secs(3600);
pub const MAX_SETTLE_BATCH: u32 = 1000;
pub const MAX_SETTLE_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

impl SettleSettings {
    /// The defaults: a pass every 5 s, at most 50 orders, from 10 s to 12 h
    /// old, each held 30 s; with a PAYMENT_TIMEOUT_MS so long that these
    /// would break [`SettleSettings::check`], orders wait twice it and are
    /// held three times it instead.
    pub fn defaults_for(payment_timeout: Duration) -> Self {
        Self {
            interval: Duration::from_secs(5),
            after: Duration::from_secs(10).max(payment_timeout.saturating_mul(2)),
            batch: 50,
            lease: Duration::from_secs(30).max(payment_timeout.saturating_mul(3)),
            max_age: Duration::from_secs(12 * 3600),
        }
    }

    /// The `ORDER_SETTLE_*` that are set, the defaults for `payment_timeout` for the others.
    pub fn resolve(set: &Settings) -> Result<Self, ConfigError> {
        let d = Self::defaults_for(set.payment_timeout);
        let s = Self {
            interval: set.settle_interval.unwrap_or(d.interval),
            after: set.settle_after.unwrap_or(d.after),
            batch: set.settle_batch.unwrap_or(d.batch),
            lease: set.settle_lease.unwrap_or(d.lease),
            max_age: set.settle_max_age.unwrap_or(d.max_age),
        };
        s.check(set.payment_timeout)?;
        Ok(s)
    }

    /// The rules between the settings and PAYMENT_TIMEOUT_MS.
    pub fn check(&self, payment_timeout: Duration) -> Result<(), ConfigError> {
        let pt = payment_timeout.as_millis();
        if self.after <= payment_timeout {
            return Err(ConfigError::new(
                "ORDER_SETTLE_AFTER",
                &shown("ORDER_SETTLE_AFTER", self.after),
                format!(
                    "must be longer than PAYMENT_TIMEOUT_MS ({pt} ms), or the settler races CreateOrders still waiting on the provider"
                ),
            ));
        }
        if self.lease <= payment_timeout * 2 {
            return Err(ConfigError::new(
                "ORDER_SETTLE_LEASE",
                &shown("ORDER_SETTLE_LEASE", self.lease),
                format!(
                    "must be longer than twice PAYMENT_TIMEOUT_MS ({} ms): a settlement is a lookup and maybe a charge, each up to PAYMENT_TIMEOUT_MS",
                    2 * pt
                ),
            ));
        }
        if self.max_age <= self.after {
            return Err(ConfigError::new(
                "ORDER_SETTLE_MAX_AGE",
                &shown("ORDER_SETTLE_MAX_AGE", self.max_age),
                format!(
                    "must be longer than ORDER_SETTLE_AFTER ({}), or no order is ever old enough and young enough to settle",
                    fmt_duration(self.after)
                ),
            ));
        }
        Ok(())
    }
}

/// The variable as set, or `d` (its default) as the docs write it.
fn shown(var: &str, d: Duration) -> String {
    env::optional(var).ok().flatten().unwrap_or_else(|| fmt_duration(d))
}

/// `10s`, `250ms`.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Where orders are stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created with its directory on first start.
    Sqlite(PathBuf),
    /// A PostgreSQL URL, `postgres://user:password@host:port/db`.
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Database {
    /// `DATABASE_URL` when set (`postgres://`, `postgresql://`, or `sqlite:PATH`),
    /// else `orders.db` under `data_dir`.
    pub fn from_url(url: Option<&str>, data_dir: &Path) -> Result<Self, ConfigError> {
        let Some(url) = url else {
            return Ok(Self::Sqlite(data_dir.join("orders.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<sqlx::postgres::PgConnectOptions>().map_err(|e| {
                ConfigError::new(
                    "DATABASE_URL",
                    &redact(url),
                    format!("not a usable PostgreSQL URL ({e})"),
                )
            })?;
            return Ok(Self::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
            && !path.is_empty()
            && !path.starts_with(':')
        {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(ConfigError::new(
            "DATABASE_URL",
            &redact(url),
            "expected postgres://user:password@host:5432/db, sqlite:PATH, or unset for the SQLite file under DATA_DIR",
        ))
    }

    /// For messages and logs: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite:{}", p.display()),
            Self::Postgres(url) => redact(url),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

pub use service_runtime::settings::DEFAULT_PRODUCT_ADDR;
pub const DEFAULT_PAYMENT_URL: &str = "http://api.payment-provider.com";

/// OrderService: orders in SQL (SQLite or PostgreSQL), priced by ProductService, charged at the
/// payment provider.
#[derive(Debug, Clone, Parser)]
#[command(name = "order", version, mut_arg("port", settings::default_port("50051")))]
pub struct Settings {
    #[command(flatten)]
    pub service: ServiceSettings,

    /// ProductService prices the orders.
    #[command(flatten)]
    pub product: ProductServiceAddr,

    /// The payment provider's base URL, charges go to PAYMENT_URL/v1/charges: plaintext http://,
    /// the sidecar originates TLS to the provider.
    #[arg(long = "payment-url", env = "PAYMENT_URL", value_name = "PAYMENT_URL",
          default_value = DEFAULT_PAYMENT_URL, value_parser = payment_url)]
    pub payment_url: String,

    /// The payment call's deadline in milliseconds, from 1 to 600000.
    #[arg(long = "payment-timeout-ms", env = "PAYMENT_TIMEOUT_MS", value_name = "PAYMENT_TIMEOUT_MS",
          default_value = "3000", value_parser = env::millis_in(1..=600_000))]
    pub payment_timeout: Duration,

    /// DATA_DIR/orders.db when DATABASE_URL is unset.
    #[command(flatten)]
    pub data: DataDir,

    /// postgres://user:password@host:5432/db, or sqlite:PATH; unset: the SQLite file under DATA_DIR.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// The settler's pause between two passes, at most 3600s [default: 5s].
    #[arg(long = "order-settle-interval", env = "ORDER_SETTLE_INTERVAL", value_name = "ORDER_SETTLE_INTERVAL",
          value_parser = env::duration_at_most(MAX_SETTLE_INTERVAL, fmt_duration))]
    pub settle_interval: Option<Duration>,

    /// The age a PENDING order reaches before the settler touches it, longer than
    /// PAYMENT_TIMEOUT_MS [default: 10s, or twice PAYMENT_TIMEOUT_MS when longer].
    #[arg(long = "order-settle-after", env = "ORDER_SETTLE_AFTER", value_name = "ORDER_SETTLE_AFTER",
          value_parser = env::duration_at_most(MAX_SETTLE_AFTER, fmt_duration))]
    pub settle_after: Option<Duration>,

    /// The most orders one pass looks at, from 1 to 1000 [default: 50].
    #[arg(long = "order-settle-batch", env = "ORDER_SETTLE_BATCH", value_name = "ORDER_SETTLE_BATCH",
          value_parser = env::number_in(1..=MAX_SETTLE_BATCH))]
    pub settle_batch: Option<u32>,

    /// How long a claimed order is the claimer's alone, longer than twice PAYMENT_TIMEOUT_MS
    /// [default: 30s, or three times PAYMENT_TIMEOUT_MS when longer].
    #[arg(long = "order-settle-lease", env = "ORDER_SETTLE_LEASE", value_name = "ORDER_SETTLE_LEASE",
          value_parser = env::duration_at_most(MAX_SETTLE_LEASE, fmt_duration))]
    pub settle_lease: Option<Duration>,

    /// Older PENDING orders are left to a person [default: 12h].
    #[arg(long = "order-settle-max-age", env = "ORDER_SETTLE_MAX_AGE", value_name = "ORDER_SETTLE_MAX_AGE",
          value_parser = env::duration_at_most(MAX_SETTLE_MAX_AGE, fmt_duration))]
    pub settle_max_age: Option<Duration>,
}

impl Config {
    /// The process's settings; a value clap refuses has already stopped it with code 2.
    pub fn from_args() -> Result<Self, ConfigError> {
        Self::from_settings(settings::parse())
    }

    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        let database = Database::from_url(s.database_url.as_deref(), &s.data.data_dir)?;
        let settle = SettleSettings::resolve(&s)?;
        Ok(Self {
            identity: s.service.identity("order"),
            bind_addr: s.service.bind_addr,
            port: s.service.port,
            metrics_port: s.service.metrics_port,
            product_addr: s.product.product_addr,
            payment_url: s.payment_url,
            payment_timeout: s.payment_timeout,
            product_timeout: PRODUCT_TIMEOUT,
            database,
            shutdown_grace: s.service.shutdown_grace,
            db_check_interval: Duration::from_secs(5),
            settle,
        })
    }

    /// Settings for an in-process server on ephemeral ports (tests, tools).
    pub fn for_test(database: Database, product_addr: impl Into<String>, payment_url: impl Into<String>) -> Self {
        Self {
            identity: Identity::for_test("order", "v1", "order-test-0"),
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            metrics_port: 0,
            product_addr: product_addr.into(),
            payment_url: payment_url.into().trim_end_matches('/').to_owned(),
            payment_timeout: Duration::from_secs(3),
            product_timeout: PRODUCT_TIMEOUT,
            database,
            shutdown_grace: Duration::from_secs(10),
            db_check_interval: Duration::from_millis(200),
            settle: SettleSettings::default(),
        }
    }
}

/// `PAYMENT_URL`, by the same rule, without its trailing `/`.
fn payment_url(raw: &str) -> Result<String, String> {
    backend_url(raw, Caller::InMesh, DEFAULT_PAYMENT_URL)?;
    Ok(raw.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let dir = Path::new("/var/lib/order");
        assert_eq!(
            Database::from_url(None, dir),
            Ok(Database::Sqlite(dir.join("orders.db")))
        );
        assert_eq!(
            Database::from_url(Some("sqlite:/tmp/x.db"), dir),
            Ok(Database::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            Database::from_url(Some("postgres://u:p@db:5432/orders"), dir),
            Ok(Database::Postgres("postgres://u:p@db:5432/orders".into()))
        );
        let e = Database::from_url(Some("mysql://u:hunter2@db/orders"), dir).unwrap_err();
        assert_eq!(e.variable, "DATABASE_URL");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(Database::from_url(Some("sqlite::memory:"), dir).is_err());
    }

    #[test]
    fn settle_settings_are_checked_against_the_payment_timeout() {
        let d = SettleSettings::default();
        assert_eq!(
            (d.interval, d.after, d.batch, d.lease),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                50,
                Duration::from_secs(30)
            )
        );
        assert_eq!(d.max_age, Duration::from_secs(12 * 3600));
        // A long PAYMENT_TIMEOUT_MS moves the defaults it bounds, so it alone never stops startup.
        for pt in [1, 3000, 5000, 20_000, 600_000] {
            let pt = Duration::from_millis(pt);
            let d = SettleSettings::defaults_for(pt);
            assert!(d.check(pt).is_ok(), "{pt:?}: {d:?}");
        }
        let long = SettleSettings::defaults_for(Duration::from_secs(20));
        assert_eq!(
            (long.after, long.lease),
            (Duration::from_secs(40), Duration::from_secs(60))
        );
        assert!(d.check(Duration::from_secs(3)).is_ok());
        let e = d.check(Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.variable, "ORDER_SETTLE_AFTER");
        assert!(e.reason.contains("longer than PAYMENT_TIMEOUT_MS (10000 ms)"), "{e}");
        let short_lease = SettleSettings {
            lease: Duration::from_secs(6),
            ..d
        };
        let e = short_lease.check(Duration::from_secs(3)).unwrap_err();
        assert_eq!(e.variable, "ORDER_SETTLE_LEASE");
        assert!(e.reason.contains("twice PAYMENT_TIMEOUT_MS (6000 ms)"), "{e}");
        let no_window = SettleSettings {
            max_age: Duration::from_secs(10),
            ..d
        };
        let e = no_window.check(Duration::from_secs(3)).unwrap_err();
        assert_eq!((e.variable.as_str(), e.value.as_str()), ("ORDER_SETTLE_MAX_AGE", "10s"));
        assert!(e.reason.contains("longer than ORDER_SETTLE_AFTER (10s)"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?x=@"), "postgres://h/db?x=@");
    }
}
