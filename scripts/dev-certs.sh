#!/usr/bin/env bash
# Generates DEVELOPMENT certificates into certs/dev/ (or the folder given): a CA, a server certificate
# for localhost / 127.0.0.1 (listener TLS, or a test upstream), and a client certificate (a service node
# calling the sidecar, or the sidecar calling a 2-way-TLS upstream). Never use them in production.
#
#   scripts/dev-certs.sh [DIR] [DAYS]      # default: certs/dev, 3650 days
#
# Needs openssl (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-certs/dev}
DAYS=${2:-3650}
mkdir -p "$DIR"
cd "$DIR"

# CA
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$DAYS" \
  -subj "/CN=authsidecar development CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$DAYS" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  # PKCS#8 keys ("BEGIN PRIVATE KEY"), which every TLS stack reads.
  openssl pkcs8 -topk8 -nocrypt -in "$1.key" -out "$1.key.p8" && mv "$1.key.p8" "$1.key"
  rm -f "$1.csr" "$1.ext"
}
issue server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
issue client service-node "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
rm -f ca.srl
chmod 600 ./*.key
echo "development certificates written to $DIR: ca.pem, server.pem/.key, client.pem/.key ($DAYS days)"
