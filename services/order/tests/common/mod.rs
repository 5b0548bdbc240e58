//! The order service's integration harness: real product, payment and order
//! servers in-process on port 0, a real database (a SQLite file in a temp
//! dir, or a database in a throwaway PostgreSQL cluster), real clients, and
//! direct reads of the tables to check what was stored.
#![allow(dead_code)]

pub mod proxy;

use std::{collections::HashMap, time::Duration};

use order::Database;
use proto::order::{CreateOrderRequest, OrderItem, order_service_client::OrderServiceClient};
use serde_json::Value;
use sqlx::{Row as _, postgres::PgPool, sqlite::SqlitePool};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Writes each scenario once and runs it on both backends:
/// `on_both_backends!(a, b)` makes `sqlite::a`, `postgres::a`, ...
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// What to start, and how.
pub struct Setup {
    backend: Backend,
    payment: Option<payment::Config>,
    product: bool,
    product_delay: Duration,
    product_timeout: Option<Duration>,
    payment_timeout: Duration,
    record: bool,
    settle: Option<order::SettleSettings>,
}

impl Setup {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            payment: Some(payment::Config::for_test()),
            product: true,
            product_delay: Duration::ZERO,
            product_timeout: None,
            payment_timeout: Duration::from_secs(3),
            record: false,
            settle: None,
        }
    }

    /// The settler's pace: a pass every `interval`, orders at least `after`
    /// old, `batch` a pass (the defaults, 5 s and 10 s, keep it out of the
    /// way of tests that finish PENDING orders themselves).
    pub fn settle(mut self, interval: Duration, after: Duration, batch: u32) -> Self {
        self.settle = Some(order::SettleSettings {
            interval,
            after,
            batch,
            ..order::SettleSettings::default()
        });
        self
    }

    /// Puts recording hops between order and the product and payment servers.
    pub fn record_hops(mut self) -> Self {
        self.record = true;
        self
    }

    pub fn payment(mut self, f: impl FnOnce(&mut payment::Config)) -> Self {
        if let Some(cfg) = self.payment.as_mut() {
            f(cfg);
        }
        self
    }

    /// Nothing listens on PAYMENT_URL (until `Stack::start_payment_late`).
    pub fn payment_down(mut self) -> Self {
        self.payment = None;
        self
    }

    /// Nothing listens on PRODUCT_SERVICE_ADDR.
    pub fn product_down(mut self) -> Self {
        self.product = false;
        self
    }

    /// ProductService sleeps this long in every unary call (its FAULT_DELAY_MS).
    pub fn product_delay(mut self, d: Duration) -> Self {
        self.product_delay = d;
        self
    }

    /// The order service's own bound on a product call (5 s unless set).
    pub fn product_timeout(mut self, d: Duration) -> Self {
        self.product_timeout = Some(d);
        self
    }

    pub fn payment_timeout(mut self, d: Duration) -> Self {
        self.payment_timeout = d;
        self
    }

    pub async fn start(self) -> Stack {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (pg, database) = match self.backend {
            Backend::Sqlite => (None, Database::Sqlite(tmp.path().join("orders.db"))),
            Backend::Postgres => {
                let pg = testkit::PgCluster::start().expect("PostgreSQL cluster");
                let url = pg.fresh_database().expect("database");
                (Some(pg), Database::Postgres(url))
            }
        };
        let product = if self.product {
            let mut cfg = product::Config::for_test("v1", "product-v1-x");
            cfg.faults.delay = self.product_delay;
            Some(product::spawn(cfg, grpc_metrics()).await.expect("product starts"))
        } else {
            None
        };
        let product_url = product
            .as_ref()
            .map(|p| p.url())
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", testkit::free_port().expect("port")));
        let payment_port = testkit::free_port().expect("port");
        let payment = match self.payment {
            Some(cfg) => Some(payment::spawn(cfg, registry()).await.expect("payment starts")),
            None => None,
        };
        let payment_url = payment
            .as_ref()
            .map(|p| p.url())
            .unwrap_or_else(|| format!("http://127.0.0.1:{payment_port}"));

        let (mut product_seen, mut payment_seen) = (proxy::Seen::default(), proxy::Seen::default());
        let (product_url, payment_url) = if self.record {
            let (p, ps) = proxy::grpc(&product_url).await;
            let (q, qs) = proxy::http(&payment_url).await;
            (product_seen, payment_seen) = (ps, qs);
            (p, q)
        } else {
            (product_url, payment_url)
        };
        let mut cfg = order::Config::for_test(database.clone(), product_url, payment_url);
        cfg.payment_timeout = self.payment_timeout;
        if let Some(t) = self.product_timeout {
            cfg.product_timeout = t;
        }
        if let Some(settle) = self.settle {
            cfg.settle = settle;
        }
        let order = order::spawn(cfg.clone(), grpc_metrics()).await.expect("order starts");
        let db = TestDb::open(&database).await;
        let client = OrderServiceClient::new(channel(&order.url()).await);
        Stack {
            order_cfg: cfg,
            product_seen,
            payment_seen,
            backend: self.backend,
            order,
            client,
            product,
            payment,
            payment_port,
            db,
            database,
            tmp,
            pg,
        }
    }
}

