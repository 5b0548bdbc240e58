//! The settler: PENDING orders settle themselves. An order whose payment
//! outcome was unknown (a timeout, the provider down, the pod gone after the
//! charge) stays PENDING until someone asks the provider what became of its
//! charge. Every `ORDER_SETTLE_INTERVAL` the settler takes up to
//! `ORDER_SETTLE_BATCH` PENDING orders older than `ORDER_SETTLE_AFTER` (and
//! younger than `ORDER_SETTLE_MAX_AGE`: the provider forgets keys after a
//! while, and then its 404 proves nothing), one at a time, and for each asks
//! the provider for the charge under the order's key:
//!
//! - a succeeded charge: the order becomes PAID with that charge's id;
//! - a declined one: PAYMENT_FAILED with the provider's reason;
//! - none (404): the settler charges it, with the key and the body
//!   CreateOrder sends, and records the answer. The provider keeps one
//!   charge per key, so a client's retry racing the settler cannot charge
//!   twice;
//! - no definite answer: the order stays PENDING and is tried again on a
//!   later pass.
//!
//! Several replicas share the work through a lease in the order's row
//! ([`Store::claim_pending`]): one conditional UPDATE takes an order for
//! `ORDER_SETTLE_LEASE`, and only one settler can win it. Every state change
//! is conditional on the order still being PENDING.

use std::{sync::Arc, time::Duration};

use telemetry::prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::{
    config::SettleSettings,
    health::DbState,
    payments::{Lookup, Outcome, Payments},
    service::now_ms,
    store::{Claimed, Settlement, Store},
};

/// The `outcome` label of `order_settled_total`, one per order per pass.
pub const OUTCOMES: [&str; 5] = ["paid", "payment_failed", "charged", "still_unknown", "already_settled"];

#[derive(Clone)]
struct Metrics {
    pending: IntGauge,
    oldest_age: Gauge,
    settled: IntCounterVec,
    /// `order_payment_attempts_total`, shared with CreateOrder.
    payment_attempts: IntCounterVec,
}

impl Metrics {
    fn new(registry: &Registry, payment_attempts: IntCounterVec) -> anyhow::Result<Self> {
        let pending = IntGauge::new(
            "order_pending_orders",
            "Orders in the database whose payment is not settled (PENDING), as of the settler's last pass.",
        )?;
        let oldest_age = Gauge::new(
            "order_pending_oldest_age_seconds",
            "Age of the oldest PENDING order at the settler's last pass; 0 without PENDING orders.",
        )?;
        let settled = IntCounterVec::new(
            Opts::new(
                "order_settled_total",
                "PENDING orders the settler looked at, by outcome: paid and payment_failed (the provider had \
                 the charge), charged (it had none: the settler charged it), still_unknown (no definite answer; \
                 tried again later), already_settled (a client retry settled it first).",
            ),
            &["outcome"],
        )?;
        for o in OUTCOMES {
            settled.with_label_values(&[o]);
        }
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        registry.register(Box::new(settled.clone()))?;
        Ok(Self {
            pending,
            oldest_age,
            settled,
            payment_attempts,
        })
    }
}

pub struct Settler {
    store: Store,
    db_state: Arc<DbState>,
    payments: Payments,
    settings: SettleSettings,
    metrics: Metrics,
}

/// What one settlement came to.
#[derive(Debug)]
enum Done {
    /// Recorded: the order is PAID or PAYMENT_FAILED now.
    Settled {
        outcome: &'static str,
        settlement: Settlement,
    },
    /// It was no longer PENDING when the outcome was recorded.
    AlreadySettled {
        settlement: Settlement,
    },
    StillUnknown {
        why: String,
    },
}

