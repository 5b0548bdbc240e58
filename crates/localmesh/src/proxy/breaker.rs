//! Envoy's per-cluster circuit breakers, from a DestinationRule's `connectionPool`:
//! `http.http2MaxRequests` bounds the requests (streams included) open to the cluster,
//! `tcp.maxConnections` bounds HTTP/1.1 requests in progress (one per connection) with up to
//! `http.http1MaxPendingRequests` waiting for a connection, and `http.maxRetries` bounds the
//! retries in progress. A request over a limit gets 503 / `UNAVAILABLE` with flag UO; a retry over
//! its limit is not made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::ConnectionPool;

/// The breakers of every cluster, made on first use.
#[derive(Debug, Default)]
pub(crate) struct Breakers(Mutex<HashMap<String, Arc<Breaker>>>);

impl Breakers {
    pub(crate) fn get(&self, cluster: &str, pool: &ConnectionPool) -> Arc<Breaker> {
        let mut map = crate::lock(&self.0);
        if let Some(b) = map.get(cluster) {
            return b.clone();
        }
        map.entry(cluster.to_string())
            .or_insert_with(|| Arc::new(Breaker::new(*pool)))
            .clone()
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    pool: ConnectionPool,
    requests: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    connections: Option<Arc<Semaphore>>,
}

/// Which limit a request ran into, for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    Requests(u32),
    Pending(u32),
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overflow::Requests(n) => write!(f, "{n} requests already open (connectionPool.http.http2MaxRequests)"),
            Overflow::Pending(n) => write!(
                f,
                "{n} requests already waiting for a connection (connectionPool.http.http1MaxPendingRequests)"
            ),
        }
    }
}

/// One request admitted to the cluster, counted until it drops (with its response body).
#[derive(Debug)]
pub(crate) struct Admitted {
    breaker: Arc<Breaker>,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.breaker.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One retry in progress, counted until it drops.
#[derive(Debug)]
pub(crate) struct Retrying(Arc<Breaker>);

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds one to `counter` unless it is at `max` (no max: always).
fn take(counter: &AtomicU32, max: Option<u32>) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match max {
            Some(m) if n >= m => None,
            _ => Some(n + 1),
        })
        .is_ok()
}

impl Breaker {
    fn new(pool: ConnectionPool) -> Self {
        let connections = pool
            .max_connections
            .map(|n| Arc::new(Semaphore::new(usize::try_from(n).unwrap_or(usize::MAX))));
        Breaker {
            pool,
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            connections,
        }
    }

    /// Admits a request, waiting for an HTTP/1.1 connection slot if `http1` and the pool is full.
    pub(crate) async fn admit(self: &Arc<Self>, http1: bool) -> Result<Admitted, Overflow> {
        if !take(&self.requests, self.pool.http2_max_requests) {
            return Err(Overflow::Requests(self.pool.http2_max_requests.unwrap_or(0)));
        }
        let mut admitted = Admitted {
            breaker: self.clone(),
            _connection: None,
        };
        let Some(slots) = self.connections.as_ref().filter(|_| http1) else {
            return Ok(admitted);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            admitted._connection = Some(permit);
            return Ok(admitted);
        }
        if !take(&self.pending, self.pool.http1_max_pending_requests) {
            return Err(Overflow::Pending(self.pool.http1_max_pending_requests.unwrap_or(0)));
        }
        let permit = slots.clone().acquire_owned().await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        admitted._connection = permit.ok();
        Ok(admitted)
    }

    /// A retry, or `None` when `maxRetries` retries are already in progress.
    pub(crate) fn retry(self: &Arc<Self>) -> Option<Retrying> {
        take(&self.retries, self.pool.max_retries).then(|| Retrying(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(pool: ConnectionPool) -> Arc<Breaker> {
        Breakers::default().get("c", &pool)
    }

    #[tokio::test]
    async fn open_requests_are_bounded_and_released_on_drop() {
        let b = breaker(ConnectionPool {
            http2_max_requests: Some(2),
            ..Default::default()
        });
        let first = b.admit(false).await.expect("1");
        let _second = b.admit(false).await.expect("2");
        assert_eq!(b.admit(false).await.expect_err("3"), Overflow::Requests(2));
        drop(first);
        b.admit(false).await.expect("a slot came free");
    }

    #[tokio::test]
    async fn http1_requests_wait_for_a_connection_up_to_the_pending_limit() {
        let b = breaker(ConnectionPool {
            max_connections: Some(1),
            http1_max_pending_requests: Some(1),
            ..Default::default()
        });
        let on_the_connection = b.admit(true).await.expect("the connection");
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.admit(true).await.map(|_| ()) }
        });
        while b.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.admit(true).await.expect_err("over"), Overflow::Pending(1));
        b.admit(false).await.expect("HTTP/2 requests multiplex and do not wait");
        drop(on_the_connection);
        waiting.await.expect("join").expect("the waiter got the connection");
    }

    #[test]
    fn retries_in_progress_are_bounded() {
        let b = breaker(ConnectionPool {
            max_retries: Some(1),
            ..Default::default()
        });
        let r = b.retry().expect("first retry");
        assert!(b.retry().is_none(), "maxRetries reached");
        drop(r);
        assert!(b.retry().is_some());
        assert!(
            breaker(ConnectionPool::default()).retry().is_some(),
            "no limit by default"
        );
    }
}
