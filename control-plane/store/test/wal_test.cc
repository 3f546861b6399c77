// The write-ahead log in front of LMDB: records LMDB lost are replayed on
// open, a torn or partial tail record is ignored (CRC per record), damage
// before intact records is refused, old segments are dropped by checkpoints.
// "LMDB lost its unflushed tail" is simulated by putting back a copy of
// data.mdb taken earlier, together with its checkpoint record of that moment
// (lmdb.ckpt: the snapshot a restart goes back to; see lmdb_checkpoint.h).
// Machine crashes between checkpoints are simulated write by write in
// powerloss_test.cc.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"
#include "skiff/store/store.h"
#include "store_helpers.h"
#include "wal.h"

namespace skiff::store {
namespace {

namespace fs = std::filesystem;

class Scratch {
 public:
  explicit Scratch(const std::string& tag) {
    testing::RemoveStale(fs::temp_directory_path(), "skiff-wal-test-");
    path_ = fs::temp_directory_path() / ("skiff-wal-test-" + std::to_string(getpid()) + "-" + tag);
    Clean();
  }
  ~Scratch() { Clean(); }
  std::string path() const { return path_.string(); }
  std::string lmdb() const { return path() + "/member/skiff/data.mdb"; }
  std::string ckpt() const { return path() + "/member/skiff/lmdb.ckpt"; }
  std::string wal_dir() const { return path() + "/member/skiff/wal"; }

