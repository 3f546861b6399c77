#!/usr/bin/env bash
# The `vm` tier: boots the cached Debian 12 image (tests/vm/build-image.sh)
# with qemu — KVM when it works, TCG otherwise — with systemd as PID 1 and a
# pure cgroup v2 hierarchy, hands it the built .debs, a test image and
# run-in-vm.sh on a second disk, and collects the verdicts the guest prints on
# its serial console:
#   SKIFF-VM: PASS <check>
#   SKIFF-VM: FAIL <check>: <why>
#   SKIFF-VM: DONE
#
#   tests/vm/run-vm-tests.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
timeout_s=${SKIFF_VM_TIMEOUT:-1380}

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-vm-run.XXXXXX")
qemu_pid=""
cleanup() {
  [[ -n $qemu_pid ]] && kill -9 "$qemu_pid" 2>/dev/null || true
  [[ ${SKIFF_VM_KEEP:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT INT TERM

t0=$(date +%s)
echo "vm: base image"
image=$("$here/build-image.sh")
echo "vm: image $image ($(( $(date +%s) - t0 ))s)"

echo "vm: packages"
version=$(sed -n 's/^project(skiff VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
payload=$work/payload
mkdir -p "$payload/debs" "$payload/debs-upgrade"
SKIFF_DEB_OUT=$work/deb1 "$root/packaging/deb/build-debs.sh" "$build" >/dev/null
cp "$work"/deb1/*.deb "$payload/debs/"
SKIFF_DEB_LINTIAN=0 SKIFF_DEB_OUT=$work/deb2 SKIFF_DEB_VERSION="$version+vmupgrade1" "$root/packaging/deb/build-debs.sh" "$build" >/dev/null
cp "$work"/deb2/*.deb "$payload/debs-upgrade/"
"$root/scripts/make-busybox-image.sh" "$payload/busybox.tar" skiff.local/busybox:1 >/dev/null
cp "$here/run-in-vm.sh" "$root/docs/examples/web.yaml" "$payload/"
cp -r "$here/manifests" "$payload/manifests"
truncate -s 1G "$work/payload.img"
mkfs.ext4 -q -F -L payload -d "$payload" "$work/payload.img"
qemu-img create -q -f qcow2 -b "$image/disk.img" -F raw "$work/root.qcow2"

accel=(-accel tcg,thread=multi -cpu max)
kvm_works() {
  # KVM is usable when a paused guest (-S) is still alive after 3 seconds;
  # without working (nested) KVM qemu exits or aborts at vCPU set-up.
  [[ -w /dev/kvm ]] || return 1
  qemu-system-x86_64 -accel kvm -machine q35 -cpu host -m 256 -nographic -nodefaults -S -display none \
    -monitor none -serial none </dev/null >/dev/null 2>&1 &
  local pid=$!
  sleep 3
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"; wait "$pid" 2>/dev/null
    return 0
  fi
  wait "$pid" 2>/dev/null
  return 1
}
if [[ ${SKIFF_VM_ACCEL:-auto} == kvm ]] || { [[ ${SKIFF_VM_ACCEL:-auto} == auto ]] && kvm_works; }; then
  accel=(-accel kvm -cpu host)
fi
echo "vm: booting with ${accel[1]} ($(( $(date +%s) - t0 ))s)"
console=$work/console.log
results=$work/results.log
qemu-system-x86_64 "${accel[@]}" -machine q35 -m 6144 -smp 2 -nographic -nodefaults -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 loglevel=4 panic=-1" \
  -drive "file=$work/root.qcow2,if=virtio,format=qcow2" \
  -drive "file=$work/payload.img,if=virtio,format=raw,readonly=on" \
  -nic none -serial "file:$console" -serial "file:$results" -display none -monitor none &
qemu_pid=$!

deadline=$(( $(date +%s) + timeout_s ))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [[ $(date +%s) -gt $deadline ]]; then
    echo "vm: timed out after ${timeout_s}s" >&2
    break
  fi
  sleep 2
done
kill -9 "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""

touch "$results"
grep -a 'SKIFF-VM:' "$results" | sed 's/\r$//' || true
passes=$(grep -ac 'SKIFF-VM: PASS' "$results" || true)
fails=$(grep -ac 'SKIFF-VM: FAIL' "$results" || true)
echo "vm: wall time $(( $(date +%s) - t0 ))s, accel ${accel[1]}"
if ! grep -aq 'SKIFF-VM: DONE' "$results"; then
  echo "vm: the guest did not finish; last console lines:" >&2
  tail -n 60 "$console" | sed 's/\r$//' >&2
  exit 1
fi
echo "vm: $passes passed, $fails failed"
[[ $fails -eq 0 && $passes -gt 0 ]]
