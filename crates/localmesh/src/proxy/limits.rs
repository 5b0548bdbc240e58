//! The bounds of the data plane, one set for the gateway and every sidecar: how long a
//! connection may take to handshake, send its headers or sit idle, how many may be open, how long
//! an idle upstream connection is kept, and how much of a request body is kept for retries.
//! Envoy's names and defaults are in [`super::listen`] and beside each flag.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use tokio::time::Instant;

/// The bounds every listener of `localmesh up` applies (one set for the gateway and sidecars).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// A TLS client must finish its handshake within this, e.g. 10s (Envoy's TLS inspector waits
    /// 15 s for a ClientHello).
    #[arg(long = "tls-handshake-timeout", default_value = "10s", value_parser = crate::duration::parse_positive)]
    pub tls_handshake: Duration,
    /// A new connection (after its TLS handshake) must complete its first request's headers
    /// within this, and an HTTP/1.1 connection each request's headers, e.g. 10s.
    #[arg(long = "request-headers-timeout", default_value = "10s", value_parser = crate::duration::parse_positive)]
    pub request_headers: Duration,
    /// A downstream connection with no request in progress for this long is closed (Envoy's
    /// `idle_timeout`, 1 hour), e.g. 1h.
    #[arg(long = "idle-timeout", default_value = "1h", value_parser = crate::duration::parse_positive)]
    pub idle: Duration,
    /// Downstream connections open at once, over every listener; beyond it new ones are closed at
    /// once. Default: half the process's file-descriptor limit (each proxied request may need an
    /// upstream socket too), at most 10000.
    #[arg(long = "max-connections", default_value_t = default_max_connections(), value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_connections: usize,
    /// A pooled upstream connection idle this long is closed (Istio's
    /// `connectionPool.http.idleTimeout`, 1 hour), e.g. 1h.
    #[arg(long = "upstream-idle-timeout", default_value = "1h", value_parser = crate::duration::parse_positive)]
    pub upstream_idle: Duration,
    /// Send an HTTP/2 PING on each downstream connection this often and close the connection if
    /// it is not answered within --http2-keepalive-timeout, e.g. 30s (Envoy's
    /// `connection_keepalive`; off by default, as in Envoy).
    #[arg(long = "http2-keepalive-interval", value_parser = crate::duration::parse_positive)]
    pub http2_keepalive: Option<Duration>,
    /// How long a keepalive PING may go unanswered, e.g. 20s.
    #[arg(long = "http2-keepalive-timeout", default_value = "20s", value_parser = crate::duration::parse_positive)]
    pub http2_keepalive_timeout: Duration,
    /// How much of a request body is kept so that a retry can send it again, e.g. 1MiB (bytes, or
    /// KiB, MiB, GiB). A request whose body grows past it is still forwarded, but never retried:
    /// Envoy's `per_request_buffer_limit_bytes`, which defaults to the listener's 1 MiB buffer
    /// limit.
    #[arg(long = "per-request-buffer-limit", default_value = "1MiB", value_parser = crate::size::parse)]
    pub per_request_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake: Duration::from_secs(10),
            request_headers: Duration::from_secs(10),
            idle: Duration::from_secs(3600),
            max_connections: default_max_connections(),
            upstream_idle: Duration::from_secs(3600),
            http2_keepalive: None,
            http2_keepalive_timeout: Duration::from_secs(20),
            per_request_buffer: 1 << 20,
        }
    }
}

/// Half the soft `RLIMIT_NOFILE`, between 64 and 10000.
pub fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    usize::try_from(soft / 2).unwrap_or(10_000).clamp(64, 10_000)
}

/// The open downstream connections of one proxy, against [`Limits::max_connections`].
#[derive(Debug)]
pub struct Admission {
    open: AtomicUsize,
    max: usize,
    /// When the cap was last logged (the log line is rate-limited to one a second).
    warned: Mutex<Option<Instant>>,
    overflowed: AtomicU64,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Admission {
            open: AtomicUsize::new(0),
            max: max.max(1),
            warned: Mutex::new(None),
            overflowed: AtomicU64::new(0),
        })
    }

    /// A place for a new connection, or `None` at the cap (the caller closes it).
    pub fn admit(self: &Arc<Self>, listener: &str) -> Option<Permit> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev < self.max {
            return Some(Permit(self.clone()));
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        let refused = self.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut warned = crate::lock(&self.warned);
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *warned = Some(Instant::now());
            tracing::warn!(
                listener,
                max_connections = self.max,
                refused_total = refused,
                "connection cap reached: new connections are closed (--max-connections)"
            );
        }
        None
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections closed at the cap since the start.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_max_and_frees_on_drop() {
        let a = Admission::new(2);
        let p1 = a.admit("test").expect("first");
        let _p2 = a.admit("test").expect("second");
        assert!(a.admit("test").is_none(), "the third is over the cap");
        assert_eq!((a.open(), a.overflowed()), (2, 1));
        drop(p1);
        assert!(a.admit("test").is_some(), "a place came free");
    }

    #[test]
    fn the_default_cap_follows_the_file_limit() {
        let n = default_max_connections();
        assert!((64..=10_000).contains(&n), "{n}");
    }
}
