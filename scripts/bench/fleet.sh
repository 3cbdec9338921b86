# scripts/bench.sh fleet (sourced by scripts/bench.sh; uses its helpers:
# cleanup, stop, spawn_simgate, jmed, PIDS, WORK, and lib.sh's). See
# benches/README.md, "fleet".
#
# A simgate fleet against one stand-alone simgate, same run, same write
# load. A 3-member etcd on loopback (scripts/etcd-cluster.sh, members on
# BENCH_ETCD_BASE.1-3, ports 2379/2380, data in the work directory, fsync
# on) and three release simgate nodes (`[cluster] etcd`, one prefix, each
# its own data_dir and ports); the first node's config file holds
# BENCH_SIMS `[[subscribers]]` and seeds the fleet, the other two start
# once it answers /health and load the fleet's state from etcd (both times
# reported). The single node: the same config file without [cluster] (redb).
#   writes       `loadgen fleet writes`: BENCH_CONNECTIONS keep-alive API
#                connections (spread over the three nodes; all to the single
#                node for the baseline), closed loop, each
#                `PUT /v1/subscribers/{imsi}/tags` on a SIM no other
#                connection writes at the time: 2xx/s, latency p50/p99,
#                non-2xx, the nodes' writeRetries (/health) in the window.
#                Also the fleet with every connection to node 1 (writes
#                that never race another node's). Single node, fleet and
#                fleet-via-node-1 alternate BENCH_RUNS times; medians.
#   propagation  `loadgen fleet propagation`: BENCH_SAMPLES sequential tag
#                writes on node 1, each followed by polling node 3's API
#                (1 ms apart) until it returns the new value: p50/p99/max
#                from sending the write, and from node 1's answer.
#   radius       `loadgen fleet radius` (last: a SIM's API view scans the
#                session table, so its sessions would slow the API passes):
#                BENCH_RADIUS_CLIENTS UDP sockets spread over the three
#                nodes' RADIUS ports, closed loop,
#                each request an Accounting Start for a new Framed-IP and
#                SIM, for BENCH_SECONDS: Accounting-Responses/s, then the
#                time from the last answer until every node's /health
#                `sessions` holds all of them.
# ratio = fleet API writes/s / single-node API writes/s (the cost of the
# shared etcd store for writes; reads and the data plane are per node).
#   BENCH_SECONDS          measured window per writes pass, RADIUS load [10]
#   BENCH_WARMUP           seconds of writes before each window [1]
#   BENCH_RUNS             rounds of the three writes passes, medians [3]
#   BENCH_SIMS             subscribers seeded [100000]
#   BENCH_CONNECTIONS      concurrent API writers [24]
#   BENCH_RADIUS_CLIENTS   concurrent RADIUS clients [32]
#   BENCH_SAMPLES          propagation samples [200]
#   BENCH_ETCD_BASE        the etcd members' addresses [127.0.97]
#   BENCH_LOADGEN_THREADS  loadgen runtime threads [1]
#   BENCH_SIMGATE          use this simgate binary instead of building one
#   BENCH_LOADGEN          and this loadgen (with BENCH_SIMGATE: nothing is built)
#   BENCH_KEEP=1           keep the work directory (configs, logs, etcd data)

# Reads loadgen fleet config's line for node $1 (n1 …): sets FL_DIR, FL_API,
# FL_RADIUS.
fleet_node_vars() { # nodes-file node
  local line
  line=$(grep "^node=$2 " "$1") || { echo "bench: no node $2 in $1" >&2; return 1; }
  FL_DIR=$(sed -n 's/.* dir=\([^ ]*\).*/\1/p' <<<"$line")
  FL_API=$(sed -n 's/.* api=\([^ ]*\).*/\1/p' <<<"$line")
  FL_RADIUS=$(sed -n 's/.* radius=\([^ ]*\).*/\1/p' <<<"$line")
}

# Waits until the simgate of pid $1 answers /health at $2 (seeding 100,000
# SIMs through etcd takes a while: 600 s at most); prints the seconds since
# $3 (a `date +%s.%N`).
fleet_wait_health() { # pid api since dir
  local i
  for ((i = 0; i < 6000; i++)); do
    if curl -fs -m 2 "http://$2/health" >/dev/null 2>&1; then
      awk -v a="$3" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
      return 0
    fi
    if ! kill -0 "$1" 2>/dev/null; then
      echo "bench: simgate exited at start:" >&2
      tail -n 20 "$4/stderr" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "bench: simgate did not answer /health within 600 s" >&2
  return 1
}

