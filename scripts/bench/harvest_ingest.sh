# scripts/bench.sh harvest-ingest (sourced by scripts/bench.sh; uses its
# helpers: cleanup, stop, spawn_simgate, wait_health, jmed, PIDS, WORK). See
# benches/README.md.
#
# Harvest Data ingest through simgate against the raw store append, same run,
# same concurrency. Raw: `loadgen harvest-raw` opens simgate's own Harvest
# store (redb, one writer thread, group commit, a durable commit before an
# append returns; simgate's default settings) in a fresh directory and
# BENCH_CONNECTIONS writers append BENCH_SIZE-byte entries, each with one
# append outstanding. simgate: `simgate serve` with BENCH_CONNECTIONS SIMs
# (static sessions, Harvest enabled for their group), `loadgen tcp` drives
# as many connections to the Harvest TCP port (:8514), one from each SIM
# address, closed loop: a BENCH_SIZE-byte message, wait for `201`, again;
# then the same over HTTP (`loadgen http`: POST to Host harvest.soracom.io).
# Per side: entries/s, latency p50/p99/p99.9 (raw: the append itself),
# simgate's CPU per entry; ratio = simgate TCP entries/s / raw appends/s.
#   BENCH_SECONDS          measured window per side [10]
#   BENCH_WARMUP           seconds of load before each window [2]
#   BENCH_RUNS             rounds of the three sides, medians shown [3]
#   BENCH_CONNECTIONS      concurrent writers = connections = SIMs [64]
#   BENCH_SIZE             entry bytes [100]
#   BENCH_LOADGEN_THREADS  loadgen runtime threads (both sides) [1]
#   BENCH_SIMGATE          use this simgate binary instead of building one
#   BENCH_LOADGEN          and this loadgen (with BENCH_SIMGATE: nothing is built)
#   BENCH_KEEP=1           keep the work directory (stores included)

# One simgate side: a fresh data directory, load, stop. Appends loadgen's
# JSON line to $WORK/result.harvest.<side>.
harvest_ingest_simgate() { # side (tcp|http) run
  local side=$1 dir=$WORK/simgate.$1.$2 line cfg target
  mkdir -p "$dir"
  cfg=$("$LOADGEN" simgate-config --data-dir "$dir/data" --out "$dir/simgate.toml" \
    --sources "$CONNS" --harvest)
  SG_API=$(sed -n 's/.*api=\([^ ]*\).*/\1/p' <<<"$cfg")
  spawn_simgate "$dir"
  wait_health "$dir"
  case $side in
    tcp)
      target=$(sed -n 's/.*harvest=\([^ ]*\).*/\1/p' <<<"$cfg")
      # A refusal (`503 …`, `429 …`) has no line end: one read is one reply.
      line=$("$LOADGEN" tcp --target "$target" --connections "$CONNS" --size "$HI_SIZE" \
        --warmup "$WARMUP" --duration "$SECS" --threads "$LG_THREADS" --label simgate-tcp \
        --reply any --expect-prefix 201 --cpu simgate="$SG_PID")
      ;;
    http)
      target=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$cfg")
      line=$("$LOADGEN" http --target "$target" --connections "$CONNS" --host harvest.soracom.io \
        --body-size "$HI_SIZE" --warmup "$WARMUP" --duration "$SECS" --threads "$LG_THREADS" \
        --label simgate-http --cpu simgate="$SG_PID")
      ;;
  esac
  stop "$SG_PID" 15
  # The store of a finished run only takes disk space.
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir/data"
  echo "$line" >>"$WORK/result.harvest.$side"
  echo "$line"
}

harvest_ingest_raw() { # run
  local dir=$WORK/raw.$1 line
  line=$("$LOADGEN" harvest-raw --dir "$dir" --writers "$CONNS" --size "$HI_SIZE" \
    --warmup "$WARMUP" --duration "$SECS" --threads "$LG_THREADS")
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
  echo "$line" >>"$WORK/result.harvest.raw"
  echo "$line"
}

