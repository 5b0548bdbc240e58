#!/usr/bin/env bash
# make bench: what the localmesh gateway and sidecars cost beside two reference proxies (nginx,
# HAProxy) and the direct call, measured by a third-party load generator (h2load) and by
# `localmesh load`; what open streams cost; and what localmesh's tracing costs. On this machine.
#
# Five `localmesh up` (BENCH_BIN's binaries, every port 0) serve the suite side by side: the
# repo's, whose Telemetry samples 100 % of traces into localmesh's in-memory trace store, writes the
# JSON access log and reports metrics (as make run), and four from temporary copies of gateway/
# (certs included: the same CA), manifests/ and observability/istio/ whose Telemetry turns one
# feature off (tracing: sampled 0 %; the access log; metrics) or all three (lean). Setups:
#   direct        h2c straight to one product-v1 pod (of the 100 % instance): no proxy at all;
#   nginx         nginx as the TLS gateway (h2, grpc_pass, 80/20 split_clients, premium to v2,
#                 keepalive to the same three pods, no access log);
#   haproxy       HAProxy as the TLS gateway (h2, backend servers proto h2 weighted 80/20, premium
#                 to v2, http-reuse always, no log);
#   localmesh     the localmesh TLS gateway (HTTPRoutes, 80/20, metrics, JSON access log), traced
#                 at 100 %;
#   localmesh-0%, lm-no-access-log, lm-no-metrics, localmesh-lean
#                 the same gateway of each variant: what each feature costs;
#   sidecar       east-west: a frontend pod's sidecar listener for product-service (its
#                 PRODUCT_SERVICE_ADDR), h2c, :authority product-service:50051 (product-vs);
#   localmesh+streams  the localmesh gateway while `localmesh load --hold-streams` holds
#                 BENCH_STREAMS AgentSync streams open through it (h2load only).
# Each round runs h2load (BENCH_H2_CONNECTIONS x BENCH_H2_STREAMS, GetProduct "123" as a real
# length-prefixed gRPC message) against every setup in turn, then `localmesh load` (closed loop,
# GetProduct/ListProducts 8:2) against every setup but the streams one, then the streams scenario;
# each figure is the median over BENCH_RUNS rounds. Around every run the proxy's CPU (utime+stime
# from /proc/PID/stat: nginx master and workers, haproxy, the `localmesh up` process, not its
# pods nor its "log <pod>" threads) and the pods' CPU (every pod of the instance serving it, with
# those log copies) are read, and the proxy's peak RSS
# (VmHWM, reset before the run through /proc/PID/clear_refs).
#
# h2load sees HTTP status only (a gRPC error is a 200 with grpc-status in the trailers): before
# the runs each setup answers a short `localmesh load` (GetProduct) whose gRPC status is checked.
#
# Knobs: BENCH_RUNS (3), BENCH_DURATION (5s: ms, s or m), BENCH_REQUESTS (0: h2load runs for
# BENCH_DURATION; N: h2load -n N instead), BENCH_H2_CONNECTIONS (4), BENCH_H2_STREAMS (16),
# BENCH_CONCURRENCY (16) and BENCH_CONNECTIONS (2) for `localmesh load`, BENCH_STREAMS (1000: 0
# skips the streams scenario), BENCH_MAX_TRACES (10000), BENCH_MAX_TRACE_MIB (64), BENCH_BIN
# (target/release; relative to the repository root) and BENCH_SMOKE=1: one round, h2load -n 300,
# `localmesh load` for 1s, 50 streams (what `make test` runs with the debug binaries).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BENCH_BIN:-target/release}
case $bin in /*) ;; *) bin=$root/$bin ;; esac
# settle: seconds to wait before localmesh's RSS without streams (the allocator hands back what
# the last run freed: --memory-release-interval 1s) and with them.
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  runs=${BENCH_RUNS:-1} duration=${BENCH_DURATION:-1s} h2_requests=${BENCH_REQUESTS:-300} streams=${BENCH_STREAMS:-50}
  settle=0.5
else
  runs=${BENCH_RUNS:-3} duration=${BENCH_DURATION:-5s} h2_requests=${BENCH_REQUESTS:-0} streams=${BENCH_STREAMS:-1000}
  settle=1.5
fi
h2_conns=${BENCH_H2_CONNECTIONS:-4}
h2_streams=${BENCH_H2_STREAMS:-16}
concurrency=${BENCH_CONCURRENCY:-16}
connections=${BENCH_CONNECTIONS:-2}
max_traces=${BENCH_MAX_TRACES:-10000}
max_trace_mib=${BENCH_MAX_TRACE_MIB:-64}
goal=0.9
host=sit-gateway.tcex.com.vn
grpc_path=/product.ProductService/GetProduct

die() { echo "bench: $*" >&2; exit 2; }
for knob in runs:BENCH_RUNS h2_conns:BENCH_H2_CONNECTIONS h2_streams:BENCH_H2_STREAMS \
  concurrency:BENCH_CONCURRENCY connections:BENCH_CONNECTIONS max_traces:BENCH_MAX_TRACES \
  max_trace_mib:BENCH_MAX_TRACE_MIB; do
  var=${knob%%:*}
  [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "${knob#*:}=${!var} is not a whole number above 0"
done
[[ $h2_requests =~ ^[0-9]+$ ]] || die "BENCH_REQUESTS=$h2_requests is not a whole number"
[[ $streams =~ ^[0-9]+$ ]] || die "BENCH_STREAMS=$streams is not a whole number"
[[ $duration =~ ^([1-9][0-9]*)(ms|s|m)$ ]] || die "BENCH_DURATION=$duration is not a duration such as 500ms, 5s or 1m"
case ${BASH_REMATCH[2]} in
  ms) duration_ms=${BASH_REMATCH[1]} ;;
  s) duration_ms=$((BASH_REMATCH[1] * 1000)) ;;
  m) duration_ms=$((BASH_REMATCH[1] * 60000)) ;;
esac

missing=()
for tool in jq:jq curl:curl nginx:nginx haproxy:haproxy h2load:nghttp2-client; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool%%:*} (Debian package ${tool#*:})")
done
[ ${#missing[@]} -eq 0 ] ||
  die "missing: ${missing[*]}: run scripts/install-system-deps.sh bench (make bench and make tools do)"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
for b in localmesh product frontend order payment; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing: run make dist (BENCH_BIN=target/dist, what make bench uses), make build (target/release) or cargo build --workspace --bins (target/debug)"
done

work=$(mktemp -d)
res=$work/results
mkdir -p "$res"
up_pid="" nginx_pid="" haproxy_pid="" holder_pid=""
# The variants' `localmesh up` processes, gateways and admins, by setup name.
declare -A variant_pid=() variant_gateway=() variant_admin=()
cleanup() {
  set +e
  local p
  for p in "$holder_pid" "$nginx_pid" "$haproxy_pid" "$up_pid" "${variant_pid[@]}"; do [ -z "$p" ] || kill "$p" 2>/dev/null; done
  for p in "$holder_pid" "$nginx_pid" "$haproxy_pid" "$up_pid" "${variant_pid[@]}"; do [ -z "$p" ] || wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
warn() { echo "bench: warning: $*" >&2; }

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

echo "bench: starting localmesh up from $bin, sampled 100 % (logs in $work/up.log)"
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

# What each feature costs: variants of the suite, each a `localmesh up` of its own from a copy of
# gateway/, manifests/ and observability/istio/ (the IstioOperator too: its meshConfig applies
# locally) that differs from the repository's in Telemetry only, as a user would turn a feature
# off in Istio: every randomSamplingPercentage 0.0 (tracing), or a Telemetry in each namespace of
# the suite's proxies (gateway, default; it outranks the mesh-wide one) with
# `accessLogging: [{disabled: true}]` or `metrics: [{overrides: [{disabled: true}]}]`.
variants=(sampled0 noalog nometrics lean)
declare -A variant_what=([sampled0]="tracing sampled 0 %" [noalog]="access log off" [nometrics]="metrics off"
  [lean]="tracing 0 %, access log and metrics off")
variant_root() { # variant: prints the copy's root
  local v=$1
  local dir=$work/root.$v spec="" ns
  mkdir -p "$dir/observability"
  cp -R "$root/gateway" "$root/manifests" "$dir/"
  [ ! -d "$root/observability/istio" ] || cp -R "$root/observability/istio" "$dir/observability/"
  case $v in
    sampled0 | lean)
      grep -rlZ --include='*.yaml' --include='*.yml' randomSamplingPercentage "$dir" |
        xargs -0 -r sed -i -E 's/^([[:space:]]*randomSamplingPercentage:).*$/\1 0.0/'
      grep -q '^[[:space:]]*randomSamplingPercentage: 0\.0$' "$dir/manifests/istio/telemetry.yaml" ||
        die "no randomSamplingPercentage in manifests/istio/telemetry.yaml to set to 0"
      ;;
  esac
  case $v in noalog | lean) spec+=$'  accessLogging:\n  - disabled: true\n' ;; esac
  case $v in nometrics | lean) spec+=$'  metrics:\n  - overrides:\n    - disabled: true\n' ;; esac
  if [ -n "$spec" ]; then
    for ns in gateway default; do
      printf -- '---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: bench-%s, namespace: %s}\nspec:\n%s' \
        "$v" "$ns" "$spec" >>"$dir/manifests/istio/telemetry.yaml"
    done
  fi
  echo "$dir"
}
for v in "${variants[@]}"; do
  vroot=$(variant_root "$v") || exit 2
  echo "bench: starting localmesh up, ${variant_what[$v]} (from $vroot, logs in $work/up.$v.log)"
  start_up "$vroot" "$work/data.$v" "$work/up.$v.log"
  variant_pid[$v]=$!
done
wait_ready "$up_pid" "$work/up.log"
for v in "${variants[@]}"; do wait_ready "${variant_pid[$v]}" "$work/up.$v.log"; done

log_json() { grep '^{' "$work/up.log" | jq -c "$@"; }
ready_field() { grep '^{' "$1" | jq -r "select(.message == \"localmesh is ready\") | .$2"; }
gateway=$(ready_field "$work/up.log" gateway)
admin=$(ready_field "$work/up.log" admin)
for v in "${variants[@]}"; do
  variant_gateway[$v]=$(ready_field "$work/up.$v.log" gateway)
  variant_admin[$v]=$(ready_field "$work/up.$v.log" admin)
done
pods() { log_json -r "select(.message == \"pod ready; endpoint registered\" and (.pod_name | startswith(\"$1-\"))) | .addr"; }
mapfile -t v1 < <(pods product-v1)
mapfile -t v2 < <(pods product-v2)
if [ ${#v1[@]} -eq 0 ] || [ ${#v2[@]} -eq 0 ]; then
  echo "bench: no product pods in $work/up.log" >&2
  exit 1
fi
# The pids of an instance's pods, from its admin's /config_dump (a restarted pod has a new one).
pod_pids() { curl -fsS --max-time 10 "http://$1/config_dump" | jq -r '.pods[] | .pid // empty'; }
# East-west: the first frontend pod's sidecar listener for product-service, from its environment.
fe_pid=$(curl -fsS --max-time 10 "http://$admin/config_dump" |
  jq -r '[.pods | to_entries[] | select(.value.deployment == "default/frontend" and .value.pid != null)]
         | sort_by(.key) | .[0].value.pid // empty')
[ -n "$fe_pid" ] || { echo "bench: no frontend pod in http://$admin/config_dump" >&2; exit 1; }
sidecar=$(tr '\0' '\n' <"/proc/$fe_pid/environ" | sed -n 's|^PRODUCT_SERVICE_ADDR=\(http://\)\{0,1\}||p')
[ -n "$sidecar" ] || { echo "bench: no PRODUCT_SERVICE_ADDR in the frontend pod's environment" >&2; exit 1; }

# A port nothing listens on (outside Linux's ephemeral range, so no client socket takes it).
free_port() {
  local p
  for _ in $(seq 50); do
    p=$(shuf -i 20000-32000 -n 1)
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo "bench: no free port" >&2
  exit 1
}
# Waits for a reference proxy to listen on its port; 1 if it exited (its port was taken: retry).
listening() { # pid port
  for _ in $(seq 100); do
    kill -0 "$1" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
      sleep 0.2
      kill -0 "$1" 2>/dev/null
      return
    fi
    sleep 0.1
  done
  return 1
}

# nginx in the foreground from the work dir: TLS + h2 for the gateway host, 80/20 per request
# (split on $request_id), premium to v2, keepalive to the pods, no access log (localmesh's JSON
# access log is on: the comparison is against a lean reference).
mkdir -p "$work/nginx"
nginx_conf() { # port
  echo "worker_processes auto; daemon off; pid $work/nginx/nginx.pid; user root;"
  echo "error_log $work/nginx/error.log warn;"
  echo "events { worker_connections 4096; }"
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
  echo "    listen 127.0.0.1:$1 ssl http2;"
  echo "    server_name $host;"
  echo "    ssl_certificate $certs/tls.crt; ssl_certificate_key $certs/tls.key;"
  echo "    location / { grpc_pass grpc://\$product; }"
  echo "  }"
  echo "}"
}
# HAProxy in the foreground (-db), two threads as nginx has two workers on two cores: TLS + h2
# (ALPN) with the same certificate and key, each request to a weighted server (the v1 pods 80 in
# all, the v2 pods 20, round robin), premium to v2, h2c to the pods (proto h2) with the
# connections reused by every request (http-reuse always), no log.
mkdir -p "$work/haproxy"
cat "$certs/tls.crt" "$certs/tls.key" >"$work/haproxy/gateway.pem"
haproxy_conf() { # port
  local a n=0
  echo "global"
  echo "  nbthread 2"
  echo "  maxconn 4096"
  echo "defaults"
  echo "  mode http"
  echo "  timeout connect 2s"
  echo "  timeout client 1h"
  echo "  timeout server 1h"
  echo "frontend gateway"
  echo "  bind 127.0.0.1:$1 ssl crt $work/haproxy/gateway.pem alpn h2"
  echo "  use_backend product_v2 if { req.hdr(user-type) -m str premium }"
  echo "  default_backend product_canary"
  echo "backend product_canary"
  echo "  balance roundrobin"
  echo "  http-reuse always"
  # Per pod: v1 80 x (v2 pods), v2 20 x (v1 pods), so that v1 gets 80 % and v2 20 % in all.
  for a in "${v1[@]}"; do
    n=$((n + 1))
    echo "  server v1-$n $a proto h2 weight $((80 * ${#v2[@]}))"
  done
  for a in "${v2[@]}"; do
    n=$((n + 1))
    echo "  server v2-$n $a proto h2 weight $((20 * ${#v1[@]}))"
  done
  echo "backend product_v2"
  echo "  http-reuse always"
  for a in "${v2[@]}"; do
    n=$((n + 1))
    echo "  server v2-$n $a proto h2"
  done
}
nginx_port="" haproxy_port=""
for _ in $(seq 5); do
  nginx_port=$(free_port)
  nginx_conf "$nginx_port" >"$work/nginx/nginx.conf"
  "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/stderr" &
  nginx_pid=$!
  listening "$nginx_pid" "$nginx_port" && break
  kill "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  nginx_pid=""
done
[ -n "$nginx_pid" ] || { cat "$work/nginx/stderr" "$work/nginx/error.log" >&2; echo "bench: nginx did not start" >&2; exit 1; }
for _ in $(seq 5); do
  haproxy_port=$(free_port)
  haproxy_conf "$haproxy_port" >"$work/haproxy/haproxy.cfg"
  "$haproxy_bin" -db -f "$work/haproxy/haproxy.cfg" >>"$work/haproxy/out" 2>&1 &
  haproxy_pid=$!
  listening "$haproxy_pid" "$haproxy_port" && break
  kill "$haproxy_pid" 2>/dev/null || true
  wait "$haproxy_pid" 2>/dev/null || true
  haproxy_pid=""
done
[ -n "$haproxy_pid" ] || { cat "$work/haproxy/out" >&2; echo "bench: haproxy did not start" >&2; exit 1; }

setups=(direct nginx haproxy localmesh "${variants[@]}" sidecar)
declare -A label=([direct]=direct [nginx]=nginx [haproxy]=haproxy [localmesh]=localmesh
  [sampled0]=localmesh-0% [noalog]=lm-no-access-log [nometrics]=lm-no-metrics [lean]=localmesh-lean
  [sidecar]=sidecar [streams]=localmesh+streams)
# The references carry a trace context that is not sampled, as localmesh's pods get at 0 %:
# without one the pods would start (and export) a trace of their own for every call.
unsampled='traceparent:00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'
declare -A lm_target=(
  [direct]="--plaintext --target ${v1[0]} --authority product-service:50051 -H $unsampled"
  [nginx]="--target 127.0.0.1:$nginx_port --cacert $certs/ca.crt --authority $host -H $unsampled"
  [haproxy]="--target 127.0.0.1:$haproxy_port --cacert $certs/ca.crt --authority $host -H $unsampled"
  [localmesh]="--target $gateway --cacert $certs/ca.crt --authority $host"
  [sidecar]="--plaintext --target $sidecar --authority product-service:50051"
)
lm_target[streams]=${lm_target[localmesh]}
for v in "${variants[@]}"; do lm_target[$v]="--target ${variant_gateway[$v]} --cacert $certs/ca.crt --authority $host"; done
# h2load: where to connect, and the URI (scheme, :authority, path; https is TLS with ALPN h2 and
# the gateway host as SNI, http is h2c with prior knowledge).
declare -A h2_connect=([direct]=${v1[0]} [nginx]=127.0.0.1:$nginx_port [haproxy]=127.0.0.1:$haproxy_port
  [localmesh]=$gateway [sidecar]=$sidecar [streams]=$gateway)
for v in "${variants[@]}"; do h2_connect[$v]=${variant_gateway[$v]}; done
h2_uri() {
  case $1 in
    direct | sidecar) echo "http://product-service:50051$grpc_path" ;;
    *) echo "https://$host$grpc_path" ;;
  esac
}
# GetProduct{product_id: "123"} as a gRPC message: uncompressed, 5 bytes long (field 1, length 3).
printf '\000\000\000\000\005\n\003123' >"$work/get-product.bin"

# The proxy processes of a setup (none for direct) and the admin of the instance whose pods serve it.
proxy_pids() {
  case $1 in
    direct) ;;
    nginx) echo "$nginx_pid"; pgrep -P "$nginx_pid" || true ;;
    haproxy) echo "$haproxy_pid"; pgrep -P "$haproxy_pid" || true ;;
    *) echo "${variant_pid[$1]:-$up_pid}" ;;
  esac
}
admin_of() { echo "${variant_admin[$1]:-$admin}"; }
# utime + stime of processes, in clock ticks (a process gone meanwhile counts 0).
ticks() {
  local p s t=0
  local -a f
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -r -a f <<<"${s##*) }"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
# utime + stime, in clock ticks, of the threads of processes "$@" named "log <pod>": localmesh's
# copies of its pods' stdout and stderr into their log files, which the kubelet and the container
# runtime do in a cluster. They count as the pods' CPU, not the proxy's.
log_ticks() {
  local p task s comm t=0
  local -a f
  for p in "$@"; do
    for task in /proc/"$p"/task/*; do
      s=$(cat "$task/stat" 2>/dev/null) || continue
      comm=${s#*(}
      comm=${comm%%)*}
      [[ $comm == "log "* ]] || continue
      read -r -a f <<<"${s##*) }"
      t=$((t + f[11] + f[12]))
    done
  done
  echo "$t"
}
status_kib() { # field pids...
  local field=$1 p t=0 v
  shift
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
hwm_reset=yes
reset_hwm() {
  local p
  for p in "$@"; do echo 5 2>/dev/null >"/proc/$p/clear_refs" || hwm_reset=no; done
}
clk_tck=$(getconf CLK_TCK)

# Runs "$@" (which writes a JSON result with .requests to $out) for setup $1 and adds the CPU and
# peak RSS figures of its proxy and pods to it.
measure() { # setup out command...
  local setup=$1 out=$2 p0 p1 d0 d1
  shift 2
  local -a pp pods
  mapfile -t pp < <(proxy_pids "$setup")
  mapfile -t pods < <(pod_pids "$(admin_of "$setup")")
  reset_hwm "${pp[@]}"
  local l0 l1
  l0=$(log_ticks "${pp[@]}")
  p0=$(($(ticks "${pp[@]}") - l0))
  d0=$(($(ticks "${pods[@]}") + l0))
  "$@"
  l1=$(log_ticks "${pp[@]}")
  p1=$(($(ticks "${pp[@]}") - l1))
  d1=$(($(ticks "${pods[@]}") + l1))
  jq --argjson np "${#pp[@]}" --argjson p $((p1 - p0)) --argjson d $((d1 - d0)) --argjson hz "$clk_tck" \
    --argjson hwm "$(status_kib VmHWM "${pp[@]}")" '
    def per_k(t): if .requests > 0 then t / $hz / .requests * 1000 else null end;
    . + {proxy_cpu_s: (if $np > 0 then $p / $hz else null end), pods_cpu_s: ($d / $hz),
         proxy_cpu_per_k: (if $np > 0 then per_k($p) else null end), pods_cpu_per_k: per_k($d),
         peak_rss_kib: (if $np > 0 then $hwm else null end)}' "$out" >"$out.tmp"
  mv "$out.tmp" "$out"
}

# One h2load run against a setup, its figures as JSON: req/s, requests done, those without a 200
# (failed streams too), and p50/p99/max from its per-request log (the nearest-rank percentile).
h2() { # setup out
  local setup=$1 out=$2 log=$work/h2load.log txt=$work/h2load.txt
  local -a amount headers=(-H 'content-type: application/grpc' -H 'te: trailers')
  if [ "$h2_requests" -gt 0 ]; then amount=(-n "$h2_requests"); else amount=(-D "$duration"); fi
  case $setup in direct | nginx | haproxy) headers+=(-H "$unsampled") ;; esac
  rm -f "$log"
  h2load "${amount[@]}" -c "$h2_conns" -m "$h2_streams" -d "$work/get-product.bin" "${headers[@]}" \
    --connect-to="${h2_connect[$setup]}" --log-file="$log" "$(h2_uri "$setup")" >"$txt" 2>&1 ||
    warn "h2load against ${label[$setup]} exited with an error: $(tail -3 "$txt")"
  [ -f "$log" ] || : >"$log"
  local rps ndone ok2xx
  rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$txt")
  ndone=$(awk '/^requests:/ { print $6 }' "$txt")
  ok2xx=$(awk '/^status codes:/ { print $3 }' "$txt")
  cut -f3 "$log" | sort -n | awk -v rps="${rps:-0}" -v done="${ndone:-0}" -v ok="${ok2xx:-0}" '
    { v[NR] = $1 }
    function rank(p,  i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return v[i] / 1000 }
    END {
      printf "{\"throughput_rps\": %s, \"requests\": %d, \"failed\": %d, \"latency_ms\": ", rps, done, done - ok
      if (NR == 0) print "{\"p50\": null, \"p90\": null, \"p99\": null, \"max\": null}}"
      else printf "{\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}}\n", rank(0.5), rank(0.9), rank(0.99), v[NR] / 1000
    }' >"$out"
  awk -F'\t' '$2 != 200 { n++ } END { print n + 0 }' "$log" >"$out.non200"
  jq --argjson n "$(cat "$out.non200")" '.failed = ([.failed, $n] | max)' "$out" >"$out.tmp"
  mv "$out.tmp" "$out"
  rm -f "$out.non200"
}
# One `localmesh load` run against a setup.
lm() { # setup out [flags...]
  local setup=$1 out=$2
  shift 2
  # shellcheck disable=SC2086 # the target flags are words on purpose
  "$bin/localmesh" load --json --duration "$duration" --concurrency "$concurrency" \
    --connections "$connections" ${lm_target[$setup]} "$@" >"$out" || {
    warn "localmesh load against ${label[$setup]} failed"
    echo '{"throughput_rps": 0, "requests": 0, "failed": 1, "latency_ms": {}, "versions": {}, "errors": {"no connection": 1}}' >"$out"
  }
}

# h2load counts HTTP status only: check each setup's gRPC status first, with real gRPC calls.
echo "bench: gRPC status of each setup (localmesh load, GetProduct, 300ms each; h2load itself sees HTTP status only):"
check_failed=0
for s in "${setups[@]}"; do
  # shellcheck disable=SC2086 # the target flags are words on purpose
  "$bin/localmesh" load --json --duration 300ms --concurrency 2 --mix get=1 ${lm_target[$s]} \
    >"$work/check.$s.json" || echo '{"requests": 0, "failed": 0, "errors": {"no connection": 1}}' >"$work/check.$s.json"
  read -r n f e < <(jq -r '[.requests, .failed, (.errors | to_entries | map("\(.key) \(.value)") | join(", "))] | @tsv' \
    "$work/check.$s.json")
  printf '  %-18s %6d calls, %d failed%s\n' "${label[$s]}" "$n" "$f" "${e:+ ($e)}"
  if [ "$n" -eq 0 ] || [ "$f" -gt 0 ] || [ -n "$e" ]; then
    check_failed=1
    warn "${label[$s]} failed gRPC calls before the runs: its figures below are not a gateway's"
  fi
done

# The variants are what they claim: after the checks above, no access line from the instances
# without one, no istio_requests_total from those without metrics.
for v in noalog lean; do
  n=$(grep -c '"message":"access"' "$work/up.$v.log" || true)
  [ "$n" -eq 0 ] || warn "${label[$v]} wrote $n access-log lines: its access log is not off"
done
for v in nometrics lean; do
  n=$(curl -fsS --max-time 10 "http://${variant_admin[$v]}/stats/prometheus" | grep -c '^istio_requests_total{' || true)
  [ "$n" -eq 0 ] || warn "${label[$v]} reports $n istio_requests_total series: its metrics are not off"
done
n=$(grep -c '"message":"access"' "$work/up.log" || true)
[ "$n" -gt 0 ] || warn "localmesh (everything on) wrote no access-log line"

what="$h2_conns connections x $h2_streams streams"
if [ "$h2_requests" -gt 0 ]; then what="$h2_requests requests, $what"; else what="$duration, $what"; fi
echo "bench: $runs round(s): h2load ($what) against each setup, then localmesh load ($duration," \
  "concurrency $concurrency over $connections connections), then $streams AgentSync streams held" \
  "through the localmesh gateway during an h2load run"
# The trace store of the 100 % instance: /stats/prometheus into a file; one metric of it ("-" if
# absent).
scrape() { curl -fsS --max-time 10 "http://$1/stats/prometheus" >"$2" 2>/dev/null || : >"$2"; }
prom() { awk -v n="$2" '$1 == n { v = $2 } END { print (v == "" ? "-" : v) }' "$1"; }
progress() { # gen setup file
  printf '  run %d %-7s %-18s %9.0f req/s  p99 %7.2f ms  failed %s\n' "$i" "$1" "${label[$2]}" \
    "$(jq '.throughput_rps // 0' "$3")" "$(jq '.latency_ms.p99 // 0' "$3")" "$(jq .failed "$3")"
}
# Streams at scale: the holder opens them (through the localmesh gateway, idle after one ping
# each; a trickle of 5 unary calls a second beside) and keeps them until its run ends, which is
# after h2load's; localmesh's anonymous RSS before and with them; h2load's figures meanwhile.
# (With BENCH_REQUESTS, h2load is given 15 ms a request.)
hold_ms=$((h2_requests > 0 ? 2000 + 15 * h2_requests : duration_ms + 3000))
streams_round() {
  local out=$res/h2.streams.$i.json held=$work/holder.$i rss0 rss1
  sleep "$settle"
  rss0=$(status_kib RssAnon "$up_pid")
  # shellcheck disable=SC2086 # the target flags are words on purpose
  "$bin/localmesh" load --json ${lm_target[streams]} --hold-streams "$streams" --rate 5 --connections 1 \
    --duration "${hold_ms}ms" >"$held.json" 2>"$held.err" &
  holder_pid=$!
  for _ in $(seq 600); do
    grep -q 'AgentSync streams open' "$held.err" && break
    kill -0 "$holder_pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q 'AgentSync streams open' "$held.err" || { cat "$held.err" >&2; echo "bench: the streams did not open" >&2; exit 1; }
  sleep "$settle"
  rss1=$(status_kib RssAnon "$up_pid")
  measure streams "$out" h2 streams "$out"
  local through=true
  kill -0 "$holder_pid" 2>/dev/null || through=false
  wait "$holder_pid" || warn "localmesh load --hold-streams failed: $(cat "$held.err")"
  holder_pid=""
  $through || warn "the streams were released before the h2load run ended: raise BENCH_DURATION (or lower BENCH_REQUESTS)"
  jq --argjson r0 "$rss0" --argjson r1 "$rss1" --argjson through "$through" --slurpfile h "$held.json" '
    ($h[0].streams // {}) as $s
    | . + {rss_without_kib: $r0, rss_with_kib: $r1, held_through: $through, streams: $s,
           holder_failed: ($h[0].failed // null),
           kib_per_stream: (if ($s.opened // 0) > 0 then ($r1 - $r0) / $s.opened else null end)}' \
    "$out" >"$out.tmp"
  mv "$out.tmp" "$out"
  progress h2load streams "$out"
}
for i in $(seq "$runs"); do
  for s in "${setups[@]}"; do
    measure "$s" "$res/h2.$s.$i.json" h2 "$s" "$res/h2.$s.$i.json"
    progress h2load "$s" "$res/h2.$s.$i.json"
  done
  for s in "${setups[@]}"; do
    measure "$s" "$res/lm.$s.$i.json" lm "$s" "$res/lm.$s.$i.json"
    progress lm-load "$s" "$res/lm.$s.$i.json"
    # The trace store under load: right after each 100 % run, the last one is reported.
    [ "$s" != localmesh ] || scrape "$admin" "$work/store.load.prom"
  done
  [ "$streams" -eq 0 ] || streams_round
done
# Settled: the pods' last span batches (1 s apart) have arrived since.
scrape "$admin" "$work/store.end.prom"
scrape "${variant_admin[sampled0]}" "$work/store0.prom"

# The median of one figure over a setup's runs (null if none), and as printed.
median() { # gen setup jq-expr
  jq -s "map($3) | map(select(. != null)) | sort | if length == 0 then null else .[length / 2 | floor] end" \
    "$res/$1.$2".*.json
}
fmt() { # value kind
  awk -v v="$1" -v k="$2" 'BEGIN {
    if (v == "" || v == "null" || v == "-") { print "-"; exit }
    if (k == "n") printf "%.0f", v
    else if (k == "ms") printf "%.2f", v
    else if (k == "cpu") printf "%.4f", v
    else if (k == "mib") printf "%.1f", v / 1024
    else if (v >= 100) printf "%.0f", v
    else printf "%.2f", v
  }'
}
ratio() { # a b [decimals]
  awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN {
    if (a == "" || a == "null" || b == "" || b == "null" || b <= 0) print "-"; else printf "%." p "f", a / b }'
}
row() { printf '%-18s %9s %8s %8s %8s %8s %7s %11s %10s %9s\n' "$@"; }
table() { # gen setup...
  local gen=$1 s
  shift
  row setup req/s "p50 ms" "p90 ms" "p99 ms" "max ms" failed "proxy CPU" "pods CPU" "peak RSS"
  row "" "" "" "" "" "" "" "s/1k req" "s/1k req" MiB
  for s in "$@"; do
    row "${label[$s]}" "$(fmt "$(median "$gen" "$s" .throughput_rps)" n)" \
      "$(fmt "$(median "$gen" "$s" .latency_ms.p50)" ms)" "$(fmt "$(median "$gen" "$s" .latency_ms.p90)" ms)" \
      "$(fmt "$(median "$gen" "$s" .latency_ms.p99)" ms)" "$(fmt "$(median "$gen" "$s" .latency_ms.max)" ms)" \
      "$(fmt "$(median "$gen" "$s" .failed)" n)" "$(fmt "$(median "$gen" "$s" .proxy_cpu_per_k)" cpu)" \
      "$(fmt "$(median "$gen" "$s" .pods_cpu_per_k)" cpu)" "$(fmt "$(median "$gen" "$s" .peak_rss_kib)" mib)"
  done
}
h2_setups=("${setups[@]}")
[ "$streams" -eq 0 ] || h2_setups+=(streams)
hwm_note="the proxy's VmHWM during the run"
[ "$hwm_reset" = yes ] || hwm_note="the proxy's VmHWM since its start (/proc/PID/clear_refs is not writable here)"
echo
echo "h2load: GetProduct \"123\", $what; medians of $runs run(s) (failed: HTTP status other than 200 or a failed stream)"
table h2 "${h2_setups[@]}"
echo
echo "localmesh load: GetProduct/ListProducts 8:2, $duration, concurrency $concurrency over $connections connections;" \
  "medians of $runs run(s) (failed: gRPC status other than OK)"
table lm "${setups[@]}"
echo "(proxy CPU: utime+stime of nginx's master and workers, haproxy, the localmesh up process (not its pods, nor its threads copying their logs;"
echo " the sidecar lives in it) per 1,000 requests; pods CPU: every pod of the instance serving the setup, with its log copies;"
echo " peak RSS: $hwm_note)"
split_line=""
for s in nginx haproxy localmesh; do
  v2_calls=$(jq -s 'map(.versions.v2 // 0) | add' "$res/lm.$s".*.json)
  all=$(jq -s 'map((.versions.v1 // 0) + (.versions.v2 // 0)) | add' "$res/lm.$s".*.json)
  split_line+="${split_line:+, }${label[$s]} $(ratio "$((v2_calls * 100))" "$all" 1) %"
done
echo "v2's share of the localmesh load calls (80/20 configured): $split_line"

declare -A gen_label=([h2]=h2load [lm]=lm-load)
# The goals: localmesh over the better of nginx and HAProxy, by each generator, compared unrounded.
goal_row() { # gen name jq-expr higher-is-better(1/0) goal-text [setup, localmesh by default]
  local gen=$1 expr=$3 better=$4 l ref="" b="" s v
  l=$(median "$gen" "${6:-localmesh}" "$expr")
  for s in nginx haproxy; do
    v=$(median "$gen" "$s" "$expr")
    # A reference that failed calls (or has no figure) is no reference.
    if [ "$v" = null ] || [ "$(median "$gen" "$s" .failed)" != 0 ]; then continue; fi
    if [ -z "$ref" ] || awk -v v="$v" -v b="$b" -v up="$better" 'BEGIN { exit !(up == 1 ? v > b : v < b) }'; then
      ref=$s b=$v
    fi
  done
  verdict=$(awk -v l="$l" -v b="$b" -v up="$better" 'BEGIN {
    if (l == "null" || b == "" || b <= 0) print "-"
    else if (up == 1) print (l / b >= 1.0 ? "met" : "NOT MET"); else print (l / b <= 1.0 ? "met" : "NOT MET") }')
  printf '%-9s %-24s %9s %8s %8s  %s\n' "${gen_label[$gen]}" "$2" "$(ratio "$l" "$b")x" "${ref:--}" "$5" "$verdict"
}
echo
echo "goals: localmesh over the better of nginx and HAProxy (medians, unrounded ratio)"
printf '%-9s %-24s %9s %8s %8s  %s\n' generator figure ratio "better" goal verdict
for gen in h2 lm; do
  goal_row "$gen" "throughput" .throughput_rps 1 ">= 1.0x"
  goal_row "$gen" "p99 latency" .latency_ms.p99 0 "<= 1.0x"
  goal_row "$gen" "proxy CPU per request" .proxy_cpu_per_k 0 "<= 1.0x"
done
echo "the same for localmesh-lean (tracing 0 %, access log and metrics off: what the proxy itself costs), for reference:"
for gen in h2 lm; do
  goal_row "$gen" "throughput" .throughput_rps 1 ">= 1.0x" lean
  goal_row "$gen" "p99 latency" .latency_ms.p99 0 "<= 1.0x" lean
  goal_row "$gen" "proxy CPU per request" .proxy_cpu_per_k 0 "<= 1.0x" lean
done

# What each feature costs: the instance with it off beside the one with everything on.
echo
echo "feature costs: localmesh with everything on (as make run) over an instance with one feature off (medians)"
printf '%-9s %-36s %12s %12s %9s %14s %14s\n' generator "off in the other instance" "req/s off" "req/s on" "on/off" "proxy s/1k off" "proxy s/1k on"
for gen in h2 lm; do
  for v in "${variants[@]}"; do
    printf '%-9s %-36s %12s %12s %9s %14s %14s\n' "${gen_label[$gen]}" "${variant_what[$v]}" \
      "$(fmt "$(median "$gen" "$v" .throughput_rps)" n)" "$(fmt "$(median "$gen" localmesh .throughput_rps)" n)" \
      "$(ratio "$(median "$gen" localmesh .throughput_rps)" "$(median "$gen" "$v" .throughput_rps)" 3)x" \
      "$(fmt "$(median "$gen" "$v" .proxy_cpu_per_k)" cpu)" "$(fmt "$(median "$gen" localmesh .proxy_cpu_per_k)" cpu)"
  done
done

# East-west: the sidecar beside the direct call.
echo
echo "east-west: frontend pod's sidecar ($sidecar, h2c, :authority product-service:50051) over the direct call"
for gen in h2 lm; do
  printf '  %-8s throughput %sx, p50 %sx, p99 %sx; the sidecar (localmesh) %s CPU-s per 1k requests\n' \
    "${gen_label[$gen]}" \
    "$(ratio "$(median "$gen" sidecar .throughput_rps)" "$(median "$gen" direct .throughput_rps)")" \
    "$(ratio "$(median "$gen" sidecar .latency_ms.p50)" "$(median "$gen" direct .latency_ms.p50)")" \
    "$(ratio "$(median "$gen" sidecar .latency_ms.p99)" "$(median "$gen" direct .latency_ms.p99)")" \
    "$(fmt "$(median "$gen" sidecar .proxy_cpu_per_k)" cpu)"
done

if [ "$streams" -gt 0 ]; then
  echo
  echo "streams at scale: $streams AgentSync streams held through the localmesh gateway during the h2load run"
  read -r opened held cut errs < <(jq -s -r '[(map(.streams.opened // 0) | min), (map(.streams.held // 0) | min),
    (map(.streams.cut // 0) | add),
    ([.[].streams.open_errors // {} | to_entries[] | "\(.key) \(.value)"] | join(",") | if . == "" then "none" else . end)]
    | @tsv' \
    "$res"/h2.streams.*.json)
  echo "  held $held of $streams to the end in every run (fewest opened $opened; cut $cut; not opened: $errs)"
  printf '  localmesh RSS (anonymous) %s MiB without, %s MiB with them: %s KiB per open stream\n' \
    "$(fmt "$(median h2 streams .rss_without_kib)" mib)" "$(fmt "$(median h2 streams .rss_with_kib)" mib)" \
    "$(fmt "$(median h2 streams .kib_per_stream)" x)"
  printf '  unary (h2load) beside the run without streams: %s vs %s req/s (%sx), p99 %s vs %s ms (%sx)\n' \
    "$(fmt "$(median h2 streams .throughput_rps)" n)" "$(fmt "$(median h2 localmesh .throughput_rps)" n)" \
    "$(ratio "$(median h2 streams .throughput_rps)" "$(median h2 localmesh .throughput_rps)")" \
    "$(fmt "$(median h2 streams .latency_ms.p99)" ms)" "$(fmt "$(median h2 localmesh .latency_ms.p99)" ms)" \
    "$(ratio "$(median h2 streams .latency_ms.p99)" "$(median h2 localmesh .latency_ms.p99)")"
  [ "$held" -eq "$streams" ] || warn "only $held of $streams streams were held through a run"
fi

# Tracing's cost: the same gateway sampled 0 % and 100 %.
mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f", b / 1048576 }'; }
# The verdict compares the unrounded ratio: 0.896 prints as 0.90 but misses 0.9.
verdict=$(awk -v a="$(median lm localmesh .throughput_rps)" -v b="$(median lm sampled0 .throughput_rps)" -v g="$goal" \
  'BEGIN { if (b <= 0) print "-"; else printf ">= %.2f %s", g, (a / b >= g ? "met" : "MISSED") }')
echo
printf '%-24s %12s %12s %12s %16s\n' "tracing (localmesh load)" "sampled 0%" "sampled 100%" "100%/0%" goal
for row in "throughput req/s:.throughput_rps:$verdict" "p50 ms:.latency_ms.p50:-" "p99 ms:.latency_ms.p99:-" \
  "failed calls:.failed:-" "proxy CPU s/1k req:.proxy_cpu_per_k:-" "pods CPU s/1k req:.pods_cpu_per_k:-" \
  "peak RSS MiB:.peak_rss_kib:-"; do
  IFS=: read -r lbl expr g <<<"$row"
  z=$(median lm sampled0 "$expr")
  h=$(median lm localmesh "$expr")
  decimals=2
  [ "$expr" != .throughput_rps ] || decimals=3 # the goal's row: no rounding up to it
  kind=x
  case $expr in .failed) kind=n ;; .proxy_cpu_per_k | .pods_cpu_per_k) kind=cpu ;; .peak_rss_kib) kind=mib ;; esac
  printf '%-24s %12s %12s %12s %16s\n' "$lbl" "$(fmt "$z" "$kind")" "$(fmt "$h" "$kind")" "$(ratio "$h" "$z" "$decimals")" "$g"
done
printf '%-24s %12s %12s %12s %16s\n' "h2load req/s" "$(fmt "$(median h2 sampled0 .throughput_rps)" n)" \
  "$(fmt "$(median h2 localmesh .throughput_rps)" n)" \
  "$(ratio "$(median h2 localmesh .throughput_rps)" "$(median h2 sampled0 .throughput_rps)" 3)" -
# Anything here means the figures above are not what they claim.
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
store_row "settled (at the end)" "$work/store.end.prom"
evicted=$(prom "$work/store.end.prom" localmesh_trace_store_evicted_traces)
dropped=$(prom "$work/store.end.prom" localmesh_spans_dropped_total)
traces0=$(prom "$work/store0.prom" localmesh_trace_store_traces)
dropped0=$(prom "$work/store0.prom" localmesh_spans_dropped_total)
echo "  $evicted traces evicted since start, $dropped proxy spans dropped"
echo "trace store, sampled 0 %: $traces0 traces kept, $dropped0 proxy spans dropped"
[ "$dropped" = - ] || [ "$dropped" -eq 0 ] || warn "$dropped spans dropped by the 100 % instance (full span queue)"
[ "$dropped0" = - ] || [ "$dropped0" -eq 0 ] || warn "$dropped0 spans dropped by the 0 % instance"
[ "$traces0" = - ] || [ "$traces0" -eq 0 ] || warn "the 0 % instance kept $traces0 traces: it is not sampling 0 %"
for gen in h2 lm; do
  for s in "${setups[@]}"; do
    f=$(jq -s 'map(.failed) | add' "$res/$gen.$s".*.json)
    [ "$f" -eq 0 ] || warn "$f failed calls in the $gen runs against ${label[$s]}"
  done
done
[ "$check_failed" -eq 0 ] || warn "a setup failed its gRPC status check (above)"
