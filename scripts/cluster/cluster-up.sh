#!/usr/bin/env bash
# make cluster-up: a kind cluster with 127.0.0.1:8443 -> NodePort 30443 (the
# gateway's HTTPS listener) and 127.0.0.1:8880 -> 30080 (its HTTP redirect).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need kind
need_docker
need kubectl

if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  say "kind cluster $KIND_CLUSTER exists (make down deletes it)"
else
  say "creating kind cluster $KIND_CLUSTER ($KIND_NODE_IMAGE)"
  kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" \
    --config scripts/cluster/kind-config.yaml --wait 120s
fi
k cluster-info >/dev/null
k wait --for=condition=Ready nodes --all --timeout=120s >/dev/null
say "cluster ready: kubectl context $KCTX. Next: make istio"
