#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of Skiff from Debian's
# packages. Idempotent; safe to run again. Never names a mirror: apt uses the
# machine's own sources.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: must run as root (apt-get install)" >&2
  exit 1
fi

BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  clang llvm lld libbpf-dev bpftool libelf-dev zlib1g-dev
  libnl-3-dev libnl-route-3-dev libnftables-dev libseccomp-dev libcgroup-dev
  libsystemd-dev libcap-dev
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libyaml-cpp-dev libabsl-dev liblmdb-dev nlohmann-json3-dev
  libcurl4-openssl-dev libarchive-dev libssl-dev libzstd-dev libnghttp2-dev libmbedtls-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  clang-format
)
PEER_PKGS=(
  etcd-server etcd-client runc iptables iproute2 util-linux procps psmisc
  docker-registry skopeo busybox-static curl netcat-openbsd openssl
  qemu-system-x86 qemu-utils debootstrap lintian debhelper dpkg-dev fakeroot
  systemd zsh
)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${BUILD_PKGS[@]}" "${PEER_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps.sh: all dependencies present"
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
