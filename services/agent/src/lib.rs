//! The AgentSync client: one long-lived bidi stream to ProductService with
//! the `agent-version` and `agent-id` metadata, a ping every interval, and
//! reconnects with exponential backoff after any error. `main.rs` is a thin
//! wrapper; tests drive `Agent::run` in-process.

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod endpoint;
pub mod metrics;
pub mod stream;

pub use agent::{Agent, Ended, Summary, run};
pub use config::Settings;
pub use proto::product::AgentPong;
