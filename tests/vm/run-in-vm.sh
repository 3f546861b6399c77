#!/bin/bash
# Runs inside the VM (root, systemd as PID 1, pure cgroup v2) from the payload
# disk. Prints one verdict line per check on the serial console; the host's
# run-vm-tests.sh collects them. No check may be skipped silently: a check
# that cannot run is a FAIL with the reason.
set -u
P=/payload
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
CONF=/var/lib/skiff/control-plane/admin.conf
T0=$(date +%s)

pass() { echo "SKIFF-VM: PASS $1 ($(( $(date +%s) - T0 ))s)"; }
fail() { echo "SKIFF-VM: FAIL $1: $2"; }
# check NAME CMD...: PASS when CMD exits 0, FAIL with its last output lines otherwise.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$out" | tail -n 4 | tr '\n' ' ')"; return 1; fi
}
retry() {  # retry SECONDS CMD...
  local secs=$1 i
  shift
  for ((i = 0; i < secs; i++)); do "$@" && return 0; sleep 1; done
  "$@"
}
ctl() { skiffctl --config "$CONF" "$@"; }

# Verdicts go to the second serial port (the host captures it to a file of
# its own); the first one is shared with the kernel and the login prompt.
exec >>/dev/ttyS1 2>&1
echo "SKIFF-VM: START kernel $(uname -r)"

# --- the machine is what the tier promises -----------------------------------
check systemd-is-pid1 test "$(cat /proc/1/comm)" = systemd
check pure-cgroup-v2 sh -c '[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers && grep -qw pids /sys/fs/cgroup/cgroup.controllers && grep -qw cpu /sys/fs/cgroup/cgroup.controllers'

# --- the VM's node network -----------------------------------------------------
# The VM has no network card: node 1's address lives on a bridge with no uplink,
# and node 2 is a network namespace whose veth joins that bridge, so nothing can
# leave the machine. The control plane advertises (and certifies) the bridge
# address so node 2 can reach it.
node_ip=192.168.250.10
node2_ip=192.168.250.11
net_setup() {
  ip link add skiff0 type bridge && ip addr add $node_ip/24 dev skiff0 && ip link set skiff0 up &&
  ip netns add node2 && ip link add n2 type veth peer name eth0 netns node2 &&
  ip link set n2 master skiff0 && ip link set n2 up &&
  ip -n node2 addr add $node2_ip/24 dev eth0 && ip -n node2 link set eth0 up && ip -n node2 link set lo up
}
check node-network net_setup

