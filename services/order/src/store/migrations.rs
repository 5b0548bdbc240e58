//! The order service's schema (see [`service_runtime::migrations`]).

use service_runtime::migrations::Embedded;
use sqlx::migrate::Migrator;

/// Append only: applied migrations are checksummed, and an edited one stops startup.
const MIGRATIONS: &[Embedded] = &[
    (1, "orders", include_str!("../../migrations/0001_orders.sql")),
    (2, "settling", include_str!("../../migrations/0002_settling.sql")),
];

pub fn migrator() -> Migrator {
    service_runtime::migrations::migrator(MIGRATIONS)
}
