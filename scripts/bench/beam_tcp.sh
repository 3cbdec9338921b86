# scripts/bench.sh beam-tcp (sourced by scripts/bench.sh; uses its helpers:
# cleanup, stop, first_line, jmed, PIDS, WORK, and lib.sh's). See
# benches/README.md.
#
# Beam's TCP entry (`[listen] beam_tcp`, SORACOM's beam.soracom.io:8023:
# TCP in from the device, TLS out to the group's `tcps://` destination, the
# device's identity as the first line upstream) against HAProxy doing the
# same job (`mode tcp`, `server … ssl verify required ca-file`, the device
# told upstream by a PROXY protocol line, `send-proxy`), in the same run, in
# front of the same upstream: `loadgen tls-echo --header`, a TLS server that
# keeps each connection's first line (simgate's identity line or HAProxy's
# PROXY line) and echoes everything after it. `loadgen tcp` drives
# BENCH_CONNECTIONS connections, each from its own SIM address (127.0.1.1 …),
# closed loop: a BENCH_SIZE-byte line, wait for its echo (checked), again.
# Per proxy: req/s, latency p50/p99/p99.9, the proxy's CPU per request,
# errors; ratio = simgate req/s / HAProxy req/s. Needs haproxy, python3.
#   BENCH_SECONDS          measured window per proxy [10]
#   BENCH_WARMUP           seconds of load before each window [2]
#   BENCH_RUNS             rounds of the two proxies, medians shown [3]
#   BENCH_CONNECTIONS      device connections = SIMs [64]
#   BENCH_SIZE             bytes per message, newline included [100]
#   BENCH_PROXY_WORKERS    HAProxy nbthread (simgate: one worker per core) [2]
#   BENCH_UPSTREAM_THREADS the TLS echo's runtime threads [1]
#   BENCH_LOADGEN_THREADS  `loadgen tcp` runtime threads [1]
#   BENCH_RATE             also an open-loop pass per proxy at this many
#                          messages/s (latency from the intended send time) [off]
#   BENCH_SIMGATE          use this simgate binary instead of building one
#   BENCH_LOADGEN          and this loadgen (with BENCH_SIMGATE: nothing is built)
#   BENCH_KEEP=1           keep the work directory

# HAProxy as a TCP → TLS proxy with the PROXY line (the analogue of Beam's
# identity line); verification as strict as simgate's.
beam_tcp_haproxy_conf() {
  mkdir -p "$WORK/haproxy"
  cat >"$WORK/haproxy/haproxy.cfg" <<CONF
global
  nbthread $BT_PROXY_WORKERS
  maxconn $((CONNS * 2 + 64))
  ssl-server-verify required

defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s

frontend beam_tcp
  bind $BT_HAPROXY
  default_backend upstream

backend upstream
  server s1 $BT_UPSTREAM ssl verify required ca-file $WORK/certs/ca.crt sni str(localhost) send-proxy
CONF
}

# What the upstream heard as the identity of a connection from source $2
# through proxy $1 (the echo answers `whoami`), or nothing.
beam_tcp_whoami() { # addr src
  python3 - "$1" "$2" <<'PY' 2>/dev/null || true
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket()
s.settimeout(2)
s.bind((sys.argv[2], 0))
s.connect((host, int(port)))
s.sendall(b"whoami\n")
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
print(buf.decode(errors="replace").strip())
PY
}

# Source address of SIM $1 (0-based; loadgen's numbering from 127.0.1.1).
beam_tcp_sim_ip() {
  local n=$(((127 << 24) + (1 << 8) + 1 + $1))
  echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))"
}

# Waits until the first and the last SIM's connections reach the upstream
# with their own identity: the IMSI for simgate, the source address for
# HAProxy.
beam_tcp_check() { # side addr pid
  local side=$1 addr=$2 pid=$3 i sim src got want ok
  for ((i = 0; i < 150; i++)); do
    ok=1
    for sim in 0 $((CONNS - 1)); do
      src=$(beam_tcp_sim_ip "$sim")
      if [ "$side" = simgate ]; then
        want="imsi=$(printf '0010100000%05d' $((sim + 1)))"
      else
        want="PROXY TCP4 $src "
      fi
      got=$(beam_tcp_whoami "$addr" "$src")
      [[ $got == *"$want"* ]] || { ok=0; break; }
    done
    if ((ok)); then
      echo "the upstream heard from $src: $got"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "bench: the $side proxy on $addr exited" >&2; return 1; }
    sleep 0.1
  done
  echo "bench: $side on $addr: the upstream heard '$got' from $src, wanted '$want'" >&2
  return 1
}

