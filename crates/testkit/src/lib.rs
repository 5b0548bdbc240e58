//! Real servers for integration tests: throwaway PostgreSQL clusters ([`PgCluster`]), an
//! OTLP trace collector ([`otlp::Collector`]) and [`free_port`].
//!
//! Nothing here skips a test: when PostgreSQL is missing, starting a cluster
//! fails with a message saying that `make tools` installs it.

pub mod browser;
mod metrics;
pub mod otlp;
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

/// Copies `src` into `dst` recursively: a test's own copy of the repository's manifests, to plant
/// a fault in.
pub fn copy_tree(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let p = e.expect("dir entry").path();
        let to = dst.join(p.file_name().expect("file name"));
        if p.is_dir() {
            copy_tree(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}
