// Store internals shared by store.cc (pulls, mounts, GC) and import.cc.
#pragma once

#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "manifest.h"
#include "skiff/common/unique_fd.h"
#include "skiff/image/store.h"

namespace skiff::image {

// flock(2) on a file, released on destruction. Shared for pulls and imports,
// exclusive for removal and GC, so pruning never sees a half-made image.
class FileLock {
 public:
  static absl::StatusOr<FileLock> Acquire(const std::string& path, bool exclusive, bool nonblocking = false);
  FileLock(FileLock&&) = default;
  FileLock& operator=(FileLock&&) = default;

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

class Store::Impl {
 public:
  Impl(std::string root, Options options);

  std::string BlobPath(const std::string& digest) const;
  bool HasBlob(const std::string& digest) const;
  absl::StatusOr<std::string> ReadBlob(const std::string& digest) const;
  // Stores bytes that must hash to `digest`.
  absl::Status PutBlob(const std::string& digest, const std::string& bytes);
  // Moves a file that must hash to `digest` into blobs/. `verified` skips
  // re-hashing a file whose digest the caller checked while writing it.
  absl::Status InstallBlobFile(const std::string& path, const std::string& digest, bool verified = false);
  // Unpacks the layer blob into layers/<diff hex> unless already there.
  absl::Status EnsureLayer(const std::string& diff_id, const std::string& blob_digest);
  std::string LayerDir(const std::string& diff_id) const;

  std::string RefPath(const std::string& name) const;
  absl::Status WriteRef(const std::string& name, const std::string& manifest_digest);
  absl::StatusOr<Image> LoadImage(const std::string& manifest_digest, const std::string& name) const;
  // Every stored name -> manifest digest.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Refs() const;
  // Removes blobs and layers no name reaches (and no overlay mount uses).
  // Caller holds the exclusive store lock.
  absl::Status Prune();
  absl::StatusOr<FileLock> LockStore(bool exclusive) const;

  const std::string root_;
  const Options options_;
  const std::string blobs_, layers_, refs_, tmp_;
  std::atomic<int64_t> blobs_fetched_{0}, bytes_fetched_{0}, layers_unpacked_{0};
};

absl::Status WithReason(absl::Status st, const char* reason);

}  // namespace skiff::image
