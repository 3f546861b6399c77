# Shared by bench/store-write/run and bench/store-read/run: start skiff-store
# and Debian's etcd side by side on free loopback ports, each with its own
# data dir on disk, and clean everything up on exit.
set -euo pipefail

: "${SKIFF_BUILD_DIR:?set SKIFF_BUILD_DIR to a Release build dir}"
BIN="$SKIFF_BUILD_DIR/bin"
ETCD=${ETCD:-/usr/bin/etcd}
export ETCDCTL_API=3
WORK=$(mktemp -d /var/tmp/skiff-bench-store.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {  # endpoint
  for _ in $(seq 200); do
    if etcdctl --endpoints "$1" --dial-timeout 1s endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "server at $1 did not become healthy" >&2
  return 1
}

# start_server ours|etcd  -> sets SERVER_PID, SERVER_EP
start_server() {
  local kind=$1 port peer
  port=$(free_port)
  SERVER_EP="127.0.0.1:$port"
  if [ "$kind" = ours ]; then
    "$BIN/skiff-store" --data-dir "$WORK/ours" --listen-client-urls "http://$SERVER_EP" \
      --advertise-client-urls "http://$SERVER_EP" >"$WORK/ours.log" 2>&1 &
  else
    peer=$(free_port)
    "$ETCD" --data-dir "$WORK/etcd" --listen-client-urls "http://$SERVER_EP" \
      --advertise-client-urls "http://$SERVER_EP" --listen-peer-urls "http://127.0.0.1:$peer" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "default=http://127.0.0.1:$peer" >"$WORK/etcd.log" 2>&1 &
  fi
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_ready "$SERVER_EP"
}

stop_server() {
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# field NAME LINE: value of NAME=... in a skiff-store-bench output line
field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# check_perf ENDPOINT LOAD -> "<writes/s> <PASS|FAIL>"
check_perf() {
  local out tput verdict
  out=$(etcdctl --endpoints "$1" check perf --load="$2" 2>&1 | tr '\r' '\n' | grep -E "PASS|FAIL" || true)
  echo "$out" | sed "s/^/  [$2] /" >&2
  tput=$(echo "$out" | grep -o '[0-9.]* writes/s' | head -1 | awk '{print $1}')
  verdict=$(echo "$out" | tail -1 | awk '{print $1}')
  echo "${tput:-0} ${verdict:-FAIL}"
}

result() {  # name ours anchor unit
  local ratio
  ratio=$(python3 -c "print(round($2/$3, 3) if $3 else 'inf')")
  echo "RESULT name=$1 ours=$2 anchor=etcd:$3 ratio=$ratio unit=$4"
}

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
