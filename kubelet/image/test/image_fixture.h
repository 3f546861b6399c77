// Builds test images with our own code: layer tars (libarchive writer, with
// whiteouts, hard links, xattrs, hostile paths) and OCI image layouts.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/image/store.h"

namespace skiff::image::testing {

struct Entry {
  enum Kind { kFile, kDir, kSymlink, kHardlink, kCharDev, kFifo } kind = kFile;
  std::string path;
  std::string data;    // file content; symlink/hardlink target
  unsigned mode = 0644;
  unsigned uid = 0, gid = 0;
  std::map<std::string, std::string> xattrs;
  int64_t mtime = 1700000000;
  unsigned rdev_major = 0, rdev_minor = 0;
};

inline Entry File(std::string path, std::string data, unsigned mode = 0644, unsigned uid = 0, unsigned gid = 0) {
  Entry e;
  e.path = std::move(path);
  e.data = std::move(data);
  e.mode = mode;
  e.uid = uid;
  e.gid = gid;
  return e;
}
inline Entry Dir(std::string path, unsigned mode = 0755) {
  Entry e;
  e.kind = Entry::kDir;
  e.path = std::move(path);
  e.mode = mode;
  return e;
}
inline Entry Symlink(std::string path, std::string target) {
  Entry e;
  e.kind = Entry::kSymlink;
  e.path = std::move(path);
  e.data = std::move(target);
  e.mode = 0777;
  return e;
}
inline Entry Hardlink(std::string path, std::string target) {
  Entry e;
  e.kind = Entry::kHardlink;
  e.path = std::move(path);
  e.data = std::move(target);
  return e;
}
// ".wh.NAME" in dir of `path`.
inline Entry Whiteout(const std::string& dir, const std::string& name) {
  return File((dir.empty() ? "" : dir + "/") + ".wh." + name, "");
}
inline Entry Opaque(const std::string& dir) { return File(dir + "/.wh..wh..opq", ""); }

enum class Compression { kNone, kGzip, kZstd };

struct Layer {
  std::string blob;     // as stored in the registry
  std::string digest;   // of blob
  std::string diff_id;  // of the uncompressed tar
  std::string media_type;
};

absl::StatusOr<Layer> BuildLayer(const std::vector<Entry>& entries, Compression c = Compression::kGzip);

// The busybox-static rootfs: /bin/busybox and applet symlinks, /etc, /tmp.
std::vector<Entry> BusyboxRootfs();

struct BuiltImage {
  std::string manifest;  // JSON
  std::string manifest_digest;
  std::string config;
  std::string config_digest;
  std::vector<Layer> layers;
};

absl::StatusOr<BuiltImage> BuildImage(const std::vector<Layer>& layers, const ImageConfig& config,
                                      const std::string& architecture = "amd64");

// Writes an OCI image layout directory (oci-layout, index.json, blobs/).
// `ref_name` becomes org.opencontainers.image.ref.name when not empty.
absl::Status WriteOciLayout(const std::string& dir, const std::vector<BuiltImage>& images,
                            const std::vector<std::string>& ref_names);
// A tar of a directory's contents (paths relative to it).
absl::Status TarDirectory(const std::string& dir, const std::string& tar_path);
// A tar with the given raw entries (for docker-save and hostile archives).
absl::Status WriteTar(const std::string& tar_path, const std::vector<Entry>& entries);

std::string Sha256Hex(const std::string& bytes);
std::string RandomBytes(size_t n, uint64_t seed);

}  // namespace skiff::image::testing