fleet_writes() { # side api-list cpu-args...
  local side=$1 api=$2 line
  shift 2
  line=$("$LOADGEN" fleet writes --api "$api" --token-file "$FL_TOKEN" --connections "$FL_CONNS" \
    --sims "$FL_SIMS" --warmup "$WARMUP" --duration "$SECS" --threads "$LG_THREADS" --label "$side" "$@")
  echo "$line" >>"$WORK/result.fleet.$side"
  echo "$side: $line"
}

fleet_bench() {
  SECS=${BENCH_SECONDS:-10}
  WARMUP=${BENCH_WARMUP:-1}
  RUNS=${BENCH_RUNS:-3}
  FL_SIMS=${BENCH_SIMS:-100000}
  FL_CONNS=${BENCH_CONNECTIONS:-24}
  FL_RCLIENTS=${BENCH_RADIUS_CLIENTS:-32}
  FL_SAMPLES=${BENCH_SAMPLES:-200}
  LG_THREADS=${BENCH_LOADGEN_THREADS:-1}
  local base=${BENCH_ETCD_BASE:-127.0.97} secret=fleet-bench
  bench_whole_numbers SECS WARMUP RUNS FL_SIMS FL_CONNS FL_RCLIENTS FL_SAMPLES LG_THREADS
  ((SECS > 0 && RUNS > 0 && FL_CONNS > 0 && FL_SIMS >= FL_CONNS && FL_SIMS <= 1000000 &&
    FL_RCLIENTS > 0 && FL_SAMPLES > 0)) ||
    { echo "bench: BENCH_SECONDS, BENCH_RUNS, BENCH_RADIUS_CLIENTS, BENCH_SAMPLES positive;" \
      "BENCH_CONNECTIONS 1..BENCH_SIMS, BENCH_SIMS at most 1000000" >&2; exit 2; }
  [[ $base =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || { echo "bench: BENCH_ETCD_BASE like 127.0.97" >&2; exit 2; }
  local t0 n t side f p
  t0=$(date +%s)
  bench_binaries
  bench_fd_limit 4096
  echo "== fleet: 3-member etcd + 3 simgate nodes vs one simgate (redb), $FL_SIMS SIMs;" \
    "writes: $FL_CONNS connections, ${SECS}s window (+${WARMUP}s warm-up), $RUNS round(s);" \
    "RADIUS: $FL_RCLIENTS clients ${SECS}s; propagation: $FL_SAMPLES samples"
  echo "$("$SIMGATE" --version 2>/dev/null || echo 'simgate ?'), $("${ETCD:-etcd}" --version 2>/dev/null | head -n1)," \
    "work directory $WORK ($(df -h --output=source,fstype "$WORK" | tail -n1 | tr -s ' '))"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

  # -- the single node (baseline)
  "$LOADGEN" fleet config --dir "$WORK/single" --nodes 1 --sims "$FL_SIMS" --secret "$secret" \
    >"$WORK/single.nodes"
  fleet_node_vars "$WORK/single.nodes" n1
  local single_dir=$FL_DIR single_api=$FL_API single_pid single_seed
  t=$(date +%s.%N)
  spawn_simgate "$single_dir"
  single_pid=$SG_PID
  single_seed=$(fleet_wait_health "$single_pid" "$single_api" "$t" "$single_dir")
  echo "-- single node: $FL_SIMS SIMs from its config file into redb, up in ${single_seed}s"

  # -- etcd and the fleet
  echo "-- etcd: scripts/etcd-cluster.sh start $WORK/etcd 3 $base"
  # Should the bench break: etcd too (its members outlive the script that
  # started them; stop waits for them), before cleanup removes $WORK.
  # shellcheck disable=SC2064 # expand now: $WORK is set
  trap "scripts/etcd-cluster.sh stop '$WORK/etcd' 2>/dev/null || true; cleanup" EXIT
  FL_ENDPOINTS=$(scripts/etcd-cluster.sh start "$WORK/etcd" 3 "$base")
  echo "   endpoints $FL_ENDPOINTS"
  "$LOADGEN" fleet config --dir "$WORK/fleet" --nodes 3 --etcd "$FL_ENDPOINTS" \
    --prefix "/simgate-bench-$$" --sims "$FL_SIMS" --secret "$secret" >"$WORK/fleet.nodes"
  local apis=() radii=() dirs=() pids=() seed_s join_s
  for n in 1 2 3; do
    fleet_node_vars "$WORK/fleet.nodes" "n$n"
    apis+=("$FL_API")
    radii+=("$FL_RADIUS")
    dirs+=("$FL_DIR")
  done
  t=$(date +%s.%N)
  spawn_simgate "${dirs[0]}"
  pids+=("$SG_PID")
  seed_s=$(fleet_wait_health "${pids[0]}" "${apis[0]}" "$t" "${dirs[0]}")
  echo "-- fleet seeded by node 1 from its config file ($FL_SIMS [[subscribers]] into etcd): up in ${seed_s}s"
  t=$(date +%s.%N)
  for n in 1 2; do
    spawn_simgate "${dirs[$n]}"
    pids+=("$SG_PID")
  done
  for n in 1 2; do
    join_s=$(fleet_wait_health "${pids[$n]}" "${apis[$n]}" "$t" "${dirs[$n]}")
  done
  echo "-- nodes 2 and 3 loaded the fleet's state from etcd: both up in ${join_s}s"
  FL_TOKEN=${dirs[0]}/data/api.token
  # Every node knows the last SIM and accepts the seeding node's token.
  p=$(printf '00101%010d' "$FL_SIMS")
  for n in 0 1 2; do
    curl -fs -m 5 -H "Authorization: Bearer $(head -n1 "$FL_TOKEN")" \
      "http://${apis[$n]}/v1/subscribers/$p" >/dev/null ||
      { echo "bench: node $((n + 1)) does not know SIM $p" >&2; exit 1; }
  done
  # The single node's own token (it is not part of the fleet).
  local fleet_token=$FL_TOKEN fleet_apis
  fleet_apis=$(IFS=,; echo "${apis[*]}")

  for side in single fleet fleet-one; do
    : >"$WORK/result.fleet.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    echo "-- run $n/$RUNS: API writes"
    FL_TOKEN=$single_dir/data/api.token
    fleet_writes single "$single_api" --cpu simgate="$single_pid"
    FL_TOKEN=$fleet_token
    fleet_writes fleet "$fleet_apis" --cpu n1="${pids[0]}" --cpu n2="${pids[1]}" --cpu n3="${pids[2]}"
    fleet_writes fleet-one "${apis[0]}" --cpu n1="${pids[0]}" --cpu n2="${pids[1]}" --cpu n3="${pids[2]}"
  done
  stop "$single_pid" 15

  # Before the RADIUS pass: a SIM's API view looks its sessions up in the
  # whole session table, so hundreds of thousands of sessions would slow
  # every read and write of the API.
  echo "-- propagation: write on node 1, read on node 3, $FL_SAMPLES samples"
  "$LOADGEN" fleet propagation --write "${apis[0]}" --read "${apis[2]}" --token-file "$FL_TOKEN" \
    --samples "$FL_SAMPLES" --sims "$FL_SIMS" | tee "$WORK/result.fleet.propagation"

  echo "-- RADIUS: Accounting Starts to the three nodes for ${SECS}s"
  "$LOADGEN" fleet radius --radius "$(IFS=,; echo "${radii[*]}")" --api "$fleet_apis" --secret "$secret" \
    --clients "$FL_RCLIENTS" --sims "$FL_SIMS" --duration "$SECS" --threads "$LG_THREADS" --bind-timeout 300 \
    --cpu n1="${pids[0]}" --cpu n2="${pids[1]}" --cpu n3="${pids[2]}" | tee "$WORK/result.fleet.radius"
  for n in 0 1 2; do
    echo "   node $((n + 1)) /health: $(curl -s -m 5 "http://${apis[$n]}/health")"
  done
  for p in "${pids[@]}"; do
    stop "$p" 15
  done
  scripts/etcd-cluster.sh stop "$WORK/etcd"

  local s=$WORK/result.fleet.single g=$WORK/result.fleet.fleet r=$WORK/result.fleet.radius
  local q=$WORK/result.fleet.propagation ratio
  echo
  echo "fleet, median of $RUNS run(s) ($(nproc) cores, Linux $(uname -r)); latency in us:"
  printf "%-22s %10s %8s %8s %8s %8s %8s %12s\n" "API writes" writes/s p50 p99 max non-2xx errors \
    write_retries
  for side in single fleet fleet-one; do
    f=$WORK/result.fleet.$side
    printf "%-22s %10.0f %8.0f %8.0f %8.0f %8.0f %8.0f %12s\n" \
      "$(case $side in single) echo "single node (redb)" ;; fleet) echo "fleet, 3 nodes" ;;
        *) echo "fleet, all to node 1" ;; esac)" \
      "$(jmed "$f" req_per_s)" "$(jmed "$f" p50_us)" "$(jmed "$f" p99_us)" "$(jmed "$f" max_us)" \
      "$(jmed "$f" non_2xx)" "$(jmed "$f" errors)" "$([ "$side" = single ] && echo - || jmed "$f" write_retries)"
  done
  printf "%-22s %10s %8s %8s %8s %8s %8s %12s\n" "RADIUS Starts" updates/s p50 p99 max timeouts \
    bad bound_ms
  printf "%-22s %10.0f %8.0f %8.0f %8.0f %8.0f %8.0f %12s\n" "fleet (3 nodes, etcd)" \
    "$(jmed "$r" updates_per_s)" "$(jmed "$r" p50_us)" "$(jmed "$r" p99_us)" "$(jmed "$r" max_us)" \
    "$(jmed "$r" timeouts)" "$(jmed "$r" bad)" "$(jvalues "$r" bound_everywhere_ms)"
  printf "%-22s %10s %8s %8s %8s\n" "propagation A->C" samples p50 p99 max
  printf "%-22s %10s %8s %8s %8s\n" "from sending the write" "$(jvalues "$q" samples)" \
    "$(jvalues "$q" p50_us)" "$(jvalues "$q" p99_us)" "$(jvalues "$q" max_us)"
  printf "%-22s %10s %8s %8s %8s\n" "from A's answer" "" \
    "$(jvalues "$q" ack_p50_us)" "$(jvalues "$q" ack_p99_us)" "$(jvalues "$q" ack_max_us)"
  echo "seeding: $FL_SIMS SIMs from node 1's config file into etcd ${seed_s}s (redb, single node:" \
    "${single_seed}s); nodes 2 and 3 loading them from etcd: ${join_s}s"
  echo
  echo "writes        PUT /v1/subscribers/{imsi}/tags, 2xx only; fleet: connections spread over the 3 nodes;"
  echo "              all to node 1: the same fleet, every connection to node 1 (no other node's writes to race)"
  echo "write_retries writes whose guarded keys another node wrote first, run again (sum of the nodes' /health)"
  echo "bound_ms      from the last Accounting-Response until every node's /health counts all sessions answered"
  echo "propagation   a tag written on node 1, node 3's API polled every 1 ms until it returns the new value"
  ratio=$(awk -v g="$(jmed "$g" req_per_s)" -v s="$(jmed "$s" req_per_s)" \
    'BEGIN { if (s + 0 > 0 && g != "nan") printf "%.4f", g / s; else print "nan" }')
  echo "ratio = fleet API writes/s / single-node API writes/s = $ratio (1 = the fleet writes as fast as one node)"
  echo "load average now $(cut -d' ' -f1-3 /proc/loadavg); the scenario took $(($(date +%s) - t0)) s"
  echo
  local rows=(
    "$(bench_row side=single sims="$FL_SIMS" writes_per_s="$(jmed "$s" req_per_s)" \
      p50_us="$(jmed "$s" p50_us)" p99_us="$(jmed "$s" p99_us)" non_2xx="$(jmed "$s" non_2xx)" \
      errors="$(jmed "$s" errors)" start_s="$single_seed")"
    "$(bench_row side=fleet nodes=3 sims="$FL_SIMS" writes_per_s="$(jmed "$g" req_per_s)" \
      p50_us="$(jmed "$g" p50_us)" p99_us="$(jmed "$g" p99_us)" non_2xx="$(jmed "$g" non_2xx)" \
      errors="$(jmed "$g" errors)" write_retries="$(jmed "$g" write_retries)" seed_s="$seed_s" \
      join_s="$join_s")"
    "$(bench_row side=fleet-one-node nodes=3 writes_per_s="$(jmed "$WORK/result.fleet.fleet-one" req_per_s)" \
      p50_us="$(jmed "$WORK/result.fleet.fleet-one" p50_us)" p99_us="$(jmed "$WORK/result.fleet.fleet-one" p99_us)" \
      non_2xx="$(jmed "$WORK/result.fleet.fleet-one" non_2xx)" \
      write_retries="$(jmed "$WORK/result.fleet.fleet-one" write_retries)")"
    "$(bench_row side=fleet-radius updates_per_s="$(jmed "$r" updates_per_s)" p50_us="$(jmed "$r" p50_us)" \
      p99_us="$(jmed "$r" p99_us)" timeouts="$(jmed "$r" timeouts)" answered="$(jmed "$r" answered)" \
      bound_everywhere_ms="$(jvalues "$r" bound_everywhere_ms)")"
    "$(bench_row side=fleet-propagation samples="$(jvalues "$q" samples)" p50_us="$(jvalues "$q" p50_us)" \
      p99_us="$(jvalues "$q" p99_us)" max_us="$(jvalues "$q" max_us)" ack_p50_us="$(jvalues "$q" ack_p50_us)" \
      ack_p99_us="$(jvalues "$q" ack_p99_us)")"
  )
  bench_result fleet "$ratio" "$(bench_rows "${rows[@]}")" writes/s \
    "fleet API writes/s (3 nodes, etcd) / single-node API writes/s (redb), same load"
}
