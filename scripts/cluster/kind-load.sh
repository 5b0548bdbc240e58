#!/usr/bin/env bash
# make kind-load: copies the locally built images into the kind node
# (the kind overlay uses them with imagePullPolicy IfNotPresent).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need kind
need_docker
kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER" || die "no kind cluster $KIND_CLUSTER: run 'make cluster-up' first"
images=()
for svc in $SERVICES; do
  img="$IMAGE_REPO/$svc:$IMAGE_TAG"
  docker image inspect "$img" >/dev/null 2>&1 || die "image $img not found: run 'make images' first"
  images+=("$img")
done
say "loading ${images[*]} into $KIND_CLUSTER"
kind load docker-image --name "$KIND_CLUSTER" "${images[@]}"
