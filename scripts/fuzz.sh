#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time, as CI does,
# several targets at once.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 30 s, every target)
#   scripts/fuzz.sh TARGET... [SECONDS]       (the same, target names first)
#
# When the first argument is a number it is SECONDS and the rest are targets;
# otherwise the arguments are targets, and a last one that is a number is
# SECONDS. SECONDS is per target (libFuzzer's -max_total_time).
#
# The targets are built once, then run FUZZ_JOBS at a time (default: the
# number of CPUs, `nproc`), each in its own process, so the wall time is
# about ceil(targets / FUZZ_JOBS) × SECONDS plus the build. Each target
# starts from a scratch copy of its seeds in fuzz/corpus/<target>, so the
# inputs libFuzzer finds interesting during a CI run are not left in the
# repository. Crashes go to fuzz/artifacts/<target>/, where
# `cargo test -p simgate --test fuzz_corpus` replays them until the bug is
# fixed; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#
# At the end one line per target gives its outcome, runs (executions) and
# coverage (libFuzzer's cov and ft); the log of every target that failed is
# printed in full (its last 200 lines). Exits non-zero if any target
# crashed, failed its property, timed out or had no seeds.
#
# Uses fuzz/dict/<target>.dict as a libFuzzer dictionary when there is one.
# Builds with AddressSanitizer, debug assertions and overflow checks.
# FUZZ_SANITIZER=none builds without ASan (faster; panics and failed
# properties are still caught).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...] | scripts/fuzz.sh TARGET... [SECONDS]" >&2
  exit 2
}
is_number() {
  case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

seconds=30
targets=()
if [ $# -gt 0 ] && is_number "$1"; then
  seconds="$1"
  shift
  targets=("$@")
elif [ $# -gt 0 ]; then
  targets=("$@")
  last="${targets[${#targets[@]} - 1]}"
  if is_number "$last"; then
    seconds="$last"
    targets=("${targets[@]:0:${#targets[@]}-1}")
  fi
fi
for t in "${targets[@]}"; do
  case "$t" in
    '' | -* | */* | *[!A-Za-z0-9_-]*) usage ;;
  esac
  if is_number "$t"; then usage; fi
done
if [ "$seconds" -eq 0 ]; then usage; fi

sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
if ! is_number "$jobs" || [ "$jobs" -lt 1 ]; then
  echo "fuzz: FUZZ_JOBS must be a positive number, got '$jobs'" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed." >&2
  echo "fuzz: install it with 'WITH_FUZZ=1 scripts/setup.sh' (or 'cargo install --locked cargo-fuzz')." >&2
  exit 1
fi

# cargo-fuzz needs nightly-only rustc flags; the stable toolchain allows them
# with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${fuzz[@]}" list)
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets found ('cargo fuzz list' in fuzz/)" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/simgate-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# One build of every target asked for (cargo shares the work across them);
# the runs below start the binaries directly, so parallel runs do not queue
# on cargo's build lock.
build=(build --sanitizer "$sanitizer" --debug-assertions)
if [ ${#targets[@]} -eq 1 ]; then build+=("${targets[0]}"); fi
"${fuzz[@]}" "${build[@]}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$triple/release"
case "$bin_dir" in /*) ;; *) bin_dir="$PWD/$bin_dir" ;; esac
if [ "$sanitizer" = address ]; then
  # What `cargo fuzz run` adds for ASan builds.
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
fi

# Runs one target; its log is $work/<target>.log, its exit code
# $work/<target>.rc.
run_one() {
  local target="$1"
  local log="$work/$target.log"
  local seeds="fuzz/corpus/$target"
  if [ -z "$(ls -A "$seeds" 2>/dev/null)" ]; then
    echo "fuzz: $seeds is missing or empty" >"$log"
    echo 3 >"$work/$target.rc"
    return
  fi
  if [ ! -x "$bin_dir/$target" ]; then
    echo "fuzz: $bin_dir/$target was not built (unknown target?)" >"$log"
    echo 4 >"$work/$target.rc"
    return
  fi
  mkdir -p "$work/corpus/$target" "fuzz/artifacts/$target"
  cp -R "$seeds/." "$work/corpus/$target/"
  local args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1
    -artifact_prefix="fuzz/artifacts/$target/")
  if [ -f "fuzz/dict/$target.dict" ]; then
    args+=(-dict="fuzz/dict/$target.dict")
  fi
  local rc=0
  "$bin_dir/$target" "${args[@]}" "$work/corpus/$target" >"$log" 2>&1 || rc=$?
  echo "$rc" >"$work/$target.rc"
}

echo "== fuzz ${#targets[@]} targets for ${seconds}s each, $jobs at a time (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  echo "fuzz: start $target"
  run_one "$target" &
done
wait

failed=()
printf '\n%-20s %-8s %12s %8s %8s %8s\n' target result runs cov ft corpus
for target in "${targets[@]}"; do
  log="$work/$target.log"
  rc="$(cat "$work/$target.rc" 2>/dev/null || echo 5)"
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: K/…") and its
  # final stats.
  status_line="$(grep -E '^#[0-9]+' "$log" 2>/dev/null | tail -n 1 || true)"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -n 1)"
  if [ -z "$runs" ]; then
    runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$status_line")"
  fi
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status_line")"
  result=ok
  if [ "$rc" != 0 ]; then
    result=FAILED
    failed+=("$target")
  fi
  printf '%-20s %-8s %12s %8s %8s %8s\n' "$target" "$result" "${runs:--}" "${cov:--}" "${ft:--}" "${corp:--}"
done

if [ ${#failed[@]} -gt 0 ]; then
  for target in "${failed[@]}"; do
    echo
    echo "== fuzz log of $target (exit $(cat "$work/$target.rc" 2>/dev/null || echo '?'); last 200 lines)"
    tail -n 200 "$work/$target.log" || true
  done
  echo
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds}s without a failure"
