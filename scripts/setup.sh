#!/usr/bin/env bash
# Installs what simgate's tests need on a fresh machine: Debian packages, the
# kinesalite Kinesis emulator (npm), schemathesis, moto and PyJWT (pip, into .tools/venv)
# and, for fuzzing, cargo-fuzz.
# Idempotent: already-installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nc >/dev/null || need_apt+=(netcat-openbsd)
command -v curl >/dev/null || need_apt+=(curl)
command -v radclient >/dev/null || need_apt+=(freeradius-utils)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# The Beam tests' nginx echoes every request header and the body through njs.
[ -e /usr/lib/nginx/modules/ngx_http_js_module.so ] || need_apt+=(libnginx-mod-http-js)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
# scripts/bench.sh beam-http compares Beam HTTP with HAProxy.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# scripts/schemathesis.sh runs schemathesis from a venv (.tools/venv).
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# The console's browser test (dataplane/tests/e2e_console.rs) runs Debian's
# Chromium through Playwright (never `playwright install`: no browser CDN).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# The fleet tests (dataplane/tests/fleet.rs) run a real three-member etcd.
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
# Harvest on PostgreSQL (dataplane/tests/fleet_harvest.rs, the store's tests)
# starts throwaway servers with initdb/postgres (as the `postgres` user under root).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

scripts/kinesalite.sh install

if ! .tools/venv/bin/schemathesis --version >/dev/null 2>&1; then
  echo "setup: installing schemathesis into .tools/venv"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "schemathesis==4.*"
fi

# The Firehose end-to-end test (dataplane/tests/e2e_firehose.rs) runs moto's
# AWS emulator (S3 + Firehose) from the same venv.
if ! .tools/venv/bin/moto_server --help >/dev/null 2>&1; then
  echo "setup: installing moto[server] into .tools/venv"
  [ -x .tools/venv/bin/pip ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "moto[server]==5.*"
fi

# The Endorse end-to-end test (dataplane/tests/e2e_endorse.rs) verifies
# tokens with PyJWT, fetching the JWKS over HTTP: an independent verifier.
if ! .tools/venv/bin/python -c "import jwt, cryptography" >/dev/null 2>&1; then
  echo "setup: installing pyjwt[crypto] into .tools/venv"
  [ -x .tools/venv/bin/pip ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "pyjwt[crypto]==2.*"
fi

# The console's browser test drives /usr/bin/chromium with Playwright for
# Python (executable_path; its own browser downloads are not used).
if ! .tools/venv/bin/python -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "setup: installing playwright into .tools/venv"
  [ -x .tools/venv/bin/pip ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "playwright==1.*"
fi

if [ "${WITH_FUZZ:-0}" = 1 ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
