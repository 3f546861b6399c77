# Shared by bench/store-write/run and bench/store-read/run: start skiff-store
# and Debian's etcd side by side on free loopback ports, each with its own
# data dir on disk, and clean everything up on exit.
set -euo pipefail

: "${SKIFF_BUILD_DIR:?set SKIFF_BUILD_DIR to a Release build dir}"
BIN="$SKIFF_BUILD_DIR/bin"
ETCD=${ETCD:-/usr/bin/etcd}
export ETCDCTL_API=3
WORK=$(mktemp -d /var/tmp/skiff-bench-store.XXXXXX)
SHM_WORK=""  # ours-tmpfs: a data dir on /dev/shm, made on first use
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK" "$SHM_WORK"
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

# start_server ours|ours-grpc|ours-h2|ours-tmpfs|etcd  -> sets SERVER_PID, SERVER_EP
# (ours = skiff-store's default transport; ours-grpc / ours-h2 pick one;
# ours-tmpfs keeps its data dir on /dev/shm, so no write reaches a disk).
start_server() {
  local kind=$1 port peer extra=() dir
  dir="$WORK/$kind"
  port=$(free_port)
  SERVER_EP="127.0.0.1:$port"
  case "$kind" in
    ours-grpc) extra=(--experimental-transport grpc) ;;
    ours-h2) extra=(--experimental-transport h2) ;;
    ours-tmpfs)
      [ -n "$SHM_WORK" ] || SHM_WORK=$(mktemp -d /dev/shm/skiff-bench-store.XXXXXX)
      dir="$SHM_WORK/$kind" ;;
  esac
  if [ "${kind%%-*}" = ours ]; then
    # shellcheck disable=SC2086  # SKIFF_STORE_FLAGS: extra flags, word-split on purpose
    "$BIN/skiff-store" --data-dir "$dir" --listen-client-urls "http://$SERVER_EP" \
      --advertise-client-urls "http://$SERVER_EP" "${extra[@]}" ${SKIFF_STORE_FLAGS:-} >"$WORK/$kind.log" 2>&1 &
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

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }  # user+system, in clock ticks

# check_perf ENDPOINT LOAD [SERVER_PID] -> "<writes/s> <PASS|FAIL>"
# With SERVER_PID it also reports where the CPU went: the server's and
# etcdctl's CPU time per write (etcdctl runs the load's 500+ clients on the
# same two cores), and the machine's load average. Each run ends by compacting
# and defragmenting the server (after its figures are taken), so repeated runs
# against one server do not pile up ~0.5 GiB of history each and reach the quota.
check_perf() {
  local out tput verdict t0 t1 hz=$(getconf CLK_TCK)
  [ -n "${3:-}" ] && t0=$(cpu_ticks "$3")
  out=$( { /usr/bin/time -f "etcdctl-cpu %U %S" etcdctl --endpoints "$1" check perf --load="$2" 2>&1; } 2>&1 \
        | tr '\r' '\n' | grep -E "PASS|FAIL|Slowest|Stddev|etcdctl-cpu" || true)
  [ -n "${3:-}" ] && t1=$(cpu_ticks "$3")
  local rev
  rev=$(etcdctl --endpoints "$1" get / --limit 1 -w json | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2)
  etcdctl --endpoints "$1" compact "$rev" >/dev/null
  etcdctl --endpoints "$1" --command-timeout 120s defrag >/dev/null
  echo "$out" | grep -v etcdctl-cpu | sed "s/^/  [$2] /" >&2
  tput=$(echo "$out" | grep -o '[0-9.]* writes/s' | head -1 | awk '{print $1}')
  verdict=$(echo "$out" | grep -E "^(PASS|FAIL)$" | tail -1)
  if [ -n "${3:-}" ] && [ -n "$tput" ]; then
    echo "$out" | awk -v s=$((t1 - t0)) -v hz="$hz" -v w="$tput" -v la="$(cut -d' ' -f1 /proc/loadavg)" \
      '/etcdctl-cpu/ {n = w * 60; printf "  [cpu] server %.0f us/write, etcdctl %.0f us/write, load average %s\n", s / hz * 1e6 / n, ($2 + $3) * 1e6 / n, la}' >&2
  fi
  echo "${tput:-0} ${verdict:-FAIL}"
}

result() {  # name ours anchor unit
  local ratio
  ratio=$(python3 -c "print(round($2/$3, 3) if $3 else 'inf')")
  echo "RESULT name=$1 ours=$2 anchor=etcd:$3 ratio=$ratio unit=$4"
}

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
