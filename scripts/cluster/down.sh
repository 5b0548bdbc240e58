#!/usr/bin/env bash
# make down: deletes the kind cluster (everything in it goes with it).
# The certificates in gateway/certs/ and the istioctl download stay.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need kind
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  say "deleting kind cluster $KIND_CLUSTER"
  kind delete cluster --name "$KIND_CLUSTER"
else
  say "no kind cluster $KIND_CLUSTER"
fi
