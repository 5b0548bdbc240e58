//! Endpoint choice for one attempt: the cluster's healthy endpoints that outlier detection has
//! not ejected, preferably ones the request has not tried yet, balanced by the DestinationRule's
//! `loadBalancer`. Every attempt's outcome comes back here, so a pod that keeps failing (or
//! hanging: a timeout counts as a gateway error) is ejected as Envoy ejects it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::endpoints::Endpoint;
use crate::model::TrafficPolicy;
use crate::outlier::{Outcome, Outlier};
use crate::select;

/// The outlier state of one cluster, over the endpoints it had when last seen.
#[derive(Debug)]
struct ClusterOutlier {
    ids: Vec<u64>,
    outlier: Outlier,
}

/// A cluster's name (`<service>|<subset>|<port>`), its traffic policy and its endpoints now.
#[derive(Clone, Copy)]
pub(crate) struct Cluster<'a> {
    pub name: &'a str,
    pub policy: &'a TrafficPolicy,
    pub endpoints: &'a [Arc<Endpoint>],
}

/// Tokio's clock (so tests with paused time see ejections end), as the outlier state reads time.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[derive(Debug, Default)]
pub(crate) struct Balancer {
    outliers: Mutex<HashMap<String, ClusterOutlier>>,
    /// Round robin's position.
    counter: AtomicU64,
}

impl Balancer {
    /// An endpoint of the cluster for one attempt: healthy, not ejected, preferably not in `tried`.
    pub(crate) fn choose(&self, cluster: Cluster<'_>, req: &select::Request, tried: &[u64]) -> Option<Arc<Endpoint>> {
        let now = now();
        let ejected = self
            .with_outlier(cluster, |o, ids| {
                ids.iter()
                    .enumerate()
                    .filter(|(i, _)| o.is_ejected(*i, now))
                    .map(|(_, id)| *id)
                    .collect::<Vec<u64>>()
            })
            .unwrap_or_default();
        let healthy: Vec<&Arc<Endpoint>> = cluster
            .endpoints
            .iter()
            .filter(|e| e.is_healthy() && !ejected.contains(&e.id))
            .collect();
        let fresh: Vec<&Arc<Endpoint>> = healthy.iter().copied().filter(|e| !tried.contains(&e.id)).collect();
        let pool = if fresh.is_empty() { healthy } else { fresh };
        let in_flight: Vec<u32> = pool.iter().map(|e| e.in_flight()).collect();
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let i = select::choose_endpoint(&cluster.policy.load_balancer, req, &in_flight, counter, rand::random())?;
        pool.get(i).map(|e| (*e).clone())
    }

    /// Counts how an attempt on `ep` ended toward its ejection.
    pub(crate) fn record(&self, cluster: Cluster<'_>, ep: &Endpoint, outcome: Outcome) {
        let now = now();
        self.with_outlier(cluster, |o, ids| {
            let Some(i) = ids.iter().position(|id| *id == ep.id) else {
                return;
            };
            if let Some(e) = o.record(i, outcome, now) {
                // `upstream_pod`, as in the access log: `pod` is the log line's own field (the
                // process writing it).
                tracing::warn!(
                    target: "localmesh::outlier",
                    cluster = cluster.name,
                    upstream_pod = %ep.pod,
                    reason = ?e.reason,
                    ejected_for_ms = e.until.saturating_duration_since(now).as_millis() as u64,
                    "endpoint ejected"
                );
            }
        });
    }

    /// The endpoints outlier detection has ejected from any cluster, now.
    pub(crate) fn ejected(&self) -> HashSet<u64> {
        let now = now();
        crate::lock(&self.outliers)
            .values()
            .flat_map(|c| {
                c.ids
                    .iter()
                    .enumerate()
                    .filter(move |(i, _)| c.outlier.is_ejected(*i, now))
                    .map(|(_, id)| *id)
            })
            .collect()
    }

    fn with_outlier<R>(&self, cluster: Cluster<'_>, f: impl FnOnce(&mut Outlier, &[u64]) -> R) -> Option<R> {
        let cfg = cluster.policy.outlier?;
        let ids: Vec<u64> = cluster.endpoints.iter().map(|e| e.id).collect();
        let mut map = crate::lock(&self.outliers);
        let entry = map.entry(cluster.name.to_string()).or_insert_with(|| ClusterOutlier {
            ids: ids.clone(),
            outlier: Outlier::new(cfg, ids.len()),
        });
        if entry.ids != ids {
            // The endpoint set changed (a pod came or went): start over, as Envoy does for new hosts.
            *entry = ClusterOutlier {
                outlier: Outlier::new(cfg, ids.len()),
                ids,
            };
        }
        Some(f(&mut entry.outlier, &entry.ids))
    }
}
