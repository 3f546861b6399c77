// Machine crashes (power loss) while the store writes, simulated write by
// write. LMDB runs with MDB_NOSYNC between checkpoints, so after a power loss
// data.mdb holds, for every page, any version the page had since the last
// fdatasync: the kernel writes dirty pages back in any order and at any time.
//
// This binary interposes the write calls LMDB makes (pwrite, writev, write,
// fdatasync, fsync — the executable's definitions win over libc's for
// liblmdb.so). For data.mdb it keeps the content as of the last fdatasync and
// every write since. At chosen moments — between commits, and between the
// steps of a checkpoint with commits in between — it builds crash images of
// the data directory: data.mdb with each page at its synced version, its
// newest version, or anything between (only the meta pages new, everything
// but the meta pages new, random per page), the log and the checkpoint
// record as they are. Each image is opened by a child process (a corrupt
// LMDB may crash its reader): it must open, hold exactly the acknowledged
// writes at the acknowledged revision, hash every record, take more writes
// (which reuse free pages) and reopen with them.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "skiff/store/store.h"
#include "store_helpers.h"
#include "store_impl.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
constexpr size_t kPage = 4096;

// ------------------------------------------------------------ the tracker

class Tracker {
 public:
  static Tracker& Get() {
    static Tracker* t = new Tracker;
    return *t;
  }

  // Starts tracking path; its current content counts as synced.
  void Track(const std::string& path) {
    std::lock_guard<std::mutex> lk(mu_);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return;
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    std::ifstream in(path, std::ios::binary);
    durable_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    pending_.clear();
    active_ = true;
  }
  void Stop() {
    std::lock_guard<std::mutex> lk(mu_);
    active_ = false;
    pending_.clear();
  }
  size_t Syncs() {
    std::lock_guard<std::mutex> lk(mu_);
    return syncs_;
  }
  size_t PendingWrites() {
    std::lock_guard<std::mutex> lk(mu_);
    return pending_.size();
  }

  bool Tracked(int fd) {
    if (!active_) return false;
    struct stat st {};
    return ::fstat(fd, &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
  }

  ssize_t Write(int fd, const struct iovec* iov, int cnt, off_t off, bool positioned) {
    auto real = [&]() -> ssize_t {
      if (positioned) {
        if (cnt == 1) return ::syscall(SYS_pwrite64, fd, iov[0].iov_base, iov[0].iov_len, off);
        return ::syscall(SYS_pwritev, fd, iov, cnt, off, 0);
      }
      return ::syscall(SYS_writev, fd, iov, cnt);
    };
    if (!Tracked(fd)) return real();
    std::lock_guard<std::mutex> lk(mu_);
    if (!positioned) off = ::lseek(fd, 0, SEEK_CUR);
    ssize_t n = real();
    if (n <= 0) return n;
    // A write through an O_DSYNC/O_SYNC descriptor is durable on return.
    const int fl = ::fcntl(fd, F_GETFL);
    std::string bytes;
    for (int i = 0; i < cnt && bytes.size() < static_cast<size_t>(n); ++i) {
      bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    }
    bytes.resize(static_cast<size_t>(n));
    if (fl >= 0 && (fl & O_DSYNC)) {
      Apply(durable_, off, bytes);
    } else {
      pending_.push_back({off, std::move(bytes)});
    }
    return n;
  }

  int Sync(int fd, bool data_only) {
    if (!Tracked(fd)) return static_cast<int>(::syscall(data_only ? SYS_fdatasync : SYS_fsync, fd));
    std::lock_guard<std::mutex> lk(mu_);
    int rc = static_cast<int>(::syscall(data_only ? SYS_fdatasync : SYS_fsync, fd));
    if (rc == 0) {
      for (const auto& w : pending_) Apply(durable_, w.off, w.bytes);
      pending_.clear();
      ++syncs_;
    }
    return rc;
  }

  enum class Mode { kSynced, kNewest, kMetaOnly, kAllButMeta, kRandom };

  // data.mdb as a power loss at this moment may leave it.
  std::string Image(Mode mode, uint64_t seed) {
    std::lock_guard<std::mutex> lk(mu_);
    // Every version each touched page had since the last sync, oldest first.
    std::map<size_t, std::vector<std::string>> versions;
    std::string cur = durable_;
    for (const auto& w : pending_) {
      const size_t first = static_cast<size_t>(w.off) / kPage;
      const size_t last = (static_cast<size_t>(w.off) + w.bytes.size() - 1) / kPage;
      for (size_t p = first; p <= last; ++p) {
        if (!versions.contains(p)) versions[p].push_back(PageOf(cur, p));
      }
      Apply(cur, w.off, w.bytes);
      for (size_t p = first; p <= last; ++p) versions[p].push_back(PageOf(cur, p));
    }
    std::mt19937_64 rng(seed);
    std::string out = durable_;
    for (const auto& [p, v] : versions) {
      size_t pick = 0;  // v[0]: the synced version (empty: beyond the synced end)
      const bool meta = p < 2;
      switch (mode) {
        case Mode::kSynced: pick = 0; break;
        case Mode::kNewest: pick = v.size() - 1; break;
        case Mode::kMetaOnly: pick = meta ? v.size() - 1 : 0; break;
        case Mode::kAllButMeta: pick = meta ? 0 : v.size() - 1; break;
        case Mode::kRandom: pick = rng() % v.size(); break;
      }
      if (pick == 0) continue;
      Apply(out, static_cast<off_t>(p * kPage), v[pick]);
    }
    return out;
  }

 private:
  struct W {
    off_t off;
    std::string bytes;
  };
  static void Apply(std::string& f, off_t off, const std::string& b) {
    const size_t end = static_cast<size_t>(off) + b.size();
    if (f.size() < end) f.resize(end, '\0');
    std::memcpy(f.data() + off, b.data(), b.size());
  }
  static std::string PageOf(const std::string& f, size_t p) {
    if (f.size() <= p * kPage) return std::string();
    std::string page = f.substr(p * kPage, kPage);
    page.resize(kPage, '\0');
    return page;
  }

  std::mutex mu_;
  std::atomic<bool> active_{false};
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::string durable_;
  std::vector<W> pending_;
  size_t syncs_ = 0;
};

}  // namespace

