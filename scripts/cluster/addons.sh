#!/usr/bin/env bash
# make addons: Prometheus, Jaeger, Kiali, Grafana of the pinned Istio release,
# with Kiali's tracing on, the suite's Grafana dashboard and alert rules
# (observability/kustomization.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need_cluster
k get namespace istio-system >/dev/null 2>&1 || die "namespace istio-system is missing: run 'make istio' first"

say "addons of Istio $ISTIO_VERSION (kubectl apply -k observability)"
# Server-side: the dashboard ConfigMaps are too big for the client-side
# last-applied annotation.
k apply --server-side --force-conflicts -k observability >/dev/null
# Kiali reads its config at start only.
k -n istio-system rollout restart deployment/kiali >/dev/null
for d in prometheus grafana kiali jaeger; do
  k -n istio-system rollout status "deployment/$d" --timeout=300s
done
say "addons ready: make kiali | make jaeger | make grafana"