harvest_ingest_bench() {
  SECS=${BENCH_SECONDS:-10}
  WARMUP=${BENCH_WARMUP:-2}
  RUNS=${BENCH_RUNS:-3}
  CONNS=${BENCH_CONNECTIONS:-64}
  HI_SIZE=${BENCH_SIZE:-100}
  LG_THREADS=${BENCH_LOADGEN_THREADS:-1}
  local t0 n side f rows=()
  bench_whole_numbers SECS WARMUP RUNS CONNS HI_SIZE LG_THREADS
  ((SECS > 0 && RUNS > 0 && CONNS > 0 && CONNS <= 10000 && HI_SIZE >= 2 && HI_SIZE <= 1024)) ||
    { echo "bench: BENCH_SECONDS, BENCH_RUNS positive, BENCH_CONNECTIONS 1..10000, BENCH_SIZE 2..1024" >&2; exit 2; }
  t0=$(date +%s)
  bench_binaries

  echo "== harvest-ingest: $CONNS concurrent writers / connections (one SIM each), $HI_SIZE-byte" \
    "entries, closed loop; ${SECS}s window (+${WARMUP}s warm-up) per side, $RUNS round(s);" \
    "stores in $WORK ($(df -h --output=source,fstype "$WORK" | tail -n1 | tr -s ' '))"
  echo "$("$SIMGATE" --version 2>/dev/null || echo 'simgate ?')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  for side in raw tcp http; do
    : >"$WORK/result.harvest.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    echo "-- run $n/$RUNS: raw"
    harvest_ingest_raw "$n"
    for side in tcp http; do
      echo "-- run $n/$RUNS: simgate $side"
      harvest_ingest_simgate "$side" "$n"
    done
  done

  echo
  echo "harvest-ingest, median of $RUNS run(s) ($(nproc) cores, Linux $(uname -r)); latency in us:"
  printf "%-14s %9s %7s %7s %7s %7s %10s %9s %6s\n" side entries/s p50 p99 p99.9 max \
    sg_us/entry lg_us/entry errors
  for side in raw tcp http; do
    f=$WORK/result.harvest.$side
    printf "%-14s %9.0f %7.0f %7.0f %7.0f %7.0f %10s %9.1f %6.0f\n" \
      "$([ "$side" = raw ] && echo raw || echo "simgate $side")" \
      "$(jmed "$f" req_per_s)" "$(jmed "$f" p50_us)" "$(jmed "$f" p99_us)" "$(jmed "$f" p999_us)" \
      "$(jmed "$f" max_us)" \
      "$([ "$side" = raw ] && echo - || printf '%.1f' "$(jmed "$f" cpu_simgate_us_per_req)")" \
      "$(jmed "$f" cpu_loadgen_us_per_req)" "$(jmed "$f" errors)"
    rows+=("$(bench_row side="$([ "$side" = raw ] && echo raw || echo "simgate-$side")" \
      entries_per_s="$(jmed "$f" req_per_s)" p50_us="$(jmed "$f" p50_us)" p99_us="$(jmed "$f" p99_us)" \
      p999_us="$(jmed "$f" p999_us)" errors="$(jmed "$f" errors)")")
  done
  echo
  echo "raw          simgate's HarvestStore appended to directly (loadgen harvest-raw; lg_us: its CPU, store included)"
  echo "sg_us/entry  simgate's CPU time (user + system, all threads) per entry stored"
  echo "errors       refusals (503 busy and others), I/O errors, timeouts in the window"
  awk -v t="$(jmed "$WORK/result.harvest.tcp" req_per_s)" -v h="$(jmed "$WORK/result.harvest.http" req_per_s)" \
    -v r="$(jmed "$WORK/result.harvest.raw" req_per_s)" '
    function q(a, b) { return (b > 0) ? sprintf("%.3f", a / b) : "nan" }
    BEGIN { printf "harvest-ingest tcp/raw=%s http/raw=%s\n", q(t, r), q(h, r) }'
  echo "load average now $(cut -d' ' -f1-3 /proc/loadavg); the scenario took $(($(date +%s) - t0)) s"
  echo
  bench_result harvest-ingest "$(awk -v s="$(jmed "$WORK/result.harvest.tcp" req_per_s)" \
    -v r="$(jmed "$WORK/result.harvest.raw" req_per_s)" \
    'BEGIN { if (r + 0 > 0 && s != "nan") printf "%.4f", s / r; else print "nan" }')" \
    "$(bench_rows "${rows[@]}")" entries/s "simgate Harvest TCP entries/s / raw HarvestStore appends/s"
}
