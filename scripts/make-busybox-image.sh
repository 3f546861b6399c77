#!/usr/bin/env bash
# Writes an OCI image layout archive of a busybox-static root filesystem:
#   scripts/make-busybox-image.sh OUT.tar [REF]
# The image the sample deployment and the tests use; no registry needed.
set -euo pipefail
out=$1
ref=${2:-skiff.local/busybox:1}
bb=$(command -v busybox || true)
[[ -n $bb ]] && file -L "$bb" 2>/dev/null | grep -q static || bb=/bin/busybox
[[ -x $bb ]] || { echo "make-busybox-image: busybox-static is required (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,usr/bin,usr/sbin,var}
cp "$bb" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
  [[ $applet == busybox ]] && continue
  ln -sf busybox "$rootfs/bin/$applet"
done
chmod 1777 "$rootfs/tmp"
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
echo "nobody:x:65534:65534:nobody:/:/bin/false" >>"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
echo "nogroup:x:65534:" >>"$rootfs/etc/group"

layout=$work/layout
mkdir -p "$layout/blobs/sha256"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer_digest"

cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"scripts/make-busybox-image.sh"}]}
JSON
config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$layout/blobs/sha256/$config_digest"

cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$layout/blobs/sha256/$manifest_digest"

echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"$ref"}}]}
JSON
tar --numeric-owner --owner=0 --group=0 -C "$layout" -cf "$out" .
echo "$out: $ref sha256:$manifest_digest"
