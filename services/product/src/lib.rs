//! ProductService v1/v2: the catalog over gRPC, a price feed and the agents'
//! bidi channel. `main.rs` is a thin wrapper; tests start it in-process.

pub mod agents;
pub mod catalog;
pub mod config;
pub mod faults;
pub mod server;
pub mod service;
pub mod watch;

pub use config::Config;
pub use server::{Handle, spawn};