# --- packages ---------------------------------------------------------------
check dpkg-install dpkg -i $P/debs/*.deb
check units-verify systemd-analyze verify /lib/systemd/system/skiff-control-plane.service \
  /lib/systemd/system/skiff-kubelet.service /lib/systemd/system/skiff-proxy.service /lib/systemd/system/skiff-store.service
check system-user id skiff
check conffiles sh -c 'dpkg-query -W -f="\${Conffiles}\n" skiff-node skiff-control-plane | grep -q /etc/skiff/kubelet.yaml'

# --- cgroup v2 limits the build host cannot show (runtime directly) ---------
bundle_dir=/var/tmp/skiff-vm-bundle
make_bundle() {  # make_bundle NAME CGROUP_LIMITS_JSON ARGS_JSON
  local b=$bundle_dir/$1
  rm -rf "$b"
  mkdir -p "$b/rootfs"
  # The busybox image's single layer is the rootfs.
  local layer
  layer=$(tar -xOf $P/busybox.tar ./index.json >/dev/null 2>&1; tar -tf $P/busybox.tar | grep blobs/sha256/ | while read -r f; do
    if tar -xOf $P/busybox.tar "$f" | gzip -t 2>/dev/null; then echo "$f"; fi; done | head -n 1)
  tar -xOf $P/busybox.tar "$layer" | tar -xz -C "$b/rootfs"
  (cd "$b" && skiff-runtime spec >/dev/null 2>&1 || runc spec >/dev/null 2>&1 || true)
  cat >"$b/config.json" <<EOF
{"ociVersion":"1.0.2","root":{"path":"rootfs"},"hostname":"$1",
 "process":{"terminal":false,"user":{"uid":0,"gid":0},"args":$3,"env":["PATH=/bin"],"cwd":"/",
   "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]}},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"ipc"},{"type":"uts"}],
   "cgroupsPath":"/skiffvm/$1","resources":$2}}
EOF
  echo "$b"
}
oom_test() {
  local b
  b=$(make_bundle oom '{"memory":{"limit":33554432,"swap":33554432}}' '["sh","-c","tail /dev/zero"]')
  skiff-runtime --root /run/skiff-vm-rt run -b "$b" oom >/dev/null 2>&1
  local rc=$?
  skiff-runtime --root /run/skiff-vm-rt delete -f oom >/dev/null 2>&1
  [[ $rc -eq 137 ]] || { echo "exit $rc, want 137 (SIGKILL by the OOM killer)"; return 1; }
  dmesg | grep -qi 'oom' || { echo "no OOM kill in the kernel log"; return 1; }
}
pids_test() {
  local b out
  b=$(make_bundle pids '{"pids":{"limit":16}}' '["sh","-c","for i in $(seq 1 40); do sleep 5 & done 2>&1; wait"]')
  out=$(skiff-runtime --root /run/skiff-vm-rt run -b "$b" pids 2>&1)
  skiff-runtime --root /run/skiff-vm-rt delete -f pids >/dev/null 2>&1
  echo "$out" | grep -qiE 'fork|resource temporarily unavailable|cannot' || { echo "forks were not refused: $out"; return 1; }
}
cpu_test() {
  local b rt="skiff-runtime --root /run/skiff-vm-rt"
  # The root cgroup is systemd's: the runtime enables controllers only below
  # it. systemd turns cpu on there once a unit asks for CPU accounting (the
  # kubelet's Delegate=yes does); this check runs before any such unit.
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
  b=$(make_bundle cpu '{"cpu":{"quota":10000,"period":100000}}' '["sh","-c","while :; do :; done"]')
  $rt create -b "$b" cpu >/dev/null 2>&1 && $rt start cpu >/dev/null 2>&1 || { echo "could not start the container"; return 1; }
  sleep 3
  local stat
  stat=$(cat /sys/fs/cgroup/skiffvm/cpu/cpu.stat 2>&1)
  $rt kill cpu KILL >/dev/null 2>&1
  sleep 0.5
  $rt delete -f cpu >/dev/null 2>&1
  local throttled
  throttled=$(echo "$stat" | awk '/nr_throttled/ {print $2}')
  [[ -n $throttled && $throttled -gt 0 ]] || { echo "cpu.stat shows no throttling: $stat"; return 1; }
}
# The systemd cgroup driver: a transient scope with Delegate over sd-bus,
# limits inside it, gone after delete (runc's --systemd-cgroup).
sd_test() {
  local b rt="skiff-runtime --root /run/skiff-vm-sd --systemd-cgroup" pid cg=/sys/fs/cgroup/system.slice/skiff-sdtest.scope
  b=$(make_bundle sdtest '{"memory":{"limit":67108864},"pids":{"limit":32}}' '["sh","-c","sleep 600"]')
  sed -i 's|"cgroupsPath":"[^"]*"|"cgroupsPath":"system.slice:skiff:sdtest"|' "$b/config.json"
  $rt create -b "$b" sdtest || { echo "create failed"; return 1; }
  pid=$($rt state sdtest | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
  local show
  show=$(systemctl show skiff-sdtest.scope -p Delegate -p ActiveState -p ControlGroup)
  local ok=1
  echo "$show" | grep -qx Delegate=yes || ok=0
  echo "$show" | grep -qx ActiveState=active || ok=0
  echo "$show" | grep -qx ControlGroup=/system.slice/skiff-sdtest.scope || ok=0
  grep -qx "$pid" $cg/cgroup.procs || ok=0
  [[ $(cat $cg/memory.max) == 67108864 && $(cat $cg/pids.max) == 32 ]] || ok=0
  $rt start sdtest && $rt exec sdtest true || ok=0
  $rt delete -f sdtest || ok=0
  systemctl is-active -q skiff-sdtest.scope && ok=0
  [[ -e $cg ]] && ok=0
  [[ $ok == 1 ]] || { echo "scope: $show; pid $pid; $(cat $cg/memory.max $cg/pids.max 2>&1 | tr '\n' ' ')"; return 1; }
}
check runtime-systemd-cgroup-driver sd_test
check runtime-memory-max-oom-kill oom_test
check runtime-pids-max-stops-fork-bomb pids_test
check runtime-cpu-max-throttles cpu_test

# --- control plane, join, a Deployment behind a Service -----------------------
echo "advertise-address: $node_ip" >>/etc/skiff/control-plane.yaml
check control-plane-restart systemctl restart skiff-control-plane
echo "node-ip: $node_ip" >>/etc/skiff/kubelet.yaml
echo "node-ip: $node_ip" >>/etc/skiff/proxy.yaml
check control-plane-active retry 90 test -s $CONF
check control-plane-serving retry 60 ctl get namespaces
join_cmd=$(ctl token create --print-join-command 2>/dev/null | tail -n 1)
check node-join sh -c "[ -n \"$join_cmd\" ] && $join_cmd --node-name skiff-vm --write-config"
check node-ready-within-60s retry 60 sh -c "skiffctl --config $CONF get nodes | grep -w Ready | grep -vq NotReady"
check image-import skiff-image --root /var/lib/skiff/images import $P/busybox.tar
check apply-web ctl apply -f $P/web.yaml
check rollout-web ctl rollout status deployment/web --timeout=180s
cluster_ip=$(ctl get service web -o jsonpath='{.spec.clusterIP}' 2>/dev/null)
check service-clusterip-answers retry 30 sh -c "curl -sS --max-time 2 http://$cluster_ip/ | grep -q hello"
check apply-nodeport ctl apply -f $P/manifests/web-nodeport.yaml
node_port=$(ctl get service web-nodeport -o jsonpath='{.spec.ports[0].nodePort}' 2>/dev/null)
check service-nodeport-answers retry 30 sh -c "curl -sS --max-time 2 http://$node_ip:$node_port/ | grep -q hello"

# --- a second node: node 2's kubelet in its own netns, joined with a token ----
# It runs as a transient unit (its own cgroup, Delegate) in the node2 netns,
# with state, cgroup root and image store of its own.
join2=$(ctl token create --print-join-command 2>/dev/null | tail -n 1 | sed "s/--server [^ ]*/--server $node_ip:6443/")
check node2-join sh -c "[ -n \"$join2\" ] && mkdir -p /etc/skiff/node2/manifests && ip netns exec node2 $join2 --node-name skiff-vm2 --kubeconfig /etc/skiff/node2/kubelet.conf"
check node2-image-import skiff-image --root /var/lib/skiff/node2/images import $P/busybox.tar
check node2-kubelet-start systemd-run --unit skiff-kubelet-node2 -p NetworkNamespacePath=/run/netns/node2 \
  -p Delegate=yes -p KillMode=process -p Type=notify -p NotifyAccess=main \
  /usr/bin/skiff-kubelet --kubeconfig /etc/skiff/node2/kubelet.conf --node-name skiff-vm2 --node-ip $node2_ip \
  --root-dir /var/lib/skiff/node2/kubelet --run-dir /run/skiff-node2 --log-dir /var/log/pods-node2 \
  --image-root /var/lib/skiff/node2/images --cgroup-root skiff-node2 --cgroup-driver systemd \
  --manifest-dir /etc/skiff/node2/manifests \
  --listen $node2_ip:10250 --healthz-listen 127.0.0.1:10248
