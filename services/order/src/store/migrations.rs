//! The schema, embedded in the binary so it runs anywhere (a container has
//! no `migrations/` directory), applied at startup by sqlx's runtime Migrator.

use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

/// (version, description, SQL). Append only: applied migrations are
/// checksummed, and an edited one stops startup.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "orders", include_str!("../../migrations/0001_orders.sql")),
    (2, "settling", include_str!("../../migrations/0002_settling.sql")),
];

pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}
