#!/usr/bin/env bash
# Configure and build Skiff: scripts/build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null || ! command -v protoc >/dev/null; then
  scripts/install-deps.sh
fi
cmake -S . -B "$dir" -G Ninja "$@"
cmake --build "$dir" -- -j"$(nproc)"