check node2-ready-within-60s retry 60 sh -c "skiffctl --config $CONF get node skiff-vm2 | grep -w Ready | grep -vq NotReady"
check apply-spread ctl apply -f $P/manifests/spread.yaml
check rollout-spread retry 3 ctl rollout status deployment/spread --timeout=180s
spread_on_both() {
  local nodes
  nodes=$(ctl get pods -l app=spread -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | tr '\n' ' ')
  [[ $nodes == "skiff-vm skiff-vm2 " ]] || { echo "spread pods on: $nodes"; return 1; }
}
check pods-on-both-nodes spread_on_both
spread_ip=$(ctl get service spread -o jsonpath='{.spec.clusterIP}' 2>/dev/null)
# Every reply names its pod; some must come from node 2's pods (cross-node
# routing to node 2's podCIDR, chosen by the socket load balancer).
cross_node() {
  local node2_pods seen i
  node2_pods=$(ctl get pods -l app=spread -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}' | awk '$2 == "skiff-vm2" {print $1}')
  for ((i = 0; i < 40; i++)); do seen+=" $(curl -sS --max-time 2 http://$spread_ip/ 2>&1)"; done
  for p in $node2_pods; do [[ $seen == *"spread from $p"* ]] && return 0; done
  echo "no reply from node 2's pods ($node2_pods): $(echo "$seen" | tr ' ' '\n' | sort | uniq -c | tr '\n' ' ')"
  return 1
}
check service-reaches-pods-on-node2 retry 20 cross_node
ctl delete -f $P/manifests/spread.yaml >/dev/null 2>&1

