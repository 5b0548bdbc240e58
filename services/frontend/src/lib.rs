//! The shop's web front: HTML pages and a JSON API over product-service and
//! order-service (gRPC), showing on every answer which version and pod of a
//! backend served it, and on `/mesh` how the calls split across versions.
//! `main.rs` is a thin wrapper; tests start it in-process with [`spawn`], or call
//! [`server::router`] directly over fake [`backends::Backends`] (`tests/router.rs`).

pub mod api;
pub mod backends;
pub mod config;
pub mod errors;
pub mod extract;
pub mod health;
pub mod input;
pub mod mesh;
pub mod pages;
pub mod server;
pub mod state;
pub mod templates;
pub mod views;

pub use config::Config;
pub use server::{Handle, spawn};
