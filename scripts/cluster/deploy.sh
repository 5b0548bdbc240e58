#!/usr/bin/env bash
# make deploy: certificates, kubectl apply -k manifests/overlays/$OVERLAY,
# then wait until the gateway is Programmed and every workload is ready.
# AMBIENT=1 (overlay ambient or ambient-agents): the ambient data plane, with
# the waypoint; docs/ambient.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

: "${AMBIENT:=}"
: "${OVERLAY:=$([[ -n "$AMBIENT" ]] && echo ambient || echo kind)}"
# The overlay decides: OVERLAY=ambient set by hand means ambient too.
if [[ "$OVERLAY" == ambient* ]]; then AMBIENT=1; fi
[[ -d "manifests/overlays/$OVERLAY" ]] || die "no overlay manifests/overlays/$OVERLAY"
need_cluster
need openssl

for crd in gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io \
           virtualservices.networking.istio.io authorizationpolicies.security.istio.io telemetries.telemetry.istio.io; do
  k get crd "$crd" >/dev/null 2>&1 || die "CRD $crd is missing: run 'make istio' first"
done
k -n istio-system get deployment istiod >/dev/null 2>&1 || die "istiod is not installed: run 'make istio' first"
if [[ -n "$AMBIENT" ]]; then
  k -n istio-system get daemonset ztunnel >/dev/null 2>&1 \
    || die "ztunnel is not installed (Istio without the ambient profile): run 'make istio AMBIENT=1' first"
fi
k -n istio-system get service jaeger-collector >/dev/null 2>&1 \
  || warn "the Jaeger addon is not installed (no traces until 'make addons')"

say "certificates (gateway/certs.sh)"
KUBE_CONTEXT="$KCTX" CERT_DIR="$CERT_DIR" GATEWAY_HOST="$GATEWAY_HOST" gateway/certs.sh

# Switching data planes: kubectl apply does not delete what the other overlay
# added, and the two must not mix (a mesh VirtualService and a Service-attached
# HTTPRoute for one host, sidecar injection and ambient capture).
if [[ -n "$AMBIENT" ]]; then
  k label namespace default istio-injection- >/dev/null 2>&1 || true
  k -n default delete virtualservices.networking.istio.io -l app.kubernetes.io/part-of=mesh-shop --ignore-not-found
else
  k delete gateways.gateway.networking.k8s.io,httproutes.gateway.networking.k8s.io,authorizationpolicies.security.istio.io,peerauthentications.security.istio.io \
    -n default -l mesh-shop/dataplane=ambient --ignore-not-found
fi

say "kubectl apply -k manifests/overlays/$OVERLAY"
k apply -k "manifests/overlays/$OVERLAY"

say "waiting for the gateway (Programmed) and the workloads (Available)"
wait_for 300 "Gateway public-api-gateway Programmed" \
  k -n gateway wait --for=condition=Programmed gateways.gateway.networking.k8s.io/public-api-gateway --timeout=10s \
  || die "Gateway not Programmed after 300 s: kubectl -n gateway describe gateway public-api-gateway; kubectl -n istio-system logs deploy/istiod | grep -i gateway"
k -n gateway rollout status deployment/public-api-gateway-istio --timeout=180s
if [[ -n "$AMBIENT" ]]; then
  # The waypoint: istiod deploys it as Deployment "waypoint" from the Gateway.
  wait_for 180 "waypoint Programmed" \
    k -n default wait --for=condition=Programmed gateways.gateway.networking.k8s.io/waypoint --timeout=10s \
    || die "waypoint not Programmed after 180 s: kubectl -n default describe gateway waypoint; istioctl waypoint list"
  k -n default rollout status deployment/waypoint --timeout=180s
fi
k -n default rollout status statefulset/postgres --timeout=300s
for d in product-v1 product-v2 payment order frontend; do
  k -n default rollout status "deployment/$d" --timeout=300s \
    || die "deployment $d is not ready: kubectl -n default describe deployment/$d; kubectl -n default get pods (see docs/cluster.md, troubleshooting)"
done
if [[ "$OVERLAY" == *agents* ]]; then
  for d in agent-v1-1 agent-v2-1; do k -n default rollout status "deployment/$d" --timeout=180s; done
fi

containers=$(k -n default get pods -l 'app.kubernetes.io/part-of=mesh-shop' -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.containers[*].name}{" "}{.spec.initContainers[*].name}{"\n"}{end}' 2>/dev/null || true)
if [[ -n "$AMBIENT" ]]; then
  # Pods created while the namespace still injected sidecars keep them (a
  # sidecar takes precedence over ztunnel); the ambient policies do not
  # expect that. They need a restart, nothing else: ambient capture needs none.
  withsidecar=$(grep istio-proxy <<<"$containers" | awk '{print $1}' || true)
  if [[ -n "$withsidecar" ]]; then
    warn "pods still with an istio-proxy sidecar: $(echo "$withsidecar" | tr '\n' ' ')"
    warn "restart them: kubectl rollout restart deployment -n default; kubectl rollout restart statefulset/postgres -n default"
  fi
else
  # Pods created before the namespace had its injection label run without a
  # sidecar: mTLS STRICT then refuses them. Say so instead of failing later.
  nosidecar=$(grep -v istio-proxy <<<"$containers" | awk '{print $1}' || true)
  if [[ -n "$nosidecar" ]]; then
    warn "pods without an istio-proxy sidecar: $(echo "$nosidecar" | tr '\n' ' ')"
    warn "restart them: kubectl rollout restart deployment -n default; kubectl rollout restart statefulset/postgres -n default"
  fi
fi

k get httproutes.gateway.networking.k8s.io -n default
if [[ -n "$AMBIENT" ]]; then
  k get namespace default -L istio.io/dataplane-mode
  k -n default get services -L istio.io/use-waypoint -l app.kubernetes.io/part-of=mesh-shop
fi
say "deployed. Next: make verify-cluster (gateway at https://$GATEWAY_ADDR, host $GATEWAY_HOST)"
