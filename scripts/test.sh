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
echo "== schemathesis (the control API against its own OpenAPI)"
scripts/schemathesis.sh

if [ "${WITH_FUZZ:-0}" = 1 ] && [ -x scripts/fuzz.sh ]; then
  echo "== fuzz (bounded)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi
echo "== all tests passed"
