#!/usr/bin/env bash
# `sudo make up`: builds Skiff and starts a local cluster inside network
# namespaces of its own (the lab, tests/lab/README.md), with no route to the
# outside world:
#   h1  skiff-control-plane with its embedded store      (10.250.0.11:6443)
#   h2  node "node-1": skiff-kubelet and skiff-proxy     (10.250.0.12)
# then deploys docs/examples/web.yaml, prints the pods and a reply fetched
# through the Service's ClusterIP. `sudo make down` removes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[[ $(id -u) -eq 0 ]] || { echo "make up: run as root (sudo make up)" >&2; exit 1; }

LAB=${SKIFF_UP_LAB:-skiffup}
BIN=${SKIFF_BUILD_DIR:-$root/build}/bin
say() { echo "==> $*"; }
missing=()
have() { [[ -x $BIN/$1 ]] || { missing+=("$1"); return 1; }; }

say "dependencies and build"
scripts/install-deps.sh >/dev/null
# SKIFF_UP_NO_BUILD=1 uses build/ as it is.
[[ ${SKIFF_UP_NO_BUILD:-0} == 1 ]] || scripts/build.sh build -DSKIFF_BUILD_BENCH=OFF >/tmp/skiff-make-up-build.log 2>&1 || {
  tail -n 30 /tmp/skiff-make-up-build.log >&2
  echo "make up: the build failed (full log: /tmp/skiff-make-up-build.log)" >&2
  exit 1
}

if [[ -d /run/skiff-lab/$LAB ]]; then
  say "a local cluster is already up; replacing it"
  scripts/down.sh >/dev/null
fi

say "lab: 2 hosts in network namespaces ($LAB-h1 control plane, $LAB-h2 node)"
# Owned by pid 1: the cluster outlives this command until `make down`.
tests/lab/skiff-lab up "$LAB" 2 --owner 1 >/run/skiff-lab-$LAB.env
eval "$(cat /run/skiff-lab-$LAB.env)"
rm -f /run/skiff-lab-$LAB.env

# Starts a daemon inside a lab host, detached from this shell.
daemon() {
  local host=$1 name=$2
  shift 2
  local dir_var="${host^^}_DIR"
  local log="${!dir_var}/log/$name.log"
  setsid nohup tests/lab/skiff-lab exec "$LAB" "$host" -- "$@" >"$log" 2>&1 </dev/null &
  echo "   $name on $host (log: $log)"
}
in_host() { local host=$1; shift; tests/lab/skiff-lab exec "$LAB" "$host" -- "$@"; }
wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2
  shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "make up: timed out after ${secs}s waiting for $what" >&2
  return 1
}

# The kubelet takes --cgroup-root relative to the cgroup2 mount.
CG2_MOUNT=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
H2_CGROUP_REL=${H2_CGROUP#"$CG2_MOUNT"}
CP_DIR=$H1_DIR/root/control-plane
API=$H1_ADDR:6443
KUBECONFIG_FILE=$CP_DIR/admin.conf
ctl() { in_host h2 "$BIN/skiffctl" --config "$KUBECONFIG_FILE" "$@"; }

if have skiff-control-plane; then
  say "control plane"
  mkdir -p "$CP_DIR"
  daemon h1 control-plane "$BIN/skiff-control-plane" --data-dir "$CP_DIR" --listen "$API" \
    --health-listen "$H1_ADDR:10259"
  wait_for 60 "the control plane's admin.conf" test -s "$KUBECONFIG_FILE"
fi

if have skiff-kubelet; then
  say "node-1: kubelet"
  if have skiff-image; then
    scripts/make-busybox-image.sh "$H2_DIR/root/busybox.tar" skiff.local/busybox:1 >/dev/null
    "$BIN/skiff-image" --root "$H2_DIR/root/images" import "$H2_DIR/root/busybox.tar" >/dev/null
  fi
  daemon h2 kubelet "$BIN/skiff-kubelet" --server "$API" --kubeconfig "$KUBECONFIG_FILE" --node-name node-1 \
    --node-ip "$H2_ADDR" --root-dir "$H2_DIR/root/kubelet" --run-dir "$H2_DIR/run" --log-dir "$H2_DIR/log/pods" \
    --image-root "$H2_DIR/root/images" --cgroup-root "$H2_CGROUP_REL/kubepods" --cgroup-driver cgroupfs \
    --listen "$H2_ADDR:10250" --healthz-listen "$H2_ADDR:10248"
fi

if have skiff-proxy; then
  say "node-1: proxy (eBPF service load balancing at the node's cgroup)"
  daemon h2 proxy "$BIN/skiff-proxy" --server "$API" --kubeconfig "$KUBECONFIG_FILE" --node-name node-1 \
    --node-ip "$H2_ADDR" --cgroup-root "$H2_CGROUP" --bpffs-dir "$H2_BPFFS" --metrics-bind-address "$H2_ADDR:10249" --healthz-bind-address "$H2_ADDR:10256"
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  echo
  echo "make up: not built yet: ${missing[*]}"
  echo "make up: the lab is up with what exists; \`sudo make down\` removes it."
  exit 0
fi

have skiffctl || { echo "make up: not built yet: skiffctl" >&2; exit 0; }
say "waiting for node-1 to be Ready"
wait_for 60 "node-1 Ready" sh -c "tests/lab/skiff-lab exec $LAB h2 -- $BIN/skiffctl --config $KUBECONFIG_FILE get node node-1 | grep -qw Ready"

say "deploying docs/examples/web.yaml"
in_host h2 "$BIN/skiffctl" --config "$KUBECONFIG_FILE" apply -f - <docs/examples/web.yaml
ctl rollout status deployment/web --timeout=120s

echo
ctl get pods -o wide
echo
ctl get service web
cluster_ip=$(ctl get service web -o jsonpath='{.spec.clusterIP}')
echo
say "GET http://$cluster_ip/ from node-1 (through the Service's ClusterIP, translated by eBPF)"
reply=""
for _ in $(seq 1 50); do
  reply=$(in_host h2 curl -sS --max-time 2 "http://$cluster_ip/" 2>/dev/null) && break
  sleep 0.2
done
[[ -n $reply ]] || { echo "make up: no reply through the ClusterIP $cluster_ip" >&2; exit 1; }
echo "$reply"
echo
echo "The cluster is up. Try:"
echo "  sudo tests/lab/skiff-lab exec $LAB h2 -- $BIN/skiffctl --config $KUBECONFIG_FILE get all"
echo "  sudo make down"