// The interposed calls (LMDB uses pwrite, lseek+writev and fdatasync).
extern "C" {
ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  struct iovec v {const_cast<void*>(buf), n};
  return Tracker::Get().Write(fd, &v, 1, off, true);
}
ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  struct iovec v {const_cast<void*>(buf), n};
  return Tracker::Get().Write(fd, &v, 1, off, true);
}
ssize_t write(int fd, const void* buf, size_t n) {
  struct iovec v {const_cast<void*>(buf), n};
  return Tracker::Get().Write(fd, &v, 1, 0, false);
}
ssize_t writev(int fd, const struct iovec* iov, int cnt) { return Tracker::Get().Write(fd, iov, cnt, 0, false); }
int fdatasync(int fd) { return Tracker::Get().Sync(fd, true); }
int fsync(int fd) { return Tracker::Get().Sync(fd, false); }
}

namespace skiff::store {
namespace {

// ------------------------------------------------------------ verification

using KeyMap = std::map<std::string, std::string>;

Options ImageOptions(const std::string& dir) {
  Options o;
  o.data_dir = dir;
  o.wal_segment_bytes = 1 << 20;
  o.checkpoint_interval_ms = 3600 * 1000;
  return o;
}

KeyMap AllKeys(Store* s, absl::Status* st) {
  etcdserverpb::RangeRequest r;
  r.set_key(std::string(1, '\0'));
  r.set_range_end(std::string(1, '\0'));
  auto resp = s->Range(r);
  KeyMap out;
  if (!resp.ok()) {
    *st = resp.status();
    return out;
  }
  for (const auto& kv : resp->kvs()) out[kv.key()] = kv.value();
  return out;
}

// Child process: opens the image in dir and checks it against dir.expect.
// Exit code 0 = recovered exactly; anything else (or a signal) = broken.
int VerifyImage(const std::string& dir) {
  std::ifstream in(dir + ".expect");
  int64_t rev = 0;
  in >> rev;
  KeyMap want;
  std::string k, v;
  while (in >> k >> v) want[k] = v;
  auto fail = [&](int code, const std::string& why) {
    std::fprintf(stderr, "image %s: %s\n", dir.c_str(), why.c_str());
    return code;
  };
  {
    auto s = Store::Open(ImageOptions(dir));
    if (!s.ok()) return fail(2, "open: " + std::string(s.status().message()));
    if ((*s)->Revision() != rev) {
      return fail(3, "revision " + std::to_string((*s)->Revision()) + ", acknowledged " + std::to_string(rev));
    }
    absl::Status st;
    if (AllKeys(s->get(), &st) != want || !st.ok()) return fail(4, "keys differ from the acknowledged ones");
    if (!(*s)->Hash().ok()) return fail(5, "hash (full walk) failed");
    etcdserverpb::HashKVRequest hkv;
    if (!(*s)->HashKV(hkv).ok()) return fail(5, "hashkv failed");
    // More writes on the recovered file: they take pages from its free list.
    for (int t = 0; t < 6; ++t) {
      etcdserverpb::TxnRequest txn;
      for (int i = 0; i < 25; ++i) {
        auto* p = txn.add_success()->mutable_request_put();
        p->set_key("after" + std::to_string(t * 25 + i));
        p->set_value(std::string(200 + 50 * t + i, 'z'));
        want[p->key()] = p->value();
      }
      if (!(*s)->Txn(txn).ok()) return fail(6, "write after recovery failed");
    }
  }
  auto s = Store::Open(ImageOptions(dir));
  if (!s.ok()) return fail(7, "reopen: " + std::string(s.status().message()));
  absl::Status st;
  if (AllKeys(s->get(), &st) != want || !st.ok()) return fail(8, "keys differ after reopen");
  return 0;
}

// ------------------------------------------------------------ the test

// The parameter is Options::lmdb_apply_interval_ms: 0 commits every batch
// to LMDB as its own transaction; otherwise batches reach LMDB only when
// the test applies them (every few requests, many batches per transaction).
class PowerLoss : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    // tmpfs when there is one with room: the tracker models the disk, real
    // flushes would only cost time.
    struct statvfs vfs {};
    const bool shm = ::statvfs("/dev/shm", &vfs) == 0 && vfs.f_bavail * vfs.f_frsize > (uint64_t{256} << 20);
    const fs::path base = shm ? fs::path("/dev/shm") : fs::temp_directory_path();
    root_ = base / "skiff-powerloss";
    fs::create_directories(root_);
    testing::RemoveStale(root_, "");  // leftovers of an earlier crashed run
    dir_ = root_ / std::to_string(::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    Tracker::Get().Stop();
    store_.reset();
    fs::remove_all(dir_);
    std::error_code ec;
    fs::remove(root_, ec);  // only when no other run uses it
  }

