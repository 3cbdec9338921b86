#!/usr/bin/env bash
# Benchmarks of simgate, each side by side with a raw baseline measured on the
# same machine in the same run, reported as a ratio. See benches/README.md.
#
#   scripts/bench.sh funnel-udp
#   scripts/bench.sh funnel-durable
#   scripts/bench.sh sessions
#   scripts/bench.sh beam-http
#   scripts/bench.sh funnel-sinks
#   scripts/bench.sh beam-tcp          (scripts/bench/beam_tcp.sh: Beam TCP→TLS vs HAProxy)
#   scripts/bench.sh harvest-ingest    (scripts/bench/harvest_ingest.sh: Harvest vs raw store append)
#   scripts/bench.sh io-uring          (scripts/bench/io_uring.sh: raw drain, io_uring vs recvmmsg)
#   scripts/bench.sh fleet             (scripts/bench/fleet.sh: 3 nodes on etcd vs one node)
#   scripts/bench.sh [all [scenario...]]        every scenario (or those), then a summary
#   scripts/bench.sh --compare OLD.json [scenario...]    run, then compare with OLD
#   scripts/bench.sh --compare OLD.json --against NEW.json   compare only
#
# Each scenario prints its table and one line `NAME ratio=<x>` per result
# (simgate / best peer, higher is better; n/a without a peer) and writes
# target/bench/NAME.json (scripts/bench/lib.sh: bench_result). `all` runs
# each scenario in its own process with shorter defaults (BENCH_SECONDS=5,
# BENCH_RUNS=3, funnel-sinks BENCH_RUNS=2, funnel-durable
# BENCH_OUTAGE_SECONDS=30 BENCH_SPOOL_FILL=256M; what the caller sets wins;
# ~15-20 min on 2 cores), logs each to target/bench/SCENARIO.log, then writes
# target/bench/summary.json (the run's results merged) and summary.svg (a bar
# chart of the ratios, scripts/bench/chart.py) and prints a summary table;
# exits 1 if a scenario broke. --compare flags REGRESSION where a ratio fell
# below 0.95 x OLD's, and exits 1 if one did (OLD: a summary.json or one
# NAME.json). BENCH_OUT moves target/bench (relative to the repository).
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
#   BENCH_DURABILITY   simgate's [funnel] durability, memory or spool [memory:
#                      what the figures in benches/README.md were measured with]
#   BENCH_KEEP=1       keep the work directory (configs, logs, per-run lines)
#   BENCH_SILENT=1     also run simgate with `[ingress] udp_reply = false`
#                      (side simgate-silent: what answering costs) [off]
#   BENCH_PERF=1       also profile simgate during each measured window
#                      (`perf record -F 999 -g`) and print its self time by
#                      category (scripts/bench/perf_summary.py) and the
#                      hottest symbols; the profiler costs some throughput,
#                      so compare profiled runs with profiled runs [off]
#
# funnel-durable: the cost of the Funnel spool and what an outage does.
# (1) Throughput as funnel-udp, at full speed, sides raw / durability=memory /
# durability=spool alternating BENCH_RUNS times: medians and the ratio
# spool/memory (target >= 0.8); then the time from sending a record to its
# UDP answer at BENCH_RATE/s, both durabilities (p50 ... max). (2) For each
# durability, a sink outage: the destination is a Kinesis endpoint on a
# loopback port that refuses connections, records offered at BENCH_RATE/s for
# BENCH_OUTAGE_SECONDS while simgate's VmRSS and /metrics are sampled every
# second: RSS at start / max / end, spool bytes, records accepted, refused
# and dropped. (3) Restart time: simgate is killed with SIGKILL after the
# spool outage, and again after a pass that fills a spool to BENCH_SPOOL_FILL
# at full speed, and restarted: milliseconds from the spawn to the first
# answer of /health and to the first UDP record answered (target: < 1 s with
# 1 GiB). Prints PASS/FAIL lines; exits 0 whatever they say, non-zero if the
# bench broke. Same variables as funnel-udp (BENCH_RATE and BENCH_DURABILITY
# excepted), and:
#   BENCH_RATE            offered load of the latency and outage passes,
#                         records/s [20000]
#   BENCH_OUTAGE_SECONDS  length of each outage pass, 0 to skip [300]
#   BENCH_SPOOL_MAX       [funnel] spool_max_bytes during the outage [256M]
#   BENCH_SPOOL_FILL      spool size for the restart pass, 0 to skip [1G]
#                         (sizes: bytes, or with K, M, G: binary units)
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
#
# beam-http: Beam's HTTP entry against nginx and HAProxy doing the same job
# in the same run. An nginx over TLS on loopback answers `200 ok` (the
# upstream; certificates from scripts/certs.sh); three proxies take turns in
# front of it, each HTTP/1.1 in -> HTTPS out (the test CA verified, SNI
# localhost, upstream connections kept alive), each adding `X-Soracom-IMSI`
# for the device's source address: simgate (Beam HTTP entry, a static
# session per source address), nginx (`proxy_pass https://`, `map
# $remote_addr`), HAProxy (`http-reuse always`, `map_ip`). `loadgen http`
# drives BENCH_CONNECTIONS keep-alive connections, each from its own SIM
# address (127.0.1.1 ...), closed loop: GET /, read the whole answer, again.
# Per proxy: req/s, latency p50/p99/p99.9, the proxy's CPU (all its processes
# and threads) per request, upstream connections opened (the upstream's
# stub_status `accepts`), errors; then the ratios simgate/nginx and
# simgate/haproxy. Needs nginx, haproxy, curl, openssl (scripts/setup.sh).
#   BENCH_SECONDS          measured window per proxy [10]
#   BENCH_WARMUP           seconds of load before each window [2]
#   BENCH_RUNS             rounds of the three proxies, medians shown [3]
#   BENCH_CONNECTIONS      client connections = SIMs [64]
#   BENCH_PROXY_WORKERS    nginx worker_processes and HAProxy nbthread
#                          (simgate's runtime: one worker per core) [2]
#   BENCH_UPSTREAM_WORKERS the upstream nginx's worker_processes [1]
#   BENCH_LOADGEN_THREADS  `loadgen http` runtime threads [1]
#   BENCH_SIMGATE          use this simgate binary instead of building one
#   BENCH_KEEP=1           keep the work directory (configs, logs, results)
#
# funnel-sinks: each Funnel sink against its emulator, records/s delivered
# through simgate versus a direct client loop to the same emulator, same run.
# Emulators: kinesalite (kinesis), moto (firehose, aws-iot; started through
# dataplane/tests/support/moto_server.py), and `loadgen sink-peer`, an HTTPS
# receiver answering as Event Hubs, Pub/Sub (and its OAuth token endpoint)
# or a webhook do on success (eventhubs, pubsub, https). Per sink and run:
# `loadgen sink-direct` builds simgate's own sink from the same config and
# keeps Funnel's max_in_flight full batches in flight for the window (the
# emulator's capacity for this client); then simgate runs on that config
# (default durability: spool) and `loadgen send` offers UDP records from
# BENCH_SOURCES SIMs at 1.5 x the direct rate, and the window's growth of
# simgate_funnel_records_out_total{result="delivered"} is simgate's rate.
# Prints a table and one `funnel-SINK ratio=` line per sink (funnel-kinesis ...).
#   BENCH_SINKS    which sinks [kinesis firehose aws-iot eventhubs pubsub https]
#   BENCH_SECONDS, BENCH_WARMUP, BENCH_RUNS, BENCH_SIZE as funnel-udp;
#   BENCH_SOURCES  [100]
#   BENCH_DURABILITY  simgate's [funnel] durability, memory or spool [spool]
set -euo pipefail
cd "$(dirname "$0")/.."
# bench_result: the `NAME ratio=` line and target/bench/NAME.json.
source scripts/bench/lib.sh
# Scenarios in files of their own (each defines <name>_bench; its header
# documents it): beam-tcp, harvest-ingest, io-uring, fleet.
for f in scripts/bench/beam_tcp.sh scripts/bench/harvest_ingest.sh scripts/bench/io_uring.sh \
  scripts/bench/fleet.sh; do
  # shellcheck source=/dev/null
  if [ -r "$f" ]; then source "$f"; fi
