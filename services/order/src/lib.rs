//! OrderService: orders in SQL (an embedded SQLite file by default,
//! PostgreSQL via `DATABASE_URL`), priced line by line with ProductService
//! and charged once per order at the payment provider. `main.rs` is a thin
//! wrapper; tests start it in-process with [`spawn`].

pub mod config;
mod deadline;
mod health;
pub mod payments;
mod pricing;
pub mod request;
pub mod server;
mod service;
mod settler;
pub mod store;

pub use config::{Config, Database, SettleSettings};
pub use server::{Handle, spawn};
