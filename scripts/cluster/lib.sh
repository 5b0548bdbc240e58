#!/usr/bin/env bash
# Shared helpers of scripts/cluster/*.sh. Sourced, not run.
# Settings come from the environment (mk/cluster.mk exports them); the
# defaults here match it, so a script also works when run by hand.

: "${KIND_CLUSTER:=mesh-shop}"
: "${KIND_NODE_IMAGE:=kindest/node:v1.33.1}"
: "${ISTIO_VERSION:=1.28.3}"
: "${GATEWAY_API_VERSION:=v1.4.0}"
: "${IMAGE_REPO:=mesh-shop}"
: "${IMAGE_TAG:=dev}"
: "${GATEWAY_HOST:=sit-gateway.tcex.com.vn}"
: "${GATEWAY_ADDR:=127.0.0.1:8443}"
: "${GATEWAY_HTTP_ADDR:=127.0.0.1:8880}"
: "${CERT_DIR:=gateway/certs}"
: "${SERVICES:=product order payment frontend agent}"
# istioctl: from PATH, else from the release that `make istio` downloads.
: "${ISTIO_DIR:=.data/istio-${ISTIO_VERSION}}"
: "${ISTIOCTL:=}"

KCTX="kind-${KIND_CLUSTER}"

say()  { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# need TOOL: stop with what to install when TOOL is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  case "$1" in
    kind)    die "kind is not installed. Install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (e.g. 'go install sigs.k8s.io/kind@v0.29.0', or 'brew install kind')" ;;
    docker)  die "docker is not installed. Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop, and make sure 'docker info' works" ;;
    kubectl) die "kubectl is not installed. Install it: https://kubernetes.io/docs/tasks/tools/#kubectl (v1.32 or later; it includes kustomize)" ;;
    istioctl) die "istioctl is not installed. Run 'make istio' (it downloads istioctl ${ISTIO_VERSION} into ${ISTIO_DIR}), or: curl -L https://istio.io/downloadIstio | ISTIO_VERSION=${ISTIO_VERSION} sh -" ;;
    grpcurl) die "grpcurl is not installed. Install it: 'go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest', 'brew install grpcurl', or a release binary from https://github.com/fullstorydev/grpcurl/releases (or set GRPC_CLIENT=buf to use buf curl)" ;;
    buf)     die "buf is not installed. 'make tools' puts it in .venv/bin (then: PATH=.venv/bin:\$PATH), or see https://buf.build/docs/installation" ;;
    openssl) die "openssl is not installed. Install it with your package manager (apt-get install openssl, brew install openssl)" ;;
    curl)    die "curl is not installed. Install it with your package manager (apt-get install curl, brew install curl)" ;;
    tar)     die "tar is not installed. Install it with your package manager" ;;
    *)       die "$1 is not installed" ;;
  esac
}

need_docker() {
  need docker
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer ('docker info' fails): start Docker, or add your user to the docker group"
}

# need_cluster: kubectl pointed at the kind cluster, and the cluster up.
need_cluster() {
  need kubectl
  if ! kubectl config get-contexts -o name 2>/dev/null | grep -qx "$KCTX"; then
    die "no kubectl context $KCTX: create the cluster first with 'make cluster-up'"
  fi
  kubectl --context "$KCTX" get --raw /readyz >/dev/null 2>&1 \
    || die "the cluster $KIND_CLUSTER does not answer (kubectl --context $KCTX get --raw /readyz): is Docker running? 'make cluster-up' recreates it"
}

# k: kubectl on the kind cluster, whatever the current context is.
k() { kubectl --context "$KCTX" "$@"; }

# find_istioctl: sets ISTIOCTL, or stops with what to do.
find_istioctl() {
  if [[ -n "$ISTIOCTL" ]]; then return 0; fi
  if [[ -x "$ISTIO_DIR/bin/istioctl" ]]; then
    ISTIOCTL="$ISTIO_DIR/bin/istioctl"
  elif command -v istioctl >/dev/null 2>&1; then
    ISTIOCTL=$(command -v istioctl)
  else
    need istioctl
  fi
  local have
  have=$("$ISTIOCTL" version --remote=false --short 2>/dev/null || true)
  if [[ -n "$have" && "$have" != "$ISTIO_VERSION" ]]; then
    warn "$ISTIOCTL is version $have, the suite pins $ISTIO_VERSION (set ISTIOCTL=, or 'make istio' downloads the pinned one into $ISTIO_DIR)"
  fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 3 s.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 3
  done
  printf '    %s: ok\n' "$what"
}