done
# `all` runs the fleet (etcd + 3 nodes + 100,000 SIMs seeded) last.
[[ " ${BENCH_ALL_SCENARIOS[*]} " == *" fleet "* ]] || BENCH_ALL_SCENARIOS+=(fleet)

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
    --readers "$readers" "$@" | tee "$work/out"
  # The summary table (pass / timing, then 7 figures) and the memory verdict.
  local rows=() line
  while IFS= read -r line; do
    rows+=("$line")
  done < <(awk '
    /^== summary/ { on = 1; next }
    /^\(single timings/ { on = 0 }
    on && NF >= 8 && $(NF - 6) ~ /^[0-9]+$/ {
      name = $1; for (i = 2; i <= NF - 7; i++) name = name " " $i
      printf "side=%s\tp50_ns=%s\tp90_ns=%s\tp99_ns=%s\tp999_ns=%s\tmax_ns=%s\tupdates_per_s=%s\tpreempted=%s\n",
        name, $(NF - 6), $(NF - 5), $(NF - 4), $(NF - 3), $(NF - 2), $(NF - 1), $NF
    }' "$work/out" | while IFS=$'\t' read -r -a kv; do bench_row "${kv[@]}"; done)
  line=$(sed -n 's/.*memory: table of \([0-9,]*\) sessions RSS +\([0-9.]*\) MiB (\([0-9.]*\) B\/session).*/\1 \2 \3/p' "$work/out")
  if [ -n "$line" ]; then
    read -r -a line <<<"$line"
    rows+=("$(bench_row side=table sessions="${line[0]//,/}" rss_mib="${line[1]}" bytes_per_session="${line[2]}")")
  fi
  echo
  # No peer: session_scale measures simgate's SessionTable alone (its
  # figures are checked against absolute targets, PASS/FAIL above).
  bench_result sessions n/a "$(bench_rows "${rows[@]+"${rows[@]}"}")" ns/lookup \
    "none: absolute targets (table <= 256 MiB, lookup p99 < 1 us)" \
    "session_scale has no baseline pass (e.g. a std HashMap of the same sessions) to divide by"
}

# ---------------------------------------------------------------- funnel-*
# Everything below is shared by funnel-udp and funnel-durable.

# Reads the variables both funnel benches use (see the header).
funnel_settings() {
  SECS=${BENCH_SECONDS:-10}
  WARMUP=${BENCH_WARMUP:-2}
  RUNS=${BENCH_RUNS:-3}
  SOURCES=${BENCH_SOURCES:-1000}
  BATCH=${BENCH_BATCH:-64}
  SIZE=${BENCH_SIZE:-100}
  WORKERS=${BENCH_UDP_WORKERS:-$(nproc)}
  bench_whole_numbers SECS WARMUP RUNS SOURCES BATCH SIZE WORKERS
}

# Bytes of a size written 1048576, 1024K, 256M, 1G, 1GiB or 1GB (binary units).
size_bytes() {
  local s=${1%iB}
  s=${s%B}
  [[ $s =~ ^([0-9]+)([KMGT]?)$ ]] || return 1
  local n=${BASH_REMATCH[1]}
  case ${BASH_REMATCH[2]} in
    K) n=$((n << 10)) ;;
    M) n=$((n << 20)) ;;
    G) n=$((n << 30)) ;;
    T) n=$((n << 40)) ;;
  esac
  echo "$n"
}

# 268435456 -> "256 MiB".
human() {
  awk -v b="$1" 'BEGIN {
    if (b == "" || b == "nan") { print "?"; exit }
    split("B KiB MiB GiB TiB", u, " "); i = 1
    while (b >= 1024 && i < 5) { b /= 1024; i++ }
    if (b == int(b)) printf "%d %s\n", b, u[i]
    else printf "%.1f %s\n", b, u[i]
  }'
}

# Builds, makes the work directory and its clean-up, raises the fd limit.
funnel_setup() {
  if [ -z "${BENCH_SIMGATE:-}" ] || [ -z "${BENCH_LOADGEN:-}" ]; then
    echo "== building release binaries"
    cargo build --release -p simgate -p simgate-benches
  fi
  bench_work
  # Other builds may replace target/release while we run: use copies.
  cp "${BENCH_SIMGATE:-target/release/simgate}" "$WORK/simgate"
  cp "${BENCH_LOADGEN:-target/release/loadgen}" "$WORK/loadgen"
  LOADGEN=$WORK/loadgen
  SIMGATE=$WORK/simgate
  # Every process started gets its own files: SEQ numbers them.
  SEQ=0
  # 1,000 sockets plus simgate's.
  bench_fd_limit $((SOURCES + 256))
}

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

