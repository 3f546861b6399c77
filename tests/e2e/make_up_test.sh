#!/usr/bin/env bash
# `make up` and `make down` as a test: the local cluster comes up in lab
# namespaces of its own, serves the sample Deployment through its ClusterIP,
# and `make down` leaves no namespace, cgroup, mount, pin or process behind.
# Runs scripts/up.sh on the already built tree under a lab name of its own, so
# a user's `make up` cluster is never touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export SKIFF_UP_LAB=su$(( $$ % 100000 ))
export SKIFF_UP_NO_BUILD=1
export SKIFF_BUILD_DIR=${SKIFF_BUILD_DIR:-$root/build}
trap '"$root/scripts/down.sh" >/dev/null 2>&1 || true' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
out=$("$root/scripts/up.sh" 2>&1) || { echo "$out"; fail "make up exited non-zero"; }
echo "$out"
grep -q "not built yet" <<<"$out" && fail "make up did not find every component"
grep -Eq "web-[a-z0-9-]+ +1/1 +Running" <<<"$out" || fail "no Running web pod in make up's output"
# The pods' cgroups are inside the node's lab cgroup, where `make down` finds them.
cg2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
ls -d "$cg2/skiff-lab/$SKIFF_UP_LAB/h2/kubepods" >/dev/null 2>&1 || fail "the pods' cgroups are not under the node's lab cgroup"
grep -q "^hello from web-" <<<"$out" || fail "no reply through the ClusterIP"

"$root/scripts/down.sh" || fail "make down exited non-zero"
trap - EXIT
left=""
ip netns list | grep -q "^$SKIFF_UP_LAB-" && left+=" netns"
[[ -e /run/skiff-lab/$SKIFF_UP_LAB ]] && left+=" state-dir"
grep -q "/skiff-lab/$SKIFF_UP_LAB/" /proc/self/mountinfo && left+=" mounts"
[[ -n $cg2 && -e $cg2/skiff-lab/$SKIFF_UP_LAB ]] && left+=" cgroup"
pgrep -f "skiff-lab/$SKIFF_UP_LAB/" >/dev/null && left+=" processes"
# Containers run in pod namespaces, so find them by cgroup as well.
# (A killed process that init has not reaped yet is a zombie, and not left behind.)
for f in $(grep -ls "skiff-lab/$SKIFF_UP_LAB/" /proc/[0-9]*/cgroup 2>/dev/null); do
  state=$(awk '{print $3}' "${f%/cgroup}/stat" 2>/dev/null || echo Z)
  [[ $state == Z ]] || { left+=" process-${f//[^0-9]/}"; }
done
[[ -n $cg2 ]] && find "$cg2" -maxdepth 6 -type d -path "*skiff-lab/$SKIFF_UP_LAB*" 2>/dev/null | grep -q . && left+=" stray-cgroups"
[[ -z $left ]] || fail "make down left behind:$left"
echo "1 passed, 0 failed"
