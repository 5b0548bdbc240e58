#!/usr/bin/env bash
# make bench: what the localmesh gateway costs, beside two references, and what its tracing costs,
# on this machine.
#
# Two `localmesh up` (release build, every port 0) serve the suite side by side: the repo's, whose
# Telemetry (manifests/istio/telemetry.yaml) samples 100 % of traces into localmesh's in-memory
# trace store, and one from a temporary copy of gateway/ (certs included: the same CA) and
# manifests/ in which every randomSamplingPercentage is 0.0, with its own --data-dir. Both keep
# their spans in the store (OTEL_EXPORTER_OTLP_ENDPOINT is unset for them) with the same bounds.
# The same closed-loop gRPC load (`localmesh load`: GetProduct/ListProducts 8:2, hdrhistogram
# percentiles) then goes, in turn:
#   direct        h2c straight to one product-v1 pod (of the 100 % instance): no proxy at all;
#   nginx         nginx as the TLS gateway (grpc_pass, 80/20 split_clients over the same three pods);
#   localmesh     the localmesh TLS gateway (HTTPRoutes, 80/20, retries, metrics, access log), traced
#                 at 100 %;
#   localmesh 0%  the same gateway of the instance sampling 0 %.
# Runs alternate (direct, nginx, localmesh, localmesh 0%, direct, ...) so drift on a shared machine
# hits all four alike; each figure is the median over BENCH_RUNS.
#
# The first table is localmesh (100 %) over the references. The second is tracing's cost: sampled
# 0 % beside 100 %, their ratio and the goal (100 % keeps at least 0.9x the 0 % throughput), each
# instance's peak RSS (VmHWM of the localmesh process, not its pods), then the 100 % instance's trace
# store (traces, bytes, spans from its /stats/prometheus) against its bounds, under load (right
# after its last run) and settled (after the last 0 % run: the pods' last span batches are in),
# with evictions and dropped spans. A warning follows any dropped span, a store above a bound or a
# trace kept by the 0 % instance.
#
# Knobs: BENCH_RUNS (3), BENCH_DURATION (5s), BENCH_CONCURRENCY (16), BENCH_CONNECTIONS (2),
# BENCH_MAX_TRACES (10000) and BENCH_MAX_TRACE_MIB (64): both instances' trace store bounds
# (--max-traces, --max-trace-bytes; localmesh's defaults).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
runs=${BENCH_RUNS:-3}
duration=${BENCH_DURATION:-5s}
concurrency=${BENCH_CONCURRENCY:-16}
connections=${BENCH_CONNECTIONS:-2}
max_traces=${BENCH_MAX_TRACES:-10000}
max_trace_mib=${BENCH_MAX_TRACE_MIB:-64}
goal=0.9
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
up0_pid=""
nginx_pid=""
cleanup() {
  set +e
  local p
  for p in "$nginx_pid" "$up_pid" "$up0_pid"; do [ -z "$p" ] || kill "$p" 2>/dev/null; done
  for p in "$nginx_pid" "$up_pid" "$up0_pid"; do [ -z "$p" ] || wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# One `localmesh up`: root, data dir, log; every port 0, spans into its own store.
start_up() {
  env -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin/localmesh" up --root "$1" --bin-dir "$bin" --data-dir "$2" \
    --gateway-port 0 --admin-port 0 --console-port 0 --otlp-port 0 \
    --max-traces "$max_traces" --max-trace-bytes "${max_trace_mib}MiB" >"$3" 2>&1 &
}
wait_ready() { # pid log
  for _ in $(seq 600); do
    grep -q '"localmesh is ready"' "$2" && return 0
    kill -0 "$1" 2>/dev/null || { cat "$2" >&2; echo "bench: localmesh up exited (log $2)" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: localmesh up not ready in 60 s (log $2)" >&2
  exit 1
}

echo "bench: starting localmesh up, sampled 100 % (logs in $work/up.log)"
start_up "$root" "$work/data" "$work/up.log"
up_pid=$!
# It makes gateway/certs on a fresh checkout: the copy takes them once they are all there.
certs=$root/gateway/certs
for _ in $(seq 300); do
  [ -f "$certs/ca.crt" ] && [ -f "$certs/tls.crt" ] && [ -f "$certs/tls.key" ] && break
  kill -0 "$up_pid" 2>/dev/null || break
  sleep 0.1
done
[ -f "$certs/ca.crt" ] || { cat "$work/up.log" >&2; echo "bench: no CA in $certs" >&2; exit 1; }

mkdir -p "$work/root0"
cp -R "$root/gateway" "$root/manifests" "$work/root0/"
grep -rlZ --include='*.yaml' --include='*.yml' randomSamplingPercentage "$work/root0" |
  xargs -0 -r sed -i -E 's/^([[:space:]]*randomSamplingPercentage:).*$/\1 0.0/'
grep -q '^[[:space:]]*randomSamplingPercentage: 0\.0$' "$work/root0/manifests/istio/telemetry.yaml" || {
  echo "bench: no randomSamplingPercentage in manifests/istio/telemetry.yaml to set to 0" >&2
  exit 1
}
echo "bench: starting localmesh up, sampled 0 % (from $work/root0, logs in $work/up0.log)"
start_up "$work/root0" "$work/data0" "$work/up0.log"
up0_pid=$!
wait_ready "$up_pid" "$work/up.log"
wait_ready "$up0_pid" "$work/up0.log"

log_json() { grep '^{' "$work/up.log" | jq -c "$@"; }
ready_field() { grep '^{' "$1" | jq -r "select(.message == \"localmesh is ready\") | .$2"; }
gateway=$(ready_field "$work/up.log" gateway)
admin=$(ready_field "$work/up.log" admin)
gateway0=$(ready_field "$work/up0.log" gateway)
admin0=$(ready_field "$work/up0.log" admin)
pods() { log_json -r "select(.message == \"pod ready; endpoint registered\" and (.pod_name | startswith(\"$1-\"))) | .addr"; }
mapfile -t v1 < <(pods product-v1)
mapfile -t v2 < <(pods product-v2)
if [ ${#v1[@]} -eq 0 ] || [ ${#v2[@]} -eq 0 ]; then
  echo "bench: no product pods in $work/up.log" >&2
  exit 1
fi

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
# The references carry a trace context that is not sampled, as localmesh's pods get at 0 %:
# without one the pods would start (and export) a trace of their own for every call.
unsampled='traceparent:00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'
declare -A target=(
  [direct]="--plaintext --target ${v1[0]} --authority product-service:50051 -H $unsampled"
  [nginx]="--target 127.0.0.1:$nginx_port --cacert $certs/ca.crt --authority $host -H $unsampled"
  [localmesh]="--target $gateway --cacert $certs/ca.crt --authority $host"
  [sampled0]="--target $gateway0 --cacert $certs/ca.crt --authority $host"
)
declare -A label=([direct]=direct [nginx]=nginx [localmesh]=localmesh [sampled0]="localmesh 0%")
names=(direct nginx localmesh sampled0)
# The 100 % instance's /stats/prometheus, into a file; one metric of such a file ("-" if absent).
scrape() { curl -fsS --max-time 10 "http://$1/stats/prometheus" >"$2" 2>/dev/null || : >"$2"; }
prom() { awk -v n="$2" '$1 == n { v = $2 } END { print (v == "" ? "-" : v) }' "$1"; }
echo "bench: $runs x direct, nginx, localmesh (sampled 100 %), localmesh 0% (sampled 0 %)," \
  "$duration each, concurrency $concurrency over $connections connections"
for i in $(seq "$runs"); do
  for n in "${names[@]}"; do
    # shellcheck disable=SC2086 # the target flags are words on purpose
    load ${target[$n]} >"$work/$n.$i.json"
    printf '  run %d %-12s %8.0f req/s  p99 %6.2f ms  failed %s\n' "$i" "${label[$n]}" \
      "$(jq .throughput_rps "$work/$n.$i.json")" "$(jq .latency_ms.p99 "$work/$n.$i.json")" \
      "$(jq .failed "$work/$n.$i.json")"
    # The trace store under load: right after each 100 % run, the last one is reported.
    [ "$n" != localmesh ] || scrape "$admin" "$work/store.load.prom"
  done
done
# Settled: the pods' last span batches (1 s apart) have arrived during the last 0 % run.
scrape "$admin" "$work/store.end.prom"
scrape "$admin0" "$work/store0.prom"

# The median of one figure over a setup's runs, rounded for the table.
median() {
  jq -s "map($2) | sort | .[length / 2 | floor]" "$work/$1".*.json |
    awk '{ if ($1 >= 100) printf "%.0f", $1; else printf "%.2f", $1 }'
}
peak_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
ratio() { # a b [decimals]
  awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN { if (b > 0) printf "%." p "f", a / b; else print "-" }'
}

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

# Tracing's cost: the same gateway sampled 0 % and 100 %.
lm0_kib=$(peak_kib "$up0_pid")
mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f", b / 1048576 }'; }
# The verdict compares the unrounded ratio: 0.896 prints as 0.90 but misses 0.9.
verdict=$(awk -v a="$(median localmesh .throughput_rps)" -v b="$(median sampled0 .throughput_rps)" -v g="$goal" \
  'BEGIN { if (b <= 0) print "-"; else printf ">= %.2f %s", g, (a / b >= g ? "met" : "MISSED") }')
echo
printf '%-22s %12s %12s %12s %16s\n' tracing "sampled 0%" "sampled 100%" "100%/0%" goal
for row in "throughput req/s:.throughput_rps:$verdict" "p50 ms:.latency_ms.p50:-" "p99 ms:.latency_ms.p99:-" \
  "failed calls:.failed:-"; do
  IFS=: read -r lbl expr g <<<"$row"
  z=$(median sampled0 "$expr")
  h=$(median localmesh "$expr")
  decimals=2
  [ "$expr" != .throughput_rps ] || decimals=3 # the goal's row: no rounding up to it
  printf '%-22s %12s %12s %12s %16s\n' "$lbl" "$z" "$h" "$(ratio "$h" "$z" "$decimals")" "$g"
done
printf '%-22s %12s %12s %12s %16s\n' "peak RSS MiB" "$((lm0_kib / 1024))" "$((lm_kib / 1024))" \
  "$(ratio "$lm_kib" "$lm0_kib")" "-"
# Anything here means the figures above are not what they claim.
warn() { echo "bench: warning: $*" >&2; }
store_row() { # label, scrape
  local t b
  t=$(prom "$2" localmesh_trace_store_traces)
  b=$(prom "$2" localmesh_trace_store_bytes)
  printf '  %-38s %8s traces %6s MiB %8s spans\n' "$1" "$t" "$(mib "$b")" "$(prom "$2" localmesh_trace_store_spans)"
  if [ "$t" = - ] || [ "$b" = - ]; then
    warn "no trace store figures from http://$admin/stats/prometheus"
    return
  fi
  [ "$t" -le "$max_traces" ] || warn "the store holds $t traces, above its bound of $max_traces"
  [ "$b" -le $((max_trace_mib << 20)) ] || warn "the store holds $b bytes, above its bound of $max_trace_mib MiB"
}
echo "trace store, sampled 100 % (bounds: $max_traces traces, $max_trace_mib MiB):"
store_row "under load (right after its last run)" "$work/store.load.prom"
store_row "settled (after the last 0% run)" "$work/store.end.prom"
evicted=$(prom "$work/store.end.prom" localmesh_trace_store_evicted_traces)
dropped=$(prom "$work/store.end.prom" localmesh_spans_dropped_total)
traces0=$(prom "$work/store0.prom" localmesh_trace_store_traces)
dropped0=$(prom "$work/store0.prom" localmesh_spans_dropped_total)
echo "  $evicted traces evicted since start, $dropped proxy spans dropped"
echo "trace store, sampled 0 %: $traces0 traces kept, $dropped0 proxy spans dropped"
[ "$dropped" = - ] || [ "$dropped" -eq 0 ] || warn "$dropped spans dropped by the 100 % instance (full span queue)"
[ "$dropped0" = - ] || [ "$dropped0" -eq 0 ] || warn "$dropped0 spans dropped by the 0 % instance"
[ "$traces0" = - ] || [ "$traces0" -eq 0 ] || warn "the 0 % instance kept $traces0 traces: it is not sampling 0 %"
