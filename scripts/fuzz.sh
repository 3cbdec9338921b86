#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time, as CI does.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 30 s, every target)
#
# Each target starts from a scratch copy of its seeds in fuzz/corpus/<target>,
# so the inputs libFuzzer finds interesting during a CI run are not left in
# the repository. Crashes go to fuzz/artifacts/<target>/ (libFuzzer prints
# the file), where `cargo test -p simgate --test fuzz_corpus` replays them
# until the bug is fixed; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#
# Uses fuzz/dict/<target>.dict as a libFuzzer dictionary when there is one.
# Builds with AddressSanitizer, debug assertions and overflow checks.
# FUZZ_SANITIZER=none builds without ASan (faster; panics and failed
# properties are still caught).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
if [ $# -gt 0 ]; then shift; fi
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed." >&2
  echo "fuzz: install it with 'WITH_FUZZ=1 scripts/setup.sh' (or 'cargo install --locked cargo-fuzz')." >&2
  exit 1
fi

# cargo-fuzz needs nightly-only rustc flags; the stable toolchain allows them
# with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets found ('cargo fuzz list' in fuzz/)" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/simgate-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"${fuzz[@]}" build --sanitizer "$sanitizer" --debug-assertions

failed=()
for target in "${targets[@]}"; do
  seeds="fuzz/corpus/$target"
  if [ -z "$(ls -A "$seeds" 2>/dev/null)" ]; then
    echo "fuzz: $seeds is missing or empty" >&2
    failed+=("$target (no seeds)")
    continue
  fi
  mkdir -p "$work/$target"
  cp -R "$seeds/." "$work/$target/"
  args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  if [ -f "fuzz/dict/$target.dict" ]; then
    args+=(-dict="fuzz/dict/$target.dict")
  fi
  echo "== fuzz $target for ${seconds}s (sanitizer: $sanitizer)"
  if ! "${fuzz[@]}" run --sanitizer "$sanitizer" --debug-assertions "$target" "$work/$target" -- "${args[@]}"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds}s without a failure"