# Forgets a process that has ended, so the exit trap never signals a reused pid.
forget() {
  local keep=() p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do
    [ "$p" = "$1" ] || keep+=("$p")
  done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# Stops a process we started: TERM, then KILL after $2 seconds.
stop() {
  local pid=$1 grace=${2:-15} i
  if kill "$pid" 2>/dev/null; then
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget "$pid"
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

# Writes a config into directory $1 (`loadgen simgate-config` with the
# further arguments) and starts simgate on it; sets SG_PID, SG_UDP (the
# unified listener) and SG_API, and returns once /health answers.
start_simgate() { # dir [simgate-config args...]
  local dir=$1 line
  shift
  mkdir -p "$dir"
  line=$("$LOADGEN" simgate-config --data-dir "$dir/data" --out "$dir/simgate.toml" \
    --sources "$SOURCES" --udp-workers "$WORKERS" "$@")
  if [ "${SG_UDP_REPLY:-true}" = false ]; then
    sed -i '/^\[ingress\]/a udp_reply = false' "$dir/simgate.toml"
  fi
  SG_UDP=$(sed -n 's/.*unified=\([^ ]*\).*/\1/p' <<<"$line")
  SG_API=$(sed -n 's/.*api=\([^ ]*\).*/\1/p' <<<"$line")
  spawn_simgate "$dir"
  wait_health "$dir"
}

# Starts simgate on the config in directory $1 (again, after a kill: the
# logs are appended to); sets SG_PID.
spawn_simgate() {
  RUST_LOG=${RUST_LOG:-warn} "$SIMGATE" serve --config "$1/simgate.toml" >>"$1/stdout" 2>>"$1/stderr" &
  SG_PID=$!
  PIDS+=("$SG_PID")
}

# Waits for SG_PID's /health (60 s at most: a restart may recover a spool).
wait_health() { # dir
  local i
  for ((i = 0; i < 600; i++)); do
    "$LOADGEN" scrape "http://$SG_API/health" >/dev/null 2>&1 && return 0
    if ! kill -0 "$SG_PID" 2>/dev/null; then
      echo "bench: simgate exited at start:" >&2
      tail -n 20 "$1/stderr" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "bench: simgate did not answer /health within 60 s" >&2
  return 1
}

run_simgate() { # result-file durability [extra send args...]
  local out=$1 durability=$2
  shift 2
  start_simgate "$WORK/simgate.$((++SEQ))" --durability "$durability"
  local perf_pid= perf_data=$WORK/perf.$SEQ.data
  if [ "${BENCH_PERF:-0}" = 1 ]; then
    # The measured window only: after the warm-up, for BENCH_SECONDS.
    (sleep "$WARMUP" && exec perf record -q -F 999 -g -p "$SG_PID" -o "$perf_data" -- sleep "$SECS") \
      >/dev/null 2>&1 &
    perf_pid=$!
  fi
  send "$SG_UDP" "http://$SG_API/metrics" "$out" --pid "$SG_PID" \
    --metric ingress='simgate_ingress_messages_total{listener="unified",protocol="udp"}' \
    --metric accepted=simgate_funnel_records_in_total \
    --metric delivered='simgate_funnel_records_out_total{result="delivered"}' \
    --metric dropped=simgate_funnel_dropped_total \
    --metric reply_dropped='simgate_ingress_rejected_total{protocol="udp",reason="reply_dropped"}' \
    --metric batch_sum=simgate_funnel_batch_records_sum \
    --metric batch_count=simgate_funnel_batch_records_count \
    "$@"
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
  fi
  stop "$SG_PID" 15
  tail -n1 "$out"
  if [ -n "$perf_pid" ] && [ -s "$perf_data" ]; then
    perf report -i "$perf_data" --no-children --sort sym --stdio -g none --percent-limit 0 2>/dev/null |
      python3 scripts/bench/perf_summary.py --top "${BENCH_PERF_TOP:-12}"
  fi
}

# Values of key $2 in the result lines of file $1, one per line (none: no
# line, and success all the same).
values() { { grep -o "\(^\| \)$2=[^ ]*" "$1" || true; } | cut -d= -f2; }
# Value of key $2 in the line $1.
field() { values <(echo "$1") "$2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { values "$1" "$2" | median; }

# Mean records per batch of each run (delta sum / delta count), median.
mean_batch() {
  paste <(values "$1" batch_sum) <(values "$1" batch_count) |
    awk '$2 > 0 { print $1 / $2 }' | median
}

# simgate's CPU microseconds per record accepted in each run, median.
cpu_per_record() {
  paste <(values "$1" cpu_s) <(values "$1" accepted) |
    awk '$2 > 0 { print $1 * 1e6 / $2 }' | median
}

# One table row: offered side file raw-received [memory-accepted]; a simgate
# row's figure is records accepted, the others' datagrams received. With a
# fifth argument, a last column gives the figure / memory-accepted.
row() {
  local offered=$1 side=$2 f=$3 base=$4 base2=${5:-} main received accepted delivered dropped batch us
  case $side in
    raw*)
      main=received_rate
      accepted=- delivered=- dropped=- batch=- us=-
      received=$(med "$f" received_rate)
      ;;
    *)
      main=accepted_rate
      accepted=$(med "$f" accepted_rate)
      delivered=$(med "$f" delivered_rate)
      dropped=$(med "$f" dropped_rate)
      batch=$(mean_batch "$f")
      us=$(cpu_per_record "$f")
      received=$(med "$f" ingress_rate)
      ;;
  esac
  awk -v o="$offered" -v s="$side" -v se="$(med "$f" sent_rate)" -v rx="$received" \
    -v ac="$accepted" -v de="$delivered" -v re="$(med "$f" replies_rate)" -v dr="$dropped" \
    -v b="$batch" -v us="$us" -v m="$(med "$f" "$main")" -v base="$base" -v base2="$base2" '
    function n(x) { return (x == "-" || x == "nan") ? sprintf("%11s", x) : sprintf("%11.0f", x) }
    function f(x, d) { return (x == "-" || x == "nan") ? x : sprintf("%." d "f", x) }
    BEGIN {
      printf "%-9s %-16s %s %s %s %s %s %s %7s %7s %6.3f", o, s, n(se), n(rx), n(ac), n(de), n(re), n(dr),
        f(b, 1), f(us, 2), (base > 0) ? m / base : 0
      if (base2 != "" && s ~ /^raw/) printf " %6s", "-"
      else if (base2 != "") printf " %6.3f", (base2 > 0) ? m / base2 : 0
      printf "\n"
    }'
}

# Runs every side of SIDES in turn, RUNS times, and adds their rows to ROWS.
pass() { # label [extra send args...]
  local label=$1 n side
  shift
  for side in "${SIDES[@]}"; do
    : >"$WORK/result.$label.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    for side in "${SIDES[@]}"; do
      echo "-- offered $label, run $n/$RUNS: $side"
      case $side in
        raw) run_raw "$WORK/result.$label.$side" none "$@" ;;
        raw+reply-each) run_raw "$WORK/result.$label.$side" each "$@" ;;
        raw+reply-batch) run_raw "$WORK/result.$label.$side" batch "$@" ;;
        simgate) run_simgate "$WORK/result.$label.$side" "$DURABILITY" "$@" ;;
        simgate-silent) SG_UDP_REPLY=false run_simgate "$WORK/result.$label.$side" "$DURABILITY" "$@" ;;
        memory | spool) run_simgate "$WORK/result.$label.$side" "$side" "$@" ;;
      esac
    done
  done
  local base base2=
  base=$(med "$WORK/result.$label.raw" received_rate)
  if [ -e "$WORK/result.$label.memory" ]; then
    base2=$(med "$WORK/result.$label.memory" accepted_rate)
  fi
  for side in "${SIDES[@]}"; do
    ROWS+=("$(row "$label" "$side" "$WORK/result.$label.$side" "$base" "$base2")")
  done
}

# One side of a pass as a JSON object for bench_result (medians, per second).
side_json() { # label side
  local f=$WORK/result.$1.$2
  case $2 in
    raw*) bench_row offered="$1" side="$2" sent="$(med "$f" sent_rate)" received="$(med "$f" received_rate)" ;;
    *)
      bench_row offered="$1" side="$2" sent="$(med "$f" sent_rate)" received="$(med "$f" ingress_rate)" \
        accepted="$(med "$f" accepted_rate)" delivered="$(med "$f" delivered_rate)" \
        replies="$(med "$f" replies_rate)" dropped="$(med "$f" dropped_rate)" \
        batch="$(mean_batch "$f")" cpu_us="$(cpu_per_record "$f")"
      ;;
  esac
}

# Ratio of the medians of key $2 in file $1 and key $4 in file $3; nan when
# the divisor is 0 or missing.
med_ratio() { # file key file key
  awk -v a="$(med "$1" "$2")" -v b="$(med "$3" "$4")" \
    'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.4f", a / b; else print "nan" }'
}

table_header() { # [extra column]
  printf "%-9s %-16s %11s %11s %11s %11s %11s %11s %7s %7s %6s" \
    offered side sent received accepted delivered replies dropped batch cpu_us ratio
  if [ -n "${1:-}" ]; then printf " %6s" "$1"; fi
  printf "\n"
}

# ---------------------------------------------------------------- funnel-udp

funnel_udp_bench() {
  funnel_settings
  local rate=${BENCH_RATE:-}
  DURABILITY=${BENCH_DURABILITY:-memory}
  [[ -z $rate || $rate =~ ^[0-9]+$ ]] || { echo "bench: BENCH_RATE must be a whole number" >&2; exit 2; }
  [[ $DURABILITY == memory || $DURABILITY == spool ]] ||
    { echo "bench: BENCH_DURABILITY must be memory or spool" >&2; exit 2; }
  funnel_setup

  SIDES=(raw)
  if [ "${BENCH_ECHO:-0}" = 1 ]; then
    SIDES+=(raw+reply-each raw+reply-batch)
  fi
  SIDES+=(simgate)
  if [ "${BENCH_SILENT:-0}" = 1 ]; then
    SIDES+=(simgate-silent)
  fi
  ROWS=()
  echo "== funnel-udp: $SOURCES SIMs, $SIZE-byte records, sendmmsg batch $BATCH," \
    "$WORKERS UDP worker(s), durability $DURABILITY, $RUNS x ${SECS}s runs (+${WARMUP}s warm-up)," \
    "sides alternating"
  pass max
  if [ -n "$rate" ]; then
    pass "$rate" --rate "$rate"
  fi

  echo
  echo "funnel-udp, per second, median of $RUNS runs ($(nproc) cores, Linux $(uname -r)):"
  table_header
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "received  datagrams read by the receiver (loadgen sink, or simgate's UDP ingress counter)"
  echo "accepted  records queued by Funnel; batch: mean records per null-sink batch (max 500)"
  echo "cpu_us    simgate's CPU time (user + system, all threads) per record accepted, microseconds"
  echo "ratio     received (simgate: accepted) / raw received; target for simgate >= 0.9"
  local rows=() label side
  for label in max ${rate:+"$rate"}; do
    for side in "${SIDES[@]}"; do
      rows+=("$(side_json "$label" "$side")")
    done
  done
  echo
  bench_result funnel-udp "$(med_ratio "$WORK/result.max.simgate" accepted_rate "$WORK/result.max.raw" received_rate)" \
    "$(bench_rows "${rows[@]}")" records/s "simgate accepted / raw recvmmsg received"
}

# ------------------------------------------------------------ funnel-durable

