# Shared output of the bench scenarios; sourced by scripts/bench.sh (which
# runs from the repository root). See benches/README.md, "Running everything".
#
#   bench_result NAME RATIO ROWS_JSON [UNIT [WHAT [NOTE]]]
#
# prints `NAME ratio=<x>` and writes $BENCH_OUT/NAME.json:
#   {"scenario": NAME, "ratio": x, "higher_is_better": true, "unit": UNIT,
#    "what": WHAT, "rows": ROWS_JSON, "machine": {nproc, kernel, loadavg, cpu},
#    "time": "...Z", "commit": "...", "run": BENCH_RUN_ID, "note": NOTE}
# RATIO is always simgate / best peer, higher is better; nan, n/a, - or
# empty when there is no peer (ratio null in the JSON, printed n/a; say why
# in NOTE). WHAT says what was divided, e.g. "accepted / raw received".
# ROWS_JSON is an array of objects, one per side, absolute figures, e.g.
#   $(bench_rows "$(bench_row side=simgate rate=24172 p99_us=7815)" "$(bench_row side=nginx ...)")

BENCH_OUT=${BENCH_OUT:-target/bench}
BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

bench_result() {
  local name=$1 ratio=$2 rows=$3 unit=${4:-} what=${5:-} note=${6:-} shown
  shown=$(awk -v r="$ratio" 'BEGIN {
    if (r ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/) printf "%.3f", r; else print "n/a"
  }')
  echo "$name ratio=$shown"
  python3 "$BENCH_LIB_DIR/chart.py" result --out "$BENCH_OUT" --name "$name" --ratio "$shown" \
    --rows "$rows" --unit "$unit" --what "$what" --note "$note" --run "${BENCH_RUN_ID:-}"
}