# One proxy's turn: start, check, load (closed loop, then the open-loop pass
# if BENCH_RATE), stop; appends loadgen's JSON lines to
# $WORK/result.tcp.<side> and $WORK/result.rate.<side>.
beam_tcp_side() { # side
  local side=$1 addr pid line
  mkdir -p "$WORK/$side"
  case $side in
    simgate)
      addr=$BT_BEAM
      RUST_LOG=${RUST_LOG:-warn} "$SIMGATE" serve --config "$WORK/simgate.toml" \
        >>"$WORK/simgate/stdout" 2>>"$WORK/simgate/stderr" &
      ;;
    haproxy)
      addr=$BT_HAPROXY
      "$HAPROXY" -db -f "$WORK/haproxy/haproxy.cfg" >>"$WORK/haproxy/stdout" 2>>"$WORK/haproxy/stderr" &
      ;;
  esac
  pid=$!
  PIDS+=("$pid")
  if ! beam_tcp_check "$side" "$addr" "$pid"; then
    tail -n 20 "$WORK/$side/stderr" >&2 2>/dev/null || true
    return 1
  fi
  line=$("$LOADGEN" tcp --target "$addr" --connections "$CONNS" --size "$BT_SIZE" --warmup "$WARMUP" \
    --duration "$SECS" --threads "$LG_THREADS" --label "$side" --expect-echo \
    --cpu proxy="$pid" --cpu upstream="$BT_UP_PID")
  echo "$line" >>"$WORK/result.tcp.$side"
  echo "$line"
  if [ -n "${BENCH_RATE:-}" ]; then
    line=$("$LOADGEN" tcp --target "$addr" --connections "$CONNS" --size "$BT_SIZE" --warmup 1 \
      --duration "$SECS" --threads "$LG_THREADS" --label "$side" --expect-echo --rate "$BENCH_RATE" \
      --cpu proxy="$pid" --cpu upstream="$BT_UP_PID")
    echo "$line" >>"$WORK/result.rate.$side"
    echo "$line"
  fi
  stop "$pid" 15
}

# The table of one pass (closed or rate) from $WORK/result.<pass>.<side>.
beam_tcp_table() { # pass
  local f side
  printf "%-8s %9s %7s %7s %7s %7s %10s %9s %9s %6s\n" proxy req/s p50 p99 p99.9 max \
    cpu_us/req up_us/req lg_us/req errors
  for side in simgate haproxy; do
    f=$WORK/result.$1.$side
    printf "%-8s %9.0f %7.0f %7.0f %7.0f %7.0f %10.1f %9.1f %9.1f %6.0f\n" "$side" \
      "$(jmed "$f" req_per_s)" "$(jmed "$f" p50_us)" "$(jmed "$f" p99_us)" "$(jmed "$f" p999_us)" \
      "$(jmed "$f" max_us)" "$(jmed "$f" cpu_proxy_us_per_req)" "$(jmed "$f" cpu_upstream_us_per_req)" \
      "$(jmed "$f" cpu_loadgen_us_per_req)" "$(jmed "$f" errors)"
  done
}

