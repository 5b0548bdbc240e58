#!/usr/bin/env bash
# make deploy: certificates, kubectl apply -k manifests/overlays/$OVERLAY,
# then wait until the gateway is Programmed and every workload is ready.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

: "${OVERLAY:=kind}"
need_cluster
need openssl

for crd in gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io \
           virtualservices.networking.istio.io authorizationpolicies.security.istio.io telemetries.telemetry.istio.io; do
  k get crd "$crd" >/dev/null 2>&1 || die "CRD $crd is missing: run 'make istio' first"
done
k -n istio-system get deployment istiod >/dev/null 2>&1 || die "istiod is not installed: run 'make istio' first"
k -n istio-system get service jaeger-collector >/dev/null 2>&1 \
  || warn "the Jaeger addon is not installed (no traces until 'make addons')"

say "certificates (gateway/certs.sh)"
KUBE_CONTEXT="$KCTX" CERT_DIR="$CERT_DIR" GATEWAY_HOST="$GATEWAY_HOST" gateway/certs.sh

say "kubectl apply -k manifests/overlays/$OVERLAY"
k apply -k "manifests/overlays/$OVERLAY"

say "waiting for the gateway (Programmed) and the workloads (Available)"
wait_for 300 "Gateway public-api-gateway Programmed" \
  k -n gateway wait --for=condition=Programmed gateways.gateway.networking.k8s.io/public-api-gateway --timeout=10s \
  || die "Gateway not Programmed after 300 s: kubectl -n gateway describe gateway public-api-gateway; kubectl -n istio-system logs deploy/istiod | grep -i gateway"
k -n gateway rollout status deployment/public-api-gateway-istio --timeout=180s
k -n default rollout status statefulset/postgres --timeout=300s
for d in product-v1 product-v2 payment order frontend; do
  k -n default rollout status "deployment/$d" --timeout=300s \
    || die "deployment $d is not ready: kubectl -n default describe deployment/$d; kubectl -n default get pods (see docs/cluster.md, troubleshooting)"
done
if [[ "$OVERLAY" == *agents* ]]; then
  for d in agent-v1-1 agent-v2-1; do k -n default rollout status "deployment/$d" --timeout=180s; done
fi

# Pods created before the namespace had its injection label run without a
# sidecar: mTLS STRICT then refuses them. Say so instead of failing later.
nosidecar=$(k -n default get pods -l 'app.kubernetes.io/part-of=mesh-shop' -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.containers[*].name}{" "}{.spec.initContainers[*].name}{"\n"}{end}' 2>/dev/null | grep -v istio-proxy | awk '{print $1}' || true)
if [[ -n "$nosidecar" ]]; then
  warn "pods without an istio-proxy sidecar: $(echo "$nosidecar" | tr '\n' ' ')"
  warn "restart them: kubectl rollout restart deployment -n default; kubectl rollout restart statefulset/postgres -n default"
fi

k get httproutes.gateway.networking.k8s.io -n default
say "deployed. Next: make verify-cluster (gateway at https://$GATEWAY_ADDR, host $GATEWAY_HOST)"
