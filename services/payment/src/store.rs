//! Charges and idempotency keys, in memory. One async lock per key makes
//! concurrent requests with the same key take turns, so the second sees the
//! first one's charge instead of making another.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use serde::Serialize;

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
    pub failure_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    pub served_by: ServedBy,
}

impl Charge {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }
}

/// What a key was first used for, and the charge it produced.
#[derive(Debug)]
pub struct Recorded {
    pub request: ChargeRequest,
    pub charge: Charge,
}

pub type Slot = Arc<tokio::sync::Mutex<Option<Recorded>>>;

#[derive(Default)]
pub struct Store {
    keys: Mutex<HashMap<String, Slot>>,
    charges: RwLock<Vec<Charge>>,
}

impl Store {
    /// The lock that serialises every request with this key.
    pub fn slot(&self, key: &str) -> Slot {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.entry(key.to_owned()).or_default().clone()
    }

    pub fn insert(&self, charge: Charge) {
        self.charges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(charge);
    }

    /// Every charge in the order they were made, optionally for one order.
    pub fn list(&self, order_id: Option<&str>) -> Vec<Charge> {
        let all = self.charges.read().unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .filter(|c| order_id.is_none_or(|o| c.order_id == o))
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Charge> {
        let all = self.charges.read().unwrap_or_else(PoisonError::into_inner);
        all.iter().find(|c| c.id == id).cloned()
    }
}
