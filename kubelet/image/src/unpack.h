// Unpacking one layer (a tar, optionally gzip or zstd compressed) into a
// fresh directory, in the form overlayfs reads as a lower layer.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace skiff::image {

struct UnpackResult {
  std::string diff_id;  // sha256 of the uncompressed tar stream
  int64_t entries = 0;
  int64_t bytes = 0;  // regular-file bytes written
};

// Unpacks `blob_path` into `dest` (an existing, empty directory).
// - OCI/AUFS whiteouts become overlayfs ones: ".wh.NAME" -> char device 0/0
//   NAME; ".wh..wh..opq" -> xattr trusted.overlay.opaque=y on its directory.
// - Ownership, modes (setuid/setgid/sticky), xattrs, mtimes, hard links,
//   symlinks and device nodes are reproduced.
// - Entries with an absolute path, a ".." component, a parent that is a
//   symlink or a hard link leaving the layer are refused (InvalidArgument);
//   every write goes through an fd beneath `dest`, so nothing is ever
//   written outside it.
absl::StatusOr<UnpackResult> UnpackLayer(const std::string& blob_path, const std::string& dest);

// Splits a tar path into clean components; refuses absolute paths and "..".
absl::StatusOr<std::vector<std::string>> CleanArchivePath(const std::string& path);

}  // namespace skiff::image