# --- the systemd cgroup driver through the kubelet (node 2) -------------------
# Node 2's kubelet runs with --cgroup-driver systemd --cgroup-root skiff-node2,
# like kubelet+runc with the systemd driver: the pod is a transient slice
# skiff_node2-kubepods-burstable-pod<uid_>.slice carrying the pod's limits,
# each container a scope skiff-<id>.scope (runc's slice:skiff:<id>) with
# Delegate inside it; deleting the pod stops both.
node2_journal() {
  { systemctl status skiff-kubelet-node2 --no-pager 2>&1 | head -n 8; journalctl -u skiff-kubelet-node2 --no-pager -o cat 2>&1 | tail -n 40; } |
    sed 's/^/SKIFF-VM: INFO /' | cut -c1-400
}
# limited_pod NAME NODE: a Burstable sleeper (cpu 100m/250m, memory 32Mi/64Mi).
limited_pod() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
spec:
  nodeName: $2
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: skiff.local/busybox:1
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 250m, memory: 64Mi}
YAML
}
{
  limited_pod sdlim skiff-vm2
  cat <<'YAML'
---
apiVersion: v1
kind: Pod
metadata:
  name: sdoom
spec:
  nodeName: skiff-vm2
  restartPolicy: Never
  containers:
  - name: hog
    image: skiff.local/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "tail /dev/zero"]
    resources:
      limits: {memory: 32Mi}
