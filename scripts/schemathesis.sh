#!/usr/bin/env bash
# Runs schemathesis against simgate's own /openapi.json: starts simgate on
# free ports with a temporary data dir, sends the API token, and fails on any
# failed check (5xx, answers that do not match the description, schema-valid
# requests refused, invalid ones accepted, …). Bounded: MAX_EXAMPLES per
# operation (default 20), SCHEMATHESIS_SECONDS overall (default 300).
# `DELETE /v1/tokens/{name}` is left out: it could revoke the run's own token.
# Extra arguments go to `schemathesis run`.
# Needs .tools/venv/bin/schemathesis (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

st=.tools/venv/bin/schemathesis
[ -x "$st" ] || { echo "schemathesis: $st missing; run scripts/setup.sh" >&2; exit 1; }
cargo build -q -p simgate
bin=target/debug/simgate

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/simgate.toml" <<TOML
data_dir = "$tmp/data"

[listen]
http = "127.0.0.1:0"
unified = "127.0.0.1:0"
harvest = "127.0.0.1:0"
api = "127.0.0.1:$port"
beam_http = "127.0.0.1:0"
beam_website = "127.0.0.1:0"
beam_tcp = "127.0.0.1:0"
beam_mqtt = "127.0.0.1:0"

[radius]
listen = "127.0.0.1:0"
TOML

RUST_LOG=warn "$bin" serve --config "$tmp/simgate.toml" >"$tmp/simgate.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/openapi.json" -o /dev/null 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/simgate.log" >&2; exit 1; }
  sleep 0.1
done
token=$(cat "$tmp/data/api.token")

echo "== schemathesis against $base/openapi.json"
status=0
# Run from the temporary dir: schemathesis leaves a .schemathesis/ state dir.
root=$PWD
(cd "$tmp" && timeout "${SCHEMATHESIS_SECONDS:-300}" "$root/$st" \
  --config-file "$root/scripts/schemathesis.toml" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --max-examples "${MAX_EXAMPLES:-20}" \
  --checks all \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --exclude-name 'DELETE /v1/tokens/{name}' \
  "$@") || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "schemathesis: simgate exited during the run" >&2
  cat "$tmp/simgate.log" >&2
  status=1
fi
if grep -q "panicked" "$tmp/simgate.log"; then
  echo "schemathesis: simgate logged a panic" >&2
  grep -A5 "panicked" "$tmp/simgate.log" >&2
  status=1
fi
exit "$status"
