#!/usr/bin/env bash
# Runs every test of simgate from a fresh clone: installs what the tests need,
# checks formatting and lints, runs unit, property, end-to-end and fuzz-corpus
# tests, and with CI=true also runs each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = true ]; then export WITH_FUZZ=1; fi
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc
echo "== control API tests again, on the etcd store (a fleet's backend)"
# The same tests, with each control plane opened on a real etcd (one member
# on loopback, ports from the OS) instead of its redb file.
etcd_dir="$(mktemp -d "${TMPDIR:-/tmp}/simgate-etcd.XXXXXX")"
read -r client_port peer_port < <(python3 -c 'import socket
a=socket.socket(); a.bind(("127.0.0.1",0)); b=socket.socket(); b.bind(("127.0.0.1",0))
print(a.getsockname()[1], b.getsockname()[1])')
etcd --data-dir "$etcd_dir/data" --name test \
  --listen-client-urls "http://127.0.0.1:$client_port" \
  --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "test=http://127.0.0.1:$peer_port" >"$etcd_dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill "$etcd_pid" 2>/dev/null || true; rm -rf "$etcd_dir"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$client_port/health" | grep -q '"true"' && break
  sleep 0.1
done
SIMGATE_TEST_ETCD="http://127.0.0.1:$client_port" cargo test -p simgate-control \
  --test api --test api_auth --test api_tokens --test api_soracom --test api_beam
kill "$etcd_pid" 2>/dev/null || true
trap - EXIT
rm -rf "$etcd_dir"

echo "== schemathesis (the control API against its own OpenAPI)"
scripts/schemathesis.sh

if [ "${WITH_FUZZ:-0}" = 1 ] && [ -x scripts/fuzz.sh ]; then
  echo "== fuzz (bounded)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi
echo "== all tests passed"
