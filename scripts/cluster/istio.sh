#!/usr/bin/env bash
# make istio: the Gateway API CRDs of the version Istio was built with, then
# istioctl install with observability/istio/istio-operator.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

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

say "Gateway API CRDs $GATEWAY_API_VERSION (standard channel; Istio $ISTIO_VERSION is built against it)"
k apply --server-side --force-conflicts \
  -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml" >/dev/null
k wait --for=condition=Established --timeout=60s \
  crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io >/dev/null

say "istioctl install ($ISTIOCTL, profile minimal + observability/istio/istio-operator.yaml)"
"$ISTIOCTL" install --context "$KCTX" -y -f observability/istio/istio-operator.yaml
k -n istio-system rollout status deployment/istiod --timeout=180s

say "sidecar injection for namespace default"
k label namespace default istio-injection=enabled --overwrite >/dev/null
say "Istio $ISTIO_VERSION installed. Next: make addons images kind-load deploy"
