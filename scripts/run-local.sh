#!/usr/bin/env bash
# Starts the suite on this machine (product v1 and v2, order, payment,
# frontend) and prints how to use it. Ctrl-C stops everything gracefully
# (SIGTERM, bounded drain).
set -euo pipefail
BIN=${1:-target/release}
DATA=${DATA:-.data}
LOGS=$DATA/logs
mkdir -p "$LOGS"
NODE=$(hostname 2>/dev/null || echo local)

pids=()
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping (SIGTERM, graceful drain)..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  exit 0
}
trap stop EXIT INT TERM

start() { # name binary port metrics_port [VAR=value ...]
  local name=$1 bin=$2 port=$3 metrics=$4; shift 4
  env POD_NAME="$name-local-0" NODE_NAME="$NODE" PORT="$port" METRICS_PORT="$metrics" BIND_ADDR=127.0.0.1 "$@" \
    "$BIN/$bin" >"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$port" $! "$name"
}

wait_port() { # port pid name
  for _ in $(seq 150); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited; see $LOGS/$3.log" >&2; tail -5 "$LOGS/$3.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$3: nothing listens on :$1 after 15 s; see $LOGS/$3.log" >&2; return 1
}

start product-v1 product 50051 9464 SERVICE_VERSION=v1
start product-v2 product 50052 9465 SERVICE_VERSION=v2
start payment payment 8081 9466
start order order 50061 9467 PRODUCT_SERVICE_ADDR=http://127.0.0.1:50051 PAYMENT_URL=http://127.0.0.1:8081 DATA_DIR="$DATA/order"
start frontend frontend 8080 9468 PRODUCT_SERVICE_ADDR=http://127.0.0.1:50052 ORDER_SERVICE_ADDR=http://127.0.0.1:50061

cat <<MSG

The suite is running (logs in $LOGS/, one JSON object a line):
  frontend     http://127.0.0.1:8080         (calls product v2 and order)
  product v1   127.0.0.1:50051  gRPC
  product v2   127.0.0.1:50052  gRPC         (v2 adds ratings)
  order        127.0.0.1:50061  gRPC         (SQLite file $DATA/order/orders.db)
  payment      http://127.0.0.1:8081         (the payment provider stand-in)
  metrics      http://127.0.0.1:9464/metrics ... :9468/metrics

Open http://127.0.0.1:8080/ in a browser, or:
  curl -s http://127.0.0.1:8080/api/products/123
  curl -s -X POST http://127.0.0.1:8080/api/orders -H 'content-type: application/json' \\
       -H 'Idempotency-Key: demo-1' -d '{"customer_id": "alice", "items": [{"product_id": "123", "quantity": 1}]}'

gRPC with grpcurl (or .venv/bin/buf curl --protocol grpc --http2-prior-knowledge, after make tools):
  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext -d '{"product_id": "123"}' 127.0.0.1:50051 product.ProductService/GetProduct
  grpcurl -plaintext -d '{"product_id": "123"}' 127.0.0.1:50052 product.ProductService/GetProduct
  grpcurl -plaintext -d '{"page_size": 10, "page_number": 1}' 127.0.0.1:50051 product.ProductService/ListProducts
  grpcurl -plaintext -d '{"customer_id": "alice"}' 127.0.0.1:50061 order.OrderService/ListOrders

An agent on a long-lived AgentSync stream:
  $BIN/agent --target http://127.0.0.1:50051 --agent-version v1.2 --interval 2s

Ctrl-C stops everything.
MSG
wait "${pids[@]}"
