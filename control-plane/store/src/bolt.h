// Private: the bbolt file format (etcd's backend), written and read without
// bbolt, so real `etcdctl snapshot status/restore` can read skiff-store
// snapshots and `skiff-store snapshot restore` can read etcd's.
//
// A bbolt file is an array of pages of one size (the OS page size of the
// writer): pages 0 and 1 hold the two meta copies (magic 0xED0CDAED, version
// 2, FNV-64a checksum), the meta points at the freelist page and the root
// bucket, whose leaf elements name the top-level buckets. Every bucket is a
// B+tree of branch and leaf pages; a node bigger than one page takes
// consecutive "overflow" pages; a small bucket lives inline in its parent's
// value. All integers are little endian.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::store::bolt {

inline constexpr uint32_t kMagic = 0xED0CDAED;
inline constexpr uint32_t kVersion = 2;

// Little-endian fields (bbolt files are written on little-endian hosts).
template <typename T>
T LoadLe(const char* p) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void StoreLe(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

// FNV-64a, bbolt's meta checksum.
uint64_t Fnv64a(const void* data, size_t n);

// Writes a bbolt database page by page into fd (from offset 0; the file ends
// at exactly pages * page_size bytes). Buckets may come in any order, each
// one's keys in strictly ascending byte order. Pages are packed full (like
// bbolt's compaction), so a bucket costs about its data size.
class Writer {
 public:
  Writer(int fd, uint32_t page_size) : fd_(fd), page_size_(page_size) {}
  absl::Status BeginBucket(const std::string& name);
  absl::Status Put(std::string_view key, std::string_view value);
  absl::Status EndBucket();
  // Writes the root bucket, the (empty) freelist and both metas; returns the
  // file size.
  absl::StatusOr<uint64_t> Finish();

 private:
  struct Pending {
    std::vector<std::pair<std::string, std::string>> elems;
    std::vector<uint32_t> flags;
    size_t size = 0;  // page header + elements + data
  };
  struct Child {
    std::string first_key;
    uint64_t pgid;
  };
  // Writes a node image at the next free page(s); returns its page id.
  absl::StatusOr<uint64_t> WriteNode(std::string image);
  absl::Status FlushLeaf(Pending& p, std::vector<Child>& level);
  // Adds one element to a tree being built, flushing full leaves.
  absl::Status Add(Pending& p, std::vector<Child>& level, std::string key, std::string value, uint32_t flags);
  // Branch levels over the leaves; returns the root page id.
  absl::StatusOr<uint64_t> BuildBranches(std::vector<Child> level);

  int fd_;
  uint32_t page_size_;
  uint64_t next_pgid_ = 3;  // 0, 1: metas; 2: freelist
  bool in_bucket_ = false;
  std::string bucket_name_;
  std::string last_key_;
  Pending pending_;
  std::vector<Child> leaves_;
  std::map<std::string, std::string> roots_;  // bucket name -> its value in the root bucket
};

// The whole file read back: each top-level bucket's pairs in key order.
struct Database {
  uint32_t page_size = 0;
  uint64_t txid = 0;
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> buckets;
};

// True when `file` starts with a bbolt meta page (magic and version).
bool LooksLikeBolt(std::string_view file);

struct Info {
  uint32_t page_size = 0;
  uint64_t txid = 0;
};

// Called once per top-level bucket with an empty key (bbolt keys are never
// empty), then once per pair in key order. The views point into the file.
using Visitor =
    std::function<absl::Status(std::string_view bucket, std::string_view key, std::string_view value)>;

// Walks and checks a bbolt file (without a hash trailer): a valid meta, every
// page inside the file and below the high-water mark, no page reached twice,
// element bounds inside their page, buckets and keys ascending. Nested
// buckets are refused (etcd has none). Stops at the first error, its own or
// the visitor's.
absl::Status Walk(std::string_view file, const Visitor& fn, Info* info = nullptr);

// The same, copied into memory (tests, small files).
absl::StatusOr<Database> Read(std::string_view file);

}  // namespace skiff::store::bolt