# One JSON object from key=value arguments: numbers stay numbers; nan, -,
# ? and empty values become null; anything else a string.
bench_row() {
  local kv k v out= sep=
  for kv in "$@"; do
    k=${kv%%=*}
    v=${kv#*=}
    if [[ $v =~ ^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; then
      # JSON has no leading "." or trailing "." numbers.
      [[ $v == *. ]] && v=${v}0
      [[ $v == .* ]] && v=0$v
      [[ $v == -.* ]] && v=-0${v#-}
      # Nor leading zeros (a count printed as 007).
      if [[ $v =~ ^(-?)0+([0-9].*)$ ]]; then v=${BASH_REMATCH[1]}${BASH_REMATCH[2]}; fi
    elif [[ -z $v || $v == nan || $v == -nan || $v == - || $v == '?' || $v == none ]]; then
      v=null
    else
      v=${v//\\/\\\\}
      v=${v//\"/\\\"}
      v=${v//$'\t'/ }
      v=\"$v\"
    fi
    out+="$sep\"$k\":$v"
    sep=,
  done
  echo "{$out}"
}

# A JSON array of the objects given as arguments.
bench_rows() {
  local IFS=,
  echo "[$*]"
}

# ------------------------------------------------------------ scenario setup
# For the scenario functions; cleanup (the EXIT trap) is bench.sh's.

# Exits 2 unless every variable named holds a whole number.
bench_whole_numbers() { # VAR...
  local v
  for v in "$@"; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a whole number" >&2; exit 2; }
  done
}

# WORK: a fresh work directory; cleanup stops the processes in PIDS and
# removes it on exit.
bench_work() {
  WORK=$(mktemp -d -t simgate-bench.XXXXXX)
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# Raises the open-file limit to $1 if it is lower (and may be raised).
bench_fd_limit() { # n
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$1" ]; then
    ulimit -n "$1" 2>/dev/null || true
  fi
}

# Makes WORK (bench_work) and sets SIMGATE and LOADGEN to copies in
# $WORK/bin of BENCH_SIMGATE and BENCH_LOADGEN, or of release builds
# (nothing is built when both are given).
bench_binaries() {
  if [ -n "${BENCH_SIMGATE:-}" ] && [ -n "${BENCH_LOADGEN:-}" ]; then
    echo "== using $BENCH_SIMGATE and $BENCH_LOADGEN (nothing built)"
  elif [ -n "${BENCH_SIMGATE:-}" ]; then
    echo "== building release binaries"
    cargo build --release -p simgate-benches --bin loadgen
  else
    echo "== building release binaries"
    cargo build --release -p simgate -p simgate-benches --bin simgate --bin loadgen
  fi
  bench_work
  # Other builds may replace target/release while we run: use copies.
  mkdir "$WORK/bin"
  cp "${BENCH_SIMGATE:-target/release/simgate}" "$WORK/bin/simgate"
  cp "${BENCH_LOADGEN:-target/release/loadgen}" "$WORK/bin/loadgen"
  SIMGATE=$WORK/bin/simgate
  LOADGEN=$WORK/bin/loadgen
}

# ------------------------------------------------------------ all, --compare

# Every scenario, in the order `all` runs them; one missing from this
# bench.sh (its function <name with _>_bench undefined) is skipped.
BENCH_ALL_SCENARIOS=(funnel-udp funnel-durable sessions beam-http beam-tcp funnel-sinks harvest-ingest)

# The function that runs scenario $1, if bench.sh has it.
bench_fn() {
  local fn=${1//-/_}_bench
  if declare -F "$fn" >/dev/null; then echo "$fn"; else return 1; fi
}

# Runs scenarios $@ (all of them when none is given), each in its own
# bench.sh process with shorter defaults (so the whole run takes ~15-20 min
# on 2 cores; any BENCH_* set by the caller wins), logs each to
# $BENCH_OUT/<scenario>.log, then writes $BENCH_OUT/summary.json and
# summary.svg and prints the summary table. Returns 1 when a scenario broke.
bench_all() {
  local scenarios=("$@") s envs failed=() t0 rc
  if ((${#scenarios[@]} == 0)); then
    for s in "${BENCH_ALL_SCENARIOS[@]}"; do
      if bench_fn "$s" >/dev/null; then scenarios+=("$s"); else echo "bench: no scenario $s here, skipped"; fi
    done
  fi
  for s in "${scenarios[@]}"; do
    bench_fn "$s" >/dev/null || { echo "bench: unknown scenario $s" >&2; return 2; }
  done
  BENCH_RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
  export BENCH_RUN_ID BENCH_OUT
  mkdir -p "$BENCH_OUT"
  t0=$(date +%s)
  echo "== bench run $BENCH_RUN_ID: ${scenarios[*]}; results in $BENCH_OUT/"
  for s in "${scenarios[@]}"; do
    envs=(BENCH_SECONDS="${BENCH_SECONDS:-5}" BENCH_RUNS="${BENCH_RUNS:-3}")
    case $s in
      # A 30 s outage still shows RSS and spool growth; 256 MiB still times
      # a recovery (the 1 GiB target: scripts/bench.sh funnel-durable).
      funnel-durable) envs+=(BENCH_OUTAGE_SECONDS="${BENCH_OUTAGE_SECONDS:-30}"
        BENCH_SPOOL_FILL="${BENCH_SPOOL_FILL:-256M}") ;;
      # Six sinks, each a direct and a simgate window per run.
      funnel-sinks) envs+=(BENCH_RUNS="${BENCH_RUNS:-2}") ;;
    esac
    echo
    echo "======== $s (${envs[*]}) ========"
    set +e
    env "${envs[@]}" scripts/bench.sh "$s" 2>&1 | tee "$BENCH_OUT/$s.log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
      echo "bench: $s exited $rc (log: $BENCH_OUT/$s.log)" >&2
      failed+=("$s")
      # Interrupted: stop the whole run, but still write what was measured.
      if ((rc == 130)); then break; fi
    fi
  done
  echo
  echo "======== summary (the run took $(($(date +%s) - t0)) s) ========"
  local args=(--out "$BENCH_OUT" --run "$BENCH_RUN_ID")
  for s in "${failed[@]+"${failed[@]}"}"; do
    args+=(--failed "$s")
  done
  python3 "$BENCH_LIB_DIR/chart.py" summary "${args[@]}"
  ((${#failed[@]} == 0))
}

# scripts/bench.sh --compare OLD.json [--against NEW.json | scenario...]
bench_compare() {
  local old=${1:-} tmp rc=0
  [ -n "$old" ] && [ -r "$old" ] || { echo "bench: --compare needs a readable OLD.json" >&2; return 2; }
  shift
  if [ "${1:-}" = --against ]; then
    [ -n "${2:-}" ] && [ -r "$2" ] || { echo "bench: --against needs a readable NEW.json" >&2; return 2; }
    python3 "$BENCH_LIB_DIR/chart.py" compare "$old" "$2"
    return
  fi
  # Before a long run, not after it.
  python3 "$BENCH_LIB_DIR/chart.py" check "$old" || return 2
  # The run overwrites $BENCH_OUT/summary.json, which may be OLD itself.
  tmp=$(mktemp -t simgate-bench-old.XXXXXX.json)
  cp "$old" "$tmp"
  bench_all "$@" || rc=$?
  if ((rc == 2)); then
    rm -f "$tmp"
    return 2
  fi
  echo
  rc=0
  python3 "$BENCH_LIB_DIR/chart.py" compare "$tmp" "$BENCH_OUT/summary.json" --only-new \
    --old-label "$old" || rc=$?
  rm -f "$tmp"
  return "$rc"
}
