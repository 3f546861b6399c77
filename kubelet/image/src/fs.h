// Small filesystem helpers with crash-safe writes.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::image {

absl::Status MkdirAll(const std::string& path, unsigned mode = 0755);
// Removes a tree without following symlinks or crossing mount points.
absl::Status RemoveAll(const std::string& path);
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t limit = 64 << 20);
// Writes `data` to a unique temporary file in `tmp_dir`, fsyncs it, renames it
// over `path` and fsyncs the parent directory.
absl::Status WriteFileAtomic(const std::string& path, const std::string& data, const std::string& tmp_dir);
absl::Status FsyncPath(const std::string& path);
bool Exists(const std::string& path);
std::string Dirname(const std::string& path);
// A unique name for a temporary entry: "<prefix>.<pid>.<counter>".
std::string UniqueName(const std::string& prefix);

}  // namespace skiff::image
