//! Real servers for integration tests. Today: throwaway PostgreSQL clusters
//! ([`PgCluster`]) and [`free_port`].
//!
//! Nothing here skips a test: when PostgreSQL is missing, starting a cluster
//! fails with a message saying that `make tools` installs it.

pub mod browser;
mod metrics;
mod pg;
mod process;

pub use metrics::{eventually, sample, scrape};
pub use pg::PgCluster;
pub use process::service_command;

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may
/// take it before the caller binds it; callers that can retry should.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
