# io-uring: does io_uring receive UDP faster than recvmmsg? (issue 12, item 2)
# Sourced by scripts/bench.sh; run as `scripts/bench.sh io-uring`.
#
# The raw drain (`loadgen sink`, SO_REUSEPORT sockets, one thread each) in
# its two receive paths, alternating in the same run: recvmmsg (batches of
# 32, as quinn-udp reads for simgate) and `--io-uring` (multishot RecvMsgMulti
# with a provided buffer ring; batched RecvMsg SQEs where the kernel has no
# multishot — the table says which ran). `loadgen send` offers 100-byte
# records from BENCH_SOURCES SIMs at full speed with sendmmsg. Per side, the
# medians of BENCH_RUNS runs: datagrams/s the sink counted, and the sink's
# CPU time (user + system, all threads, from /proc/PID/stat) per datagram.
# With BENCH_ECHO=1 also both paths answering "200" to every datagram
# (recvmmsg side: one sendmmsg per batch; io_uring side: one SendMsg SQE per
# datagram, submitted with the next wait). The ratio is io_uring / recvmmsg
# datagrams/s at full speed without replies: > 1.1 means io_uring wins.
#   BENCH_SECONDS [8], BENCH_WARMUP [2], BENCH_RUNS [3], BENCH_SOURCES [1000],
#   BENCH_BATCH [64], BENCH_SIZE [100], BENCH_UDP_WORKERS [nproc]: as funnel-udp
#   BENCH_URING_MODE   auto, multishot or batched [auto]
#   BENCH_ECHO=1       also the reply passes [off]
#   BENCH_LOADGEN      a loadgen binary built already (with the feature) [build one]

# The harness's bench_result (scripts/bench/lib.sh) when it is there; this
# fallback prints the same line and writes the JSON without the extras.
if ! declare -F bench_result >/dev/null; then
  bench_result() {
    local name=$1 ratio=$2 rows=$3 out=${BENCH_OUT:-target/bench} json
    [[ $ratio =~ ^[0-9]+(\.[0-9]+)?$ ]] && json=$ratio || { ratio=n/a json=null; }
    echo "$name ratio=$ratio"
    mkdir -p "$out"
    printf '{"scenario":"%s","ratio":%s,"higher_is_better":true,"rows":%s}\n' \
      "$name" "$json" "$rows" >"$out/$name.json"
  }
