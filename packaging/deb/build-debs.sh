#!/usr/bin/env bash
# packaging/deb/build-debs.sh [BUILD_DIR]: builds skiff-control-plane,
# skiff-node and skiffctl .debs from an already built tree into BUILD_DIR/deb/,
# then runs lintian on them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
version=${SKIFF_DEB_VERSION:-$(sed -n 's/^project(skiff VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")}
[[ -n $version ]] || { echo "build-debs: cannot read the project version from CMakeLists.txt" >&2; exit 1; }

out=${SKIFF_DEB_OUT:-$build/deb}
stage=$out/skiff-$version
rm -rf "$out"
mkdir -p "$stage"
cp -r "$root/packaging/deb/debian" "$stage/debian"
cp -r "$root/packaging/deb/etc" "$stage/etc"
cp "$root/README.md" "$stage/README.md"
# Units come from systemd-units/, the one copy in the tree.
cp "$root/systemd-units/skiff-control-plane.service" "$stage/debian/skiff-control-plane.skiff-control-plane.service"
cp "$root/systemd-units/skiff-store.service" "$stage/debian/skiff-control-plane.skiff-store.service"
cp "$root/systemd-units/skiff-kubelet.service" "$stage/debian/skiff-node.skiff-kubelet.service"
cp "$root/systemd-units/skiff-proxy.service" "$stage/debian/skiff-node.skiff-proxy.service"
cp "$root/systemd-units/skiff.slice" "$stage/debian/skiff-node.skiff.slice"
echo "README.md" >"$stage/debian/skiff-control-plane.docs"
echo "README.md" >"$stage/debian/skiff-node.docs"
echo "README.md" >"$stage/debian/skiffctl.docs"
# Manual pages: a one-line purpose per program and its own --help text.
declare -A purpose=(
  [skiff-control-plane]="Skiff API server, scheduler and controllers"
  [skiff-store]="etcd v3 compatible key-value store"
  [skiff-kubelet]="Skiff node agent: runs the pods bound to this node"
  [skiff-monitor]="per-container monitor of skiff-kubelet: stdio, logs, exit status"
  [skiff-monitor-pump]="log-copying stage of skiff-monitor (static, libc only)"
  [skiff-proxy]="eBPF load balancing for Skiff Services"
  [skiff-runtime]="OCI container runtime with runc's command line"
  [skiff-image]="pull, import, list and remove container images on a Skiff node"
  [skiffctl]="kubectl-like command line for Skiff clusters"
)
declare -A owner=(
  [skiff-control-plane]=skiff-control-plane [skiff-store]=skiff-control-plane [skiff-kubelet]=skiff-node
  [skiff-monitor]=skiff-node [skiff-monitor-pump]=skiff-node [skiff-proxy]=skiff-node [skiff-runtime]=skiff-node [skiff-image]=skiff-node
  [skiffctl]=skiffctl
)
mkdir -p "$stage/man"
for bin in "${!purpose[@]}"; do
  [[ -x $build/bin/$bin ]] || continue
  help=$(timeout 5 "$build/bin/$bin" --help 2>&1 </dev/null | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' || true)
  {
    echo ".TH ${bin^^} 1 \"$(date -u +%Y-%m-%d)\" \"skiff $version\" \"Skiff\""
    echo ".SH NAME"
    echo "$bin \\- ${purpose[$bin]}"
    echo ".SH SYNOPSIS"
    echo ".nf"
    echo "$help"
    echo ".fi"
    echo ".SH SEE ALSO"
    echo "/usr/share/doc/${owner[$bin]}/README.md"
  } >"$stage/man/$bin.1"
  echo "man/$bin.1" >>"$stage/debian/${owner[$bin]}.manpages"
done

cat >"$stage/debian/changelog" <<CHANGELOG
skiff ($version) unstable; urgency=medium

  * Release $version.

 -- Skiff developers <developers@skiff-project.org>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")
CHANGELOG

(cd "$stage" && SKIFF_BUILD_DIR="$build" dpkg-buildpackage -b -us -uc -d) >"$out/dpkg-buildpackage.log" 2>&1 || {
  tail -n 40 "$out/dpkg-buildpackage.log" >&2
  echo "build-debs: dpkg-buildpackage failed (log: $out/dpkg-buildpackage.log)" >&2
  exit 1
}
ls -1 "$out"/*.deb
if [[ ${SKIFF_DEB_LINTIAN:-1} == 1 ]] && command -v lintian >/dev/null; then
  lintian --profile debian --suppress-tags-from-file "$root/packaging/deb/lintian-suppressed" "$out"/*.changes \
    >"$out/lintian.log" 2>&1 || true
  echo "lintian: $(grep -c '^E:' "$out/lintian.log" || true) errors, $(grep -c '^W:' "$out/lintian.log" || true) warnings (log: $out/lintian.log)"
fi
