#!/usr/bin/env bash
# Benchmarks of simgate, each side by side with a raw baseline measured on the
# same machine in the same run, reported as a ratio. See benches/README.md.
#
#   scripts/bench.sh funnel-udp
#   scripts/bench.sh sessions
#
# funnel-udp: `loadgen send` writes 100-byte JSON records from 1,000 SIM
# source addresses (127.0.1.1 … 127.0.4.232) with sendmmsg, first into a plain
# recvmmsg socket (`loadgen sink`: the raw kernel rate), then into simgate's
# unified UDP port with Funnel delivering to the in-process null sink. Runs
# alternate raw/simgate BENCH_RUNS times; the medians are printed.
#
# Environment (defaults in brackets):
#   BENCH_SECONDS      measured window per run [10]
#   BENCH_WARMUP       seconds of load before each window [2]
#   BENCH_RUNS         raw+simgate pairs, alternating [3]
#   BENCH_SOURCES      simulated SIMs [1000]
#   BENCH_BATCH        datagrams per sendmmsg [64]
#   BENCH_SIZE         payload bytes [100]
#   BENCH_UDP_WORKERS  simgate UDP sockets, and the sink's [nproc]
#   BENCH_RATE         also run at this fixed offered load, datagrams/s [off]
#   BENCH_ECHO=1       also run the raw sink answering "200" to each datagram,
#                      one sendto each and one sendmmsg per batch (the cost of
#                      the reply traffic itself) [off]
#   BENCH_KEEP=1       keep the work directory (configs, logs, per-run lines)
#
# sessions: `session_scale` fills a SessionTable with BENCH_SESSIONS sessions
# and reports its RSS (and that of a Snapshot of as many subscribers, and of a
# table filled through the RADIUS handler), then times lookups from
# BENCH_READERS threads for BENCH_SECONDS per pass: with no updates, while a
# client sends Accounting-Requests (Start/Interim/Stop) over UDP to a real
# RADIUS listener at BENCH_UPDATE_RATE/s, and lookup + snapshot resolve under
# the same updates. Prints PASS/FAIL against the targets (table <= 256 MiB,
# lookup p99 < 1 us); exits 0 whatever they say, non-zero if the bench broke.
# The criterion micro-benchmarks: cargo bench -p simgate-benches --bench sessions
#
#   BENCH_SESSIONS       sessions in the table [1000000]
#   BENCH_SECONDS        seconds per pass [10]
#   BENCH_UPDATE_RATE    RADIUS Accounting-Requests per second [5000]
#   BENCH_READERS        lookup threads [nproc - 1, at least 1: a core is
#                        left to the updater and the listener]
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
}

# scripts/bench.sh sessions: one process does it all (see the header).
sessions_bench() {
  local sessions=${BENCH_SESSIONS:-1000000} secs=${BENCH_SECONDS:-10}
  local rate=${BENCH_UPDATE_RATE:-5000} readers=${BENCH_READERS:-$(($(nproc) - 1))} v
  ((readers >= 1)) || readers=1
  for v in sessions secs rate readers; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: ${v^^} must be a whole number" >&2; exit 2; }
  done
  echo "== building release binaries"
  cargo build --release -p simgate-benches --bin session_scale
  local work
  work=$(mktemp -d -t simgate-bench.XXXXXX)
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'" EXIT
  # Other builds may replace target/release while we run: use a copy.
  cp target/release/session_scale "$work/"
  echo "== sessions: $sessions sessions, $readers reader thread(s), ${secs}s per pass," \
    "RADIUS updates at $rate/s ($(nproc) cores)"
  "$work/session_scale" --sessions "$sessions" --seconds "$secs" --rate "$rate" \
    --readers "$readers" "$@"
}

case "${1:-}" in
  funnel-udp) ;;
  sessions)
    shift
    sessions_bench "$@"
    exit
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage
    exit 2
    ;;
esac

