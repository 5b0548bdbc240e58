#!/usr/bin/env bash
# Makes a demo CA and a server certificate for the gateway host, and stores
# them in the cluster:
#   Secret tcex-cert (kubernetes.io/tls) in namespace gateway: the HTTPS listener's certificate;
#   ConfigMap tcex-ca in namespace default: the CA certificate (public), for in-cluster clients (the agents).
# Files go to $CERT_DIR (default gateway/certs/, git-ignored); clients use $CERT_DIR/ca.crt:
#   grpcurl -cacert gateway/certs/ca.crt -authority sit-gateway.tcex.com.vn 127.0.0.1:8443 list
# Existing files are reused (delete the directory to make new ones).
# Go's TLS ignores the CN: the SAN carries the host name.
#
# Usage: gateway/certs.sh [--no-apply]    (--no-apply: files only, no kubectl)
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${GATEWAY_HOST:-sit-gateway.tcex.com.vn}
DIR=${CERT_DIR:-gateway/certs}
DAYS=${CERT_DAYS:-365}
KUBECTL=${KUBECTL:-kubectl}
CONTEXT=${KUBE_CONTEXT:-}
apply=1
[[ "${1:-}" == "--no-apply" ]] && apply=0

command -v openssl >/dev/null 2>&1 \
  || { echo "error: openssl is not installed. Install it with your package manager (apt-get install openssl, brew install openssl)" >&2; exit 1; }

mkdir -p "$DIR"
chmod 700 "$DIR"
umask 077

if [[ ! -s "$DIR/ca.crt" || ! -s "$DIR/ca.key" ]]; then
  echo "==> CA: $DIR/ca.crt"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
    -subj "/O=mesh-shop demo/CN=mesh-shop demo CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
  rm -f "$DIR/tls.crt" "$DIR/tls.key"
fi

if [[ ! -s "$DIR/tls.crt" || ! -s "$DIR/tls.key" ]]; then
  echo "==> certificate for $HOST: $DIR/tls.crt"
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=mesh-shop demo/CN=$HOST" \
    -keyout "$DIR/tls.key" -out "$DIR/tls.csr" 2>/dev/null
  cat > "$DIR/san.ext" <<EXT
subjectAltName=DNS:$HOST
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
EXT
  openssl x509 -req -in "$DIR/tls.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$DIR/san.ext" -out "$DIR/tls.crt" 2>/dev/null
  rm -f "$DIR/tls.csr" "$DIR/san.ext"
fi
chmod 644 "$DIR/ca.crt" "$DIR/tls.crt"
openssl verify -CAfile "$DIR/ca.crt" "$DIR/tls.crt" >/dev/null \
  || { echo "error: $DIR/tls.crt does not verify against $DIR/ca.crt; delete $DIR and run again" >&2; exit 1; }

((apply)) || exit 0

command -v "$KUBECTL" >/dev/null 2>&1 \
  || { echo "error: kubectl is not installed. Install it: https://kubernetes.io/docs/tasks/tools/#kubectl" >&2; exit 1; }
kc() { if [[ -n "$CONTEXT" ]]; then "$KUBECTL" --context "$CONTEXT" "$@"; else "$KUBECTL" "$@"; fi; }

echo "==> Secret gateway/tcex-cert, ConfigMap default/tcex-ca"
kc create namespace gateway --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n gateway create secret tls tcex-cert --cert="$DIR/tls.crt" --key="$DIR/tls.key" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n default create configmap tcex-ca --from-file=ca.crt="$DIR/ca.crt" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
