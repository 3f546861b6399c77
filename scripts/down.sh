#!/usr/bin/env bash
# `sudo make down`: stops the local cluster of `make up` and removes everything
# it created (processes, pod namespaces, mounts, cgroups, BPF pins, state).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "make down: run as root (sudo make down)" >&2; exit 1; }
LAB=${SKIFF_UP_LAB:-skiffup}
if [[ ! -d /run/skiff-lab/$LAB ]] && ! ip netns list 2>/dev/null | grep -q "^$LAB-"; then
  echo "make down: no local cluster is up"
  exit 0
fi
tests/lab/skiff-lab down "$LAB"
echo "make down: local cluster removed"
