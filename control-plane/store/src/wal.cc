// The write-ahead log: preallocated segments, one durable write per append.
#include "wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"

namespace skiff::store {
namespace {

void PutLe32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutLe64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetLe64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string SegmentName(uint64_t first_seq) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 ".wal", first_seq);
  return buf;
}

// Segments of dir, oldest first.
absl::StatusOr<std::vector<std::pair<uint64_t, std::string>>> ListSegments(const std::string& dir) {
  std::vector<std::pair<uint64_t, std::string>> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return LastErrnoError("opendir " + dir);
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != 20 || name.substr(16) != ".wal") continue;
    uint64_t seq = 0;
    if (std::sscanf(name.c_str(), "%16" SCNx64, &seq) != 1) continue;
    out.emplace_back(seq, dir + "/" + name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status ReadFile(const std::string& path, std::string* out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return LastErrnoError("open " + path);
  struct stat sb;
  if (::fstat(fd.get(), &sb) != 0) return LastErrnoError("stat " + path);
  out->assign(static_cast<size_t>(sb.st_size), '\0');
  size_t off = 0;
  while (off < out->size()) {
    ssize_t n = ::pread(fd.get(), out->data() + off, out->size() - off, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LastErrnoError("read " + path);
    if (n == 0) break;
    off += static_cast<size_t>(n);
  }
  out->resize(off);
  return absl::OkStatus();
}

}  // namespace

namespace {
uint32_t Crc32cTable(uint32_t crc, const unsigned char* p, size_t n) {
  static uint32_t table[256] = {};
  static std::once_flag once;
  std::call_once(once, [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
  });
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// The same polynomial in hardware (SSE4.2), 8 bytes per instruction.
__attribute__((target("sse4.2"))) uint32_t Crc32cHw(uint32_t crc, const unsigned char* p, size_t n) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n, ++p) c32 = __builtin_ia32_crc32qi(c32, *p);
  return c32;
}
#endif
}  // namespace

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  crc = hw ? Crc32cHw(crc, p, n) : Crc32cTable(crc, p, n);
#else
  crc = Crc32cTable(crc, p, n);
#endif
  return ~crc;
}

absl::Status ReplayWal(const std::string& dir, uint64_t after,
                       const std::function<absl::Status(uint64_t, std::string_view)>& apply, uint64_t* last) {
  *last = after;
  ASSIGN_OR_RETURN(auto segments, ListSegments(dir));
  uint64_t expect = 0;  // next sequence number; 0 until the first record
  bool torn = false;
  std::string torn_at;
  std::string data;
  for (const auto& [first, path] : segments) {
    RETURN_IF_ERROR(ReadFile(path, &data));
    size_t off = 0;
    while (off + kWalHeaderBytes <= data.size()) {
      const char* p = data.data() + off;
      uint32_t len = GetLe32(p);
      uint32_t crc = GetLe32(p + 4);
      uint64_t seq = GetLe64(p + 8);
      if (len == 0 && crc == 0 && seq == 0) break;  // the zero-filled rest of the segment
      bool intact = off + kWalHeaderBytes + len <= data.size() &&
                    Crc32c(0, p + 8, 8 + static_cast<size_t>(len)) == crc && (expect == 0 || seq == expect);
      if (!intact) {
        if (!torn) torn_at = absl::StrCat(path, " offset ", off);
        torn = true;
        break;
      }
      if (torn) {
        return absl::DataLossError(absl::StrCat("store: write-ahead log damaged at ", torn_at,
                                                " but intact records follow (seq ", seq, ")"));
      }
      if (seq > after) {
        RETURN_IF_ERROR(apply(seq, std::string_view(p + kWalHeaderBytes, len)));
        *last = seq;
      }
      expect = seq + 1;
      off += kWalHeaderBytes + len;
    }
  }
  if (torn) log::Warn("store: write-ahead log ends in a torn record at ", torn_at, "; replayed up to seq ", *last);
  return absl::OkStatus();
}

absl::Status Wal::Preallocate(const std::string& path, int64_t bytes) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return LastErrnoError("create " + path);
  // 1 MiB at a time, each flushed: one big flush of fresh blocks makes the
  // file system's journal commit wait for all of it (data=ordered), and
  // every other write that needs the journal meanwhile (the log's and LMDB's
  // own, for their mtime) would stall behind it.
  static const std::string zeros(1 << 20, '\0');
  for (int64_t off = 0; off < bytes;) {
    size_t n = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(zeros.size()), bytes - off));
    ssize_t w = ::pwrite(fd.get(), zeros.data(), n, off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return LastErrnoError("preallocate " + path);
    off += w;
    if (::fdatasync(fd.get()) != 0) return LastErrnoError("fdatasync " + path);
  }
  return absl::OkStatus();
}

absl::Status Wal::SyncDir() {
  UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return LastErrnoError("open " + dir_);
  if (::fsync(d.get()) != 0) return LastErrnoError("fsync " + dir_);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Wal>> Wal::Create(const std::string& dir, uint64_t next_seq, int64_t segment_bytes) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + dir);
  std::unique_ptr<Wal> w(new Wal(dir, std::max<int64_t>(segment_bytes, 64 * 1024)));
  ASSIGN_OR_RETURN(auto old, ListSegments(dir));
  for (const auto& [seq, path] : old) {
    if (::unlink(path.c_str()) != 0) return LastErrnoError("unlink " + path);
  }
  ::unlink((dir + "/spare.tmp").c_str());
  w->last_seq_ = next_seq - 1;
  RETURN_IF_ERROR(w->Rotate(next_seq, 0));
  return w;
}

