//! A Deployment's controller, as Kubernetes' Deployment controller drives its ReplicaSets: it keeps
//! `replicas` pods of the current pod template, scales when `replicas` changes, and replaces the
//! pods of an older template by its `strategy` (`RollingUpdate` within `maxSurge` and
//! `maxUnavailable`, each new pod counted only once ready; `Recreate`: the old ones gone first).
//! A deleted Deployment's pods are stopped. Each decision is [`step`], a pure function of what the
//! controller sees, run again whenever a pod or the Deployment changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::run::PodRun;
use super::supervisor::Maker;
use crate::model::{Key, Mesh, Strategy, Workload};

/// The Deployment as last pushed, with the routing model it came in.
#[derive(Clone)]
pub(super) struct Desired {
    pub mesh: Arc<Mesh>,
    pub workload: Arc<Workload>,
}

/// One of the controller's pods, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub name: String,
    /// Of the current pod template.
    pub current: bool,
    pub ready: bool,
}

/// What one step does: start this many pods of the current template, stop these.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Step {
    pub start: u32,
    pub stop: Vec<String>,
}

/// Which pods go first when some must: not ready before ready, then the newest (the ReplicaSet
/// controller's ranking of pods to delete, `ActivePodsWithRanks`).
fn victims<'a>(pods: impl Iterator<Item = &'a Seen>, n: usize) -> Vec<String> {
    let mut ranked: Vec<(usize, &Seen)> = pods.enumerate().collect();
    ranked.sort_by_key(|(i, p)| (p.ready, std::cmp::Reverse(*i)));
    ranked.into_iter().take(n).map(|(_, p)| p.name.clone()).collect()
}

/// One step towards `replicas` ready pods of the current template, as Kubernetes' Deployment
/// controller takes it (`pkg/controller/deployment`: `rolling.go` reconcileNewReplicaSet and
/// reconcileOldReplicaSets, `recreate.go`). `pods` are the running ones, oldest first;
/// `old_terminating` counts pods of older templates still stopping.
pub(super) fn step(replicas: u32, strategy: &Strategy, pods: &[Seen], old_terminating: usize) -> Step {
    let replicas = replicas as usize;
    let new: Vec<&Seen> = pods.iter().filter(|p| p.current).collect();
    let old: Vec<&Seen> = pods.iter().filter(|p| !p.current).collect();
    let mut out = Step::default();
    if matches!(strategy, Strategy::Recreate) && !old.is_empty() {
        out.stop = old.iter().map(|p| p.name.clone()).collect();
        return out;
    }
    if matches!(strategy, Strategy::Recreate) && old_terminating > 0 {
        return out;
    }
    // The current template's pods: scaled down at once, scaled up within the surge.
    let (surge, unavailable) = strategy.fenceposts(replicas as u32);
    let mut started = 0;
    if new.len() > replicas {
        out.stop = victims(new.iter().copied(), new.len() - replicas);
    } else if new.len() < replicas {
        let room = (replicas + surge as usize).saturating_sub(pods.len());
        started = (replicas - new.len()).min(room);
        out.start = started as u32;
    }
    if old.is_empty() {
        return out;
    }
    // The old templates' pods: only as far as `replicas - maxUnavailable` stay ready, not-ready
    // ones first (they serve nothing).
    let min_available = replicas.saturating_sub(unavailable as usize);
    let new_unavailable = new.iter().filter(|p| !p.ready).count() + started;
    let all = pods.len() + started;
    let mut budget = all.saturating_sub(min_available + new_unavailable);
    let unready_old: Vec<String> = victims(old.iter().copied().filter(|p| !p.ready), budget);
    budget -= unready_old.len();
    out.stop.extend(unready_old);
    let available = pods.iter().filter(|p| p.ready).count();
    let ready_old = budget.min(available.saturating_sub(min_available));
    out.stop
        .extend(victims(old.iter().copied().filter(|p| p.ready), ready_old));
    out
}

/// Runs one Deployment's pods until it is deleted (`None`) or the sender is gone; then stops them
/// (with their preStop unless `localmesh up` is stopping) and returns once they are gone.
pub(super) async fn control(key: Key, mut desired: watch::Receiver<Option<Desired>>, maker: Arc<Maker>) {
    let mut pods: Vec<(PodRun, Duration)> = Vec::new();
    let mut stopping: JoinSet<String> = JoinSet::new();
    let mut changed = maker.ctx.changed.subscribe();
    // Templates of the pods still stopping.
    let mut stopping_templates: Vec<(String, String)> = Vec::new();
    // After a pod could not be started: try again later rather than in a loop.
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let want = desired.borrow_and_update().clone();
        let Some(want) = want else {
            let fast = maker.shutting_down();
            for (p, pre_stop) in pods.drain(..) {
                stopping.spawn(stop(p, if fast { Duration::ZERO } else { pre_stop }));
            }
            while stopping.join_next().await.is_some() {}
            return;
        };
        let template = want.workload.template_hash();
        let seen: Vec<Seen> = pods
            .iter()
            .map(|(p, _)| Seen {
                name: p.name.clone(),
                current: p.template == template,
                ready: maker.ctx.is_ready(&p.name),
            })
            .collect();
        let old_terminating = stopping_templates.iter().filter(|(_, t)| *t != template).count();
        let mut s = step(want.workload.replicas, &want.workload.strategy, &seen, old_terminating);
        if retry_at.is_some_and(|t| tokio::time::Instant::now() < t) {
            s.start = 0;
        }
        if s.start > 0 || !s.stop.is_empty() {
            tracing::info!(
                deployment = %key,
                replicas = want.workload.replicas,
                start = s.start,
                stop = ?s.stop,
                strategy = %want.workload.strategy,
                "deployment progressing"
            );
        }
        for name in &s.stop {
            if let Some(i) = pods.iter().position(|(p, _)| &p.name == name) {
                let (p, pre_stop) = pods.remove(i);
                stopping_templates.push((p.name.clone(), p.template.clone()));
                stopping.spawn(stop(p, pre_stop));
            }
        }
        for _ in 0..s.start {
            match maker.start(&want.mesh, &want.workload) {
                Ok(p) => pods.push((p, want.workload.pre_stop)),
                Err(e) => {
                    tracing::error!(deployment = %key, error = %e, "cannot start a pod; trying again in 1s");
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    break;
                }
            }
        }
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = desired.changed() => if r.is_err() {
                // The supervisor is gone: treated as deleted.
                desired = watch::channel(None).1;
            },
            _ = changed.changed() => {}
            Some(Ok(name)) = stopping.join_next(), if !stopping.is_empty() => {
                stopping_templates.retain(|(n, _)| *n != name);
            }
            () = retry => retry_at = None,
        }
    }
}

