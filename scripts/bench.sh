#!/usr/bin/env bash
# make bench: what the localmesh gateway costs, beside two references, on this machine.
#
# One `localmesh up` (release build) serves the suite. The same closed-loop gRPC load
# (`localmesh load`: GetProduct/ListProducts 8:2, hdrhistogram percentiles) then goes, in turn:
#   direct     h2c straight to one product-v1 pod: no proxy at all;
#   nginx      nginx as the TLS gateway (grpc_pass, 80/20 split_clients over the same three pods);
#   localmesh  the localmesh TLS gateway (HTTPRoutes, 80/20, retries, metrics, access log).
# Runs alternate (direct, nginx, localmesh, direct, ...) so drift on a shared machine hits all
# three alike; each figure is the median over BENCH_RUNS. Ratios are localmesh over the reference.
#
# Knobs: BENCH_RUNS (3), BENCH_DURATION (5s), BENCH_CONCURRENCY (16), BENCH_CONNECTIONS (2).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
runs=${BENCH_RUNS:-3}
duration=${BENCH_DURATION:-5s}
concurrency=${BENCH_CONCURRENCY:-16}
connections=${BENCH_CONNECTIONS:-2}
host=sit-gateway.tcex.com.vn

for tool in jq nginx curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "bench: $tool is missing: run scripts/install-system-deps.sh bench (make bench does)" >&2
    exit 2
  }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$bin/localmesh" ] || { echo "bench: $bin/localmesh is missing: run make build" >&2; exit 2; }

work=$(mktemp -d)
up_pid=""
nginx_pid=""
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "bench: starting localmesh up (logs in $work/up.log)"
"$bin/localmesh" up --root "$root" --bin-dir "$bin" --data-dir "$work/data" \
  --gateway-port 0 --admin-port 0 >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 300); do
  grep -q '"localmesh is ready"' "$work/up.log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; echo "bench: localmesh up exited" >&2; exit 1; }
  sleep 0.1
done
grep -q '"localmesh is ready"' "$work/up.log" || { echo "bench: localmesh up not ready in 30 s" >&2; exit 1; }

log_json() { grep '^{' "$work/up.log" | jq -c "$@"; }
gateway=$(log_json -r 'select(.message == "localmesh is ready") | .gateway')
pods() { log_json -r "select(.message == \"pod ready; endpoint registered\" and (.pod_name | startswith(\"$1-\"))) | .addr"; }
mapfile -t v1 < <(pods product-v1)
mapfile -t v2 < <(pods product-v2)
if [ ${#v1[@]} -eq 0 ] || [ ${#v2[@]} -eq 0 ]; then
  echo "bench: no product pods in $work/up.log" >&2
  exit 1
fi
certs=$root/gateway/certs

# nginx in the foreground from the work dir: TLS + h2 for the gateway host, 80/20 per request
# (split on $request_id), premium to v2, keepalive to the pods, no access log (localmesh's JSON
# access log is on: the comparison is against a lean reference).
nginx_port=""
for _ in $(seq 50); do
  p=$(shuf -i 20000-32000 -n 1)
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { nginx_port=$p; break; }
done
[ -n "$nginx_port" ] || { echo "bench: no free port for nginx" >&2; exit 1; }
mkdir -p "$work/nginx"
{
  echo "worker_processes auto; daemon off; pid $work/nginx/nginx.pid; user root;"
  echo "error_log $work/nginx/error.log warn;"
  echo "events { worker_connections 1024; }"
  echo "http {"
  echo "  access_log off;"
  # nginx closes a connection after 1000 requests by default (GOAWAY): calls in flight then fail.
  echo "  keepalive_requests 1000000;"
  echo "  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;"
  echo "  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;"
  echo "  upstream product_v1 { $(printf 'server %s; ' "${v1[@]}") keepalive 32; keepalive_requests 1000000; }"
  echo "  upstream product_v2 { $(printf 'server %s; ' "${v2[@]}") keepalive 32; keepalive_requests 1000000; }"
  echo "  split_clients \"\${request_id}\" \$canary { 80% product_v1; * product_v2; }"
  echo "  map \$http_user_type \$product { premium product_v2; default \$canary; }"
  echo "  server {"
  echo "    listen 127.0.0.1:$nginx_port ssl http2;"
  echo "    server_name $host;"
  echo "    ssl_certificate $certs/tls.crt; ssl_certificate_key $certs/tls.key;"
  echo "    location / { grpc_pass grpc://\$product; }"
  echo "  }"
  echo "}"
} >"$work/nginx/nginx.conf"
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && break
  sleep 0.1
done

load() {
  "$bin/localmesh" load --json --duration "$duration" --concurrency "$concurrency" \
    --connections "$connections" "$@"
}
declare -A target=(
  [direct]="--plaintext --target ${v1[0]} --authority product-service:50051"
  [nginx]="--target 127.0.0.1:$nginx_port --cacert $certs/ca.crt --authority $host"
  [localmesh]="--target $gateway --cacert $certs/ca.crt --authority $host"
)
names=(direct nginx localmesh)
echo "bench: $runs x ${names[*]}, $duration each, concurrency $concurrency over $connections connections"
for i in $(seq "$runs"); do
  for n in "${names[@]}"; do
    # shellcheck disable=SC2086 # the target flags are words on purpose
    load ${target[$n]} >"$work/$n.$i.json"
    printf '  run %d %-9s %8.0f req/s  p99 %6.2f ms  failed %s\n' "$i" "$n" \
      "$(jq .throughput_rps "$work/$n.$i.json")" "$(jq .latency_ms.p99 "$work/$n.$i.json")" \
      "$(jq .failed "$work/$n.$i.json")"
  done
done

# The median of one figure over a setup's runs, rounded for the table.
median() {
  jq -s "map($2) | sort | .[length / 2 | floor]" "$work/$1".*.json |
    awk '{ if ($1 >= 100) printf "%.0f", $1; else printf "%.2f", $1 }'
}
peak_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
printf '%-22s %12s %12s %12s %16s %16s\n' "" direct nginx localmesh "localmesh/direct" "localmesh/nginx"
for row in "throughput req/s:.throughput_rps" "p50 ms:.latency_ms.p50" "p90 ms:.latency_ms.p90" \
  "p99 ms:.latency_ms.p99" "max ms:.latency_ms.max" "failed calls:.failed"; do
  label=${row%%:*}
  expr=${row#*:}
  d=$(median direct "$expr")
  g=$(median nginx "$expr")
  l=$(median localmesh "$expr")
  printf '%-22s %12s %12s %12s %16s %16s\n' "$label" "$d" "$g" "$l" "$(ratio "$l" "$d")" "$(ratio "$l" "$g")"
done
nginx_kib=0
for p in $(pgrep -P "$nginx_pid") "$nginx_pid"; do nginx_kib=$((nginx_kib + $(peak_kib "$p"))); done
lm_kib=$(peak_kib "$up_pid")
echo
printf '%-22s %12s %12s %12s %16s %16s\n' "peak RSS MiB" "-" "$((nginx_kib / 1024))" "$((lm_kib / 1024))" "-" \
  "$(ratio "$lm_kib" "$nginx_kib")"
echo "(nginx: master and workers summed; localmesh: the gateway and sidecar process, not its pods)"
v2_share=$(jq -s 'map(.versions.v2 // 0) | add' "$work"/localmesh.*.json)
all=$(jq -s 'map((.versions.v1 // 0) + (.versions.v2 // 0)) | add' "$work"/localmesh.*.json)
echo "localmesh split: v2 answered $v2_share of $all calls ($(ratio "$((v2_share * 100))" "$all") %)"