absl::Status Wal::Rotate(uint64_t first_seq, size_t need) {
  int64_t bytes = std::max<int64_t>(segment_bytes_, static_cast<int64_t>(need));
  bytes = (bytes + static_cast<int64_t>(kAlign) - 1) / static_cast<int64_t>(kAlign) * static_cast<int64_t>(kAlign);
  std::string path = dir_ + "/" + SegmentName(first_seq);
  bool took_spare = false;
  {
    // Renamed under the lock: once spare_ reads empty, PrepareSpare may
    // create spare.tmp again, and must never open (and truncate) the file
    // that is becoming this segment.
    std::lock_guard<std::mutex> lk(mu_);
    if (!spare_.empty() && spare_bytes_ >= bytes) {
      if (::rename(spare_.c_str(), path.c_str()) != 0) return LastErrnoError("rename " + spare_);
      bytes = spare_bytes_;
      spare_.clear();
      took_spare = true;
    }
  }
  if (!took_spare) RETURN_IF_ERROR(Preallocate(path, bytes));
  RETURN_IF_ERROR(SyncDir());
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_DIRECT | O_DSYNC));
  direct_ = static_cast<bool>(fd);
  if (!fd && errno == EINVAL) fd = UniqueFd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return LastErrnoError("open " + path);
  fd_ = std::move(fd);
  off_ = 0;
  tail_ = 0;
  size_ = bytes;
  written_.store(0, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lk(mu_);
  segments_.push_back(Segment{first_seq, path});
  return absl::OkStatus();
}

void Wal::FreeDeleter::operator()(char* p) const { std::free(p); }

absl::Status Wal::Append(uint64_t seq, std::string_view payload) {
  if (seq != last_seq_ + 1) return absl::InternalError(absl::StrCat("wal: seq ", seq, " after ", last_seq_));
  const size_t n = kWalHeaderBytes + payload.size();
  // Leave room for the zero header that ends the segment's records.
  if (off_ + static_cast<int64_t>(n + kWalHeaderBytes) > size_) RETURN_IF_ERROR(Rotate(seq, n + kWalHeaderBytes));
  // [tail_ bytes of the last block][record][zeros up to a block boundary]
  const size_t len = tail_ + n;
  const size_t padded = (len + kAlign - 1) / kAlign * kAlign;
  if (buf_cap_ < padded || buf_cap_ > std::max(padded, size_t{4} << 20)) {
    void* mem = nullptr;
    const size_t cap = std::max(padded, size_t{64} << 10);
    if (::posix_memalign(&mem, kAlign, cap) != 0) return absl::ResourceExhaustedError("wal buffer");
    if (buf_ && tail_ > 0) std::memcpy(mem, buf_.get(), tail_);
    buf_.reset(static_cast<char*>(mem));
    buf_cap_ = cap;
  }
  char* rec = buf_.get() + tail_;
  PutLe32(rec, static_cast<uint32_t>(payload.size()));
  PutLe64(rec + 8, seq);
  std::memcpy(rec + kWalHeaderBytes, payload.data(), payload.size());
  PutLe32(rec + 4, Crc32c(0, rec + 8, 8 + payload.size()));
  // Direct I/O writes whole blocks from the start of the partial one.
  const size_t wlen = direct_ ? padded : n;
  const char* src = direct_ ? buf_.get() : rec;
  const int64_t at = direct_ ? off_ - static_cast<int64_t>(tail_) : off_;
  if (direct_) std::memset(buf_.get() + len, 0, padded - len);
  for (size_t done = 0; done < wlen;) {
    ssize_t w = ::pwrite(fd_.get(), src + done, wlen - done, static_cast<off_t>(at + static_cast<int64_t>(done)));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return LastErrnoError("wal write");
    done += static_cast<size_t>(w);
  }
  if (!direct_ && ::fdatasync(fd_.get()) != 0) return LastErrnoError("wal fdatasync");
  off_ += static_cast<int64_t>(n);
  if (direct_) {
    // Keep the bytes of the new last block for the next append.
    const size_t keep = static_cast<size_t>(off_) % kAlign;
    std::memmove(buf_.get(), buf_.get() + len - keep, keep);
    tail_ = keep;
  }
  written_.store(off_, std::memory_order_relaxed);
  last_seq_ = seq;
  return absl::OkStatus();
}

void Wal::DropThrough(uint64_t seq) {
  std::vector<std::string> drop;
  {
    std::lock_guard<std::mutex> lk(mu_);
    // Segment i holds [first_seq(i), first_seq(i+1)); the current one stays.
    while (segments_.size() > 1 && segments_[1].first_seq <= seq + 1) {
      drop.push_back(segments_.front().path);
      segments_.erase(segments_.begin());
    }
  }
  for (const auto& p : drop) {
    if (::unlink(p.c_str()) != 0) log::Warn("store: removing wal segment ", p, ": ", std::strerror(errno));
  }
}

void Wal::PrepareSpare() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!spare_.empty()) return;
  }
  std::string path = dir_ + "/spare.tmp";
  absl::Status st = Preallocate(path, segment_bytes_);
  if (!st.ok()) {
    log::Warn("store: preparing a wal segment: ", st);
    ::unlink(path.c_str());
    return;
  }
  std::lock_guard<std::mutex> lk(mu_);
  spare_ = path;
  spare_bytes_ = segment_bytes_;
}

int64_t Wal::BytesSinceRotation() const { return written_.load(std::memory_order_relaxed); }

size_t Wal::SegmentCount() {
  std::lock_guard<std::mutex> lk(mu_);
  return segments_.size();
}

}  // namespace skiff::store