# Ack latency at FIXED_RATE (below saturation, so every datagram is answered
# and `send --latency` times each reply exactly), memory and spool
# alternating RUNS times; adds the medians to LAT_ROWS.
latency_pass() {
  local n side f
  for side in memory spool; do
    : >"$WORK/result.latency.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    for side in memory spool; do
      echo "-- ack latency at $FIXED_RATE records/s, run $n/$RUNS: $side"
      run_simgate "$WORK/result.latency.$side" "$side" --rate "$FIXED_RATE" --latency
    done
  done
  for side in memory spool; do
    f=$WORK/result.latency.$side
    LAT_ROWS+=("$(printf "%-8s %11.0f %11.0f %9s %9s %9s %9s %9s" "$side" "$(med "$f" sent_rate)" \
      "$(med "$f" replies_rate)" "$(med "$f" ack_p50_ms)" "$(med "$f" ack_p90_ms)" \
      "$(med "$f" ack_p99_ms)" "$(med "$f" ack_p999_ms)" "$(med "$f" ack_max_ms)")")
  done
}

# Bytes of the spool files under simgate directory $1 (exact at any time;
# the spool gauges are updated only when the destination's worker wakes).
spool_du() {
  if [ -d "$1/data/spool" ]; then du -sb "$1/data/spool" | cut -f1; else echo 0; fi
}

# Samples simgate (pid $1, metrics $2, directory $5) every second into file
# $3 as key=value lines, for at most $4 seconds or until the process is gone.
sample() {
  local pid=$1 url=$2 out=$3 max=$4 dir=$5 i rss m
  for ((i = 0; i < max; i++)); do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || break
    [ -n "$rss" ] || break
    m=$("$LOADGEN" scrape "$url" \
      --metric spool_bytes=simgate_spool_bytes \
      --metric spool_records=simgate_spool_records \
      --metric queue_records=simgate_funnel_queue_records \
      --metric queue_bytes=simgate_funnel_queue_bytes \
      --metric accepted=simgate_funnel_records_in_total \
      --metric dropped=simgate_funnel_dropped_total 2>/dev/null) || m=scrape=failed
    echo "t=$i rss_kib=$rss disk_bytes=$(spool_du "$dir") $m" >>"$out"
    sleep 1
  done
}

# Minimum, maximum, first and last value of key $2 in file $1.
stats() { values "$1" "$2" | awk 'NR == 1 { lo = hi = first = $1 } { if ($1 < lo) lo = $1; if ($1 > hi) hi = $1; last = $1 } END { print lo, hi, first, last }'; }

# The current value of metric selector $1 (0 when absent, nan when simgate
# does not answer).
metric() {
  local v
  v=$("$LOADGEN" scrape "http://$SG_API/metrics" --metric v="$1" 2>/dev/null) || v=v=nan
  echo "${v#v=}"
}