pub fn registry() -> telemetry::prometheus::Registry {
    telemetry::prometheus::Registry::new()
}

pub fn grpc_metrics() -> telemetry::GrpcMetrics {
    telemetry::GrpcMetrics::new(&registry()).expect("metrics")
}

pub async fn start_product() -> product::Handle {
    product::spawn(product::Config::for_test("v1", "product-v1-x"), grpc_metrics())
        .await
        .expect("product starts")
}

pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// Fields drop in order: servers first, the database last.
pub struct Stack {
    /// The order service's settings, for [`Stack::spawn_replica`].
    pub order_cfg: order::Config,
    /// Headers of the requests that reached product and payment (`record_hops`).
    pub product_seen: proxy::Seen,
    pub payment_seen: proxy::Seen,
    pub backend: Backend,
    pub order: order::Handle,
    pub client: OrderServiceClient<Channel>,
    pub product: Option<product::Handle>,
    pub payment: Option<payment::Handle>,
    /// PAYMENT_URL's port when payment started down.
    pub payment_port: u16,
    pub db: TestDb,
    pub database: Database,
    pub tmp: tempfile::TempDir,
    pub pg: Option<testkit::PgCluster>,
}

impl Stack {
    pub fn payment(&self) -> &payment::Handle {
        self.payment.as_ref().expect("payment is running")
    }

    /// Another order service on the same database, product and payment
    /// (another pod of the Deployment), with its own metrics.
    pub async fn spawn_replica(&self, pod: &str) -> order::Handle {
        let mut cfg = self.order_cfg.clone();
        cfg.identity = telemetry::Identity::for_test("order", "v1", pod);
        order::spawn(cfg, grpc_metrics()).await.expect("replica starts")
    }

    /// The order service's `/metrics`, as Prometheus scrapes it.
    pub async fn order_metrics(&self) -> String {
        testkit::scrape(self.order.metrics_addr).await
    }

    /// Starts the payment stand-in on the PAYMENT_URL that was down.
    pub async fn start_payment_late(&mut self) {
        let mut cfg = payment::Config::for_test();
        cfg.port = self.payment_port;
        self.payment = Some(payment::spawn(cfg, registry()).await.expect("payment starts"));
    }

    /// Every charge the payment stand-in holds (succeeded and failed).
    pub async fn charges(&self) -> Vec<Value> {
        let Some(p) = self.payment.as_ref() else {
            return Vec::new();
        };
        let v: Value = reqwest::get(format!("{}/v1/charges", p.url()))
            .await
            .expect("payment answers")
            .json()
            .await
            .expect("JSON");
        v["charges"].as_array().cloned().unwrap_or_default()
    }

    pub async fn succeeded_charges(&self) -> Vec<Value> {
        self.charges()
            .await
            .into_iter()
            .filter(|c| c["status"] == "succeeded")
            .collect()
    }

    pub async fn health(&self) -> ServingStatus {
        let mut h = HealthClient::new(channel(&self.order.url()).await);
        let r = h
            .check(HealthCheckRequest {
                service: "order.OrderService".into(),
            })
            .await
            .expect("health answers");
        r.into_inner().status()
    }

