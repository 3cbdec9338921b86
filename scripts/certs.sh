#!/usr/bin/env bash
# Generates throwaway TLS material for the end-to-end tests' real peers
# (nginx, mosquitto, the TLS echo) with the openssl CLI:
#
#   DIR/ca.crt, ca.key          a self-signed test CA
#   DIR/server.crt, server.key  for DNS:localhost and IP:127.0.0.1, by the CA
#   DIR/wrong.crt, wrong.key    for DNS:wrong.example only, by the same CA
#                               (a verifying client must reject it on 127.0.0.1)
#   DIR/client.crt, client.key  a client certificate (CN=simgate-test-client),
#                               by the CA, for mTLS
#
# Usage: scripts/certs.sh DIR
# Idempotent: when every file is already there, nothing is regenerated. Keys
# are EC P-256 so the whole set takes well under a second. Nothing here is
# secret; never use these outside tests.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
command -v openssl >/dev/null || {
  echo "certs.sh: openssl not found (package openssl): run scripts/setup.sh" >&2
  exit 1
}
mkdir -p "$dir"
cd "$dir"

# Concurrent runs into the same DIR take turns, so the set always matches.
if command -v flock >/dev/null; then
  exec 9>.certs.lock
  flock 9
fi

all=(ca.crt ca.key server.crt server.key wrong.crt wrong.key client.crt client.key)
complete=1
for f in "${all[@]}"; do [ -s "$f" ] || complete=0; done
[ "$complete" = 1 ] && exit 0

# Build in a scratch directory and move into place at the end, so an
# interrupted run never leaves a half-made set that looks complete.
tmp=$(mktemp -d "./.certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: NAME.key + NAME.crt signed by the CA.
sign() {
  local name=$1 subj=$2 ext=$3
  key "$tmp/$name.key"
  openssl req -new -key "$tmp/$name.key" -subj "$subj" -out "$tmp/$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$tmp/$name.ext" \
    -out "$tmp/$name.crt" 2>/dev/null
}

key "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 3650 \
  -subj "/CN=simgate test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$tmp/ca.crt" 2>/dev/null

leaf="basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature"
sign server "/CN=localhost" \
  "$leaf\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1"
sign wrong "/CN=wrong.example" \
  "$leaf\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:wrong.example"
sign client "/CN=simgate-test-client" \
  "$leaf\nextendedKeyUsage=clientAuth"

for f in "${all[@]}"; do mv -f "$tmp/$f" "$f"; done
# Keys readable by the peers even when a root-started daemon drops privileges.
chmod 644 ./*.key
