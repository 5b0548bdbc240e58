//! Charges and their idempotency keys in SQLite: a file in WAL mode (created
//! 0600), so a restart forgets nothing younger than the keys' retention; or
//! memory when asked for.
//!
//! A key and the charge it made share one row, and the key column is
//! UNIQUE. A charge attempt reads and writes its key inside one
//! `BEGIN IMMEDIATE` transaction, which holds SQLite's write lock from its
//! first statement: concurrent attempts with one key take turns, in this
//! process or any other on the same file, and the second finds the first
//! one's charge instead of making another. In-process writers also queue on
//! one async lock first, so they wait in order rather than in SQLite's
//! sleeping busy handler.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    str::FromStr as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde::Serialize;
use sqlx::{
    ConnectOptions as _, Row as _,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

use crate::config::Storage;

/// A charge request after validation; equal requests are the same charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub order_id: String,
    pub amount_micros: i64,
    pub currency: String,
    pub customer_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServedBy {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub node: String,
    pub zone: String,
    pub namespace: String,
}

impl From<&telemetry::Identity> for ServedBy {
    fn from(id: &telemetry::Identity) -> Self {
        Self {
            service: id.service.clone(),
            version: id.version.clone(),
            pod: id.pod.clone(),
            node: id.node.clone(),
            zone: id.zone.clone(),
            namespace: id.namespace.clone(),
        }
    }
}

/// A charge as the API shows it. Declined attempts are charges too, with
/// `status: "failed"`, as at Stripe.
#[derive(Debug, Clone, Serialize)]
pub struct Charge {
    pub id: String,
    pub status: &'static str,
    pub order_id: String,
    pub amount: String,
    pub currency: String,
    pub customer_id: String,
    pub idempotency_key: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    pub served_by: ServedBy,
    /// `amount` exactly, as stored and compared.
    #[serde(skip)]
    pub amount_micros: i64,
    /// `created_at` in unix milliseconds: the key's age counts from here.
    #[serde(skip)]
    pub created_at_ms: i64,
}

impl Charge {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    /// The request that made this charge, to tell a retry from a reuse of its key.
    pub fn request(&self) -> ChargeRequest {
        ChargeRequest {
            order_id: self.order_id.clone(),
            amount_micros: self.amount_micros,
            currency: self.currency.clone(),
            customer_id: self.customer_id.clone(),
        }
    }
}

/// What a charge attempt found under its key.
#[derive(Debug)]
pub enum Recorded {
    /// The key was free (never used, or expired): this charge is now stored.
    Created(Charge),
    /// The same request came before: its charge, unchanged.
    Replayed(Charge),
    /// The key made a different charge (returned), so nothing was stored.
    Conflict(Charge),
}

#[derive(Debug)]
pub enum StoreError {
    /// Other writers held the store longer than `PAYMENT_DB_TIMEOUT`.
    Busy(Duration),
    Db(sqlx::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy(d) => write!(
                f,
                "the charge store stayed busy for {} (PAYMENT_DB_TIMEOUT)",
                humantime::format_duration(*d)
            ),
            Self::Db(e) => write!(f, "the charge store failed: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

/// The provider's schema (see [`service_runtime::migrations`]). Append only: applied migrations
/// are checksummed, and an edited one stops startup.
const MIGRATIONS: &[service_runtime::migrations::Embedded] =
    &[(1, "charges", include_str!("../migrations/0001_charges.sql"))];

fn migrator() -> Migrator {
    service_runtime::migrations::migrator(MIGRATIONS)
}

const COLUMNS: &str = "id, idempotency_key, status, order_id, amount_micros, currency, customer_id, created_at_ms, \
     failure_code, failure_message, served_by_service, served_by_version, served_by_pod, served_by_node, \
     served_by_zone, served_by_namespace";

/// Connections for a file: reads run beside the one writer (WAL).
const FILE_CONNECTIONS: u32 = 4;

pub struct Store {
    pool: SqlitePool,
    label: String,
    retention_ms: i64,
    timeout: Duration,
    writer: tokio::sync::Mutex<()>,
}

impl Store {
    /// Opens (creating when missing) the store and applies the migrations.
    /// A file is created mode 0600 and its missing directories 0700; an
    /// existing file readable by others is narrowed to 0600.
    pub async fn open(storage: &Storage, retention: Duration, timeout: Duration) -> anyhow::Result<Self> {
        let label = storage.describe();
        let (opts, pool) = match storage {
            Storage::File(path) => {
                prepare_file(path)?;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    // WAL: readers do not block the writer; NORMAL is durable in WAL mode
                    // except for the last transactions on power loss.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
                (opts, SqlitePoolOptions::new().max_connections(FILE_CONNECTIONS))
            }
            Storage::Memory => {
                // A private database per store, alive while its one connection is:
                // the connection is never closed for idleness or age.
                let opts = SqliteConnectOptions::from_str("sqlite::memory:").context("in-memory SQLite options")?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
                (opts, pool)
            }
        };
        let opts = opts.busy_timeout(timeout).disable_statement_logging();
        let pool = pool
            .acquire_timeout(timeout)
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open the charge store PAYMENT_DB_PATH={label}"))?;
        migrator()
            .run(&pool)
            .await
            .with_context(|| format!("cannot set up the charge store PAYMENT_DB_PATH={label}"))?;
        Ok(Self {
            pool,
            label,
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            timeout,
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The file (or `:memory:`), for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Keys created at or before this instant have expired.
    fn cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.retention_ms)
    }

    /// Stores `new` unless its key already has a charge; also reports how
    /// many expired keys it deleted (this key's own, if it had expired).
    pub async fn record(&self, new: Charge) -> Result<(Recorded, u64), StoreError> {
        let _writer = tokio::time::timeout(self.timeout, self.writer.lock())
            .await
            .map_err(|_| StoreError::Busy(self.timeout))?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // An expired key is free again, even before the purge reaches it.
        let expired = sqlx::query("DELETE FROM charges WHERE idempotency_key = ?1 AND created_at_ms <= ?2")
            .bind(&new.idempotency_key)
            .bind(self.cutoff(new.created_at_ms))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sql = format!("SELECT {COLUMNS} FROM charges WHERE idempotency_key = ?1");
        let existing = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&new.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match existing {
            Some(row) => {
                let first = charge_from_row(&row)?;
                if first.request() == new.request() {
                    Recorded::Replayed(first)
                } else {
                    Recorded::Conflict(first)
                }
            }
            None => {
                insert(&mut tx, &new).await?;
                Recorded::Created(new)
            }
        };
        tx.commit().await?;
        Ok((outcome, expired))
    }

    /// The charge a key made, unless the key expired.
    pub async fn by_key(&self, key: &str, now_ms: i64) -> Result<Option<Charge>, StoreError> {
        self.one("idempotency_key", key, now_ms).await
    }

    pub async fn by_id(&self, id: &str, now_ms: i64) -> Result<Option<Charge>, StoreError> {
        self.one("id", id, now_ms).await
    }

    async fn one(&self, column: &'static str, value: &str, now_ms: i64) -> Result<Option<Charge>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM charges WHERE {column} = ?1 AND created_at_ms > ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(self.cutoff(now_ms))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(charge_from_row).transpose()?)
    }

    /// Every unexpired charge in the order they were made, optionally for one order.
    pub async fn list(&self, order_id: Option<&str>, now_ms: i64) -> Result<Vec<Charge>, StoreError> {
        let cutoff = self.cutoff(now_ms);
        let rows = match order_id {
            Some(o) => {
                let sql =
                    format!("SELECT {COLUMNS} FROM charges WHERE order_id = ?1 AND created_at_ms > ?2 ORDER BY seq");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(o)
                    .bind(cutoff)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM charges WHERE created_at_ms > ?1 ORDER BY seq");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(cutoff)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(charge_from_row).collect::<Result<_, _>>()?)
    }

    /// Deletes at most `batch` expired keys (with their charges), oldest
    /// first, in one short statement; returns how many.
    pub async fn purge(&self, now_ms: i64, batch: u32) -> Result<u64, StoreError> {
        let _writer = tokio::time::timeout(self.timeout, self.writer.lock())
            .await
            .map_err(|_| StoreError::Busy(self.timeout))?;
        let done = sqlx::query(
            "DELETE FROM charges WHERE seq IN \
             (SELECT seq FROM charges WHERE created_at_ms <= ?1 ORDER BY created_at_ms LIMIT ?2)",
        )
        .bind(self.cutoff(now_ms))
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Closes the connections; the last one checkpoints the WAL into the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, c: &Charge) -> Result<(), sqlx::Error> {
    let s = &c.served_by;
    sqlx::query(
        "INSERT INTO charges (id, idempotency_key, status, order_id, amount_micros, currency, customer_id, \
         created_at_ms, failure_code, failure_message, served_by_service, served_by_version, served_by_pod, \
         served_by_node, served_by_zone, served_by_namespace) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .bind(&c.id)
    .bind(&c.idempotency_key)
    .bind(c.status)
    .bind(&c.order_id)
    .bind(c.amount_micros)
    .bind(&c.currency)
    .bind(&c.customer_id)
    .bind(c.created_at_ms)
    .bind(&c.failure_code)
    .bind(&c.failure_message)
    .bind(&s.service)
    .bind(&s.version)
    .bind(&s.pod)
    .bind(&s.node)
    .bind(&s.zone)
    .bind(&s.namespace)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn charge_from_row(row: &SqliteRow) -> Result<Charge, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let status = match status.as_str() {
        "succeeded" => "succeeded",
        "failed" => "failed",
        other => {
            return Err(sqlx::Error::ColumnDecode {
                index: "status".into(),
                source: format!("unknown charge status {other:?}").into(),
            });
        }
    };
    let amount_micros: i64 = row.try_get("amount_micros")?;
    let created_at_ms: i64 = row.try_get("created_at_ms")?;
    Ok(Charge {
        id: row.try_get("id")?,
        status,
        order_id: row.try_get("order_id")?,
        amount: crate::amount::format_micros(amount_micros),
        currency: row.try_get("currency")?,
        customer_id: row.try_get("customer_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        created_at: format_time(created_at_ms),
        failure_code: row.try_get("failure_code")?,
        failure_message: row.try_get("failure_message")?,
        served_by: ServedBy {
            service: row.try_get("served_by_service")?,
            version: row.try_get("served_by_version")?,
            pod: row.try_get("served_by_pod")?,
            node: row.try_get("served_by_node")?,
            zone: row.try_get("served_by_zone")?,
            namespace: row.try_get("served_by_namespace")?,
        },
        amount_micros,
        created_at_ms,
    })
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as RFC 3339 with milliseconds: `2026-11-24T04:45:53.120Z`.
pub fn format_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Creates the file's missing directories (0700) and the file itself (0600)
/// before SQLite opens it: SQLite would create it 0644, and its `-wal` and
/// `-shm` files take the main file's mode. An existing file, or a `-wal` or
/// `-shm` left beside it, that others can read (e.g. after a volume's group
/// ownership was applied to it) is narrowed to 0600.
fn prepare_file(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!(
                "cannot use PAYMENT_DB_PATH={shown}: {} is not a directory",
                dir.display()
            );
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the directory of PAYMENT_DB_PATH={shown}"))?;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // Never truncate: an existing file is the store being reopened.
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create or open PAYMENT_DB_PATH={shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read PAYMENT_DB_PATH={shown}"))?;
    if !meta.is_file() {
        anyhow::bail!("PAYMENT_DB_PATH={shown} is not a regular file");
    }
    narrow(path, &meta)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = Path::new(&side);
        match fs::metadata(side) {
            Ok(meta) => narrow(side, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", side.display()))),
        }
    }
    Ok(())
}

fn narrow(path: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("{} has mode {mode:o} and cannot be narrowed to 600", path.display()))?;
        tracing::warn!(file = %path.display(), was = %format!("{mode:o}"), "the charge store was readable by others: its mode is now 600");
    }
    Ok(())
}