# One outage pass: the sink refuses connections while records are offered
# at FIXED_RATE; adds a line to OUTAGE_ROWS. Leaves simgate running.
outage_pass() { # durability
  local d=$1 dir=$WORK/outage.$1 sampler line last rss_min rss_max rss_start rss_end
  echo "-- outage, durability $d: ${OUTAGE}s at $FIXED_RATE records/s, sink refusing connections"
  start_simgate "$dir" --durability "$d" --endpoint refused --spool-max-bytes "$SPOOL_MAX"
  sample "$SG_PID" "http://$SG_API/metrics" "$dir/samples" $((OUTAGE + 60)) "$dir" &
  sampler=$!
  PIDS+=("$sampler")
  # Warm-up 0: the window is the whole outage.
  "$LOADGEN" send --target "$SG_UDP" --sources "$SOURCES" --batch "$BATCH" --size "$SIZE" \
    --rate "$FIXED_RATE" --warmup 0 --duration "$OUTAGE" --metrics-url "http://$SG_API/metrics" \
    --metric accepted=simgate_funnel_records_in_total \
    --metric dropped=simgate_funnel_dropped_total \
    --metric queue_full='simgate_funnel_dropped_total{reason="queue_full"}' \
    --metric refused='simgate_service_requests_total{service="funnel",status="429"}' \
    --metric kernel='simgate_ingress_rejected_total{reason="kernel_overflow"}' \
    --metric delivered='simgate_funnel_records_out_total{result="delivered"}' \
    >"$dir/send.out"
  sleep 2 # a last sample after the load
  stop "$sampler" 1
  line=$(tail -n1 "$dir/send.out")
  echo "$line"
  read -r rss_min rss_max rss_start rss_end <<<"$(stats "$dir/samples" rss_kib)"
  echo "RSS KiB: start $rss_start, min $rss_min, max $rss_max, end $rss_end; last sample: $(tail -n1 "$dir/samples")"
  last=$(tail -n1 "$dir/samples")
  OUTAGE_ROWS+=("$(awk -v d="$d" -v sent="$(field "$line" sent)" \
    -v ac="$(field "$line" accepted)" -v rf="$(field "$line" refused)" \
    -v dr="$(field "$line" dropped)" -v qf="$(field "$line" queue_full)" \
    -v k="$(field "$line" kernel)" -v de="$(field "$line" delivered)" \
    -v r0="$rss_start" -v r1="$rss_max" -v r2="$rss_end" \
    -v sb="$(field "$last" spool_bytes)" -v db="$(field "$last" disk_bytes)" \
    -v qr="$(field "$last" queue_records)" '
    function mib(k) { return sprintf("%.1f", k / 1024) }
    BEGIN {
      printf "%-8s %10d %10d %10d %10d %10d %8d %9d %9s %9s %9s %10s %9s %9d\n", d, sent, ac, rf, dr, qf, k, de,
        mib(r0), mib(r1), mib(r2), sprintf("%.1f", sb / 1048576), sprintf("%.1f", db / 1048576), qr
    }')")
}

# SIGKILLs simgate (SG_PID, config in $1), restarts it on the same config
# and data, and times it; adds a line to RESTART_ROWS. Then stops it.
restart_pass() { # dir label [--udp: also time the first UDP answer]
  local dir=$1 label=$2 udp=() bytes records t0 line after_records rss i
  [ "${3:-}" = --udp ] && udp=(--udp "$SG_UDP")
  # Nothing was delivered (the sink refuses): every record accepted is in
  # the spool.
  bytes=$(spool_du "$dir")
  records=$(metric simgate_funnel_records_in_total)
  echo "-- restart after kill -9, $label: spool $(human "$bytes"), $records records accepted"
  kill -9 "$SG_PID"
  wait "$SG_PID" 2>/dev/null || true
  forget "$SG_PID"
  t0=$(date +%s%N)
  spawn_simgate "$dir"
  if ! line=$("$LOADGEN" ready --since-ns "$t0" --health "http://$SG_API/health" \
    "${udp[@]+"${udp[@]}"}" --timeout 60); then
    echo "bench: simgate did not come back after kill -9 ($line)" >&2
    tail -n 20 "$dir/stderr" >&2
    return 1
  fi
  echo "$line"
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SG_PID/status")
  # The gauges are set when the destination's worker next wakes (a commit,
  # a retry of the refusing sink): wait for them, up to 15 s.
  for ((i = 0; i < 150; i++)); do
    after_records=$(metric simgate_spool_records)
    awk -v r="$after_records" 'BEGIN { exit !(r > 0) }' && break
    sleep 0.1
  done
  RESTART_ROWS+=("$(awk -v l="$label" -v b="$bytes" -v r="$records" -v a="$after_records" -v rss="$rss" \
    -v h="$(field "$line" health_ms)" -v u="$(field "$line" udp_reply_ms)" \
    -v s="$(field "$line" udp_reply)" '
    BEGIN {
      printf "%-14s %9.1f %10d %10d %9s %12s %6s %9.1f\n", l, b / 1048576, r, a, h, (u == "") ? "-" : u,
        (s == "") ? "-" : s, rss / 1024
    }')")
  RESTART_MS+=("$(field "$line" health_ms)" "$(field "$line" udp_reply_ms)")
  stop "$SG_PID" 15
}

# Fills a spool to SPOOL_FILL at full speed with the sink refusing, then
# restart_pass. Its budget leaves room, so the first record after the
# restart is accepted (and answered) rather than refused.
fill_pass() {
  local dir=$WORK/fill max=$((SPOOL_FILL + SPOOL_FILL / 4 + (64 << 20))) sender bytes=0 t0 i
  echo "-- filling a spool to $(human "$SPOOL_FILL") (spool_max_bytes $(human "$max")), sink refusing"
  start_simgate "$dir" --durability spool --endpoint refused --spool-max-bytes "$max"
  "$LOADGEN" send --target "$SG_UDP" --sources "$SOURCES" --batch "$BATCH" --size "$SIZE" \
    --warmup 0 --duration 3600 >"$dir/send.out" &
  sender=$!
  PIDS+=("$sender")
  t0=$(date +%s.%N)
  # 30 minutes at most.
  for ((i = 0; i < 3600; i++)); do
    bytes=$(spool_du "$dir")
    awk -v b="$bytes" -v f="$SPOOL_FILL" 'BEGIN { exit !(b >= f) }' && break
    kill -0 "$sender" 2>/dev/null || break
    kill -0 "$SG_PID" 2>/dev/null || { echo "bench: simgate died while filling" >&2; tail -n 20 "$dir/stderr" >&2; return 1; }
    sleep 0.5
  done
  stop "$sender" 5
  FILL_SECS=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')
  # The last group commits land.
  sleep 1
  bytes=$(spool_du "$dir")
  awk -v b="$bytes" -v f="$SPOOL_FILL" 'BEGIN { exit !(b >= f) }' ||
    echo "bench: the spool reached only $(human "$bytes") of $(human "$SPOOL_FILL")" >&2
  echo "filled $(human "$bytes") in ${FILL_SECS}s"
  restart_pass "$dir" "filled" --udp
}

funnel_durable_bench() {
  funnel_settings
  OUTAGE=${BENCH_OUTAGE_SECONDS:-300}
  FIXED_RATE=${BENCH_RATE:-20000}
  local max=${BENCH_SPOOL_MAX:-256M} fill=${BENCH_SPOOL_FILL:-1G} v
  for v in OUTAGE FIXED_RATE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a whole number" >&2; exit 2; }
  done
  SPOOL_MAX=$(size_bytes "$max") || { echo "bench: BENCH_SPOOL_MAX: not a size: $max" >&2; exit 2; }
  SPOOL_FILL=$(size_bytes "$fill") || { echo "bench: BENCH_SPOOL_FILL: not a size: $fill" >&2; exit 2; }
  funnel_setup

  echo "== funnel-durable: $SOURCES SIMs, $SIZE-byte records, sendmmsg batch $BATCH," \
    "$WORKERS UDP worker(s); throughput $RUNS x ${SECS}s runs (+${WARMUP}s warm-up), sides alternating;" \
    "outage ${OUTAGE}s at $FIXED_RATE/s, spool_max_bytes $(human "$SPOOL_MAX"); restart with $(human "$SPOOL_FILL")"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  SIDES=(raw memory spool)
  ROWS=()
  pass max
  LAT_ROWS=()
  latency_pass

  OUTAGE_ROWS=()
  RESTART_ROWS=()
  RESTART_MS=()
  FILL_SECS=
  if ((OUTAGE > 0)); then
    outage_pass memory
    stop "$SG_PID" 15
    outage_pass spool
    restart_pass "$WORK/outage.spool" "after outage"
  fi
  if ((SPOOL_FILL > 0)); then
    fill_pass
  fi

  local ratio verdict
  ratio=$(awk -v s="$(med "$WORK/result.max.spool" accepted_rate)" \
    -v m="$(med "$WORK/result.max.memory" accepted_rate)" 'BEGIN { printf "%.3f", (m > 0) ? s / m : 0 }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8) ? "PASS" : "FAIL" }')
  echo
  echo "funnel-durable, throughput per second, median of $RUNS runs ($(nproc) cores, Linux $(uname -r)):"
  table_header memory
  printf '%s\n' "${ROWS[@]}"
  echo "spool/memory accepted = $ratio (target >= 0.8: $verdict); per run:" \
    "$(paste -d' ' <(values "$WORK/result.max.spool" accepted_rate) <(values "$WORK/result.max.memory" accepted_rate) |
      awk '$2 > 0 { printf "%.3f ", $1 / $2 }')"
  local us_mem us_spool
  us_mem=$(cpu_per_record "$WORK/result.max.memory")
  us_spool=$(cpu_per_record "$WORK/result.max.spool")
  awk -v m="$us_mem" -v s="$us_spool" 'BEGIN {
    printf "simgate CPU per record accepted: memory %.2f us, spool %.2f us; memory/spool = %.3f", m, s, (s > 0) ? m / s : 0
    print " (the throughput ratio while simgate is CPU-bound; less sensitive to other load, blind to kernel writeback threads)"
  }'
  echo "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "ack latency at $FIXED_RATE records/s (send of a datagram to its UDP answer; medians of $RUNS runs), ms:"
  printf "%-8s %11s %11s %9s %9s %9s %9s %9s\n" durability sent/s replies/s p50 p90 p99 p99.9 max
  printf '%s\n' "${LAT_ROWS[@]}"
  if ((${#OUTAGE_ROWS[@]} > 0)); then
    echo
    echo "outage: sink refusing connections for ${OUTAGE}s, $FIXED_RATE records/s offered," \
      "spool_max_bytes $(human "$SPOOL_MAX"); counts over the outage, RSS and spool in MiB:"
    printf "%-8s %10s %10s %10s %10s %10s %8s %9s %9s %9s %9s %10s %9s %9s\n" durability sent accepted \
      refused429 dropped queue_full kernel delivered rss_start rss_max rss_end spool_end disk_end queue_end
    printf '%s\n' "${OUTAGE_ROWS[@]}"
  fi
  if ((${#RESTART_ROWS[@]} > 0)); then
    echo
    echo "restart after kill -9: spawn to first /health answer and to first UDP record answered, ms" \
      "${FILL_SECS:+(filled in ${FILL_SECS}s at full speed)}"
    printf "%-14s %9s %10s %10s %9s %12s %6s %9s\n" spool MiB records recovered health_ms \
      udp_reply_ms reply rss_mib
    printf '%s\n' "${RESTART_ROWS[@]}"
    local worst
    worst=$(printf '%s\n' "${RESTART_MS[@]}" | awk '$1 != "" && $1 != "none" { if ($1 > w) w = $1 } END { print w + 0 }')
    echo "slowest restart $worst ms (target < 1000 ms: $(awk -v w="$worst" 'BEGIN { print (w < 1000) ? "PASS" : "FAIL" }'))"
  fi
  echo
  echo "accepted    records queued by Funnel (spool: written; answered after the group commit)"
  echo "ratio       accepted / raw received; memory: accepted / memory's accepted (target spool >= 0.8)"
  echo "refused429  answers 429 (UDP: dropped silently, counted); dropped: simgate_funnel_dropped_total"
  echo "spool_end   simgate_spool_bytes (set when the worker wakes); disk_end: du of the spool directory"
  echo "records     accepted before the kill (all in the spool: nothing was delivered); MiB: du of the spool"
  echo "recovered   simgate_spool_records once restarted; udp_reply_ms: first record answered"
  local rows=() side f
  for side in "${SIDES[@]}"; do
    rows+=("$(side_json max "$side")")
  done
  for side in memory spool; do
    f=$WORK/result.latency.$side
    rows+=("$(bench_row offered="$FIXED_RATE" side="$side" pass=ack_latency sent="$(med "$f" sent_rate)" \
      replies="$(med "$f" replies_rate)" ack_p50_ms="$(med "$f" ack_p50_ms)" \
      ack_p99_ms="$(med "$f" ack_p99_ms)" ack_max_ms="$(med "$f" ack_max_ms)")")
  done
  if ((${#RESTART_MS[@]} > 0)); then
    rows+=("$(bench_row side=spool pass=restart slowest_ms="$(printf '%s\n' "${RESTART_MS[@]}" |
      awk '$1 != "" && $1 != "none" { if ($1 > w) w = $1 } END { print w + 0 }')")")
  fi
  echo
  bench_result funnel-durable "$(med_ratio "$WORK/result.max.spool" accepted_rate "$WORK/result.max.memory" accepted_rate)" \
    "$(bench_rows "${rows[@]}")" records/s "accepted, durability spool / memory (target 0.8)"
}

# ---------------------------------------------------------------- beam-http

# Values of key $2 in the flat JSON lines of file $1 (numbers or strings),
# one per line; their median.
jvalues() { sed -n 's/.*"'"$2"'":"\{0,1\}\([^,"}]*\).*/\1/p' "$1"; }
jmed() { jvalues "$1" "$2" | median; }

# The upstream's accepted connections so far (stub_status), this scrape's
# own included.
upstream_accepts() {
  "$LOADGEN" scrape "http://$BH_STATUS/" | awk 'f { print $1; exit } /accepts/ { f = 1 }'
}

# Polls proxy $1 (pid $2) until a request from the first SIM address, then
# one from the last, come back with that SIM's IMSI (the upstream's /imsi
# answers the X-Soracom-IMSI it received); 15 s at most. Then prints the
# TLS version and cipher of the proxy's upstream connection (/tls).
check_imsi() { # addr pid
  local addr=$1 pid=$2 i got first last first_ip last_ip
  read -r first_ip first <"$WORK/imsi.haproxy.map"
  read -r last_ip last < <(sed -n "${CONNS}p" "$WORK/imsi.haproxy.map")
  for ((i = 0; i < 150; i++)); do
    got=$(curl -s --max-time 2 --interface "$first_ip" -H 'Host: beam.soracom.io:8888' \
      "http://$addr/imsi" 2>/dev/null || true)
    if [ "$got" = "$first" ]; then
      got=$(curl -s --max-time 2 --interface "$last_ip" -H 'Host: beam.soracom.io:8888' \
        "http://$addr/imsi" 2>/dev/null || true)
      if [ "$got" = "$last" ]; then
        echo "upstream TLS: $(curl -s --max-time 2 --interface "$first_ip" "http://$addr/tls" || true)"
        return 0
      fi
      echo "bench: $addr answered $last_ip with IMSI '$got', not $last" >&2
      return 1
    fi
    kill -0 "$pid" 2>/dev/null || { echo "bench: the proxy on $addr exited" >&2; return 1; }
    sleep 0.1
  done
  echo "bench: $addr did not answer $first_ip with IMSI $first within 15 s (last answer: '$got')" >&2
  return 1
}

# Pieces shared by the two nginx configurations (the TLS upstream and the
# proxy), each in its own directory $1.
nginx_main() { # dir workers
  echo "worker_processes $2;"
  # Root-started workers would otherwise run as nobody; all they read is
  # loaded by the master anyway.
  if [ "$(id -u)" -eq 0 ]; then echo "user root;"; fi
  echo "pid $1/nginx.pid;"
  echo "events { worker_connections 8192; }"
}
nginx_http_common() { # dir
  cat <<CONF
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  default_type text/plain;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
CONF
}

write_upstream_conf() {
  local d=$WORK/upstream
  mkdir -p "$d"
  {
    nginx_main "$d" "$UP_WORKERS"
    echo "http {"
    nginx_http_common "$d"
    cat <<CONF
  server {
    listen $BH_UPSTREAM ssl;
    ssl_certificate $WORK/certs/server.crt;
    ssl_certificate_key $WORK/certs/server.key;
    # nginx before 1.23.4 leaves TLS 1.3 out by default.
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 "ok"; }
    location = /imsi { return 200 "\$http_x_soracom_imsi"; }
    location = /tls { return 200 "\$ssl_protocol \$ssl_cipher"; }
  }
  server {
    listen $BH_STATUS;
    location / { stub_status; }
  }
}
CONF
  } >"$d/nginx.conf"
}

write_nginx_proxy_conf() {
  local d=$WORK/nginx
  mkdir -p "$d"
  {
    nginx_main "$d" "$PROXY_WORKERS"
    echo "http {"
    nginx_http_common "$d"
    cat <<CONF
  map \$remote_addr \$soracom_imsi {
    include $WORK/imsi.nginx.map;
  }
  upstream beam_upstream {
    server $BH_UPSTREAM;
    keepalive $CONNS;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen $BH_NGINX;
    location / {
      proxy_pass https://beam_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost;
      proxy_set_header X-Soracom-IMSI \$soracom_imsi;
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $WORK/certs/ca.crt;
      proxy_ssl_session_reuse on;
    }
  }
}
CONF
  } >"$d/nginx.conf"
}

write_haproxy_conf() {
  mkdir -p "$WORK/haproxy"
  cat >"$WORK/haproxy/haproxy.cfg" <<CONF
global
  nbthread $PROXY_WORKERS
  maxconn 4096
  ssl-server-verify required

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s

frontend beam
  bind $BH_HAPROXY
  http-request set-header X-Soracom-IMSI %[src,map_ip($WORK/imsi.haproxy.map)]
  default_backend upstream

backend upstream
  http-request set-header Host localhost
  server s1 $BH_UPSTREAM ssl verify required ca-file $WORK/certs/ca.crt sni str(localhost) alpn http/1.1
CONF
}

# Starts nginx (master and workers, in the foreground) on directory $1's
# config; sets BH_PID to the master.
start_nginx() { # dir
  "$NGINX" -p "$1" -c "$1/nginx.conf" -e "$1/error.log" -g 'daemon off;' >>"$1/stdout" 2>>"$1/stderr" &
  BH_PID=$!
  PIDS+=("$BH_PID")
}

# One proxy's turn: start it, check the header, load it, stop it; appends
# loadgen's JSON line (plus upstream_conns) to $WORK/result.beam.<side>.
beam_side() { # side
  local side=$1 addr a0 a1 line
  a0=$(upstream_accepts)
  mkdir -p "$WORK/$side"
  case $side in
    simgate)
      addr=$BH_BEAM
      RUST_LOG=${RUST_LOG:-warn} "$SIMGATE" serve --config "$WORK/simgate.toml" \
        >>"$WORK/simgate/stdout" 2>>"$WORK/simgate/stderr" &
      BH_PID=$!
      PIDS+=("$BH_PID")
      ;;
    nginx)
      addr=$BH_NGINX
      start_nginx "$WORK/nginx"
      ;;
    haproxy)
      addr=$BH_HAPROXY
      "$HAPROXY" -db -f "$WORK/haproxy/haproxy.cfg" >>"$WORK/haproxy/stdout" 2>>"$WORK/haproxy/stderr" &
      BH_PID=$!
      PIDS+=("$BH_PID")
      ;;
  esac
  if ! check_imsi "$addr" "$BH_PID"; then
    tail -n 20 "$WORK/$side/stderr" "$WORK/$side/error.log" >&2 2>/dev/null || true
    return 1
  fi
  line=$("$LOADGEN" http --target "$addr" --connections "$CONNS" --warmup "$WARMUP" \
    --duration "$SECS" --threads "$LG_THREADS" --label "$side" \
    --cpu proxy="$BH_PID" --cpu upstream="$UP_PID")
  stop "$BH_PID" 15
  a1=$(upstream_accepts)
  # Less the second scrape's own connection.
  line="${line%\}},\"upstream_conns\":$((a1 - a0 - 1))}"
  echo "$line" >>"$WORK/result.beam.$side"
  echo "$line"
}

beam_http_bench() {
  SECS=${BENCH_SECONDS:-10}
  WARMUP=${BENCH_WARMUP:-2}
  RUNS=${BENCH_RUNS:-3}
  CONNS=${BENCH_CONNECTIONS:-64}
  PROXY_WORKERS=${BENCH_PROXY_WORKERS:-2}
  UP_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
  LG_THREADS=${BENCH_LOADGEN_THREADS:-1}
  local v t0 side n key ports f
  bench_whole_numbers SECS WARMUP RUNS CONNS PROXY_WORKERS UP_WORKERS LG_THREADS
  ((SECS > 0 && RUNS > 0 && CONNS > 0 && CONNS <= 10000)) ||
    { echo "bench: BENCH_SECONDS and BENCH_RUNS must be positive, BENCH_CONNECTIONS 1..10000" >&2; exit 2; }
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
  [ -x "$NGINX" ] || { echo "bench: nginx not found (package nginx-light): run scripts/setup.sh" >&2; exit 1; }
  [ -x "$HAPROXY" ] || { echo "bench: haproxy not found (package haproxy): run scripts/setup.sh" >&2; exit 1; }
  command -v curl >/dev/null || { echo "bench: curl not found: run scripts/setup.sh" >&2; exit 1; }
  t0=$(date +%s)
  echo "== building release binaries"
  if [ -n "${BENCH_SIMGATE:-}" ]; then
    cargo build --release -p simgate-benches --bin loadgen
  else
    cargo build --release -p simgate -p simgate-benches --bin simgate --bin loadgen
  fi
  bench_work
  # Other builds may replace target/release while we run: use copies.
  mkdir "$WORK/bin"
  cp "${BENCH_SIMGATE:-target/release/simgate}" "$WORK/bin/simgate"
  cp target/release/loadgen "$WORK/bin/"
  SIMGATE=$WORK/bin/simgate
  LOADGEN=$WORK/bin/loadgen
  scripts/certs.sh "$WORK/certs"

  # Listeners of this simgate that loadgen's config leaves at their fixed
  # default ports (a test's broker may hold one): any free port instead.
  local listen=()
  for key in beam_tcp beam_mqtt; do
    printf '[listen]\n%s = "127.0.0.1:0"\n' "$key" >"$WORK/probe.toml"
    if "$SIMGATE" check-config "$WORK/probe.toml" >/dev/null 2>&1; then
      listen+=(--listen "$key=127.0.0.1:0")
    fi
  done
  ports=$("$LOADGEN" beam-config --dir "$WORK" --sims "$CONNS" --ca-file "$WORK/certs/ca.crt" \
    "${listen[@]+"${listen[@]}"}")
  BH_BEAM=$(sed -n 's/.*beam_http=\([^ ]*\).*/\1/p' <<<"$ports")
  BH_UPSTREAM=$(sed -n 's/.*upstream=\([^ ]*\).*/\1/p' <<<"$ports")
  BH_STATUS=$(sed -n 's/.*status=\([^ ]*\).*/\1/p' <<<"$ports")
  BH_NGINX=$(sed -n 's/.*nginx=\([^ ]*\).*/\1/p' <<<"$ports")
  BH_HAPROXY=$(sed -n 's/.*haproxy=\([^ ]*\).*/\1/p' <<<"$ports")
  write_upstream_conf
  write_nginx_proxy_conf
  write_haproxy_conf

  start_nginx "$WORK/upstream"
  UP_PID=$BH_PID
  for ((n = 0; n < 100; n++)); do
    upstream_accepts >/dev/null 2>&1 && break
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.1
  done
  upstream_accepts >/dev/null || {
    echo "bench: the upstream nginx did not start:" >&2
    cat "$WORK/upstream/error.log" >&2
    exit 1
  }

  echo "== beam-http: $CONNS keep-alive connections (one SIM address each), GET /, closed loop;" \
    "${SECS}s window (+${WARMUP}s warm-up) per proxy, $RUNS round(s); proxies $PROXY_WORKERS" \
    "worker(s), upstream nginx $UP_WORKERS worker(s), loadgen $LG_THREADS thread(s)"
  echo "$("$SIMGATE" --version 2>/dev/null || echo 'simgate ?'); $("$NGINX" -v 2>&1);" \
    "$("$HAPROXY" -v | head -n1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  local sides=(simgate nginx haproxy)
  for side in "${sides[@]}"; do
    : >"$WORK/result.beam.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    for side in "${sides[@]}"; do
      echo "-- run $n/$RUNS: $side"
      beam_side "$side"
    done
  done
  stop "$UP_PID" 15

  echo
  echo "beam-http, median of $RUNS run(s) ($(nproc) cores, Linux $(uname -r)); latency in us:"
  printf "%-8s %9s %7s %7s %7s %7s %10s %9s %9s %8s %6s\n" proxy req/s p50 p99 p99.9 max \
    cpu_us/req up_us/req lg_us/req up_conns errors
  for side in "${sides[@]}"; do
    f=$WORK/result.beam.$side
    printf "%-8s %9.0f %7.0f %7.0f %7.0f %7.0f %10.1f %9.1f %9.1f %8.0f %6.0f\n" "$side" \
      "$(jmed "$f" req_per_s)" "$(jmed "$f" p50_us)" "$(jmed "$f" p99_us)" "$(jmed "$f" p999_us)" \
      "$(jmed "$f" max_us)" "$(jmed "$f" cpu_proxy_us_per_req)" "$(jmed "$f" cpu_upstream_us_per_req)" \
      "$(jmed "$f" cpu_loadgen_us_per_req)" "$(jmed "$f" upstream_conns)" "$(jmed "$f" errors)"
  done
  echo
  awk -v s="$(jmed "$WORK/result.beam.simgate" req_per_s)" -v n="$(jmed "$WORK/result.beam.nginx" req_per_s)" \
    -v h="$(jmed "$WORK/result.beam.haproxy" req_per_s)" -v sp="$(jmed "$WORK/result.beam.simgate" p99_us)" \
    -v np="$(jmed "$WORK/result.beam.nginx" p99_us)" -v sc="$(jmed "$WORK/result.beam.simgate" cpu_proxy_us_per_req)" \
    -v nc="$(jmed "$WORK/result.beam.nginx" cpu_proxy_us_per_req)" \
    -v hc="$(jmed "$WORK/result.beam.haproxy" cpu_proxy_us_per_req)" '
    function r(a, b) { return (b > 0) ? sprintf("%.3f", a / b) : "nan" }
    BEGIN {
      printf "beam-http ratio_vs_nginx=%s p99_ratio=%s ratio_vs_haproxy=%s\n", r(s, n), r(sp, np), r(s, h)
      # CPU per request moves less with other load on the machine than req/s.
      printf "beam-http cpu_per_req_vs_nginx=%s cpu_per_req_vs_haproxy=%s\n", r(sc, nc), r(sc, hc)
    }'
  echo
  echo "cpu_us/req  the proxy's CPU time (user + system, all its processes and threads) per request"
  echo "up_us/req   the upstream nginx's; lg_us/req: the load generator's (all share $(nproc) cores)"
  echo "up_conns    connections the upstream accepted while the proxy ran (stub_status accepts)"
  echo "errors      non-2xx answers, I/O errors, timeouts and failed connects in the window"
  echo "load average now $(cut -d' ' -f1-3 /proc/loadavg); the scenario took $(($(date +%s) - t0)) s"
  local rows=() best
  for side in "${sides[@]}"; do
    f=$WORK/result.beam.$side
    rows+=("$(bench_row side="$side" req_per_s="$(jmed "$f" req_per_s)" p50_us="$(jmed "$f" p50_us)" \
      p99_us="$(jmed "$f" p99_us)" p999_us="$(jmed "$f" p999_us)" max_us="$(jmed "$f" max_us)" \
      cpu_us_per_req="$(jmed "$f" cpu_proxy_us_per_req)" upstream_conns="$(jmed "$f" upstream_conns)" \
      errors="$(jmed "$f" errors)")")
  done
  best=$(for side in nginx haproxy; do echo "$(jmed "$WORK/result.beam.$side" req_per_s) $side"; done |
    sort -g -k1,1 | tail -n1)
  echo
  bench_result beam-http "$(awk -v s="$(jmed "$WORK/result.beam.simgate" req_per_s)" -v b="${best%% *}" \
    'BEGIN { if (b + 0 > 0 && s != "nan") printf "%.4f", s / b; else print "nan" }')" \
    "$(bench_rows "${rows[@]}")" req/s "simgate req/s / best of nginx, HAProxy (here ${best#* })"
}


# ---------------------------------------------------------------- funnel-sinks

# Starts the emulators every sink needs once; sets KINESALITE, MOTO and the
# sink-peer URLs PEER_eventhubs, PEER_pubsub, PEER_https.
sinks_emulators() {
  local port line s
  mkdir -p "$WORK/certs"
  bash scripts/certs.sh "$WORK/certs" >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$(scripts/kinesalite.sh path)" --port "$port" --createStreamMs 0 --shardLimit 100 \
    >"$WORK/kinesalite.log" 2>&1 &
  PIDS+=("$!")
  KINESALITE=http://127.0.0.1:$port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  .tools/venv/bin/python3 dataplane/tests/support/moto_server.py 127.0.0.1 "$port" >"$WORK/moto.log" 2>&1 &
  PIDS+=("$!")
  MOTO=http://127.0.0.1:$port
  for s in eventhubs pubsub https; do
    "$LOADGEN" sink-peer --service "$s" --cert "$WORK/certs/server.crt" --key "$WORK/certs/server.key" \
      --max-seconds 7200 >"$WORK/peer.$s.out" 2>&1 &
    PIDS+=("$!")
    line=$(first_line "$WORK/peer.$s.out")
    printf -v "PEER_$s" '%s' "$(sed -n 's/^url=//p' <<<"$line")"
  done
  for ((i = 0; i < 300; i++)); do
    curl -fs "$MOTO/moto-api/" >/dev/null 2>&1 && curl -s "$KINESALITE" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "bench: kinesalite or moto did not start" >&2
  return 1
}

# Writes $WORK/sink.$1.dest (the destination inline table) and
# $WORK/sink.$1.cred (its [[credentials]] table, id "bench").
sinks_destination() { # sink
  local sink=$1 dest cred=$WORK/sink.$1.cred
  case $sink in
    kinesis)
      dest="{ service = \"kinesis\", resource_url = \"https://kinesis.us-east-1.amazonaws.com/bench\", endpoint = \"$KINESALITE\" }"
      printf '[[credentials]]\nid = "bench"\ntype = "aws"\naccess_key_id = "AKIDBENCH"\nsecret_access_key = "bench-secret"\n' >"$cred"
      ;;
    firehose)
      dest="{ service = \"firehose\", resource_url = \"https://firehose.us-east-1.amazonaws.com/bench\", endpoint = \"$MOTO\" }"
      printf '[[credentials]]\nid = "bench"\ntype = "aws"\naccess_key_id = "AKIDBENCH"\nsecret_access_key = "bench-secret"\n' >"$cred"
      ;;
    aws-iot)
      dest="{ service = \"aws-iot\", resource_url = \"https://bench-ats.iot.us-east-1.amazonaws.com/bench/#{imsi}\", endpoint = \"$MOTO\" }"
      printf '[[credentials]]\nid = "bench"\ntype = "aws"\naccess_key_id = "AKIDBENCH"\nsecret_access_key = "bench-secret"\n' >"$cred"
      ;;
    eventhubs)
      dest="{ provider = \"azure\", service = \"eventhubs\", resource_url = \"https://bench.servicebus.windows.net/bench/messages\", endpoint = \"$PEER_eventhubs\" }"
      printf '[[credentials]]\nid = "bench"\ntype = "azure-credentials"\npolicy_name = "bench"\nkey = "YmVuY2gta2V5"\n' >"$cred"
      ;;
    pubsub)
      dest="{ provider = \"google\", service = \"pubsub\", resource_url = \"projects/bench/topics/bench\", endpoint = \"$PEER_pubsub\" }"
      [ -e "$WORK/pubsub.key" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
        -out "$WORK/pubsub.key" 2>/dev/null
      python3 - "$WORK/pubsub.key" "$PEER_pubsub/token" >"$cred" <<'PY'
import json, sys
key = open(sys.argv[1]).read()
sa = {"type": "service_account", "project_id": "bench", "private_key_id": "bench-key",
      "private_key": key, "client_email": "bench@bench.iam.gserviceaccount.com",
      "client_id": "1", "token_uri": sys.argv[2]}
print('[[credentials]]\nid = "bench"\ntype = "google-service-account-json"')
print("credentials = " + json.dumps(json.dumps(sa)))
PY
      ;;
    https)
      dest="{ provider = \"simgate\", service = \"https\", resource_url = \"$PEER_https/ingest\" }"
      printf '[[credentials]]\nid = "bench"\ntype = "psk"\nkey = "bench-hmac-key"\n' >"$cred"
      ;;
    *)
      echo "bench: unknown sink $sink" >&2
      return 2
      ;;
  esac
  printf '%s' "$dest" >"$WORK/sink.$sink.dest"
}

