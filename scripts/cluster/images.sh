#!/usr/bin/env bash
# make images: one image per service from docker/Dockerfile (target = service),
# tagged $IMAGE_REPO/<service>:$IMAGE_TAG. The dependency layer is shared:
# the first build takes long (fat LTO), the others reuse it.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need_docker
export DOCKER_BUILDKIT=1
# No provenance or SBOM attestations: with Docker's containerd image store they
# become index entries that `docker save` leaves out of the archive, and the
# kind node's `ctr images import` then fails ("content digest ... not found",
# kubernetes-sigs/kind#3795). Only BuildKit's builder (buildx) knows the flags.
attest=()
if docker buildx version >/dev/null 2>&1; then
  attest=(--provenance=false --sbom=false)
fi
for svc in $SERVICES; do
  say "building $IMAGE_REPO/$svc:$IMAGE_TAG"
  docker build "${attest[@]}" -f docker/Dockerfile --target "$svc" -t "$IMAGE_REPO/$svc:$IMAGE_TAG" .
done
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep "^$IMAGE_REPO/" || true
