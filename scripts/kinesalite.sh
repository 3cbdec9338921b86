#!/usr/bin/env bash
# kinesalite (a Kinesis API emulator on node) for simgate's end-to-end tests.
#
#   scripts/kinesalite.sh install   install kinesalite@3 into .tools/kinesalite (idempotent)
#   scripts/kinesalite.sh path      print the path of the kinesalite binary
#
# Tests find the binary at .tools/kinesalite/node_modules/.bin/kinesalite, or
# wherever $SIMGATE_KINESALITE points.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.tools/kinesalite"
BIN="$PREFIX/node_modules/.bin/kinesalite"
VERSION="3"

usage() {
    echo "usage: $0 {install|path}" >&2
    exit 2
}

installed() {
    [[ -x "$BIN" ]] && node "$BIN" --help >/dev/null 2>&1
}

install() {
    if installed; then
        echo "kinesalite already installed: $BIN"
        return 0
    fi
    for tool in node npm; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "error: $tool not found; install Node.js (e.g. apt-get install nodejs npm)" >&2
            exit 1
        fi
    done
    mkdir -p "$PREFIX"
    # A private package.json keeps npm from walking up into the repository.
    if [[ ! -f "$PREFIX/package.json" ]]; then
        printf '{\n  "name": "simgate-kinesalite",\n  "private": true\n}\n' >"$PREFIX/package.json"
    fi
    # npm 11 skips install scripts by default; kinesalite's leveldown ships
    # prebuilt binaries and loads without them (it runs in memory anyway).
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "kinesalite@$VERSION"
    if ! installed; then
        echo "error: kinesalite installed but $BIN does not run" >&2
        exit 1
    fi
    echo "kinesalite installed: $BIN"
}

case "${1:-}" in
    install) install ;;
    path)
        if [[ ! -x "$BIN" ]]; then
            echo "error: kinesalite not installed; run: $0 install" >&2
            exit 1
        fi
        echo "$BIN"
        ;;
    *) usage ;;
esac
