#!/usr/bin/env bash
# make verify-cluster: the documented journeys, against the gateway on
# https://$GATEWAY_ADDR with SNI / :authority $GATEWAY_HOST and the demo CA.
#   1. gRPC reflection through the gateway (grpcurl list)
#   2. GetProduct 123, with servedBy (version, pod) and the x-served-by header
#   3. premium (user-type: premium) -> always v2
#   4. the 80/20 canary: both versions answer, v1 most often
#   5. AgentSync streams pinned by agent-version (v2.x -> v2, v1.x -> v1)
#   6. an order through the gateway (order.OrderService/CreateOrder, PAID)
#   7. the frontend over HTTPS (JSON API and the HTML page), and port 80 -> HTTPS
# GRPC_CLIENT=buf uses `buf curl` instead of grpcurl; it needs
# "127.0.0.1 $GATEWAY_HOST" in /etc/hosts (buf curl takes the TLS name from the URL).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/lib.sh

: "${GRPC_CLIENT:=grpcurl}"
: "${SPLIT_CALLS:=50}"
CA="$CERT_DIR/ca.crt"
PORT=${GATEWAY_ADDR##*:}
HTTP_PORT=${GATEWAY_HTTP_ADDR##*:}

need curl
need "$GRPC_CLIENT"
[[ -s "$CA" ]] || die "$CA not found: run 'make deploy' (gateway/certs.sh makes it)"
if [[ "$GRPC_CLIENT" == buf ]]; then
  grep -Eq "^127\.0\.0\.1[[:space:]].*${GATEWAY_HOST//./\\.}" /etc/hosts \
    || die "GRPC_CLIENT=buf needs '127.0.0.1 $GATEWAY_HOST' in /etc/hosts (or use grpcurl)"
fi

failures=0
pass() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }

# rpc [-H 'k: v']... METHOD [JSON]: one unary call through the gateway, JSON out.
rpc() {
  local hdrs=()
  while [[ "${1:-}" == -H ]]; do hdrs+=("$2"); shift 2; done
  local method=$1 data=${2:-'{}'}
  if [[ "$GRPC_CLIENT" == buf ]]; then
    local h=(); for x in ${hdrs[@]+"${hdrs[@]}"}; do h+=(-H "$x"); done
    buf curl --protocol grpc --cacert "$CA" ${h[@]+"${h[@]}"} -d "$data" \
      --schema proto "https://$GATEWAY_HOST:$PORT/$method"
  else
    local h=(); for x in ${hdrs[@]+"${hdrs[@]}"}; do h+=(-rpc-header "$x"); done
    grpcurl -cacert "$CA" -authority "$GATEWAY_HOST" -import-path proto \
      -proto product.proto -proto order.proto ${h[@]+"${h[@]}"} -d "$data" "$GATEWAY_ADDR" "$method"
  fi
}
# The first "version" in an answer is its servedBy.version.
version_of() { grep -o '"version": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/'; }
pod_of() { grep -o '"pod": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/'; }

say "1. gRPC reflection through the gateway"
if [[ "$GRPC_CLIENT" == buf ]]; then
  out=$(buf curl --protocol grpc --cacert "$CA" --list-services "https://$GATEWAY_HOST:$PORT" 2>&1 || true)
else
  out=$(grpcurl -cacert "$CA" -authority "$GATEWAY_HOST" "$GATEWAY_ADDR" list 2>&1 || true)
fi
if grep -qx 'product.ProductService' <<<"$out"; then pass "list: $(tr '\n' ' ' <<<"$out")"
else fail "list did not show product.ProductService: $out"; fi

say "1b. the health service through the gateway"
if [[ "$GRPC_CLIENT" == buf ]]; then
  out=$(buf curl --protocol grpc --cacert "$CA" "https://$GATEWAY_HOST:$PORT/grpc.health.v1.Health/Check" 2>&1 || true)
else
  out=$(grpcurl -cacert "$CA" -authority "$GATEWAY_HOST" "$GATEWAY_ADDR" grpc.health.v1.Health/Check 2>&1 || true)
fi
if grep -q '"status": *"SERVING"' <<<"$out"; then pass "grpc.health.v1.Health/Check: SERVING"
else fail "grpc.health.v1.Health/Check: $out"; fi

say "2. GetProduct 123"
out=$(rpc product.ProductService/GetProduct '{"product_id": "123"}' 2>&1 || true)
v=$(version_of <<<"$out"); p=$(pod_of <<<"$out")
if grep -q '"id": *"123"' <<<"$out" && [[ -n "$v" && -n "$p" ]]; then pass "product 123 served by $v, pod $p"
else fail "GetProduct 123: $out"; fi
if [[ "$GRPC_CLIENT" == grpcurl ]]; then
  hdr=$(grpcurl -v -cacert "$CA" -authority "$GATEWAY_HOST" -d '{"product_id": "123"}' \
        "$GATEWAY_ADDR" product.ProductService/GetProduct 2>&1 | grep -i '^x-served-by:' || true)
  if [[ -n "$hdr" ]]; then pass "response metadata $hdr"; else fail "no x-served-by response header"; fi
fi

say "3. premium users always reach v2"
bad=0
for _ in $(seq 10); do
  v=$(rpc -H 'user-type: premium' product.ProductService/GetProduct '{"product_id": "1"}' 2>&1 | version_of || true)
  [[ "$v" == v2 ]] || bad=$((bad + 1))
done
if ((bad == 0)); then pass "10 of 10 premium calls on v2"; else fail "$bad of 10 premium calls not on v2"; fi

say "4. the 80/20 canary ($SPLIT_CALLS calls)"
v1=0; v2=0; other=0
for _ in $(seq "$SPLIT_CALLS"); do
  case "$(rpc product.ProductService/GetProduct '{"product_id": "1"}' 2>&1 | version_of || true)" in
    v1) v1=$((v1 + 1)) ;; v2) v2=$((v2 + 1)) ;; *) other=$((other + 1)) ;;
  esac
