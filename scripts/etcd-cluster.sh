#!/usr/bin/env bash
# A local etcd cluster on loopback: for trying a simgate fleet (`[cluster]
# etcd = [...]`, the endpoints printed) on one machine, and for
# `scripts/bench.sh fleet`.
#
#   scripts/etcd-cluster.sh start DIR [N [IP_BASE]]
#       starts N members [3], member i listening on IP_BASE.i [127.0.97],
#       client port 2379, peer port 2380 (distinct addresses, so the usual
#       ports); data, logs and pid files in DIR (mI/, mI.log, mI.pid). Waits
#       until every member's /health says true (30 s at most), then prints
#       the client endpoints, comma-separated, on stdout: e.g.
#       http://127.0.97.1:2379,http://127.0.97.2:2379,http://127.0.97.3:2379
#       An existing DIR's data is reused (a restart of the same cluster).
#   scripts/etcd-cluster.sh stop DIR
#       stops the members whose pids are in DIR (TERM, then KILL after 10 s);
#       the data stays.
#   scripts/etcd-cluster.sh endpoints DIR
#       prints the endpoints of the cluster in DIR again.
#
# Needs Debian's etcd-server (/usr/bin/etcd; scripts/setup.sh) and curl.
# ETCD_ARGS adds flags to every member (e.g. "--unsafe-no-fsync" for a
# throw-away cluster; the bench does not use it). The members run in the
# background and outlive this script: stop them with `stop`.
set -euo pipefail

ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
CLIENT_PORT=2379
PEER_PORT=2380

die() {
  echo "etcd-cluster: $*" >&2
  exit 2
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# True when something accepts TCP connections on $1:$2.
listening() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

healthy() { # client-url
  curl -s -m 2 "$1/health" 2>/dev/null | grep -q '"health":"true"'
}

start() {
  local dir=$1 n=${2:-3} base=${3:-127.0.97} i ip initial= token state
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 9)) || die "N must be 1..9"
  [[ $base =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "IP_BASE must look like 127.0.97 (loopback)"
  [ -x "$ETCD" ] || die "no etcd binary ($ETCD): apt-get install etcd-server (scripts/setup.sh)"
  command -v curl >/dev/null || die "curl is needed"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for ((i = 1; i <= n; i++)); do
    if [ -s "$dir/m$i.pid" ] && kill -0 "$(cat "$dir/m$i.pid")" 2>/dev/null; then
      die "member m$i already runs (pid $(cat "$dir/m$i.pid")): scripts/etcd-cluster.sh stop $dir"
    fi
    ip=$base.$i
    for p in $CLIENT_PORT $PEER_PORT; do
      ! listening "$ip" "$p" || die "something already listens on $ip:$p"
    done
    initial+="${initial:+,}m$i=http://$ip:$PEER_PORT"
  done
  # The token keeps members of two clusters started from different
  # directories from ever joining each other.
  token=simgate-$(basename "$dir")-$n
  for ((i = 1; i <= n; i++)); do
    ip=$base.$i
    state=new
    [ -d "$dir/m$i/member" ] && state=existing
    # shellcheck disable=SC2086 # ETCD_ARGS: several flags
    nohup "$ETCD" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://$ip:$CLIENT_PORT" --advertise-client-urls "http://$ip:$CLIENT_PORT" \
      --listen-peer-urls "http://$ip:$PEER_PORT" --initial-advertise-peer-urls "http://$ip:$PEER_PORT" \
      --initial-cluster "$initial" --initial-cluster-state "$state" --initial-cluster-token "$token" \
      --log-level warn ${ETCD_ARGS:-} </dev/null >>"$dir/m$i.log" 2>&1 &
    echo $! >"$dir/m$i.pid"
  done
  local endpoints=
  for ((i = 1; i <= n; i++)); do
    endpoints+="${endpoints:+,}http://$base.$i:$CLIENT_PORT"
  done
  echo "$endpoints" >"$dir/endpoints"
  local deadline=$((SECONDS + 30)) url
  for url in ${endpoints//,/ }; do
    until healthy "$url"; do
      if ((SECONDS >= deadline)); then
        echo "etcd-cluster: $url not healthy within 30 s; logs in $dir/m*.log" >&2
        stop "$dir"
        exit 1
      fi
      for ((i = 1; i <= n; i++)); do
        kill -0 "$(cat "$dir/m$i.pid")" 2>/dev/null || {
          echo "etcd-cluster: member m$i exited; its log ($dir/m$i.log):" >&2
          tail -n 20 "$dir/m$i.log" >&2
          stop "$dir"
          exit 1
        }
      done
      sleep 0.2
    done
  done
  echo "$endpoints"
}

stop() {
  local dir=$1 f pid i pids=()
  [ -d "$dir" ] || die "no directory $dir"
  for f in "$dir"/m*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    # Only an etcd we started: the pid may have been reused since.
    if [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = etcd ]; then
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$f"
  done
  for ((i = 0; i < 100; i++)); do
    local alive=0
    for pid in "${pids[@]+"${pids[@]}"}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  start)
    [ -n "${2:-}" ] || usage
    start "$2" "${3:-3}" "${4:-127.0.97}"
    ;;
  stop)
    [ -n "${2:-}" ] || usage
    stop "$2"
    ;;
  endpoints)
    [ -r "${2:-}/endpoints" ] || die "no cluster started in ${2:-?}"
    cat "$2/endpoints"
    ;;
  *) usage ;;
esac
