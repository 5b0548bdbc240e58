#!/usr/bin/env bash
# Starts ProductService v1 and v2 on this machine and prints how to call them.
# Ctrl-C stops both gracefully (SIGTERM, bounded drain).
set -euo pipefail
BIN=${1:-target/release}
V1_PORT=${V1_PORT:-50051}
V2_PORT=${V2_PORT:-50052}
LOGS=${LOGS:-.data/logs}
mkdir -p "$LOGS"

pids=()
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping (SIGTERM, graceful drain)..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  exit 0
}
trap stop EXIT INT TERM

start() { # version port metrics_port
  SERVICE_VERSION=$1 POD_NAME="product-$1-local-0" NODE_NAME="$(hostname 2>/dev/null || echo local)" \
  PORT=$2 METRICS_PORT=$3 BIND_ADDR=127.0.0.1 \
    "$BIN/product" >"$LOGS/product-$1.log" 2>&1 &
  pids+=($!)
}

wait_port() { # port pid
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "the server on :$1 exited; see $LOGS" >&2; return 1; }
    sleep 0.1
  done
  echo "nothing listens on :$1 after 10 s; see $LOGS" >&2; return 1
}

start v1 "$V1_PORT" 9464
start v2 "$V2_PORT" 9465
wait_port "$V1_PORT" "${pids[0]}"
wait_port "$V2_PORT" "${pids[1]}"

cat <<MSG

ProductService is running:
  v1  127.0.0.1:$V1_PORT   metrics http://127.0.0.1:9464/metrics   log $LOGS/product-v1.log
  v2  127.0.0.1:$V2_PORT   metrics http://127.0.0.1:9465/metrics   log $LOGS/product-v2.log

Try it with grpcurl:
  grpcurl -plaintext 127.0.0.1:$V1_PORT list
  grpcurl -plaintext -d '{"product_id": "123"}' 127.0.0.1:$V1_PORT product.ProductService/GetProduct
  grpcurl -plaintext -d '{"product_id": "123"}' 127.0.0.1:$V2_PORT product.ProductService/GetProduct
  grpcurl -plaintext -d '{"page_size": 10, "page_number": 1}' 127.0.0.1:$V1_PORT product.ProductService/ListProducts
  grpcurl -plaintext -d '{"product_ids": ["1", "123"]}' 127.0.0.1:$V1_PORT product.ProductService/WatchPrices

or with buf curl (make tools installs it as .venv/bin/buf):
  .venv/bin/buf curl --protocol grpc --http2-prior-knowledge -d '{"product_id": "123"}' \\
      http://127.0.0.1:$V2_PORT/product.ProductService/GetProduct

An agent on a long-lived AgentSync stream:
  $BIN/agent --target http://127.0.0.1:$V1_PORT --agent-version v1.2 --interval 2s

Ctrl-C stops both servers.
MSG
wait "${pids[@]}"