  std::string data() const { return (dir_ / "data").string(); }
  std::string lmdb() const { return data() + "/member/skiff/data.mdb"; }

  void Open() {
    Options o;
    o.data_dir = data();
    o.checkpoint_interval_ms = 3600 * 1000;  // checkpoints only when the test runs them
    o.lmdb_apply_interval_ms = GetParam();
    o.wal_segment_bytes = 4 << 20;           // the images copy the log
    o.checkpoint_hook = [this](const char* step) {
      if (on_step_) on_step_(step);
    };
    auto s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    Tracker::Get().Track(lmdb());
  }

  void PutKey(const std::string& k, const std::string& v) {
    etcdserverpb::PutRequest r;
    r.set_key(k);
    r.set_value(v);
    auto resp = store_->Put(r);
    ASSERT_TRUE(resp.ok()) << resp.status();
    want_[k] = v;
    rev_ = resp->header().revision();
  }
  void DeleteKey(const std::string& k) {
    etcdserverpb::DeleteRangeRequest r;
    r.set_key(k);
    auto resp = store_->DeleteRange(r);
    ASSERT_TRUE(resp.ok()) << resp.status();
    if (resp->deleted() > 0) {
      want_.erase(k);
      rev_ = resp->header().revision();
    }
  }
  // A burst of puts and deletes that rewrites and frees pages.
  void Churn(int n) {
    for (int i = 0; i < n; ++i) {
      const int op = next_++;
      // Deferred: apply the logged batches to LMDB every few requests (not
      // inside a checkpoint's steps, which hold the apply lock).
      if (GetParam() > 0 && op % 4 == 3 && !on_step_) {
        ASSERT_TRUE(static_cast<StoreImpl*>(store_.get())->ApplyPending().ok());
      }
      const std::string k = "key" + std::to_string((op * 7) % 53);
      if (op % 5 == 4) {
        DeleteKey(k);
      } else {
        PutKey(k, std::string(100 + (op * 37) % 900, static_cast<char>('a' + op % 26)));
      }
    }
  }

