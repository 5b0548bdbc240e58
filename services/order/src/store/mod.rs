//! The order store on SQLite or PostgreSQL. Every query is written once:
//! the same SQL text (`$1` parameters, BIGINT and TEXT columns) runs on
//! both, and `with_pool!` expands each body once per backend, so the code
//! is checked against each concrete driver without `sqlx::Any`.

mod migrations;
pub mod model;
mod rows;

use std::{str::FromStr, time::Duration};

use anyhow::Context as _;
use sqlx::{
    ConnectOptions as _,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::Database;
pub use model::{Line, Order, Settlement, Status};
use rows::{Columns, group_orders};

/// A query waits at most this long for a pooled connection, so calls fail
/// with UNAVAILABLE soon after the database goes away instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// What an insert found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// Another order holds the idempotency key (a retry, a race, or a reuse).
    KeyTaken,
}

/// A PENDING order that a settler has taken ([`Store::claim_pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    /// 1 the first time a settler takes the order.
    pub attempt: i64,
}

/// The PENDING orders at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingStats {
    pub count: i64,
    /// `created_at_ms` of the oldest; None without PENDING orders.
    pub oldest_created_at_ms: Option<i64>,
}

/// Takes one order: the oldest PENDING one old enough that nobody holds.
/// The outer conditions are checked again on the row as it is when the
/// UPDATE gets to it (PostgreSQL re-reads a row another transaction changed
/// meanwhile), so two settlers never both take an order; on PostgreSQL the
/// inner SELECT skips rows another settler is taking right now, so the
/// second one takes the next order instead of waiting and finding none.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE orders SET settling_until_ms = $1, settle_attempts = settle_attempts + 1 \
             WHERE id = (SELECT id FROM orders \
                         WHERE status = 'PENDING' AND created_at_ms <= $2 AND created_at_ms >= $4 \
                           AND settling_until_ms <= $3 \
                         ORDER BY created_at_ms, id LIMIT 1",
            $lock,
            ") AND status = 'PENDING' AND created_at_ms <= $2 AND created_at_ms >= $4 AND settling_until_ms <= $3 \
             RETURNING id, settle_attempts"
        )
    };
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    label: String,
}

const ORDER_COLUMNS: &str = "o.id, o.idempotency_key, o.request_hash, o.customer_id, o.status, o.currency, \
     o.total_micros, o.payment_reference, o.failure_reason, o.created_at_ms, \
     l.line_no, l.product_id, l.product_name, l.quantity, l.unit_price_micros, l.line_total_micros, \
     l.priced_by_service, l.priced_by_version, l.priced_by_pod, l.priced_by_node, l.priced_by_zone, \
     l.priced_by_namespace";

/// The SQLite file holds customers' orders: only the service's own user
/// may read it. A new file is created with mode 0600 (SQLite gives the
/// `-wal` and `-shm` files it creates the database file's mode); an
/// existing one, or a `-wal`/`-shm` left by an earlier run, that others can
/// read is narrowed to 0600, with a warning.
fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::{fs::OpenOptions, os::unix::fs::OpenOptionsExt as _};
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot create the order database file {} (DATA_DIR, or DATABASE_URL=sqlite:PATH)",
                path.display()
            )));
        }
    }
    narrow(path);
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        if side.exists() {
            narrow(&side);
        }
    }
    Ok(())
}

/// Mode 0600 for a file that others can read; a file that cannot be read
/// or changed is only logged (SQLite says what is wrong when it opens it).
fn narrow(path: &std::path::Path) {
    use std::{fs::Permissions, os::unix::fs::PermissionsExt as _};
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %telemetry::error_chain(&e), "cannot read the mode of an order database file");
            return;
        }
    };
    if mode & 0o077 != 0 {
        match std::fs::set_permissions(path, Permissions::from_mode(0o600)) {
            Ok(()) => tracing::warn!(
                file = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "the order database file was readable by other users: its mode is now 600"
            ),
            Err(e) => tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                error = %telemetry::error_chain(&e),
                "the order database file is readable by other users and its mode cannot be changed"
            ),
        }
    }
}

