#!/usr/bin/env bash
# System packages the tests need, installed from Debian's archive when missing:
# PostgreSQL (the order service's tests start throwaway clusters), Chromium
# (the frontend's headless browser test), curl (a client of the TLS gateway), jq
# (the documented commands of docs/flows/ that the doc test runs) and
# Prometheus (promtool checks and unit-tests the alert rules in
# observability/prometheus; `make observe` runs prometheus against localmesh).
# `install-system-deps.sh bench` adds what `make bench` (and its smoke run in
# `make test`) needs: nginx and HAProxy (the reference TLS gRPC gateways) and
# nghttp2-client (h2load, the third-party load generator). `make tools` runs it
# with bench. `install-system-deps.sh observe` installs
# only what `make observe` needs: Prometheus and curl.
set -euo pipefail
need=()
if [ "${1:-}" = bench ]; then
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v h2load >/dev/null || need+=(nghttp2-client)
fi
if [ "${1:-}" != observe ]; then
  command -v jq >/dev/null || need+=(jq)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)
fi
command -v curl >/dev/null || need+=(curl)
command -v promtool >/dev/null && { command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ]; } || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} (Debian packages)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
