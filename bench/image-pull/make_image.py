#!/usr/bin/env python3
"""Writes an OCI image layout with N gzip layers of about SIZE_MB each.

Each layer holds files that compress like real ones: a mix of random bytes
(binaries, already-compressed assets) and repetitive text. Deterministic for a
given seed, so repeated runs push the same blobs.
usage: make_image.py DIR TAG LAYERS SIZE_MB
"""
import gzip, hashlib, io, json, os, random, sys, tarfile

def layer_tar(index, size):
    rng = random.Random(1000 + index)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(f"layer{index}")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tar.addfile(d)
        written, n = 0, 0
        while written < size:
            chunk = min(size - written, rng.randint(64 << 10, 2 << 20))
            if n % 2 == 0:
                data = rng.randbytes(chunk)
            else:
                words = [b"kubelet", b"overlay", b"registry", b"layer", b"digest", b"\n"]
                data = b" ".join(rng.choice(words) for _ in range(chunk // 6))[:chunk]
            info = tarfile.TarInfo(f"layer{index}/file{n}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
            written += len(data)
            n += 1
    return buf.getvalue()

def main():
    out, tag, layers, size_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    def put(data):
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return "sha256:" + h
    descs, diff_ids = [], []
    for i in range(layers):
        plain = layer_tar(i, size_mb << 20)
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
        gz = gzip.compress(plain, compresslevel=6, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": descs}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": put(manifest), "size": len(manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(sum(d["size"] for d in descs))

if __name__ == "__main__":
    main()
