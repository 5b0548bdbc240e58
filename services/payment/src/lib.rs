//! A stand-in for the external payment provider of the e-commerce flow
//! (`api.payment-provider.com` in the seed): `POST /v1/charges` with an
//! `Idempotency-Key`, in the style of Stripe's API.
//!
//! Charges and their idempotency keys are kept in SQLite (`PAYMENT_DB_PATH`,
//! a file in WAL mode, mode 0600), so a restart forgets nothing younger
//! than `PAYMENT_KEY_RETENTION` (24 h by default); older keys are purged in
//! the background with their charges. It is a test double for a third
//! party, not a ledger. `main.rs` is a thin wrapper; tests start it
//! in-process with [`spawn`].

pub mod amount;
mod api;
pub mod config;
pub mod faults;
pub mod server;
mod store;

pub use config::{Config, Storage};
pub use faults::Faults;
pub use server::{Handle, spawn};
