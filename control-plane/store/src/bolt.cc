// bbolt-format snapshots (etcd's backend file layout), so real etcdctl can
// read and restore skiff-store snapshots. The layout (bbolt page.go, db.go,
// node.go, bucket.go):
//   page header  16 B: id u64 | flags u16 | count u16 | overflow u32
//   meta         at 16: magic u32 | version u32 | page size u32 | flags u32 |
//                root bucket {root pgid u64, sequence u64} | freelist u64 |
//                high-water pgid u64 | txid u64 | checksum u64 (FNV-64a of
//                the 56 bytes before it)
//   leaf element 16 B: flags u32 | pos u32 | ksize u32 | vsize u32
//   branch elem  16 B: pos u32 | ksize u32 | pgid u64
// `pos` counts from the element itself to its key (the value follows the
// key). A bucket's value in its parent is {root, sequence} and, when root is
// 0, the bucket's single leaf page inline right after it.
#include "bolt.h"

#include <unistd.h>

#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"

namespace skiff::store::bolt {
namespace {

constexpr uint16_t kBranchPage = 0x01;
constexpr uint16_t kLeafPage = 0x02;
constexpr uint16_t kMetaPage = 0x04;
constexpr uint16_t kFreelistPage = 0x10;
constexpr uint32_t kBucketLeaf = 0x01;
constexpr size_t kPageHeader = 16;
constexpr size_t kElem = 16;
constexpr size_t kBucketHeader = 16;
constexpr size_t kMetaChecksumOff = 56;  // bytes of meta covered by the checksum
constexpr int kMaxDepth = 64;

void Put16(char* p, uint16_t v) { StoreLe(p, v); }
void Put32(char* p, uint32_t v) { StoreLe(p, v); }
void Put64(char* p, uint64_t v) { StoreLe(p, v); }
uint16_t Get16(const char* p) { return LoadLe<uint16_t>(p); }
uint32_t Get32(const char* p) { return LoadLe<uint32_t>(p); }
uint64_t Get64(const char* p) { return LoadLe<uint64_t>(p); }
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "bbolt files are little endian");

// A leaf or branch node image: header, elements, then keys (and values).
// For branches `values` holds the child page ids (8 bytes each).
std::string NodeImage(uint16_t type, const std::vector<std::pair<std::string, std::string>>& elems,
                      const std::vector<uint32_t>& flags, const std::vector<uint64_t>& children) {
  size_t size = kPageHeader + elems.size() * kElem;
  for (const auto& [k, v] : elems) size += k.size() + (type == kLeafPage ? v.size() : 0);
  std::string img(size, '\0');
  Put16(img.data() + 8, type);
  Put16(img.data() + 10, static_cast<uint16_t>(elems.size()));
  size_t data = kPageHeader + elems.size() * kElem;
  for (size_t i = 0; i < elems.size(); ++i) {
    char* e = img.data() + kPageHeader + i * kElem;
    const size_t pos = data - (kPageHeader + i * kElem);
    const auto& [k, v] = elems[i];
    if (type == kLeafPage) {
      Put32(e, flags[i]);
      Put32(e + 4, static_cast<uint32_t>(pos));
      Put32(e + 8, static_cast<uint32_t>(k.size()));
      Put32(e + 12, static_cast<uint32_t>(v.size()));
      std::memcpy(img.data() + data, k.data(), k.size());
      std::memcpy(img.data() + data + k.size(), v.data(), v.size());
      data += k.size() + v.size();
    } else {
      Put32(e, static_cast<uint32_t>(pos));
      Put32(e + 4, static_cast<uint32_t>(k.size()));
      Put64(e + 8, children[i]);
      std::memcpy(img.data() + data, k.data(), k.size());
      data += k.size();
    }
  }
  return img;
}

absl::Status PWriteAll(int fd, const char* p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return LastErrnoError("write bbolt snapshot");
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t Fnv64a(const void* data, size_t n) {
  uint64_t h = 14695981039346656037ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

// ---------------------------------------------------------------- writer

absl::StatusOr<uint64_t> Writer::WriteNode(std::string image) {
  const uint64_t pages = (image.size() + page_size_ - 1) / page_size_;
  if (pages - 1 > UINT32_MAX) return absl::InvalidArgumentError("bbolt node too large");
  const uint64_t id = next_pgid_;
  Put64(image.data(), id);
  Put32(image.data() + 12, static_cast<uint32_t>(pages - 1));
  image.resize(pages * page_size_, '\0');
  RETURN_IF_ERROR(PWriteAll(fd_, image.data(), image.size(), id * page_size_));
  next_pgid_ += pages;
  return id;
}

absl::Status Writer::FlushLeaf(Pending& p, std::vector<Child>& level) {
  std::string first = p.elems.empty() ? std::string() : p.elems.front().first;
  ASSIGN_OR_RETURN(uint64_t id, WriteNode(NodeImage(kLeafPage, p.elems, p.flags, {})));
  level.push_back(Child{std::move(first), id});
  p = Pending{};
  return absl::OkStatus();
}

absl::Status Writer::Add(Pending& p, std::vector<Child>& level, std::string key, std::string value,
                         uint32_t flags) {
  const size_t elem = kElem + key.size() + value.size();
  if (p.elems.empty()) p.size = kPageHeader;
  if (!p.elems.empty() && (p.size + elem > page_size_ || p.elems.size() == 0xffff)) {
    RETURN_IF_ERROR(FlushLeaf(p, level));
    p.size = kPageHeader;
  }
  p.size += elem;
  p.elems.emplace_back(std::move(key), std::move(value));
  p.flags.push_back(flags);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Writer::BuildBranches(std::vector<Child> level) {
  while (level.size() > 1) {
    std::vector<Child> up;
    std::vector<std::pair<std::string, std::string>> elems;
    std::vector<uint64_t> kids;
    size_t size = kPageHeader;
    auto flush = [&]() -> absl::Status {
      std::string first = elems.front().first;
      ASSIGN_OR_RETURN(uint64_t id, WriteNode(NodeImage(kBranchPage, elems, {}, kids)));
      up.push_back(Child{std::move(first), id});
      elems.clear();
      kids.clear();
      size = kPageHeader;
      return absl::OkStatus();
    };
    for (auto& c : level) {
      const size_t elem = kElem + c.first_key.size();
      // At least two children per branch, even when their keys overflow the
      // page: otherwise a level of big keys would never shrink to a root.
      if (elems.size() >= 2 && (size + elem > page_size_ || elems.size() == 0xffff)) RETURN_IF_ERROR(flush());
      size += elem;
      elems.emplace_back(std::move(c.first_key), std::string());
      kids.push_back(c.pgid);
    }
    RETURN_IF_ERROR(flush());
    level = std::move(up);
  }
  return level.front().pgid;
}

absl::Status Writer::BeginBucket(const std::string& name) {
  if (in_bucket_)
    return absl::FailedPreconditionError("bbolt writer: bucket " + bucket_name_ + " still open");
  if (name.empty() || roots_.count(name))
    return absl::InvalidArgumentError("bbolt writer: bad bucket name " + name);
  in_bucket_ = true;
  bucket_name_ = name;
  last_key_.clear();
  pending_ = Pending{};
  leaves_.clear();
  return absl::OkStatus();
}

absl::Status Writer::Put(std::string_view key, std::string_view value) {
  if (!in_bucket_) return absl::FailedPreconditionError("bbolt writer: no open bucket");
  if (key.empty()) return absl::InvalidArgumentError("bbolt writer: empty key");
  if (!(pending_.elems.empty() && leaves_.empty()) && key <= std::string_view(last_key_)) {
    return absl::InvalidArgumentError("bbolt writer: keys out of order in bucket " + bucket_name_);
  }
  last_key_.assign(key.data(), key.size());
  return Add(pending_, leaves_, std::string(key), std::string(value), 0);
}

absl::Status Writer::EndBucket() {
  if (!in_bucket_) return absl::FailedPreconditionError("bbolt writer: no open bucket");
  in_bucket_ = false;
  std::string header(kBucketHeader, '\0');
  if (pending_.elems.empty()) pending_.size = kPageHeader;
  if (leaves_.empty() && pending_.size <= page_size_ / 4) {
    // Small enough to live inline in the root bucket, as bbolt keeps it.
    header += NodeImage(kLeafPage, pending_.elems, pending_.flags, {});
  } else {
    if (!pending_.elems.empty()) RETURN_IF_ERROR(FlushLeaf(pending_, leaves_));
    ASSIGN_OR_RETURN(uint64_t root, BuildBranches(std::move(leaves_)));
    Put64(header.data(), root);
  }
  leaves_.clear();
  pending_ = Pending{};
  roots_[bucket_name_] = std::move(header);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Writer::Finish() {
  if (in_bucket_)
    return absl::FailedPreconditionError("bbolt writer: bucket " + bucket_name_ + " still open");
  Pending root;
  std::vector<Child> level;
  for (auto& [name, value] : roots_) RETURN_IF_ERROR(Add(root, level, name, std::move(value), kBucketLeaf));
  RETURN_IF_ERROR(FlushLeaf(root, level));  // even when empty: the root is a page
  ASSIGN_OR_RETURN(uint64_t root_pgid, BuildBranches(std::move(level)));
  roots_.clear();

  std::string page(page_size_, '\0');
  Put64(page.data(), 2);
  Put16(page.data() + 8, kFreelistPage);
  RETURN_IF_ERROR(PWriteAll(fd_, page.data(), page.size(), uint64_t{2} * page_size_));
  for (uint64_t i = 0; i < 2; ++i) {
    std::fill(page.begin(), page.end(), '\0');
    char* m = page.data() + kPageHeader;
    Put64(page.data(), i);
    Put16(page.data() + 8, kMetaPage);
    Put32(m, kMagic);
    Put32(m + 4, kVersion);
    Put32(m + 8, page_size_);
    Put64(m + 16, root_pgid);
    Put64(m + 32, 2);           // freelist
    Put64(m + 40, next_pgid_);  // high-water mark
    Put64(m + 48, i);           // txid: meta 1 is the newer one
    Put64(m + kMetaChecksumOff, Fnv64a(m, kMetaChecksumOff));
    RETURN_IF_ERROR(PWriteAll(fd_, page.data(), page.size(), i * page_size_));
  }
  const uint64_t size = next_pgid_ * page_size_;
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return LastErrnoError("truncate bbolt snapshot");
  return size;
}

// ---------------------------------------------------------------- reader

namespace {

struct Meta {
  uint32_t page_size = 0;
  uint64_t root = 0, freelist = 0, hwm = 0, txid = 0;
};

bool ParseMeta(std::string_view f, size_t off, Meta* out) {
  if (off + kPageHeader + kMetaChecksumOff + 8 > f.size()) return false;
  const char* m = f.data() + off + kPageHeader;
  if (Get32(m) != kMagic || Get32(m + 4) != kVersion) return false;
  if (Get64(m + kMetaChecksumOff) != Fnv64a(m, kMetaChecksumOff)) return false;
  out->page_size = Get32(m + 8);
  out->root = Get64(m + 16);
  out->freelist = Get64(m + 32);
  out->hwm = Get64(m + 40);
  out->txid = Get64(m + 48);
  return out->page_size >= 512 && (out->page_size & (out->page_size - 1)) == 0;
}

absl::Status Corrupt(const std::string& what) {
  return absl::DataLossError("snapshot is not a valid bbolt database: " + what);
}

class TreeReader {
 public:
  TreeReader(std::string_view f, const Meta& m) : f_(f), m_(m), seen_(m.hwm, false) {}

  using Visit = std::function<absl::Status(std::string_view key, std::string_view value, uint32_t flags)>;

  // Visits every leaf element under page `id` in order.
  absl::Status WalkPage(uint64_t id, int depth, const Visit& fn) {
    if (depth > kMaxDepth) return Corrupt("tree too deep");
    if (id < 2 || id >= m_.hwm) return Corrupt(absl::StrCat("page ", id, " out of bounds"));
    const uint64_t off = id * m_.page_size;
    if (off + kPageHeader > f_.size())
      return Corrupt(absl::StrCat("page ", id, " beyond the end of the file"));
    const char* p = f_.data() + off;
    if (Get64(p) != id) return Corrupt(absl::StrCat("page ", id, " carries id ", Get64(p)));
    const uint64_t overflow = Get32(p + 12);
    if (id + overflow >= m_.hwm || off + (overflow + 1) * m_.page_size > f_.size()) {
      return Corrupt(absl::StrCat("page ", id, " overflows the file"));
    }
    for (uint64_t i = id; i <= id + overflow; ++i) {
      if (seen_[i]) return Corrupt(absl::StrCat("page ", i, " reached twice"));
      seen_[i] = true;
    }
    return WalkNode(std::string_view(p, (overflow + 1) * m_.page_size), depth, fn, absl::StrCat("page ", id));
  }

  // A node image: a page in the file or an inline bucket's page.
  absl::Status WalkNode(std::string_view node, int depth, const Visit& fn, const std::string& what) {
    if (node.size() < kPageHeader) return Corrupt(what + " too short");
    const uint16_t type = Get16(node.data() + 8);
    const uint64_t count = Get16(node.data() + 10);
    if (kPageHeader + count * kElem > node.size()) return Corrupt(what + " has more elements than fit");
    for (uint64_t i = 0; i < count; ++i) {
      const char* e = node.data() + kPageHeader + i * kElem;
      const uint64_t base = kPageHeader + i * kElem;
      if (type == kLeafPage) {
        const uint64_t pos = Get32(e + 4), ks = Get32(e + 8), vs = Get32(e + 12);
        if (base + pos + ks + vs > node.size()) return Corrupt(what + " element out of bounds");
        const char* k = e + pos;
        RETURN_IF_ERROR(fn(std::string_view(k, ks), std::string_view(k + ks, vs), Get32(e)));
      } else if (type == kBranchPage) {
        const uint64_t pos = Get32(e), ks = Get32(e + 4);
        if (base + pos + ks > node.size()) return Corrupt(what + " element out of bounds");
        RETURN_IF_ERROR(WalkPage(Get64(e + 8), depth + 1, fn));
      } else {
        return Corrupt(absl::StrCat(what, " has invalid type ", type));
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string_view f_;
  Meta m_;
  std::vector<bool> seen_;
};

}  // namespace

bool LooksLikeBolt(std::string_view f) {
  return f.size() >= kPageHeader + 8 && Get32(f.data() + kPageHeader) == kMagic &&
         Get32(f.data() + kPageHeader + 4) == kVersion;
}

absl::Status Walk(std::string_view f, const Visitor& fn, Info* info) {
  // Meta 0 tells the page size; when it is damaged, look for meta 1 at the
  // usual page sizes. The valid meta with the newer txid wins (bbolt's rule).
  Meta m0, m1, best;
  bool ok0 = ParseMeta(f, 0, &m0);
  bool ok1 = false;
  if (ok0) {
    ok1 = ParseMeta(f, m0.page_size, &m1) && m1.page_size == m0.page_size;
  } else {
    for (uint32_t ps = 512; ps <= 65536 && !ok1; ps *= 2) ok1 = ParseMeta(f, ps, &m1) && m1.page_size == ps;
  }
  if (!ok0 && !ok1) return Corrupt("no valid meta page (magic, version or checksum)");
  best = !ok1 || (ok0 && m0.txid > m1.txid) ? m0 : m1;
  if (best.hwm < 4 || best.hwm > f.size() / best.page_size) {
    return Corrupt(
        absl::StrCat("file of ", f.size(), " bytes is shorter than its ", best.hwm, " pages (truncated?)"));
  }
  // etcd runs bbolt with NoFreelistSync: no freelist page (id all ones).
  if (best.freelist != ~uint64_t{0} && (best.freelist < 2 || best.freelist >= best.hwm)) {
    return Corrupt("freelist page out of bounds");
  }
  if (info != nullptr) {
    info->page_size = best.page_size;
    info->txid = best.txid;
  }
  TreeReader tr(f, best);
  std::string bucket;
  bool first_bucket = true;
  return tr.WalkPage(best.root, 0, [&](std::string_view name, std::string_view value, uint32_t flags) {
    if ((flags & kBucketLeaf) == 0) return Corrupt("a plain key in the root bucket");
    if (value.size() < kBucketHeader) return Corrupt("short bucket header");
    if (!first_bucket && name <= std::string_view(bucket)) return Corrupt("buckets out of order");
    first_bucket = false;
    bucket.assign(name.data(), name.size());
    std::string_view last;
    bool first = true;
    auto add = [&](std::string_view k, std::string_view v, uint32_t f) -> absl::Status {
      if (f & kBucketLeaf) return Corrupt("nested bucket in " + bucket);
      if (!first && k <= last) return Corrupt("keys out of order in " + bucket);
      first = false;
      last = k;
      return fn(bucket, k, v);
    };
    RETURN_IF_ERROR(fn(bucket, std::string_view(), std::string_view()));
    const uint64_t root = Get64(value.data());
    if (root == 0) {
      std::string_view inl = value.substr(kBucketHeader);
      if (inl.size() >= kPageHeader && Get16(inl.data() + 8) != kLeafPage)
        return Corrupt("inline bucket not a leaf");
      return tr.WalkNode(inl, 1, add, "inline bucket " + bucket);
    }
    return tr.WalkPage(root, 1, add);
  });
}

absl::StatusOr<Database> Read(std::string_view f) {
  Database db;
  Info info;
  std::vector<std::pair<std::string, std::string>>* pairs = nullptr;
  absl::Status st = Walk(
      f,
      [&](std::string_view bucket, std::string_view k, std::string_view v) {
        if (k.empty()) {
          pairs = &db.buckets[std::string(bucket)];
        } else {
          pairs->emplace_back(std::string(k), std::string(v));
        }
        return absl::OkStatus();
      },
      &info);
  if (!st.ok()) return st;
  db.page_size = info.page_size;
  db.txid = info.txid;
  return db;
}

}  // namespace skiff::store::bolt
