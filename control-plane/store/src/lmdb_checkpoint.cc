#include "lmdb_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "wal.h"

namespace skiff::store {
namespace {

// Slot: magic(8) psize(4) pad(4) gen(8) txnid(8) wal_seq(8) | metas | crc(4)
constexpr char kMagic[8] = {'S', 'K', 'C', 'K', 'P', 'T', '0', '1'};
constexpr size_t kHeader = 40;
constexpr uint32_t kLmdbMagic = 0xBEEFC0DE;
// LMDB 0.9 layout: a 16-byte page header, then MDB_meta: magic(4),
// version(4), address(8), mapsize(8), two MDB_db of 48 bytes, last_pg(8),
// txnid(8).
constexpr size_t kMetaMagicOff = 16;
constexpr size_t kMetaTxnOff = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8;

size_t SlotSize(uint32_t psize) { return kHeader + 2 * static_cast<size_t>(psize) + 4; }

void Put64(char* p, uint64_t v) { std::memcpy(p, &v, 8); }
void Put32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint64_t Get64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t Get32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

absl::Status PreadAll(int fd, char* buf, size_t n, off_t off, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return LastErrnoError("read " + what);
    if (r == 0) return absl::DataLossError(absl::StrCat("store: ", what, " is truncated"));
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, const char* buf, size_t n, off_t off, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return LastErrnoError("write " + what);
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

// Parses one slot; nullopt if torn, empty or not ours.
std::optional<MetaCheckpoint> ParseSlot(const std::string& b, size_t off) {
  if (b.size() < off + kHeader || std::memcmp(b.data() + off, kMagic, 8) != 0) return std::nullopt;
  MetaCheckpoint c;
  c.psize = Get32(b.data() + off + 8);
  if (c.psize < 512 || c.psize > 65536 || b.size() < off + SlotSize(c.psize)) return std::nullopt;
  const size_t body = kHeader + 2 * static_cast<size_t>(c.psize);
  if (Crc32c(0, b.data() + off, body) != Get32(b.data() + off + body)) return std::nullopt;
  c.gen = Get64(b.data() + off + 16);
  c.txnid = Get64(b.data() + off + 24);
  c.wal_seq = Get64(b.data() + off + 32);
  c.metas.assign(b.data() + off + kHeader, 2 * static_cast<size_t>(c.psize));
  return c;
}

}  // namespace

uint64_t LmdbMetaTxnId(const char* page, size_t size) {
  if (size < kMetaTxnOff + 8 || Get32(page + kMetaMagicOff) != kLmdbMagic) return 0;
  return Get64(page + kMetaTxnOff);
}

absl::StatusOr<std::optional<MetaCheckpoint>> ReadMetaCheckpoint(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::optional<MetaCheckpoint>();
    return LastErrnoError("open " + path);
  }
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return LastErrnoError("seek " + path);
  std::string b(static_cast<size_t>(size), '\0');
  if (size > 0) RETURN_IF_ERROR(PreadAll(fd.get(), b.data(), b.size(), 0, path));
  std::optional<MetaCheckpoint> best;
  // Slot 0 sits at 0; slot 1 right after it (both have the same page size).
  std::optional<MetaCheckpoint> s0 = ParseSlot(b, 0);
  for (uint32_t ps : {s0 ? s0->psize : 0u, 4096u}) {
    if (ps == 0) continue;
    std::optional<MetaCheckpoint> s1 = ParseSlot(b, SlotSize(ps));
    if (s1 && (!best || s1->gen > best->gen)) best = s1;
    if (s0) break;
  }
  if (s0 && (!best || s0->gen > best->gen)) best = s0;
  return best;
}

absl::Status WriteMetaCheckpoint(int fd, const MetaCheckpoint& c) {
  if (c.metas.size() != 2 * static_cast<size_t>(c.psize)) return absl::InternalError("bad checkpoint meta size");
  std::string b(SlotSize(c.psize), '\0');
  std::memcpy(b.data(), kMagic, 8);
  Put32(b.data() + 8, c.psize);
  Put64(b.data() + 16, c.gen);
  Put64(b.data() + 24, c.txnid);
  Put64(b.data() + 32, c.wal_seq);
  std::memcpy(b.data() + kHeader, c.metas.data(), c.metas.size());
  const size_t body = kHeader + c.metas.size();
  Put32(b.data() + body, Crc32c(0, b.data(), body));
  const off_t off = static_cast<off_t>((c.gen & 1) * b.size());
  RETURN_IF_ERROR(PwriteAll(fd, b.data(), b.size(), off, "lmdb checkpoint"));
  if (::fdatasync(fd) != 0) return LastErrnoError("fdatasync lmdb checkpoint");
  return absl::OkStatus();
}

absl::Status RestoreLmdbMeta(const std::string& data_path, const MetaCheckpoint& c) {
  UniqueFd fd(::open(data_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) {
    return errno == ENOENT ? absl::DataLossError("store: data.mdb is missing but its checkpoint record exists")
                           : LastErrnoError("open " + data_path);
  }
  std::string cur(c.metas.size(), '\0');
  RETURN_IF_ERROR(PreadAll(fd.get(), cur.data(), cur.size(), 0, data_path));
  if (cur == c.metas) return absl::OkStatus();
  const uint64_t newest = std::max(LmdbMetaTxnId(cur.data(), c.psize), LmdbMetaTxnId(cur.data() + c.psize, c.psize));
  if (newest < c.txnid) {
    return absl::DataLossError(absl::StrCat("store: data.mdb (transaction ", newest,
                                            ") is older than its checkpoint record (transaction ", c.txnid, ")"));
  }
  RETURN_IF_ERROR(PwriteAll(fd.get(), c.metas.data(), c.metas.size(), 0, data_path));
  if (::fdatasync(fd.get()) != 0) return LastErrnoError("fdatasync " + data_path);
  return absl::OkStatus();
}

}  // namespace skiff::store
