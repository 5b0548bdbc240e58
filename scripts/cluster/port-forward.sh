#!/usr/bin/env bash
# make kiali | jaeger | grafana: port-forward the addon's UI to 127.0.0.1
# (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

need_cluster
case "${1:-}" in
  kiali)   svc=kiali;   ports=20001:20001; url=http://localhost:20001/kiali ;;
  jaeger)  svc=tracing; ports=16686:80;    url=http://localhost:16686/jaeger ;;
  grafana) svc=grafana; ports=3000:3000;   url="http://localhost:3000/d/mesh-shop" ;;
  *) die "usage: $0 kiali|jaeger|grafana" ;;
esac
k -n istio-system get service "$svc" >/dev/null 2>&1 || die "service istio-system/$svc not found: run 'make addons' first"
say "$1 on $url (Ctrl-C to stop)"
exec kubectl --context "$KCTX" -n istio-system port-forward "service/$svc" "$ports"
