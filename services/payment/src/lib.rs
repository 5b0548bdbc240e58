//! A stand-in for the external payment provider of the e-commerce flow
//! (`api.payment-provider.com` in the seed): `POST /v1/charges` with an
//! `Idempotency-Key`, in the style of Stripe's API.
//!
//! Charges live in memory only: this is a test double for a third party,
//! not a ledger. A restart forgets every charge and every key.
//! `main.rs` is a thin wrapper; tests start it in-process with [`spawn`].

pub mod amount;
mod api;
pub mod config;
pub mod faults;
pub mod server;
mod store;

pub use config::Config;
pub use faults::Faults;
pub use server::{Handle, spawn};
