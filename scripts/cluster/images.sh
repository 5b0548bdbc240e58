#!/usr/bin/env bash
# make images: one image per service from docker/Dockerfile (target = service),
# tagged $IMAGE_REPO/<service>:$IMAGE_TAG. The dependency layer is shared:
# the first build takes long (fat LTO), the others reuse it.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need_docker
export DOCKER_BUILDKIT=1
for svc in $SERVICES; do
  say "building $IMAGE_REPO/$svc:$IMAGE_TAG"
  docker build -f docker/Dockerfile --target "$svc" -t "$IMAGE_REPO/$svc:$IMAGE_TAG" .
done
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep "^$IMAGE_REPO/" || true