done
msg="v1 $v1, v2 $v2, failed $other (expected about $((SPLIT_CALLS * 8 / 10)) / $((SPLIT_CALLS * 2 / 10)))"
if ((other == 0 && v1 > v2 && v2 > 0)); then pass "$msg"; else fail "$msg"; fi

if [[ "$GRPC_CLIENT" == grpcurl ]]; then
  say "5. AgentSync pinned by agent-version"
  for av in v1.2 v2.1; do
    want=${av%%.*}
    out=$(printf '{"seq": 1, "message": "ping"}\n{"seq": 2, "message": "ping"}\n' |
      grpcurl -cacert "$CA" -authority "$GATEWAY_HOST" -import-path proto -proto product.proto \
        -rpc-header "agent-version: $av" -rpc-header "agent-id: verify-$av" -d @ \
        "$GATEWAY_ADDR" product.ProductService/AgentSync 2>&1 || true)
    got=$(grep -o '"version": *"[^"]*"' <<<"$out" | sed 's/.*"\([^"]*\)"$/\1/' | sort -u | tr '\n' ' ')
    if [[ "$got" == "$want " ]]; then
      pass "agent $av -> $want (pod $(pod_of <<<"$out"))"
    else fail "agent $av expected $want, got: ${got:-$out}"; fi
  done
fi

say "6. an order through the gateway"
key="verify-$(date +%s)-$$"
out=$(rpc order.OrderService/CreateOrder \
  "{\"idempotency_key\": \"$key\", \"customer_id\": \"verify\", \"items\": [{\"product_id\": \"123\", \"quantity\": 1}]}" 2>&1 || true)
if grep -q '"status": *"PAID"' <<<"$out"; then pass "CreateOrder $key: PAID"
else fail "CreateOrder: $out"; fi

say "7. the frontend over HTTPS"
base="https://$GATEWAY_HOST:$PORT"
resolve=(--resolve "$GATEWAY_HOST:$PORT:${GATEWAY_ADDR%:*}" --resolve "$GATEWAY_HOST:$HTTP_PORT:${GATEWAY_HTTP_ADDR%:*}")
out=$(curl -sS --cacert "$CA" "${resolve[@]}" "$base/api/products/123" 2>&1 || true)
if grep -q '"served_by"' <<<"$out"; then pass "GET /api/products/123: $(grep -o '"served_by":{[^}]*}' <<<"$out")"
else fail "GET /api/products/123: $out"; fi
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$CA" "${resolve[@]}" "$base/" 2>&1 || true)
if [[ "$code" == 200 ]]; then pass "GET / (HTML): 200"; else fail "GET /: $code"; fi
loc=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "${resolve[@]}" "http://$GATEWAY_HOST:$HTTP_PORT/" 2>&1 || true)
# The redirect must land where the HTTPS listener is published ($PORT: 8443 on kind), not on the
# plaintext port the request came to (see gateway/httproutes.yaml).
if [[ "$loc" == "301 https://$GATEWAY_HOST:$PORT/"* ]]; then
  code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$CA" "${resolve[@]}" "${loc#301 }" 2>&1 || true)
  if [[ "$code" == 200 ]]; then pass "port 80 redirects: $loc (answers 200)"; else fail "the redirect target ${loc#301 } answers $code"; fi
else fail "HTTP redirect: $loc (expected 301 https://$GATEWAY_HOST:$PORT/)"; fi

echo
if ((failures)); then
  die "$failures check(s) failed; see docs/cluster.md, troubleshooting"
fi
say "all journeys pass. Watch them: make kiali (Graph, versioned app graph), make jaeger, make grafana"
