#!/usr/bin/env bash
# System packages the tests need, installed from Debian's archive when missing:
# PostgreSQL (the order service's tests start throwaway clusters), Chromium
# (the frontend's headless browser test) and curl (a client of the TLS gateway).
# `install-system-deps.sh bench` adds what `make bench` needs: nginx (the
# reference TLS gRPC gateway) and jq.
set -euo pipefail
need=()
if [ "${1:-}" = bench ]; then
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v jq >/dev/null || need+=(jq)
fi
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} (Debian packages)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
