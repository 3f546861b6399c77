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
cat >"$stage/debian/changelog" <<CHANGELOG
skiff ($version) unstable; urgency=medium

  * Release $version.

 -- Skiff developers <skiff@localhost.localdomain>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")
CHANGELOG

(cd "$stage" && SKIFF_BUILD_DIR="$build" dpkg-buildpackage -b -us -uc -d) >"$out/dpkg-buildpackage.log" 2>&1 || {
  tail -n 40 "$out/dpkg-buildpackage.log" >&2
  echo "build-debs: dpkg-buildpackage failed (log: $out/dpkg-buildpackage.log)" >&2
  exit 1
}
ls -1 "$out"/*.deb
if command -v lintian >/dev/null; then
  lintian --profile debian --suppress-tags-from-file "$root/packaging/deb/lintian-suppressed" "$out"/*.changes \
    >"$out/lintian.log" 2>&1 || true
  echo "lintian: $(grep -c '^E:' "$out/lintian.log" || true) errors, $(grep -c '^W:' "$out/lintian.log" || true) warnings (log: $out/lintian.log)"
fi