async fn stop(p: PodRun, pre_stop: Duration) -> String {
    let name = p.name.clone();
    let _ = p.stop(pre_stop).await;
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Scaled;

    fn pod(name: &str, current: bool, ready: bool) -> Seen {
        Seen {
            name: name.into(),
            current,
            ready,
        }
    }

    const SURGE_1: Strategy = Strategy::RollingUpdate {
        max_surge: Scaled::Count(1),
        max_unavailable: Scaled::Count(0),
    };

    #[test]
    fn a_rolling_update_with_surge_1_and_none_unavailable_goes_one_pod_at_a_time() {
        let (a, b) = (pod("a", false, true), pod("b", false, true));
        // One new pod over the two old ones; none stopped until it is ready.
        assert_eq!(
            step(2, &SURGE_1, &[a.clone(), b.clone()], 0),
            Step { start: 1, stop: vec![] }
        );
        let starting = pod("c", true, false);
        assert_eq!(step(2, &SURGE_1, &[a.clone(), b.clone(), starting], 0), Step::default());
        // Ready: one old pod goes (the newest of them), and then another new one may start.
        let c = pod("c", true, true);
        assert_eq!(
            step(2, &SURGE_1, &[a.clone(), b.clone(), c.clone()], 0),
            Step {
                start: 0,
                stop: vec!["b".into()]
            }
        );
        assert_eq!(
            step(2, &SURGE_1, &[a.clone(), c.clone()], 1),
            Step { start: 1, stop: vec![] }
        );
        let d = pod("d", true, true);
        assert_eq!(
            step(2, &SURGE_1, &[a, c.clone(), d.clone()], 1),
            Step {
                start: 0,
                stop: vec!["a".into()]
            }
        );
        assert_eq!(step(2, &SURGE_1, &[c, d], 2), Step::default(), "done");
    }

    #[test]
    fn max_unavailable_lets_old_pods_go_before_new_ones_are_ready() {
        let s = Strategy::RollingUpdate {
            max_surge: Scaled::Count(0),
            max_unavailable: Scaled::Count(1),
        };
        let (a, b) = (pod("a", false, true), pod("b", false, true));
        assert_eq!(
            step(2, &s, &[a.clone(), b.clone()], 0),
            Step {
                start: 0,
                stop: vec!["b".into()]
            }
        );
        assert_eq!(
            step(2, &s, std::slice::from_ref(&a), 1),
            Step { start: 1, stop: vec![] }
        );
        assert_eq!(step(2, &s, &[a, pod("c", true, false)], 1), Step::default());
    }

    #[test]
    fn unready_old_pods_go_first_and_scaling_stops_unready_then_newest() {
        let old = [pod("a", false, true), pod("b", false, false)];
        let new = pod("c", true, true);
        let s = step(2, &SURGE_1, &[old[0].clone(), old[1].clone(), new], 0);
        assert_eq!(s.stop, ["b"], "the old pod serving nothing");
        let pods = [pod("a", true, true), pod("b", true, false), pod("c", true, true)];
        assert_eq!(step(1, &SURGE_1, &pods, 0).stop, ["b", "c"]);
        assert_eq!(step(4, &SURGE_1, &pods, 0).start, 1);
        assert_eq!(step(0, &SURGE_1, &pods, 0).stop.len(), 3);
    }

    #[test]
    fn recreate_stops_every_old_pod_and_starts_once_they_are_gone() {
        let pods = [pod("a", false, true), pod("b", false, true)];
        assert_eq!(step(2, &Strategy::Recreate, &pods, 0).stop, ["a", "b"]);
        assert_eq!(step(2, &Strategy::Recreate, &[], 2), Step::default());
        assert_eq!(step(2, &Strategy::Recreate, &[], 0).start, 2);
    }

    #[test]
    fn percentages_round_the_surge_up_and_the_unavailable_down() {
        let s = Strategy::default();
        assert_eq!(s.fenceposts(2), (1, 0));
        assert_eq!(s.fenceposts(4), (1, 1));
        let zero = Strategy::RollingUpdate {
            max_surge: Scaled::Percent(10),
            max_unavailable: Scaled::Percent(10),
        };
        assert_eq!(zero.fenceposts(3), (1, 0));
    }
}
