#!/usr/bin/env bash
# Builds (once) and caches the VM tier's base image: a Debian 12 root
# filesystem made by debootstrap with systemd as PID 1, Debian's cloud kernel,
# and the shared libraries the Skiff packages depend on (the VM has no network,
# so `dpkg -i` must find them installed).
#
#   tests/vm/build-image.sh [CACHE_DIR]      (default /var/cache/skiff-vm)
#
# Produces CACHE_DIR/<key>/{disk.img,vmlinuz,initrd.img}; <key> hashes this
# script, so a change to the package list builds a new image. The mirror is
# read from the machine's apt sources; none is named here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-${SKIFF_VM_CACHE:-/var/cache/skiff-vm}}
key=$(sha256sum "$here/build-image.sh" | cut -c1-16)
out=$cache/$key
if [[ -s $out/disk.img && -s $out/vmlinuz && -s $out/initrd.img ]]; then
  echo "$out"
  exit 0
fi

mirror() {
  local m=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  [[ -n $m ]] || { echo "build-image: no Debian mirror in the machine's apt sources" >&2; exit 1; }
  echo "$m"
}

PACKAGES=(
  systemd systemd-sysv dbus udev kmod iproute2 procps psmisc util-linux e2fsprogs curl ca-certificates
  busybox-static linux-image-cloud-amd64 initramfs-tools adduser
  # Runtime libraries of the Skiff packages.
  libgrpc++1.51 libgrpc29 libprotobuf32 libyaml-cpp0.7 libabsl20220623 liblmdb0 libbpf1 libelf1
  libnl-3-200 libnl-route-3-200 libseccomp2 libcap2 libsystemd0 libcurl4 libarchive13 libssl3 libzstd1
  libcgroup2 libstdc++6 libnftables1 libmbedtls14 libmbedx509-1 libmbedcrypto7 libnghttp2-14
)

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-vm-image.XXXXXX")
cleanup() {
  umount -R "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs
m=$(mirror)
echo "build-image: debootstrap bookworm into $rootfs" >&2
include=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$m" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  echo "build-image: debootstrap failed" >&2
  exit 1
}

# A root with no password on the serial console, a hostname, fstab, and a
# unit that runs the test payload from the second disk at boot.
chroot "$rootfs" passwd -d root >/dev/null
echo skiff-vm >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 skiff-vm\n' >"$rootfs/etc/hosts"
cat >"$rootfs/etc/fstab" <<'EOF'
/dev/vda / ext4 defaults,errors=remount-ro 0 1
EOF
mkdir -p "$rootfs/payload"
cat >"$rootfs/etc/systemd/system/skiff-vm-test.service" <<'EOF'
[Unit]
Description=Skiff VM tier test payload
After=multi-user.target
ConditionPathExists=/dev/vdb

[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStartPre=/bin/mount -o ro /dev/vdb /payload
ExecStart=/bin/bash /payload/run-in-vm.sh
ExecStopPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/skiff-vm-test.service "$rootfs/etc/systemd/system/multi-user.target.wants/skiff-vm-test.service"
# Faster boots: nothing waits for a network that does not exist.
ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-networkd-wait-online.service"
ln -sf /dev/null "$rootfs/etc/systemd/system/getty@tty1.service"

mkdir -p "$out.tmp"
cp "$rootfs"/boot/vmlinuz-* "$out.tmp/vmlinuz"
cp "$rootfs"/boot/initrd.img-* "$out.tmp/initrd.img"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb
truncate -s 6G "$out.tmp/disk.img"
mkfs.ext4 -q -F -L skiffroot -d "$rootfs" "$out.tmp/disk.img"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