 private:
  // The directory and the copies tests keep beside it.
  void Clean() {
    for (const char* suffix : {"", "-lmdb.bak", "-lmdb.bak.ckpt", "-wal.bak"}) fs::remove_all(path() + suffix);
  }
  fs::path path_;
};

// LMDB's file and its checkpoint record as of now, and putting them back.
void SaveLmdb(const Scratch& d, const std::string& backup) {
  fs::copy_file(d.lmdb(), backup, fs::copy_options::overwrite_existing);
  fs::copy_file(d.ckpt(), backup + ".ckpt", fs::copy_options::overwrite_existing);
}
void RestoreLmdb(const Scratch& d, const std::string& backup) {
  fs::copy_file(backup, d.lmdb(), fs::copy_options::overwrite_existing);
  fs::copy_file(backup + ".ckpt", d.ckpt(), fs::copy_options::overwrite_existing);
}
void RemoveBackup(const std::string& backup) {
  fs::remove(backup);
  fs::remove(backup + ".ckpt");
}

void SaveWal(const Scratch& d, const std::string& copy) {
  fs::remove_all(copy);
  fs::copy(d.wal_dir(), copy);
}
void RestoreWal(const Scratch& d, const std::string& copy) {
  fs::remove_all(d.wal_dir());
  fs::copy(copy, d.wal_dir());
}

Options NoCheckpoints(const std::string& dir) {
  Options o;
  o.data_dir = dir;
  o.checkpoint_interval_ms = 3600 * 1000;
  return o;
}

std::unique_ptr<Store> Open(const Options& o) { return testing::OpenStore(o.data_dir, o); }
using testing::Put;

std::map<std::string, std::string> All(Store* s) {
  etcdserverpb::RangeRequest r;
  r.set_key(std::string(1, '\0'));
  r.set_range_end(std::string(1, '\0'));
  auto resp = s->Range(r);
  EXPECT_TRUE(resp.ok()) << resp.status();
  std::map<std::string, std::string> out;
  if (resp.ok()) {
    for (const auto& kv : resp->kvs()) out[kv.key()] = kv.value();
  }
  return out;
}

std::vector<std::string> Segments(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".wal") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint32_t Le32(const std::string& b, size_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[off + static_cast<size_t>(i)]);
  return v;
}

std::string ReadAll(const std::string& path) {
  std::string out(static_cast<size_t>(fs::file_size(path)), '\0');
  std::ifstream in(path, std::ios::binary);
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

void WriteAt(const std::string& path, size_t off, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// Offsets of the records in a segment (header: u32 len, u32 crc, u64 seq).
std::vector<size_t> RecordOffsets(const std::string& seg) {
  std::string b = ReadAll(seg);
  std::vector<size_t> out;
  size_t off = 0;
  while (off + 16 <= b.size() && Le32(b, off) != 0) {
    out.push_back(off);
    off += 16 + Le32(b, off);
  }
  out.push_back(off);  // end of the records
  return out;
}

// Writes a, snapshots data.mdb, then writes more (b, c, a lease with d, and
// deletes a) so that only the log holds the later batches.
struct Scenario {
  int64_t lease = 0;
  int64_t rev = 0;
};
Scenario WriteWithStaleLmdbCopy(const Scratch& d, const std::string& backup) {
  Scenario sc;
  auto s = Open(NoCheckpoints(d.path()));
  if (!s) return sc;
  Put(s.get(), "a", "1");
  SaveLmdb(d, backup);
  Put(s.get(), "b", "2");
  Put(s.get(), "c", "3");
  etcdserverpb::LeaseGrantRequest g;
  g.set_ttl(600);
  auto gr = s->LeaseGrant(g);
  EXPECT_TRUE(gr.ok());
  sc.lease = gr.ok() ? gr->id() : 0;
  Put(s.get(), "d", "4", sc.lease);
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("a");
  EXPECT_TRUE(s->DeleteRange(del).ok());
  sc.rev = s->Revision();
  return sc;
}

TEST(WriteAheadLog, RecordChecksumIsCrc32c) {
  // The standard check value, and the same result in pieces of odd sizes
  // (the hardware path takes 8 bytes at a time).
  EXPECT_EQ(Crc32c(0, "123456789", 9), 0xE3069283u);
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  uint32_t whole = Crc32c(0, data.data(), data.size());
  uint32_t parts = Crc32c(Crc32c(0, data.data(), 13), data.data() + 13, data.size() - 13);
  EXPECT_EQ(whole, parts);
  EXPECT_NE(whole, Crc32c(0, data.data(), data.size() - 1));
}

// Appends of every size around the direct-I/O block (4096 bytes), across
// segment rotations, replay exactly: the block holding the log's end is
// rewritten by each append and must keep the records already in it. On
// ext4 (the temp dir) the log writes with O_DIRECT | O_DSYNC; on tmpfs
// (/dev/shm), which refuses O_DIRECT, with pwrite + fdatasync.
void AppendAndReplay(const std::string& root) {
  const std::string dir = root + "/skiff-wal-test-" + std::to_string(getpid()) + "-sizes";
  fs::remove_all(dir);
  std::vector<std::string> payloads;
  for (size_t n : {0, 1, 15, 4063, 4064, 4065, 4080, 4096, 100, 8192, 12345, 3, 70000, 4095, 1}) {
    std::string p(n, '\0');
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<char>('a' + (i + payloads.size()) % 26);
    payloads.push_back(p);
  }
  {
    auto w = Wal::Create(dir, 1, 64 * 1024);  // small segments: several rotations
    ASSERT_TRUE(w.ok()) << w.status();
    for (size_t i = 0; i < payloads.size(); ++i) ASSERT_TRUE((*w)->Append(i + 1, payloads[i]).ok()) << i;
  }
  std::vector<std::string> got;
  uint64_t last = 0;
  ASSERT_TRUE(ReplayWal(dir, 0, [&](uint64_t seq, std::string_view p) {
                EXPECT_EQ(seq, got.size() + 1);
                got.emplace_back(p);
                return absl::OkStatus();
              }, &last).ok());
  EXPECT_EQ(last, payloads.size());
  EXPECT_EQ(got, payloads);
  fs::remove_all(dir);
}

TEST(WriteAheadLog, AppendsOfEverySizeReplayExactlyWithDirectIo) { AppendAndReplay(fs::temp_directory_path()); }

TEST(WriteAheadLog, AppendsOfEverySizeReplayExactlyWithoutDirectIo) {
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  AppendAndReplay("/dev/shm");
}

// The checkpointer prepares the next spare segment while the leader rotates
// onto the current one: the spare must never be reopened (and truncated, and
// zero-filled) once a rotation takes it. Seen under load as "rename
// .../spare.tmp: No such file or directory" and records overwritten by zeros.
TEST(WriteAheadLog, SparePreparedDuringRotationsKeepsEveryRecord) {
  const std::string dir =
      fs::temp_directory_path().string() + "/skiff-wal-test-" + std::to_string(getpid()) + "-spare";
  fs::remove_all(dir);
  const std::string payload(3000, 'r');
  uint64_t appended = 0;
  {
    auto w = Wal::Create(dir, 1, 64 * 1024);  // a rotation every ~21 records
    ASSERT_TRUE(w.ok()) << w.status();
    std::atomic<bool> stop{false};
    std::thread spares([&] {
      while (!stop) (*w)->PrepareSpare();
    });
    for (uint64_t seq = 1; seq <= 3000; ++seq) {
      absl::Status st = (*w)->Append(seq, payload);
      if (!st.ok()) {
        ADD_FAILURE() << "append " << seq << ": " << st;
        break;
      }
      appended = seq;
    }
    stop = true;
    spares.join();
  }
  uint64_t last = 0, count = 0;
  ASSERT_TRUE(ReplayWal(dir, 0, [&](uint64_t seq, std::string_view p) {
                ++count;
                EXPECT_EQ(p, payload) << seq;
                return absl::OkStatus();
              }, &last).ok());
  EXPECT_EQ(appended, 3000u);
  EXPECT_EQ(last, appended);
  EXPECT_EQ(count, appended);
  fs::remove_all(dir);
}

TEST(WriteAheadLog, ReplaysWhatLmdbLost) {
  Scratch d("replay");
  std::string backup = d.path() + "-lmdb.bak";
  Scenario sc = WriteWithStaleLmdbCopy(d, backup);
  ASSERT_GT(sc.rev, 0);
  RestoreLmdb(d, backup);
  RemoveBackup(backup);
  auto s = Open(NoCheckpoints(d.path()));
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Revision(), sc.rev);
  EXPECT_EQ(All(s.get()), (std::map<std::string, std::string>{{"b", "2"}, {"c", "3"}, {"d", "4"}}));
  etcdserverpb::LeaseTimeToLiveRequest t;
  t.set_id(sc.lease);
  t.set_keys(true);
  auto ttl = s->LeaseTimeToLive(t);
  ASSERT_TRUE(ttl.ok());
  EXPECT_EQ(ttl->grantedttl(), 600);
  ASSERT_EQ(ttl->keys_size(), 1);
  EXPECT_EQ(ttl->keys(0), "d");
  // History replayed too: "a" is readable at its old revision.
  etcdserverpb::RangeRequest old;
  old.set_key("a");
  old.set_revision(2);
  auto r = s->Range(old);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs_size(), 1);
  EXPECT_EQ(r->kvs(0).value(), "1");
  EXPECT_EQ(Put(s.get(), "e", "5"), sc.rev + 1);
}

TEST(WriteAheadLog, TornTailRecordIsIgnoredAndLaterWritesSurvive) {
  Scratch d("torn");
  std::string backup = d.path() + "-lmdb.bak";
  Scenario sc = WriteWithStaleLmdbCopy(d, backup);
  ASSERT_GT(sc.rev, 0);
  auto segs = Segments(d.wal_dir());
  ASSERT_EQ(segs.size(), 1u);
  auto offs = RecordOffsets(segs[0]);
  ASSERT_EQ(offs.size(), 7u);  // 6 records (a, b, c, lease, d, delete a) + end
  // A partial record after the last one: a header promising 200 bytes, a
  // wrong CRC and only some of the payload (what a crash mid-write leaves).
  std::string torn(16 + 40, '\x5a');
  torn[0] = static_cast<char>(200);
  torn[1] = torn[2] = torn[3] = 0;
  WriteAt(segs[0], offs.back(), torn);
  RestoreLmdb(d, backup);
  {
    auto s = Open(NoCheckpoints(d.path()));
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->Revision(), sc.rev);
    EXPECT_EQ(All(s.get()), (std::map<std::string, std::string>{{"b", "2"}, {"c", "3"}, {"d", "4"}}));
    SaveLmdb(d, backup);
    // New writes go to a fresh log, not after the torn record.
    EXPECT_EQ(Put(s.get(), "e", "5"), sc.rev + 1);
  }
  // "e" sits in the fresh log and is replayed from there.
  std::string wal_copy = d.path() + "-wal.bak";
  fs::remove_all(wal_copy);
  fs::copy(d.wal_dir(), wal_copy);
  RestoreLmdb(d, backup);
  {
    auto s = Open(NoCheckpoints(d.path()));
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(All(s.get())["e"], "5");
  }
  // The last record itself torn (a flipped payload byte): "e" is the torn
  // batch, so it is gone and the revision is the one before it.
  fs::remove_all(d.wal_dir());
  fs::copy(wal_copy, d.wal_dir());
  fs::remove_all(wal_copy);
  segs = Segments(d.wal_dir());
  ASSERT_EQ(segs.size(), 1u);
  offs = RecordOffsets(segs[0]);
  ASSERT_EQ(offs.size(), 2u);  // the "e" record + end
  std::string b = ReadAll(segs[0]);
  WriteAt(segs[0], offs[0] + 20, std::string(1, static_cast<char>(b[offs[0] + 20] ^ 0xff)));
  RestoreLmdb(d, backup);
  RemoveBackup(backup);
  auto s = Open(NoCheckpoints(d.path()));
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Revision(), sc.rev);
  EXPECT_EQ(All(s.get()).count("e"), 0u);
  EXPECT_EQ(All(s.get()).count("d"), 1u);
}