fi
if ! declare -F bench_row >/dev/null; then
  # key=value ... -> one JSON object (numbers as numbers, the rest strings).
  bench_row() {
    local kv out= sep=
    for kv in "$@"; do
      if [[ ${kv#*=} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then out+="$sep\"${kv%%=*}\":${kv#*=}"
      else out+="$sep\"${kv%%=*}\":\"${kv#*=}\""; fi
      sep=,
    done
    echo "{$out}"
  }
  bench_rows() { local IFS=,; echo "[$*]"; }
fi

# One run of one side: a fresh sink, `send` at full speed into it with the
# sink's CPU time sampled around the window; appends send's line plus
# `design=` to file $1.
uring_run() { # result-file recvmmsg|io_uring reply-mode
  local out=$1 side=$2 reply=$3 line udp url design pid n=$((++SEQ)) extra=()
  if [ "$side" = io_uring ]; then
    extra=(--io-uring --uring-mode "$URING_MODE")
  fi
  "$LOADGEN" sink --workers "$WORKERS" --reply "$reply" "${extra[@]}" \
    --max-seconds $((WARMUP + SECS + 120)) >"$WORK/sink.$n.out" 2>"$WORK/sink.$n.err" &
  pid=$!
  PIDS+=("$pid")
  line=$(first_line "$WORK/sink.$n.out") || { cat "$WORK/sink.$n.err" >&2; return 1; }
  udp=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' <<<"$line")
  url=$(sed -n 's/.*metrics=\([^ ]*\).*/\1/p' <<<"$line")
  design=$(sed -n 's/.*io_uring=\([^ ]*\).*/\1/p' <<<"$line")
  "$LOADGEN" send --target "$udp" --sources "$SOURCES" --batch "$BATCH" --size "$SIZE" \
    --warmup "$WARMUP" --duration "$SECS" --metrics-url "$url" --pid "$pid" \
    --metric received=loadgen_sink_received_total \
    --metric calls=loadgen_sink_recvmmsg_calls_total \
    --metric answered=loadgen_sink_replies_total |
    sed "s/\$/ design=${design:-recvmmsg}/" >>"$out"
  stop "$pid" 5
  tail -n1 "$out"
}

# Medians of file $1: received/s, CPU µs per datagram, datagrams per
# receive syscall, replies/s; `-` where not measured.
uring_figures() { # result-file
  local f=$1
  echo "$(med "$f" received_rate)" \
    "$(paste <(values "$f" cpu_s) <(values "$f" received) | awk '$2 > 0 { print $1 * 1e6 / $2 }' | median)" \
    "$(paste <(values "$f" received) <(values "$f" calls) | awk '$2 > 0 { print $1 / $2 }' | median)" \
    "$(med "$f" replies_rate)"
}

io_uring_bench() {
  # As funnel_settings, with this scenario's shorter default window.
  BENCH_SECONDS=${BENCH_SECONDS:-8}
  funnel_settings
  URING_MODE=${BENCH_URING_MODE:-auto}
  [[ $URING_MODE =~ ^(auto|multishot|batched)$ ]] ||
    { echo "bench: BENCH_URING_MODE must be auto, multishot or batched" >&2; exit 2; }
  local built=${BENCH_LOADGEN:-}
  if [ -z "$built" ]; then
    echo "== building loadgen (feature io-uring)"
    cargo build --release -p simgate-benches --features io-uring --bin loadgen
    built=target/release/loadgen
  fi
  bench_work
  # Other builds may replace target/release while we run: use a copy.
  cp "$built" "$WORK/loadgen"
  LOADGEN=$WORK/loadgen
  SEQ=0
  bench_fd_limit $((SOURCES + 256))

  local passes=(none) reply side n sides=(recvmmsg io_uring)
  if [ "${BENCH_ECHO:-0}" = 1 ]; then
    passes+=(batch)
  fi
  echo "== io-uring: $SOURCES SIMs, $SIZE-byte records, sendmmsg batch $BATCH," \
    "$WORKERS sink socket(s)/thread(s), $RUNS x ${SECS}s runs (+${WARMUP}s warm-up), sides alternating"
  for reply in "${passes[@]}"; do
    for side in "${sides[@]}"; do
      : >"$WORK/result.$reply.$side"
    done
    for ((n = 1; n <= RUNS; n++)); do
      for side in "${sides[@]}"; do
        echo "-- reply $reply, run $n/$RUNS: $side"
        uring_run "$WORK/result.$reply.$side" "$side" "$reply"
      done
    done
  done

  echo
  echo "io-uring, median of $RUNS runs ($(nproc) cores, Linux $(uname -r)):"
  printf "%-7s %-9s %-10s %12s %9s %11s %12s %7s\n" \
    reply side design received/s cpu_us dgram/call replies/s ratio
  local rows=() base rx us per rep design ratio=nan
  for reply in "${passes[@]}"; do
    base=$(med "$WORK/result.$reply.recvmmsg" received_rate)
    for side in "${sides[@]}"; do
      read -r rx us per rep < <(uring_figures "$WORK/result.$reply.$side")
      design=$(values "$WORK/result.$reply.$side" design | sort | uniq | paste -sd/)
      awk -v r="$reply" -v s="$side" -v d="$design" -v rx="$rx" -v us="$us" -v per="$per" \
        -v rep="$rep" -v b="$base" 'function n(x, f) { return (x == "nan" || x == "") ? "-" : sprintf(f, x) }
        BEGIN { printf "%-7s %-9s %-10s %12s %9s %11s %12s %7s\n", r, s, d, n(rx, "%.0f"), n(us, "%.3f"),
          n(per, "%.1f"), (r == "none") ? "-" : n(rep, "%.0f"), (b > 0) ? sprintf("%.3f", rx / b) : "-" }'
      rows+=("$(bench_row reply="${reply/none/off}" side="$side" design="$design" received_per_s="$rx" \
        cpu_us_per_datagram="$us" datagrams_per_call="$per" replies_per_s="$rep")")
    done
  done
  ratio=$(med_ratio_uring "$WORK/result.none.io_uring" "$WORK/result.none.recvmmsg")
  echo
  echo "received/s  datagrams the sink counted, per second of the measured window"
  echo "cpu_us      the sink's CPU time (user + system, all threads) per datagram received"
  echo "dgram/call  datagrams per receive syscall (recvmmsg; io_uring_enter)"
  echo "ratio       received/s / recvmmsg's in the same pass; io_uring wins if > 1.1"
  echo
  bench_result io-uring "$ratio" "$(bench_rows "${rows[@]}")" datagrams/s \
    "io_uring / recvmmsg datagrams received per second, raw sink, no replies" \
    "the raw drain only: a simgate io-uring feature would inherit at most this difference"
}

# Ratio of the received_rate medians of two result files; nan without a base.
med_ratio_uring() { # file divisor-file
  awk -v a="$(med "$1" received_rate)" -v b="$(med "$2" received_rate)" \
    'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.3f", a / b; else print "nan" }'
}
