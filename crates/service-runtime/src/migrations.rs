//! A service's database schema, embedded in its binary so it runs anywhere (a container has no
//! `migrations/` directory), applied at startup by sqlx's runtime Migrator (the workspace builds
//! sqlx without its macros, so `sqlx::migrate!` is not available).

use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

/// One migration: version, description, SQL (`include_str!` of the file). A service's list is
/// append only: applied migrations are checksummed, and an edited one stops startup.
pub type Embedded = (i64, &'static str, &'static str);

/// The Migrator for a service's embedded migrations, in order.
pub fn migrator(migrations: &[Embedded]) -> Migrator {
    Migrator::with_migrations(
        migrations
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