  // Builds the crash images of this moment and checks each in a child.
  void CrashHere(const std::string& moment) {
    using M = Tracker::Mode;
    std::vector<std::pair<M, uint64_t>> modes = {{M::kSynced, 0}, {M::kNewest, 0}, {M::kMetaOnly, 0},
                                                 {M::kAllButMeta, 0}, {M::kRandom, 1}, {M::kRandom, 2}};
    // SKIFF_POWERLOSS_RANDOM=N: N random images per moment (a longer soak).
    if (const char* n = std::getenv("SKIFF_POWERLOSS_RANDOM")) {
      for (uint64_t seed = 3; seed < 3 + std::strtoull(n, nullptr, 10); ++seed) modes.push_back({M::kRandom, seed});
    }
    pending_seen_ = std::max(pending_seen_, Tracker::Get().PendingWrites());
    for (const auto& [mode, seed] : modes) {
      const std::string img = (dir_ / ("img-" + std::to_string(images_++))).string();
      std::string bytes = Tracker::Get().Image(mode, seed + images_);
      fs::create_directories(img + "/member/skiff");
      for (const auto& e : fs::recursive_directory_iterator(data() + "/member/skiff")) {
        const std::string rel = fs::relative(e.path(), data()).string();
        if (e.path().filename() == "data.mdb" || e.path().filename() == "lock.mdb") continue;
        if (e.is_directory()) {
          fs::create_directories(img + "/" + rel);
        } else {
          fs::copy_file(e.path(), img + "/" + rel);
        }
      }
      {
        std::ofstream out(img + "/member/skiff/data.mdb", std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      }
      {
        std::ofstream ex(img + ".expect");
        ex << rev_ << "\n";
        for (const auto& [k, v] : want_) ex << k << " " << v << "\n";
      }
      const std::string exe = fs::read_symlink("/proc/self/exe").string();
      std::vector<char*> argv = {const_cast<char*>(exe.c_str()), const_cast<char*>("--verify-image"),
                                 const_cast<char*>(img.c_str()), nullptr};
      pid_t pid = 0;
      ASSERT_EQ(::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), environ), 0);
      int ws = 0;
      ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
      EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
          << moment << ", image mode " << static_cast<int>(mode) << " seed " << seed << ": "
          << (WIFSIGNALED(ws) ? "reader killed by signal " + std::to_string(WTERMSIG(ws))
                              : "exit " + std::to_string(WEXITSTATUS(ws)));
      fs::remove_all(img);
      fs::remove(img + ".expect");
    }
  }

  fs::path root_, dir_;
  std::unique_ptr<Store> store_;
  std::function<void(const char*)> on_step_;
  KeyMap want_;
  int64_t rev_ = 1;
  int next_ = 0;
  int images_ = 0;
  size_t pending_seen_ = 0;
};

TEST_P(PowerLoss, EveryCrashStateRecoversTheAcknowledgedWrites) {
  ASSERT_NO_FATAL_FAILURE(Open());
  auto* impl = static_cast<StoreImpl*>(store_.get());
  ASSERT_NO_FATAL_FAILURE(Churn(120));
  CrashHere("after 120 unsynced commits");
  // A checkpoint with commits between its steps, and a crash at each step.
  on_step_ = [&](const char* step) {
    Churn(25);
    CrashHere(std::string("checkpoint step ") + step);
  };
  const size_t syncs = Tracker::Get().Syncs();
  ASSERT_TRUE(impl->Checkpoint().ok());
  on_step_ = nullptr;
  EXPECT_GT(Tracker::Get().Syncs(), syncs) << "the checkpoint must fdatasync data.mdb (is the tracker interposed?)";
  ASSERT_NO_FATAL_FAILURE(Churn(150));
  CrashHere("after a checkpoint and 150 more commits");
  // Compaction is not logged; it checkpoints before answering.
  etcdserverpb::CompactionRequest c;
  c.set_revision(rev_ - 20);
  ASSERT_TRUE(store_->Compact(c).ok());
  ASSERT_NO_FATAL_FAILURE(Churn(60));
  CrashHere("after a compaction and 60 more commits");
  // Defragmentation swaps in a new, flushed file (and records it): crashes
  // after it recover the same way.
  ASSERT_TRUE(store_->Defragment().ok());
  Tracker::Get().Track(lmdb());
  ASSERT_NO_FATAL_FAILURE(Churn(60));
  CrashHere("after a defragmentation and 60 more commits");
  // The scenarios above must really have left unsynced LMDB writes behind.
  EXPECT_GT(pending_seen_, 50u);
}

INSTANTIATE_TEST_SUITE_P(LmdbApply, PowerLoss, ::testing::Values(int64_t{0}, int64_t{3600} * 1000),
                         [](const ::testing::TestParamInfo<int64_t>& p) {
                           return p.param == 0 ? std::string("EachBatch") : std::string("Deferred");
                         });

}  // namespace
}  // namespace skiff::store

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--verify-image") return skiff::store::VerifyImage(argv[2]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