impl Done {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Settled { outcome, .. } => outcome,
            Self::AlreadySettled { .. } => "already_settled",
            Self::StillUnknown { .. } => "still_unknown",
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Settler {
    pub fn new(
        store: Store,
        db_state: Arc<DbState>,
        payments: Payments,
        settings: SettleSettings,
        registry: &Registry,
        payment_attempts: IntCounterVec,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            db_state,
            payments,
            settings,
            metrics: Metrics::new(registry, payment_attempts)?,
        })
    }

    /// A pass at once, then one every `interval` after the last one ended,
    /// until `stop`. A settlement cut short by `stop` leaves its order
    /// PENDING, to be settled by the next pass here or on another replica.
    pub async fn run(self, stop: CancellationToken) {
        let mut db_failing = false;
        loop {
            if self.db_state.is_migrated() {
                let res = tokio::select! {
                    () = stop.cancelled() => return,
                    r = self.pass() => r,
                };
                match (res, db_failing) {
                    (Err(e), false) => {
                        tracing::warn!(database = %self.store.label(), error = %e, "the settler cannot reach the order database; PENDING orders wait for it");
                        db_failing = true;
                    }
                    (Ok(()), true) => {
                        tracing::info!(database = %self.store.label(), "the settler reaches the order database again");
                        db_failing = false;
                    }
                    _ => {}
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// Up to `batch` orders, oldest first, then the gauges. Err: the
    /// database failed (logged by the caller once per outage).
    async fn pass(&self) -> Result<(), String> {
        let after = millis(self.settings.after);
        let max_age = millis(self.settings.max_age);
        let lease = millis(self.settings.lease);
        for _ in 0..self.settings.batch {
            let now = now_ms();
            let created = now.saturating_sub(max_age)..=now.saturating_sub(after);
            let claimed = self
                .store
                .claim_pending(now, created, now.saturating_add(lease))
                .await
                .map_err(|e| telemetry::error_chain(&e))?;
            let Some(c) = claimed else { break };
            self.settle(c).await;
        }
        let stats = self
            .store
            .pending_stats()
            .await
            .map_err(|e| telemetry::error_chain(&e))?;
        self.metrics.pending.set(stats.count);
        let age_ms = stats
            .oldest_created_at_ms
            .map_or(0, |created| now_ms().saturating_sub(created).max(0));
        self.metrics.oldest_age.set(age_ms as f64 / 1000.0);
        Ok(())
    }

    /// One claimed order, within its lease: settled, or given back PENDING.
    async fn settle(&self, c: Claimed) {
        let started = now_ms();
        let mut created_at_ms = None;
        let res = match tokio::time::timeout(self.settings.lease, self.attempt(&c.id, &mut created_at_ms)).await {
            Ok(r) => r,
            Err(_) => Done::StillUnknown {
                why: format!(
                    "not settled within its lease ({} ms, ORDER_SETTLE_LEASE)",
                    self.settings.lease.as_millis()
                ),
            },
        };
        self.metrics.settled.with_label_values(&[res.outcome()]).inc();
        let age_ms = created_at_ms.map_or(0, |t| started.saturating_sub(t));
        let (order_id, outcome, attempt) = (&c.id, res.outcome(), c.attempt);
        match &res {
            Done::Settled { settlement, .. } | Done::AlreadySettled { settlement } => {
                let (status, charge_id, reason) = describe(settlement);
                tracing::info!(
                    order_id,
                    outcome,
                    status,
                    charge_id,
                    failure_reason = reason,
                    age_ms,
                    attempt,
                    "pending order settled"
                );
            }
            Done::StillUnknown { why } => {
                let retry_at = now_ms().saturating_add(millis(self.settings.interval));
                tracing::warn!(
                    order_id,
                    outcome,
                    why,
                    age_ms,
                    attempt,
                    retry_in_ms = millis(self.settings.interval),
                    "pending order still unsettled; it stays PENDING"
                );
                if let Err(e) = self.store.release_pending(&c.id, c.attempt, retry_at).await {
                    // Its lease runs out by itself.
                    tracing::warn!(order_id, error = %telemetry::error_chain(&e), "cannot give the order back to the settlers");
                }
            }
        }
    }

    async fn attempt(&self, id: &str, created_at_ms: &mut Option<i64>) -> Done {
        let order = match self.store.get(id).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Done::StillUnknown {
                    why: "the order is not in the database".into(),
                };
            }
            Err(e) => {
                return Done::StillUnknown {
                    why: format!(
                        "order database ({}): {}",
                        self.store.label(),
                        telemetry::error_chain(&e)
                    ),
                };
            }
        };
        *created_at_ms = Some(order.created_at_ms);
        let md = request_metadata();
        let timeout = self.payments.timeout();
        let base = self.payments.base();
        let (outcome, settlement) = match self.payments.lookup(&order, &md, timeout).await {
            Lookup::Paid { charge_id } => ("paid", Settlement::Paid { charge_id }),
            Lookup::Declined { reason } => ("payment_failed", Settlement::Failed { reason }),
            Lookup::Unknown { why } => {
                return Done::StillUnknown {
                    why: format!("payment ({base}) lookup: {why}"),
                };
            }
            Lookup::NoRecord => {
                let charged = self.payments.charge(&order, &md, timeout).await;
                self.metrics
                    .payment_attempts
                    .with_label_values(&[charged.label()])
                    .inc();
                match charged {
                    Outcome::Paid { charge_id } => ("charged", Settlement::Paid { charge_id }),
                    Outcome::Failed { reason } => ("charged", Settlement::Failed { reason }),
                    Outcome::Unknown { why } | Outcome::TimedOut { why } => {
                        return Done::StillUnknown {
                            why: format!("payment ({base}) had no charge; charging it: {why}"),
                        };
                    }
                }
            }
        };
        match self.store.settle(&order.id, &settlement, now_ms()).await {
            Ok(true) => Done::Settled { outcome, settlement },
            Ok(false) => Done::AlreadySettled { settlement },
            Err(e) => Done::StillUnknown {
                why: format!(
                    "the outcome ({}) could not be recorded in the order database ({}): {}",
                    describe(&settlement).0,
                    self.store.label(),
                    telemetry::error_chain(&e)
                ),
            },
        }
    }
}

/// (status, charge id, failure reason) of a settlement, for the log line.
fn describe(s: &Settlement) -> (&'static str, &str, &str) {
    match s {
        Settlement::Paid { charge_id } => ("PAID", charge_id, ""),
        Settlement::Failed { reason } => ("PAYMENT_FAILED", "", reason),
    }
}

/// A fresh `x-request-id` per settlement, so the provider's logs of its
/// lookup and charge can be found from the settler's line.
fn request_metadata() -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(telemetry::propagation::new_request_id()) {
        md.insert(telemetry::propagation::REQUEST_ID, v);
    }
    md
}
