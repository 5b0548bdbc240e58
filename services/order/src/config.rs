//! The order service's settings, read once from the environment.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use telemetry::{ConfigError, Identity, env};

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

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind_addr = env::bind_addr()?;
        let product_addr = grpc_url(
            "PRODUCT_SERVICE_ADDR",
            env::string("PRODUCT_SERVICE_ADDR", "http://product-service:50051")?,
        )?;
        let payment_url = http_url(
            "PAYMENT_URL",
            env::string("PAYMENT_URL", "http://api.payment-provider.com")?,
        )?;
        let data_dir = PathBuf::from(env::string("DATA_DIR", ".data")?);
        let database = Database::from_url(env::optional("DATABASE_URL")?.as_deref(), &data_dir)?;
        Ok(Self {
            identity: Identity::from_env("order")?,
            bind_addr,
            port: env::port("PORT", 50051)?,
            metrics_port: env::port("METRICS_PORT", 9464)?,
            product_addr,
            payment_url,
            payment_timeout: Duration::from_millis(env::parse("PAYMENT_TIMEOUT_MS", 3000u64, 1..=600_000)?),
            product_timeout: PRODUCT_TIMEOUT,
            database,
            shutdown_grace: env::seconds("SHUTDOWN_GRACE_SECS", 10, 3600)?,
            db_check_interval: Duration::from_secs(5),
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
        }
    }
}

fn grpc_url(var: &str, raw: String) -> Result<String, ConfigError> {
    let ok = (raw.starts_with("http://") || raw.starts_with("https://"))
        && tonic::transport::Endpoint::from_shared(raw.clone()).is_ok();
    if ok {
        Ok(raw)
    } else {
        Err(ConfigError::new(
            var,
            &raw,
            "expected a gRPC URL such as http://product-service:50051",
        ))
    }
}

fn http_url(var: &str, raw: String) -> Result<String, ConfigError> {
    match reqwest::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(raw.trim_end_matches('/').to_owned())
        }
        _ => Err(ConfigError::new(
            var,
            &raw,
            "expected an http:// or https:// base URL such as http://api.payment-provider.com",
        )),
    }
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
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?x=@"), "postgres://h/db?x=@");
    }
}
