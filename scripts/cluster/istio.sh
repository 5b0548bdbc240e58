#!/usr/bin/env bash
# make istio: the Gateway API CRDs of the version Istio was built with, then
# istioctl install with observability/istio/istio-operator.yaml (sidecars), or
# with AMBIENT=1 observability/istio/istio-operator-ambient.yaml (the ambient
# profile: istio-cni and ztunnel instead of sidecar injection; docs/ambient.md).
# Running it again with the other setting switches the installation; then
# `make deploy` with the same setting, which restarts what needs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

: "${AMBIENT:=}"
if [[ -n "$AMBIENT" ]]; then
  OPERATOR=observability/istio/istio-operator-ambient.yaml
  PROFILE=ambient
else
  OPERATOR=observability/istio/istio-operator.yaml
  PROFILE=minimal
fi

need curl
need_cluster

# istioctl of the pinned release (also brings samples/, unused: the addons
# come from observability/kustomization.yaml).
if [[ -z "$ISTIOCTL" && ! -x "$ISTIO_DIR/bin/istioctl" ]]; then
  need tar
  say "downloading Istio $ISTIO_VERSION into $ISTIO_DIR"
  mkdir -p "$(dirname "$ISTIO_DIR")"
  (cd "$(dirname "$ISTIO_DIR")" && curl -fsSL https://istio.io/downloadIstio | ISTIO_VERSION="$ISTIO_VERSION" sh - >/dev/null)
  [[ -d "$(dirname "$ISTIO_DIR")/istio-$ISTIO_VERSION" && "$(dirname "$ISTIO_DIR")/istio-$ISTIO_VERSION" != "$ISTIO_DIR" ]] \
    && mv "$(dirname "$ISTIO_DIR")/istio-$ISTIO_VERSION" "$ISTIO_DIR"
  [[ -x "$ISTIO_DIR/bin/istioctl" ]] || die "the download did not produce $ISTIO_DIR/bin/istioctl; see https://istio.io/latest/docs/setup/additional-setup/download-istio-release/"
fi
find_istioctl

# Experimental channel: the HTTPRoute rules' `retry` (gateway/httproutes.yaml) is one of its fields;
# without it the API server would drop the field and the gateway would retry nothing.
say "Gateway API CRDs $GATEWAY_API_VERSION (experimental channel, for HTTPRoute retry; Istio $ISTIO_VERSION is built against it)"
k apply --server-side --force-conflicts \
  -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/experimental-install.yaml" >/dev/null
k wait --for=condition=Established --timeout=60s \
  crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io >/dev/null

say "istioctl install ($ISTIOCTL, profile $PROFILE + $OPERATOR)"
"$ISTIOCTL" install --context "$KCTX" -y -f "$OPERATOR"
k -n istio-system rollout status deployment/istiod --timeout=180s

if [[ -n "$AMBIENT" ]]; then
  # The node agents: istio-cni redirects the pods' traffic, ztunnel carries it.
  k -n istio-system rollout status daemonset/istio-cni-node --timeout=180s
  k -n istio-system rollout status daemonset/ztunnel --timeout=180s
  # The namespace joins ambient when `make deploy AMBIENT=1` applies its
  # istio.io/dataplane-mode label; a sidecar label set here earlier must go,
  # or new pods would get sidecars as well.
  say "no sidecar injection for namespace default (ambient: manifests/overlays/ambient labels it)"
  k label namespace default istio-injection- >/dev/null 2>&1 || true
  say "Istio $ISTIO_VERSION (ambient) installed. Next: make addons images kind-load deploy AMBIENT=1"
else
  say "sidecar injection for namespace default"
  k label namespace default istio-injection=enabled --overwrite >/dev/null
  k label namespace default istio.io/dataplane-mode- >/dev/null 2>&1 || true
  if k -n istio-system get daemonset ztunnel >/dev/null 2>&1; then
    warn "ztunnel is still installed (an earlier 'make istio AMBIENT=1'); 'istioctl uninstall --purge' and 'make istio' give a clean sidecar install"
  fi
  say "Istio $ISTIO_VERSION installed. Next: make addons images kind-load deploy"
fi