sinks_config_args() { # sink
  echo --destination "$(cat "$WORK/sink.$1.dest")" --credentials-toml "$WORK/sink.$1.cred" \
    --ca-file "$WORK/certs/ca.crt"
}

funnel_sinks_bench() {
  funnel_settings
  SOURCES=${BENCH_SOURCES:-100}
  local sinks=${BENCH_SINKS:-kinesis firehose aws-iot eventhubs pubsub https}
  local sink run dir rate offered out t0
  t0=$(date +%s)
  funnel_setup
  sinks_emulators
  for sink in $sinks; do
    sinks_destination "$sink"
    dir=$WORK/direct.$sink
    mkdir -p "$dir"
    "$LOADGEN" simgate-config --data-dir "$dir/data" --out "$dir/simgate.toml" --sources "$SOURCES" \
      --destination "$(cat "$WORK/sink.$sink.dest")" --credentials-toml "$WORK/sink.$sink.cred" \
      --ca-file "$WORK/certs/ca.crt" >/dev/null
    "$LOADGEN" sink-setup --config "$dir/simgate.toml" >/dev/null
    for ((run = 1; run <= RUNS; run++)); do
      out=$WORK/result.sinks.$sink
      "$LOADGEN" sink-direct --config "$dir/simgate.toml" --warmup "$WARMUP" --duration "$SECS" \
        --size "$SIZE" | sed 's/^/side=direct /' | tee -a "$out.direct"
      rate=$(tail -n1 "$out.direct" | sed -n 's/.* rate=\([^ ]*\).*/\1/p')
      offered=$(awk -v r="$rate" 'BEGIN { printf "%.0f", (r > 100 ? r : 100) * 1.5 }')
      start_simgate "$WORK/simgate.$sink.$run" --destination "$(cat "$WORK/sink.$sink.dest")" \
        --credentials-toml "$WORK/sink.$sink.cred" --ca-file "$WORK/certs/ca.crt" \
        ${BENCH_DURABILITY:+--durability "$BENCH_DURABILITY"}
      send "$SG_UDP" "http://$SG_API/metrics" "$out.simgate" --pid "$SG_PID" --rate "$offered" \
        --metric delivered='simgate_funnel_records_out_total{result="delivered"}' \
        --metric accepted=simgate_funnel_records_in_total \
        --metric failed='simgate_funnel_records_out_total{result="failed"}'
      stop "$SG_PID" 15
      echo "side=simgate offered=$offered $(tail -n1 "$out.simgate")"
    done
  done
  echo
  echo "funnel-sinks, median of $RUNS run(s) ($(nproc) cores, Linux $(uname -r)); records/s delivered:"
  printf "%-10s %10s %10s %8s %10s\n" sink direct simgate ratio sg_cpu_s
  for sink in $sinks; do
    out=$WORK/result.sinks.$sink
    local d g c
    d=$(values "$out.direct" rate | median)
    g=$(values "$out.simgate" delivered_rate | median)
    c=$(med "$out.simgate" cpu_s)
    printf "%-10s %10.0f %10.0f %8s %10s\n" "$sink" "$d" "$g" \
      "$(awk -v g="$g" -v d="$d" 'BEGIN { if (d > 0) printf "%.3f", g / d; else print "nan" }')" "$c"
  done
  echo
  # One result per sink, funnel-kinesis ...: each has its own peer.
  for sink in $sinks; do
    out=$WORK/result.sinks.$sink
    bench_result "funnel-$sink" "$(med_ratio "$out.simgate" delivered_rate "$out.direct" rate)" \
      "[$(bench_row side=direct sink="$sink" rate="$(med "$out.direct" rate)"),$(bench_row side=simgate \
        sink="$sink" rate="$(med "$out.simgate" delivered_rate)" \
        accepted="$(med "$out.simgate" accepted_rate)" failed="$(med "$out.simgate" failed_rate)" \
        cpu_s="$(med "$out.simgate" cpu_s)")]" \
      records/s "$sink: delivered via simgate / the sink in a direct loop"
  done
  echo "direct   simgate's sink for the same destination driven in a loop (max_in_flight full batches)"
  echo "simgate  UDP records from $SOURCES SIMs at 1.5 x the direct rate through simgate (durability ${BENCH_DURABILITY:-spool})"
  echo "load average now $(cut -d' ' -f1-3 /proc/loadavg); the scenario took $(($(date +%s) - t0)) s"
}

case "${1:-}" in
  funnel-udp) funnel_udp_bench ;;
  funnel-sinks) funnel_sinks_bench ;;
  funnel-durable) funnel_durable_bench ;;
  sessions)
    shift
    sessions_bench "$@"
    ;;
  beam-http) beam_http_bench ;;
  "" | all)
    shift || true
    bench_all "$@"
    ;;
  --compare)
    shift
    bench_compare "$@"
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    # A scenario of a sourced scripts/bench/*.sh: its function is <name>_bench.
    if fn=$(bench_fn "$1"); then
      shift
      "$fn" "$@"
    else
      usage
      exit 2
    fi
    ;;
esac