beam_tcp_bench() {
  SECS=${BENCH_SECONDS:-10}
  WARMUP=${BENCH_WARMUP:-2}
  RUNS=${BENCH_RUNS:-3}
  CONNS=${BENCH_CONNECTIONS:-64}
  BT_SIZE=${BENCH_SIZE:-100}
  BT_PROXY_WORKERS=${BENCH_PROXY_WORKERS:-2}
  BT_UP_THREADS=${BENCH_UPSTREAM_THREADS:-1}
  LG_THREADS=${BENCH_LOADGEN_THREADS:-1}
  local t0 n side ports line rows=() f
  bench_whole_numbers SECS WARMUP RUNS CONNS BT_SIZE BT_PROXY_WORKERS BT_UP_THREADS LG_THREADS
  ((SECS > 0 && RUNS > 0 && CONNS > 0 && CONNS <= 10000)) ||
    { echo "bench: BENCH_SECONDS and BENCH_RUNS must be positive, BENCH_CONNECTIONS 1..10000" >&2; exit 2; }
  [ -z "${BENCH_RATE:-}" ] || [[ $BENCH_RATE =~ ^[0-9]+$ ]] ||
    { echo "bench: BENCH_RATE must be a whole number" >&2; exit 2; }
  HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
  [ -x "$HAPROXY" ] || { echo "bench: haproxy not found (package haproxy): run scripts/setup.sh" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "bench: python3 not found" >&2; exit 1; }
  t0=$(date +%s)
  bench_binaries
  scripts/certs.sh "$WORK/certs" >/dev/null
  bench_fd_limit $((4 * CONNS + 256))

  ports=$("$LOADGEN" beam-tcp-config --dir "$WORK" --sims "$CONNS" --ca-file "$WORK/certs/ca.crt")
  BT_BEAM=$(sed -n 's/.*beam_tcp=\([^ ]*\).*/\1/p' <<<"$ports")
  BT_UPSTREAM=$(sed -n 's/.*upstream=\([^ ]*\).*/\1/p' <<<"$ports")
  BT_HAPROXY=$(sed -n 's/.*haproxy=\([^ ]*\).*/\1/p' <<<"$ports")
  beam_tcp_haproxy_conf

  "$LOADGEN" tls-echo --header --listen "$BT_UPSTREAM" --threads "$BT_UP_THREADS" \
    --cert "$WORK/certs/server.crt" --key "$WORK/certs/server.key" \
    --max-seconds $(((RUNS * 2 + 1) * (WARMUP + 2 * SECS + 30) + 60)) >"$WORK/upstream.out" 2>&1 &
  BT_UP_PID=$!
  PIDS+=("$BT_UP_PID")
  first_line "$WORK/upstream.out" >/dev/null || { cat "$WORK/upstream.out" >&2; exit 1; }

  echo "== beam-tcp: $CONNS connections (one SIM address each), $BT_SIZE-byte line echoed, closed loop;" \
    "${SECS}s window (+${WARMUP}s warm-up) per proxy, $RUNS round(s); HAProxy $BT_PROXY_WORKERS" \
    "thread(s), TLS echo $BT_UP_THREADS thread(s), loadgen $LG_THREADS thread(s)"
  echo "$("$SIMGATE" --version 2>/dev/null || echo 'simgate ?'); $("$HAPROXY" -v | head -n1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  for side in simgate haproxy; do
    : >"$WORK/result.tcp.$side"
    : >"$WORK/result.rate.$side"
  done
  for ((n = 1; n <= RUNS; n++)); do
    for side in simgate haproxy; do
      echo "-- run $n/$RUNS: $side"
      beam_tcp_side "$side"
    done
  done
  stop "$BT_UP_PID" 5

  echo
  echo "beam-tcp, closed loop, median of $RUNS run(s) ($(nproc) cores, Linux $(uname -r)); latency in us:"
  beam_tcp_table tcp
  if [ -n "${BENCH_RATE:-}" ]; then
    echo
    echo "beam-tcp, open loop at $BENCH_RATE messages/s (latency from the intended send time):"
    beam_tcp_table rate
  fi
  echo
  echo "cpu_us/req  the proxy's CPU time (user + system, all its threads) per message echoed"
  echo "up_us/req   the TLS echo's; lg_us/req: the load generator's (all share $(nproc) cores)"
  echo "errors      wrong echoes, I/O errors, timeouts and failed connects in the window"
  echo "load average now $(cut -d' ' -f1-3 /proc/loadavg); the scenario took $(($(date +%s) - t0)) s"
  for side in simgate haproxy; do
    f=$WORK/result.tcp.$side
    rows+=("$(bench_row side="$side" req_per_s="$(jmed "$f" req_per_s)" p50_us="$(jmed "$f" p50_us)" \
      p99_us="$(jmed "$f" p99_us)" p999_us="$(jmed "$f" p999_us)" max_us="$(jmed "$f" max_us)" \
      cpu_us_per_req="$(jmed "$f" cpu_proxy_us_per_req)" errors="$(jmed "$f" errors)")")
  done
  echo
  bench_result beam-tcp "$(awk -v s="$(jmed "$WORK/result.tcp.simgate" req_per_s)" \
    -v h="$(jmed "$WORK/result.tcp.haproxy" req_per_s)" \
    'BEGIN { if (h + 0 > 0 && s != "nan") printf "%.4f", s / h; else print "nan" }')" \
    "$(bench_rows "${rows[@]}")" req/s "simgate req/s / HAProxy req/s (TCP in, TLS out, echo)"
}