    /// The invariants a reader of the tables must always find, whatever
    /// failed: every order has its lines and the right totals; a PAID order
    /// has exactly its own succeeded charge; no charge without an order;
    /// no order charged twice. Returns the orders.
    pub async fn assert_consistent(&self) -> Vec<OrderRow> {
        let orders = self.db.orders().await;
        let lines = self.db.lines().await;
        let charges = self.succeeded_charges().await;
        let mut by_order: HashMap<&str, Vec<&LineRow>> = HashMap::new();
        for l in &lines {
            assert_eq!(l.line_total, l.quantity * l.unit_price, "line {l:?}");
            by_order.entry(&l.order_id).or_default().push(l);
        }
        for o in &orders {
            let ls = by_order
                .get(o.id.as_str())
                .unwrap_or_else(|| panic!("order {} has no lines", o.id));
            assert_eq!(o.total, ls.iter().map(|l| l.line_total).sum::<i64>(), "total of {o:?}");
            let mine: Vec<&Value> = charges.iter().filter(|c| c["order_id"] == o.id.as_str()).collect();
            assert!(mine.len() <= 1, "order {} charged {} times", o.id, mine.len());
            match o.status.as_str() {
                "PAID" => {
                    assert_eq!(mine.len(), 1, "PAID order {} has no charge", o.id);
                    assert_eq!(mine[0]["id"], o.payment_reference.as_str());
                    assert_eq!(mine[0]["amount"], order::payments::format_micros(o.total).as_str());
                    assert_eq!(mine[0]["idempotency_key"], format!("order-{}", o.id).as_str());
                }
                "PAYMENT_FAILED" => {
                    assert!(mine.is_empty(), "failed order {} was charged", o.id);
                    assert!(!o.failure_reason.is_empty());
                }
                "PENDING" => assert!(o.payment_reference.is_empty()),
                other => panic!("status {other}"),
            }
        }
        assert_eq!(by_order.len(), orders.len(), "lines without an order");
        for c in &charges {
            assert!(
                orders.iter().any(|o| c["order_id"] == o.id.as_str()),
                "charge {c} has no order"
            );
        }
        orders
    }
}

pub fn item(product_id: &str, quantity: i32) -> OrderItem {
    OrderItem {
        product_id: product_id.into(),
        quantity,
    }
}

pub fn create(key: &str, customer: &str, items: &[(&str, i32)]) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        items: items.iter().map(|(p, q)| item(p, *q)).collect(),
    }
}

#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: String,
    pub idempotency_key: String,
    pub customer_id: String,
    pub status: String,
    pub total: i64,
    pub payment_reference: String,
    pub failure_reason: String,
}

#[derive(Debug, Clone)]
pub struct LineRow {
    pub order_id: String,
    pub product_id: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub line_total: i64,
    pub priced_by_pod: String,
}

/// Direct reads of the order tables, as an operator with sqlite3 or psql would.
pub enum TestDb {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            TestDb::Sqlite($pool) => $body,
            TestDb::Postgres($pool) => $body,
        }
    };
}

impl TestDb {
    pub async fn open(database: &Database) -> Self {
        match database {
            Database::Sqlite(path) => Self::Sqlite(
                SqlitePool::connect(&format!("sqlite:{}", path.display()))
                    .await
                    .expect("sqlite"),
            ),
            Database::Postgres(url) => Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy(url)
                    .expect("postgres url"),
            ),
        }
    }

    pub async fn orders(&self) -> Vec<OrderRow> {
        const SQL: &str = "SELECT id, idempotency_key, customer_id, status, total_micros, payment_reference, \
                           failure_reason FROM orders ORDER BY created_at_ms, id";
        with_db!(self, pool => {
            sqlx::query(SQL).fetch_all(pool).await.expect("orders").iter().map(|r| OrderRow {
                id: r.get("id"),
                idempotency_key: r.get("idempotency_key"),
                customer_id: r.get("customer_id"),
                status: r.get("status"),
                total: r.get("total_micros"),
                payment_reference: r.get("payment_reference"),
                failure_reason: r.get("failure_reason"),
            }).collect()
        })
    }

    pub async fn lines(&self) -> Vec<LineRow> {
        const SQL: &str = "SELECT order_id, product_id, quantity, unit_price_micros, line_total_micros, priced_by_pod \
                           FROM order_lines ORDER BY order_id, line_no";
        with_db!(self, pool => {
            sqlx::query(SQL).fetch_all(pool).await.expect("lines").iter().map(|r| LineRow {
                order_id: r.get("order_id"),
                product_id: r.get("product_id"),
                quantity: r.get("quantity"),
                unit_price: r.get("unit_price_micros"),
                line_total: r.get("line_total_micros"),
                priced_by_pod: r.get("priced_by_pod"),
            }).collect()
        })
    }
}

/// A transaction holding the write lock on the order tables
/// ([`TestDb::lock_writes`]): another connection's INSERT waits, reads do not.
pub enum WriteLock {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            Self::Sqlite(tx) => tx.rollback().await.expect("rollback"),
            Self::Postgres(tx) => tx.rollback().await.expect("rollback"),
        }
    }
}

impl TestDb {
    /// SQLite: the database's write lock (`BEGIN IMMEDIATE`); PostgreSQL:
    /// `orders` in EXCLUSIVE mode. Held until [`WriteLock::release`].
    pub async fn lock_writes(&self) -> WriteLock {
        match self {
            Self::Sqlite(pool) => WriteLock::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await.expect("write lock")),
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .expect("lock");
                WriteLock::Postgres(tx)
            }
        }
    }
}

/// Polls `f` until it returns Some, for up to ten seconds.
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}