---
YAML
  limited_pod fslim skiff-vm
} >/tmp/sd-pods.yaml
check sd-apply-pods ctl apply -f /tmp/sd-pods.yaml
check sd-pod-running retry 120 sh -c "[ \"\$(skiffctl --config $CONF get pod sdlim -o jsonpath='{.status.phase}')\" = Running ]" || node2_journal
sd_uid=$(ctl get pod sdlim -o jsonpath='{.metadata.uid}' 2>/dev/null)
sd_slice=skiff_node2-kubepods-burstable-pod${sd_uid//-/_}.slice
sd_scope=skiff-$sd_uid-main-0.scope
sd_dir=/sys/fs/cgroup/skiff_node2.slice/skiff_node2-kubepods.slice/skiff_node2-kubepods-burstable.slice/$sd_slice
sd_units() {
  local show status
  show=$(systemctl show "$sd_scope" -p ActiveState -p Delegate -p Slice -p MemoryMax)
  status=$(systemctl status "$sd_slice" --no-pager -l 2>&1)
  echo "$show" | grep -qx ActiveState=active && echo "$show" | grep -qx Delegate=yes &&
    echo "$show" | grep -qx "Slice=$sd_slice" && echo "$show" | grep -qx MemoryMax=67108864 &&
    echo "$status" | grep -q "Active: active" && echo "$status" | grep -q "$sd_scope" &&
    grep -q . "$sd_dir/$sd_scope/cgroup.procs" ||
    { echo "scope: $show / slice: $(echo "$status" | head -n 12) / dir: $(ls "$sd_dir" 2>&1)"; return 1; }
}
check sd-scope-under-pod-slice sd_units
sd_limits() {
  local got want
  # 250m -> cpu.max 25000/100000, 64Mi, pids 4096 on the pod slice and the scope; 100m -> cpu.weight 4.
  got="$(cat $sd_dir/memory.max $sd_dir/cpu.max $sd_dir/pids.max $sd_dir/$sd_scope/memory.max $sd_dir/$sd_scope/cpu.max $sd_dir/$sd_scope/pids.max $sd_dir/$sd_scope/cpu.weight 2>&1 | tr '\n' ' ')"
  want="67108864 25000 100000 4096 67108864 25000 100000 4096 4 "
  [[ $got == "$want" ]] || { echo "pod slice and scope: got '$got', want '$want'"; return 1; }
}
check sd-pod-and-container-limits sd_limits
# The same pod on node 1 (cgroupfs, --cgroup-root /kubepods) at the same time:
# the pod directory carries the pod's limits too.
fs_uid=$(ctl get pod fslim -o jsonpath='{.metadata.uid}' 2>/dev/null)
fs_dir=/sys/fs/cgroup/kubepods/burstable/pod$fs_uid
fs_limits() {
  local got want c=$fs_dir/$fs_uid-main-0
  got="$(cat $fs_dir/memory.max $fs_dir/cpu.max $fs_dir/pids.max $c/memory.max $c/cpu.max $c/pids.max $c/cpu.weight 2>&1 | tr '\n' ' ')"
  want="67108864 25000 100000 4096 67108864 25000 100000 4096 4 "
  [[ -n $fs_uid && $got == "$want" ]] || { echo "cgroupfs pod and container: got '$got', want '$want'"; return 1; }
}
check fs-pod-and-container-limits retry 60 fs_limits
# A restarted kubelet finds the pod slice existing (sets its properties again)
# and re-adopts the container in its scope without restarting it.
sd_container() { ctl get pod sdlim -o jsonpath='{.status.containerStatuses[0].containerID}:{.status.containerStatuses[0].restartCount}:{.status.phase}' 2>&1; }
sd_before=$(sd_container)
check sd-node2-kubelet-restart systemctl restart skiff-kubelet-node2
sd_readopted() {
  local now
  now=$(sd_container)
  [[ $now == "$sd_before" && $now == *:0:Running ]] && systemctl is-active -q "$sd_scope" && sd_limits &&
    ! journalctl -u skiff-kubelet-node2 -o cat | grep -q "pod cgroup:" ||
    { echo "before $sd_before now $now; $(journalctl -u skiff-kubelet-node2 -o cat | grep "pod cgroup:" | tail -n 2)"; return 1; }
}
check sd-pod-readopted-after-kubelet-restart retry 30 sd_readopted || node2_journal
check sd-oomkilled-reported retry 90 sh -c "skiffctl --config $CONF get pod sdoom -o jsonpath='{.status.containerStatuses[0].state.terminated.reason}' | grep -q OOMKilled" || node2_journal
sdoom_uid=$(ctl get pod sdoom -o jsonpath='{.metadata.uid}' 2>/dev/null)
ctl delete pod sdlim --grace-period=1 >/dev/null 2>&1
ctl delete pod fslim --grace-period=1 >/dev/null 2>&1
ctl delete pod sdoom --grace-period=0 --force >/dev/null 2>&1
sd_gone() {
  local left
  left=$(systemctl list-units --all --no-legend "*pod${sd_uid//-/_}.slice" "*pod${sdoom_uid//-/_}.slice" \
    "skiff-$sd_uid-*.scope" "skiff-$sdoom_uid-*.scope" 2>&1)
  [[ -n $sd_uid && -n $sdoom_uid && -z $left && ! -e $sd_dir ]] || { echo "left: $left $(ls -d "$sd_dir" 2>&1)"; return 1; }
}
check sd-pod-delete-removes-scope-and-slice retry 90 sd_gone || node2_journal
check fs-pod-delete-removes-cgroup retry 60 sh -c "[ -n '$fs_uid' ] && [ ! -e '$fs_dir' ]"

# --- OOMKilled through the kubelet -------------------------------------------
check apply-oom-pod ctl apply -f $P/manifests/oom-pod.yaml
check pod-oomkilled-reported retry 90 sh -c "skiffctl --config $CONF get pod oom -o jsonpath='{.status.containerStatuses[0].lastState.terminated.reason}{.status.containerStatuses[0].state.terminated.reason}' | grep -q OOMKilled"

# --- restarts and upgrades leave pods alone ------------------------------------
# On a failure: what the kubelet said, as INFO lines the host prints.
kubelet_journal() {
  local u
  for u in skiff-control-plane skiff-kubelet; do
    { systemctl status $u --no-pager 2>&1 | head -n 8; journalctl -u $u --no-pager -o cat 2>&1 | grep -v "retrying: UNAVAILABLE\|watch pods: UNAVAILABLE" | tail -n 40; } |
      sed "s/^/SKIFF-VM: INFO $u: /" | cut -c1-400
  done
}
pods_fingerprint() { ctl get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name}:{.status.containerStatuses[0].restartCount}:{.status.containerStatuses[0].containerID} {end}'; }
before=$(pods_fingerprint)
check restart-kubelet-and-proxy systemctl restart skiff-kubelet skiff-proxy
sleep 5
check pods-untouched-by-restart sh -c "[ \"$(pods_fingerprint)\" = \"$before\" ]" || kubelet_journal
check service-answers-after-restart retry 30 sh -c "curl -sS --max-time 2 http://$cluster_ip/ | grep -q hello"
check upgrade-in-place dpkg -i $P/debs-upgrade/*.deb
# The upgrade restarts the control plane: wait until it serves again.
check control-plane-serving-after-upgrade retry 60 ctl get namespaces
sleep 5
untouched() { local now; now=$(pods_fingerprint); [ "$now" = "$before" ] || { echo "before: $before"; echo "now: $now"; return 1; }; }
check pods-untouched-by-upgrade untouched || kubelet_journal
check service-answers-after-upgrade retry 30 sh -c "curl -sS --max-time 2 http://$cluster_ip/ | grep -q hello"

# --- stopping everything leaves nothing ---------------------------------------
ctl delete -f $P/web.yaml >/dev/null 2>&1
ctl delete -f $P/manifests/web-nodeport.yaml >/dev/null 2>&1
ctl delete pod oom --grace-period=0 --force >/dev/null 2>&1
ctl delete pods -l app=web --grace-period=1 >/dev/null 2>&1
ctl delete pods -l app=spread --grace-period=1 >/dev/null 2>&1
# Pods are gone from the API, then the kubelet has torn them down (monitors exit).
no_pods() { local out; out=$(ctl get pods -o name) && [ -z "$out" ] || { echo "$out"; return 1; }; }
check pods-deleted retry 120 no_pods || kubelet_journal
torn_down() { ! pgrep skiff-monitor >/dev/null || { pgrep -a skiff-monitor | head -n 5; return 1; }; }
check containers-torn-down retry 60 torn_down || kubelet_journal
systemctl stop skiff-kubelet-node2 skiff-kubelet skiff-proxy skiff-control-plane skiff-store >/dev/null 2>&1
check no-stray-processes sh -c '! pgrep -a "skiff-|httpd"'

echo "SKIFF-VM: DONE ($(( $(date +%s) - T0 ))s)"