SECS=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-2}
RUNS=${BENCH_RUNS:-3}
SOURCES=${BENCH_SOURCES:-1000}
BATCH=${BENCH_BATCH:-64}
SIZE=${BENCH_SIZE:-100}
WORKERS=${BENCH_UDP_WORKERS:-$(nproc)}
RATE=${BENCH_RATE:-}
for v in SECS WARMUP RUNS SOURCES BATCH SIZE WORKERS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a whole number" >&2; exit 2; }
done
[[ -z $RATE || $RATE =~ ^[0-9]+$ ]] || { echo "bench: BENCH_RATE must be a whole number" >&2; exit 2; }

echo "== building release binaries"
cargo build --release -p simgate -p simgate-benches

WORK=$(mktemp -d -t simgate-bench.XXXXXX)
# Other builds may replace target/release while we run: use copies.
cp target/release/simgate target/release/loadgen "$WORK/"
LOADGEN=$WORK/loadgen
SIMGATE=$WORK/simgate
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1,000 sockets plus simgate's.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SOURCES + 256)) ]; then
  ulimit -n $((SOURCES + 256)) 2>/dev/null || true
fi

# Stops a process we started: TERM, then KILL after $2 seconds.
stop() {
  local pid=$1 grace=${2:-15} i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # Forget it, so the exit trap never signals a reused pid.
  local keep=() p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do
    [ "$p" = "$pid" ] || keep+=("$p")
  done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# Waits until file $1 has a line, or fails after 10 s.
first_line() {
  local i
  for ((i = 0; i < 100; i++)); do
    if [ -s "$1" ]; then
      head -n1 "$1"
      return 0
    fi
    sleep 0.1
  done
  echo "bench: timed out waiting for $1" >&2
  return 1
}

send() { # target metrics-url out-file [extra send args...]
  local target=$1 url=$2 out=$3
  shift 3
  "$LOADGEN" send --target "$target" --sources "$SOURCES" --batch "$BATCH" --size "$SIZE" \
    --warmup "$WARMUP" --duration "$SECS" --metrics-url "$url" "$@" >>"$out"
}

# Every process started gets its own files: SEQ numbers them.
SEQ=0

run_raw() { # result-file reply-mode [extra send args...]
  local out=$1 reply=$2 line udp url pid n=$((++SEQ))
  shift 2
  "$LOADGEN" sink --workers "$WORKERS" --reply "$reply" --max-seconds $((WARMUP + SECS + 120)) \
    >"$WORK/sink.$n.out" &
  pid=$!
  PIDS+=("$pid")
  line=$(first_line "$WORK/sink.$n.out")
  udp=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' <<<"$line")
  url=$(sed -n 's/.*metrics=\([^ ]*\).*/\1/p' <<<"$line")
  send "$udp" "$url" "$out" --metric received=loadgen_sink_received_total "$@"
  stop "$pid" 5
  tail -n1 "$out"
}

run_simgate() { # result-file [extra send args...]
  local out=$1 line udp api pid i n=$((++SEQ))
  local dir=$WORK/simgate.$n
  shift
  mkdir -p "$dir"
  line=$("$LOADGEN" simgate-config --data-dir "$dir/data" --out "$dir/simgate.toml" \
    --sources "$SOURCES" --udp-workers "$WORKERS")
  udp=$(sed -n 's/.*unified=\([^ ]*\).*/\1/p' <<<"$line")
  api=$(sed -n 's/.*api=\([^ ]*\).*/\1/p' <<<"$line")
  RUST_LOG=${RUST_LOG:-warn} "$SIMGATE" serve --config "$dir/simgate.toml" >"$dir/stdout" 2>"$dir/stderr" &
  pid=$!
  PIDS+=("$pid")
  for ((i = 0; i < 100; i++)); do
    "$LOADGEN" scrape "http://$api/health" >/dev/null 2>&1 && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench: simgate exited at start:" >&2
      tail -n 20 "$dir/stderr" >&2
      return 1
    fi
    sleep 0.1
  done
  send "$udp" "http://$api/metrics" "$out" \
    --metric ingress='simgate_ingress_messages_total{listener="unified",protocol="udp"}' \
    --metric accepted=simgate_funnel_records_in_total \
    --metric delivered='simgate_funnel_records_out_total{result="delivered"}' \
    --metric dropped=simgate_funnel_dropped_total \
    --metric reply_dropped='simgate_ingress_rejected_total{protocol="udp",reason="reply_dropped"}' \
    --metric batch_sum=simgate_funnel_batch_records_sum \
    --metric batch_count=simgate_funnel_batch_records_count \
    "$@"
  stop "$pid" 15
  tail -n1 "$out"
}

# Values of key $2 in the result lines of file $1, one per line.
values() { grep -o "\(^\| \)$2=[^ ]*" "$1" | cut -d= -f2; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { values "$1" "$2" | median; }

# Mean records per batch of each run (delta sum / delta count), median.
mean_batch() {
  paste <(values "$1" batch_sum) <(values "$1" batch_count) |
    awk '$2 > 0 { print $1 / $2 }' | median
}

# One table row: offered side file raw-received; the simgate row's figure
# is records accepted, the others' datagrams received.
row() {
  local offered=$1 side=$2 f=$3 base=$4 main received accepted delivered dropped batch
  if [ "$side" = simgate ]; then
    main=accepted_rate
    accepted=$(med "$f" accepted_rate)
    delivered=$(med "$f" delivered_rate)
    dropped=$(med "$f" dropped_rate)
    batch=$(mean_batch "$f")
    received=$(med "$f" ingress_rate)
  else
    main=received_rate
    accepted=- delivered=- dropped=- batch=-
    received=$(med "$f" received_rate)
  fi
  awk -v o="$offered" -v s="$side" -v se="$(med "$f" sent_rate)" -v rx="$received" \
    -v ac="$accepted" -v de="$delivered" -v re="$(med "$f" replies_rate)" -v dr="$dropped" \
    -v b="$batch" -v m="$(med "$f" "$main")" -v base="$base" '
    function n(x) { return (x == "-" || x == "nan") ? sprintf("%11s", x) : sprintf("%11.0f", x) }
    BEGIN {
      printf "%-9s %-16s %s %s %s %s %s %s %7s %6.3f\n", o, s, n(se), n(rx), n(ac), n(de), n(re), n(dr),
        (b == "-" || b == "nan") ? b : sprintf("%.1f", b), (base > 0) ? m / base : 0
    }'
}

pass() { # label [extra send args...]
  local label=$1 n side
  shift
  local sides=(raw)
  if [ "${BENCH_ECHO:-0}" = 1 ]; then
    sides+=(raw+reply-each raw+reply-batch)
  fi
  sides+=(simgate)
  for side in "${sides[@]}"; do
    : >"$WORK/result.$label.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    for side in "${sides[@]}"; do
      echo "-- offered $label, run $n/$RUNS: $side"
      case $side in
        raw) run_raw "$WORK/result.$label.$side" none "$@" ;;
        raw+reply-each) run_raw "$WORK/result.$label.$side" each "$@" ;;
        raw+reply-batch) run_raw "$WORK/result.$label.$side" batch "$@" ;;
        simgate) run_simgate "$WORK/result.$label.$side" "$@" ;;
      esac
    done
  done
  local base
  base=$(med "$WORK/result.$label.raw" received_rate)
  for side in "${sides[@]}"; do
    ROWS+=("$(row "$label" "$side" "$WORK/result.$label.$side" "$base")")
  done
}

ROWS=()
echo "== funnel-udp: $SOURCES SIMs, $SIZE-byte records, sendmmsg batch $BATCH," \
  "$WORKERS UDP worker(s), $RUNS x ${SECS}s runs (+${WARMUP}s warm-up), sides alternating"
pass max
if [ -n "$RATE" ]; then
  pass "$RATE" --rate "$RATE"
fi

echo
echo "funnel-udp, per second, median of $RUNS runs ($(nproc) cores, Linux $(uname -r)):"
printf "%-9s %-16s %11s %11s %11s %11s %11s %11s %7s %6s\n" \
  offered side sent received accepted delivered replies dropped batch ratio
printf '%s\n' "${ROWS[@]}"
echo
echo "received  datagrams read by the receiver (loadgen sink, or simgate's UDP ingress counter)"
echo "accepted  records queued by Funnel; batch: mean records per null-sink batch (max 500)"
echo "ratio     received (simgate: accepted) / raw received; target for simgate >= 0.9"