TEST(WriteAheadLog, SegmentsRotateReplayInOrderAndDamageBeforeIntactRecordsIsRefused) {
  Scratch d("rotate");
  std::string backup = d.path() + "-lmdb.bak";
  std::string wal_copy = d.path() + "-wal.bak";
  Options o = NoCheckpoints(d.path());
  o.wal_segment_bytes = 64 * 1024;
  std::string value(1000, 'v');
  {
    auto s = Open(o);
    ASSERT_NE(s, nullptr);
    Put(s.get(), "first", "x");
    SaveLmdb(d, backup);
    for (int i = 0; i < 200; ++i) Put(s.get(), "k" + std::to_string(i), value);
    SaveWal(d, wal_copy);  // before the close checkpoint drops the segments
  }
  RestoreWal(d, wal_copy);
  auto segs = Segments(d.wal_dir());
  ASSERT_GE(segs.size(), 3u) << "200 KB of records must span several 64 KiB segments";
  RestoreLmdb(d, backup);
  {
    auto s = Open(o);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(All(s.get()).size(), 201u);
    EXPECT_EQ(s->Revision(), 202);
    SaveLmdb(d, backup);
    for (int i = 0; i < 200; ++i) Put(s.get(), "k" + std::to_string(i), value + "w");
    SaveWal(d, wal_copy);
  }
  RestoreWal(d, wal_copy);
  fs::remove_all(wal_copy);
  // Damage a record of the first segment: later segments hold intact,
  // acknowledged records, so opening must fail instead of dropping them.
  segs = Segments(d.wal_dir());
  ASSERT_GE(segs.size(), 2u);
  std::string b = ReadAll(segs[0]);
  WriteAt(segs[0], 20, std::string(1, static_cast<char>(b[20] ^ 0xff)));
  RestoreLmdb(d, backup);
  RemoveBackup(backup);
  o.data_dir = d.path();
  auto s = Store::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
}

TEST(WriteAheadLog, CheckpointsDropOldSegments) {
  Scratch d("ckpt");
  Options o;
  o.data_dir = d.path();
  o.wal_segment_bytes = 64 * 1024;
  o.checkpoint_interval_ms = 20;
  auto s = Open(o);
  ASSERT_NE(s, nullptr);
  std::string value(1000, 'v');
  for (int i = 0; i < 400; ++i) Put(s.get(), "k" + std::to_string(i % 50), value);
  // 400 KB of records went through 64 KiB segments; checkpoints keep only
  // the newest ones.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Segments(d.wal_dir()).size() > 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LE(Segments(d.wal_dir()).size(), 2u);
  s.reset();
  s = Open(o);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Revision(), 401);
  EXPECT_EQ(All(s.get()).size(), 50u);
}

}  // namespace
}  // namespace skiff::store