impl Store {
    /// Opens the pool. SQLite: creates the directory and the file, failing
    /// at once when that is impossible. PostgreSQL: connects lazily, so the
    /// service can start before its database and report NOT_SERVING.
    pub async fn open(database: &Database) -> anyhow::Result<Self> {
        let label = database.describe();
        let db = match database {
            Database::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create the data directory {} (DATA_DIR)", dir.display()))?;
                }
                private_file(path)?;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    // WAL: readers do not block the writer; NORMAL is durable in WAL mode
                    // except for the last transactions on power loss.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    // Writers queue for the lock instead of failing with SQLITE_BUSY.
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    .disable_statement_logging();
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(opts)
                    .await
                    .with_context(|| format!("cannot open the order database {label}"))?;
                Db::Sqlite(pool)
            }
            Database::Postgres(url) => {
                let opts = PgConnectOptions::from_str(url)
                    .with_context(|| format!("invalid DATABASE_URL {label}"))?
                    .disable_statement_logging();
                Db::Postgres(
                    PgPoolOptions::new()
                        .max_connections(10)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(opts),
                )
            }
        };
        Ok(Self { db, label })
    }

    /// The database for messages: the SQLite file or the URL without password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Applies the embedded migrations (PostgreSQL: under an advisory lock,
    /// so replicas starting together take turns).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let m = migrations::migrator();
        with_pool!(&self.db, pool => m.run(pool).await)
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_pool!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
    }

    pub async fn close(&self) {
        with_pool!(&self.db, pool => pool.close().await)
    }

    /// The order and its lines in one transaction. A taken idempotency key
    /// (the UNIQUE constraint) rolls everything back and says so.
    pub async fn insert(&self, o: &Order) -> Result<Inserted, sqlx::Error> {
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let res = sqlx::query(
                "INSERT INTO orders (id, idempotency_key, request_hash, customer_id, status, currency, total_micros, \
                 payment_reference, failure_reason, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind(&o.id)
            .bind(&o.idempotency_key)
            .bind(&o.request_hash)
            .bind(&o.customer_id)
            .bind(o.status.as_str())
            .bind(&o.currency)
            .bind(o.total_micros)
            .bind(&o.payment_reference)
            .bind(&o.failure_reason)
            .bind(o.created_at_ms)
            .execute(&mut *tx)
            .await;
            match res {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    tx.rollback().await?;
                    return Ok(Inserted::KeyTaken);
                }
                other => other?,
            };
            for l in &o.lines {
                let p = &l.priced_by;
                sqlx::query(
                    "INSERT INTO order_lines (order_id, line_no, product_id, product_name, quantity, unit_price_micros, \
                     line_total_micros, priced_by_service, priced_by_version, priced_by_pod, priced_by_node, \
                     priced_by_zone, priced_by_namespace) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&o.id)
                .bind(l.line_no)
                .bind(&l.product_id)
                .bind(&l.product_name)
                .bind(l.quantity)
                .bind(l.unit_price_micros)
                .bind(l.line_total_micros)
                .bind(&p.service)
                .bind(&p.version)
                .bind(&p.pod)
                .bind(&p.node)
                .bind(&p.zone)
                .bind(&p.namespace)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(Inserted::Created)
        })
    }

    /// Records a charge outcome on a PENDING order. False when the order was
    /// no longer PENDING (a concurrent retry settled it first).
    pub async fn settle(&self, id: &str, outcome: &Settlement, now_ms: i64) -> Result<bool, sqlx::Error> {
        let (status, reference, reason) = match outcome {
            Settlement::Paid { charge_id } => (Status::Paid, charge_id.as_str(), ""),
            Settlement::Failed { reason } => (Status::PaymentFailed, "", reason.as_str()),
        };
        with_pool!(&self.db, pool => {
            let done = sqlx::query(
                "UPDATE orders SET status = $1, payment_reference = $2, failure_reason = $3, updated_at_ms = $4 \
                 WHERE id = $5 AND status = 'PENDING'",
            )
            .bind(status.as_str())
            .bind(reference)
            .bind(reason)
            .bind(now_ms)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// The settler's claim: the oldest PENDING order created from
    /// `created.start()` to `created.end()` that no settler holds at `now_ms`
    /// is held until `lease_until_ms`, by one statement that only one caller can win.
    pub async fn claim_pending(
        &self,
        now_ms: i64,
        created: std::ops::RangeInclusive<i64>,
        lease_until_ms: i64,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let (created_after_ms, created_before_ms) = created.into_inner();
        let row = match &self.db {
            Db::Sqlite(pool) => sqlx::query(claim_sql!(""))
                .bind(lease_until_ms)
                .bind(created_before_ms)
                .bind(now_ms)
                .bind(created_after_ms)
                .fetch_optional(pool)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.text("id")?, r.int("settle_attempts")?)))
                .transpose()?,
            Db::Postgres(pool) => sqlx::query(claim_sql!(" FOR UPDATE SKIP LOCKED"))
                .bind(lease_until_ms)
                .bind(created_before_ms)
                .bind(now_ms)
                .bind(created_after_ms)
                .fetch_optional(pool)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.text("id")?, r.int("settle_attempts")?)))
                .transpose()?,
        };
        Ok(row.map(|(id, attempt)| Claimed { id, attempt }))
    }

    /// Gives a claimed order back while still PENDING: no settler takes it
    /// again before `retry_at_ms`. Only the claim numbered `attempt` gives
    /// it back: a claim whose lease ran out and that another settler took
    /// since does not cut that settler's lease short.
    pub async fn release_pending(&self, id: &str, attempt: i64, retry_at_ms: i64) -> Result<(), sqlx::Error> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "UPDATE orders SET settling_until_ms = $1 WHERE id = $2 AND status = 'PENDING' AND settle_attempts = $3",
            )
                .bind(retry_at_ms)
                .bind(id)
                .bind(attempt)
                .execute(pool)
                .await
                .map(drop)
        })
    }

    pub async fn pending_stats(&self) -> Result<PendingStats, sqlx::Error> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, COALESCE(MIN(created_at_ms), 0) AS oldest FROM orders WHERE status = 'PENDING'",
            )
            .fetch_one(pool)
            .await?;
            let count = row.int("n")?;
            Ok(PendingStats {
                count,
                oldest_created_at_ms: (count > 0).then(|| row.int("oldest")).transpose()?,
            })
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, sqlx::Error> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN order_lines l ON l.order_id = o.id \
             WHERE o.id = $1 ORDER BY l.line_no"
        );
        self.one(sql, id).await
    }

    pub async fn find_by_key(&self, key: &str) -> Result<Option<Order>, sqlx::Error> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN order_lines l ON l.order_id = o.id \
             WHERE o.idempotency_key = $1 ORDER BY l.line_no"
        );
        self.one(sql, key).await
    }

    async fn one(&self, sql: String, param: &str) -> Result<Option<Order>, sqlx::Error> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(param).fetch_all(pool).await?;
            Ok(group_orders(&rows)?.into_iter().next())
        })
    }

    /// A customer's orders, newest first, with their lines: one statement,
    /// so the page and its lines come from one snapshot.
    pub async fn list(&self, customer_id: &str, limit: i64, offset: i64) -> Result<Vec<Order>, sqlx::Error> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM \
             (SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at_ms DESC, id DESC LIMIT $2 OFFSET $3) o \
             JOIN order_lines l ON l.order_id = o.id \
             ORDER BY o.created_at_ms DESC, o.id DESC, l.line_no"
        );
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(customer_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            group_orders(&rows)
        })
    }

    pub async fn count(&self, customer_id: &str) -> Result<i64, sqlx::Error> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM orders WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(pool)
                .await?;
            row.int("n")
        })
    }
}
