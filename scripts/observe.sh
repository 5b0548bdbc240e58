#!/usr/bin/env bash
# make observe: Prometheus on this machine, scraping the suite a running `localmesh up` serves.
#
# localmesh lists what there is to scrape at GET http://$ADMIN/sd, in Prometheus' HTTP service
# discovery format: every pod's /metrics (labels app, version, pod, namespace) and its own
# /stats/prometheus (istio_requests_total, istio_request_duration_milliseconds, ...). Prometheus
# re-reads that list every 5 s, scrapes every 5 s and evaluates the suite's alert rules
# (observability/prometheus/mesh-shop-alerts.yml). Runs in the foreground; Ctrl-C stops it.
# Config and data in .data/prometheus/.
#
# Knobs: ADMIN (127.0.0.1:15000: localmesh's admin address), PROM_PORT (9090).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
admin=${ADMIN:-127.0.0.1:15000}
port=${PROM_PORT:-9090}
dir=.data/prometheus
config=$dir/prometheus.yml
rules=$root/observability/prometheus/mesh-shop-alerts.yml

scripts/install-system-deps.sh observe
prometheus=$(command -v prometheus || echo /usr/bin/prometheus)

if ! answer=$(curl -s --max-time 5 -w '\n%{http_code} %{content_type}' "http://$admin/sd"); then
  echo "observe: nothing answers GET http://$admin/sd: start the suite first with \`make run\`" \
    "(in another terminal), or set ADMIN=host:port to localmesh's admin address" >&2
  exit 1
fi
sd=${answer%$'\n'*}
meta=${answer##*$'\n'}
code=${meta%% *}
type=${meta#* }
if [ "$code" != 200 ]; then
  echo "observe: GET http://$admin/sd answered HTTP $code: is $admin localmesh's admin address," \
    "and is localmesh up to date (make run rebuilds it)?" >&2
  exit 1
fi
# Prometheus ignores an HTTP SD answer of any other type (it only logs it): no targets at all.
case $type in
  application/json*) ;;
  *) echo "observe: http://$admin/sd answers Content-Type '$type'; Prometheus' HTTP SD needs application/json" >&2
     exit 1 ;;
esac
if ! summary=$(python3 -c '
import json, sys
try:
    groups = json.load(sys.stdin)
    assert isinstance(groups, list), "not a JSON list"
    targets = [(t, g.get("labels", {})) for g in groups for t in g["targets"]]
except Exception as e:
    sys.exit("%s: %s" % (type(e).__name__, e))
if not targets:
    sys.exit("no targets in it")
for t, labels in targets:
    print("  %-21s %s %s %s" % (t, labels.get("app", "?"), labels.get("version", ""), labels.get("pod", "")))
' <<<"$sd" 2>&1); then
  echo "observe: http://$admin/sd is not a list of Prometheus target groups as localmesh serves ($summary)" >&2
  exit 1
fi
if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "observe: 127.0.0.1:$port is taken (another Prometheus?): stop it or set PROM_PORT" >&2
  exit 1
fi

mkdir -p "$dir/data"
cat >"$config" <<YAML
# Written by scripts/observe.sh (make observe) on every run: edits are lost.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $rules
scrape_configs:
  - job_name: localmesh
    http_sd_configs:
      - url: http://$admin/sd
        refresh_interval: 5s
YAML
check=$(promtool check config "$config" 2>&1) || { echo "$check" >&2; exit 1; }

cat <<MSG

Prometheus: http://127.0.0.1:$port/  (targets: /targets, alerts: /alerts; config: $config)
It scrapes what localmesh at $admin lists now (re-read every 5 s):
$summary
The first samples arrive after about 10 s. Queries to paste into http://127.0.0.1:$port/graph:

  # product calls at the gateway, per version (about 80/20 v1/v2):
  sum by (destination_version) (rate(istio_requests_total{reporter="source",source_workload="public-api-gateway-istio",destination_app="product-service"}[1m]))

  # share of failed calls per destination workload (no answer, HTTP 5xx, or a gRPC server error as Envoy counts them;
  # workloads without errors do not show):
  sum by (destination_workload) (rate(istio_requests_total{reporter="source",response_code=~"5..|0"}[1m]) or rate(istio_requests_total{reporter="source",grpc_response_status=~"2|4|8|12|13|14|15"}[1m])) / sum by (destination_workload) (rate(istio_requests_total{reporter="source"}[1m]))

  # p99 latency per destination workload, in ms (a stream counts once, with its whole duration):
  histogram_quantile(0.99, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])))

Ctrl-C stops Prometheus.
MSG
exec "$prometheus" --config.file="$config" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port"
