#!/usr/bin/env bash
# make kind-load: copies the locally built images into the kind node
# (the kind overlay uses them with imagePullPolicy IfNotPresent).
#
# Docker has two image stores. With the classic one, `kind load docker-image`
# works. With the containerd image store (Docker 29's default, an option
# before), `docker save` of a whole image index can leave out entries the
# index names (other platforms, attestations) and the node's import fails with
# "content digest ... not found" (kubernetes-sigs/kind#3795). There each image
# is saved for its own platform only (`docker image save --platform`) and the
# archive loaded with `kind load image-archive`.
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
if docker info -f '{{ .DriverStatus }}' 2>/dev/null | grep -q 'io.containerd.snapshotter'; then
  platform=$(docker image inspect -f '{{ .Os }}/{{ .Architecture }}' "${images[0]}")
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  archive=$tmp/images.tar
  say "containerd image store: saving ${images[*]} ($platform) and loading the archive into $KIND_CLUSTER"
  docker image save --platform "$platform" -o "$archive" "${images[@]}"
  kind load image-archive --name "$KIND_CLUSTER" "$archive"
else
  say "loading ${images[*]} into $KIND_CLUSTER"
  kind load docker-image --name "$KIND_CLUSTER" "${images[@]}"
fi
