//! Health follows the database: NOT_SERVING while it is unreachable (or
//! its migrations could not run yet), SERVING once it answers again.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{server::SERVICE_NAME, store::Store};

/// A ping or a migration that takes longer than this counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the schema is in place, and why not.
#[derive(Default)]
pub struct DbState {
    migrated: AtomicBool,
    last_error: Mutex<String>,
}

impl DbState {
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = e;
    }

    /// Runs the migrations; remembers the error when they cannot run.
    pub async fn migrate(&self, store: &Store) -> Result<(), String> {
        let res = match tokio::time::timeout(CHECK_TIMEOUT * 10, store.migrate()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("migrations failed: {e}")),
            Err(_) => Err(format!(
                "migrations did not finish within {} s",
                (CHECK_TIMEOUT * 10).as_secs()
            )),
        };
        match &res {
            Ok(()) => self.migrated.store(true, Ordering::Release),
            Err(e) => self.set_error(e.clone()),
        }
        res
    }
}

pub async fn set(health: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

/// Every `interval` until `stop`: migrate if not done yet, ping, and set
/// the health status on a change (logged once per transition).
pub async fn watch(
    store: Store,
    state: std::sync::Arc<DbState>,
    health: HealthReporter,
    interval: Duration,
    mut serving: bool,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let ok = check(&store, &state).await;
        if stop.is_cancelled() {
            return;
        }
        match (&ok, serving) {
            (Ok(()), false) => {
                tracing::info!(database = %store.label(), "order database reachable: SERVING");
                set(&health, true).await;
                serving = true;
            }
            (Err(e), true) => {
                tracing::warn!(database = %store.label(), error = %e, "order database unreachable: NOT_SERVING");
                set(&health, false).await;
                serving = false;
            }
            _ => {}
        }
    }
}

async fn check(store: &Store, state: &DbState) -> Result<(), String> {
    if !state.is_migrated() {
        state.migrate(store).await?;
    }
    match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to a ping within {} s", CHECK_TIMEOUT.as_secs())),
    }
}
