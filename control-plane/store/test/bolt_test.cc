// The bbolt snapshot format: our writer's files read back by our reader
// (many keys over several branch levels, values bigger than a page, inline
// buckets), damaged files refused without crashing, and a store's snapshot
// restored in-process with its history, compaction point and leases.
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "bolt.h"
#include "gtest/gtest.h"
#include "skiff/common/unique_fd.h"
#include "store_helpers.h"

namespace skiff::store::testing {
namespace {

namespace fs = std::filesystem;

class BoltFile : public ::testing::Test {
 protected:
  void SetUp() override {
    RemoveStale(fs::temp_directory_path(), "skiff-bolt-test-");
    dir_ = fs::temp_directory_path() / ("skiff-bolt-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  using Buckets = std::map<std::string, std::vector<std::pair<std::string, std::string>>>;

  // Writes `buckets` with our writer and returns the file's bytes.
  std::string Write(const Buckets& buckets, uint32_t page_size = 4096) {
    const std::string path = (dir_ / "w.db").string();
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd) << path;
    bolt::Writer w(fd.get(), page_size);
    // Buckets in reverse order: the writer sorts the root itself.
    for (auto it = buckets.rbegin(); it != buckets.rend(); ++it) {
      EXPECT_TRUE(w.BeginBucket(it->first).ok());
      for (const auto& [k, v] : it->second) EXPECT_TRUE(w.Put(k, v).ok());
      EXPECT_TRUE(w.EndBucket().ok());
    }
    auto size = w.Finish();
    EXPECT_TRUE(size.ok()) << size.status();
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str().size(), size.ok() ? *size : 0);
    return ss.str();
  }

  fs::path dir_;
};

// n keys in transactions of 100 puts (one fsync each, not one per key).
void PutMany(Store* s, int n, const std::string& value) {
  for (int i = 0; i < n;) {
    etcdserverpb::TxnRequest t;
    for (int j = 0; j < 100 && i < n; ++j, ++i) {
      auto* put = t.add_success()->mutable_request_put();
      char b[32];
      std::snprintf(b, sizeof b, "key/%08d", i);
      put->set_key(b);
      put->set_value(value);
    }
    ASSERT_TRUE(s->Txn(t).ok());
  }
}

std::string Key(int i) {
  char b[32];
  std::snprintf(b, sizeof b, "key/%08d", i);
  return b;
}

TEST_F(BoltFile, WriterOutputReadsBackWithManyKeysBigValuesAndEmptyBuckets) {
  Buckets b;
  b["empty"];
  b["small"] = {{"a", "1"}, {"b", "2"}};
  auto& many = b["many"];  // ~200 leaves: two branch levels
  for (int i = 0; i < 20000; ++i) many.emplace_back(Key(i), "v" + std::to_string(i));
  auto& big = b["big"];  // values over one and over several pages: overflow pages
  std::mt19937 rng(7);
  for (int i = 0; i < 40; ++i) {
    std::string v(static_cast<size_t>(i % 5 == 0 ? 3 * 4096 + 17 : i % 3 == 0 ? 5000 : 100), '\0');
    for (auto& c : v) c = static_cast<char>(rng());
    big.emplace_back(Key(i), std::move(v));
  }
  b["one-huge-key"] = {{std::string(9000, 'k'), "x"}};
  const std::string file = Write(b);
  EXPECT_EQ(file.size() % 4096, 0u);
  ASSERT_TRUE(bolt::LooksLikeBolt(file));
  auto db = bolt::Read(file);
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(db->page_size, 4096u);
  EXPECT_EQ(db->buckets, b);
  // Another page size reads back the same.
  auto db2 = bolt::Read(Write(b, 16384));
  ASSERT_TRUE(db2.ok()) << db2.status();
  EXPECT_EQ(db2->buckets, b);
}

TEST_F(BoltFile, ManyBucketsSpillTheRootOverSeveralPages) {
  Buckets b;
  for (int i = 0; i < 600; ++i) b["bucket-" + std::to_string(i)] = {{"k", std::string(50, 'v')}};
  auto db = bolt::Read(Write(b));
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(db->buckets, b);
}

// Keys bigger than a page: branch nodes overflow too, and the tree still
// narrows to one root (each branch takes at least two children).
TEST_F(BoltFile, KeysBiggerThanAPageBuildABranchTree) {
  Buckets b;
  auto& big = b["bigkeys"];
  for (int i = 0; i < 50; ++i) big.emplace_back(Key(i) + std::string(700, 'k'), "v");
  auto db = bolt::Read(Write(b, 512));
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(db->buckets, b);
}

TEST_F(BoltFile, WriterRefusesKeysOutOfOrder) {
  UniqueFd fd(::open((dir_ / "o.db").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  bolt::Writer w(fd.get(), 4096);
  ASSERT_TRUE(w.BeginBucket("b").ok());
  ASSERT_TRUE(w.Put("b", "1").ok());
  EXPECT_FALSE(w.Put("a", "2").ok());
  EXPECT_FALSE(w.Put("b", "2").ok());
  EXPECT_FALSE(w.Finish().ok());  // bucket still open
}

TEST_F(BoltFile, ReaderRefusesDamagedFiles) {
  Buckets b;
  for (int i = 0; i < 3000; ++i) b["key"].emplace_back(Key(i), std::string(40, 'x'));
  const std::string good = Write(b);
  ASSERT_TRUE(bolt::Read(good).ok());
  // Both metas' checksums broken.
  {
    std::string f = good;
    f[16 + 20] ^= 1;
    f[4096 + 16 + 20] ^= 1;
    auto r = bolt::Read(f);
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("meta"), absl::string_view::npos) << r.status();
  }
  // Only meta 1 broken: meta 0 still opens it.
  {
    std::string f = good;
    f[4096 + 16 + 20] ^= 1;
    EXPECT_TRUE(bolt::Read(f).ok());
  }
  // A high-water mark past the file whose page count overflows when
  // multiplied by the page size (found by fuzzing: a 2^60-entry allocation).
  {
    std::string f = good;
    for (size_t off : {size_t{0}, size_t{4096}}) {
      char* m = f.data() + off + 16;
      bolt::StoreLe<uint64_t>(m + 40, (uint64_t{1} << 60) + 1);
      bolt::StoreLe<uint64_t>(m + 56, bolt::Fnv64a(m, 56));
    }
    EXPECT_FALSE(bolt::Read(f).ok());
  }
  // Truncated.
  {
    auto r = bolt::Read(std::string_view(good).substr(0, good.size() - 4096));
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("truncated"), absl::string_view::npos) << r.status();
  }
  // A branch element pointing back at its own page (a cycle) or past the end.
  {
    // The root bucket's value for "key" names its root page.
    auto db_root = [&](const std::string& f) { return bolt::LoadLe<uint64_t>(f.data() + 16 + 16); };
    const uint64_t root = db_root(good);
    const char* rp = good.data() + root * 4096;
    ASSERT_EQ(bolt::LoadLe<uint16_t>(rp + 8), 0x02);  // the root bucket is one leaf
    const uint32_t pos = bolt::LoadLe<uint32_t>(rp + 16 + 4), ks = bolt::LoadLe<uint32_t>(rp + 16 + 8);
    const uint64_t key_root = bolt::LoadLe<uint64_t>(rp + 16 + pos + ks);
    ASSERT_EQ(bolt::LoadLe<uint16_t>(good.data() + key_root * 4096 + 8), 0x01);  // a branch
    for (uint64_t target : {key_root, uint64_t{1} << 40, uint64_t{1}}) {
      std::string f = good;
      char* first = f.data() + key_root * 4096 + 16;
      bolt::StoreLe<uint64_t>(first + 8, target);
      EXPECT_FALSE(bolt::Read(f).ok()) << "child " << target;
    }
  }
  // Random damage anywhere past the metas never crashes the reader (and the
  // sanitizer build checks it never reads out of bounds).
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    std::string f = good;
    for (int j = 0; j < 4; ++j) f[2 * 4096 + rng() % (f.size() - 2 * 4096)] = static_cast<char>(rng());
    (void)bolt::Read(f);
  }
  EXPECT_FALSE(bolt::Read("not a database").ok());
  EXPECT_FALSE(bolt::Read(std::string(8192, '\0')).ok());
}

// ------------------------------------------------------ store round trips

class StoreSnapshot : public BoltFile {
 protected:
  // Takes a snapshot of s into a file (bbolt + SHA-256) and returns its path.
  std::string Save(Store* s, const std::string& name) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    absl::Status st = s->Snapshot([&](const std::string& chunk, uint64_t) {
      out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      return true;
    });
    EXPECT_TRUE(st.ok()) << st;
    return path;
  }
  static etcdserverpb::RangeResponse Get(Store* s, const std::string& key, const std::string& end,
                                         int64_t rev, absl::Status* status = nullptr) {
    etcdserverpb::RangeRequest r;
    r.set_key(key);
    r.set_range_end(end);
    r.set_revision(rev);
    auto resp = s->Range(r);
    if (status != nullptr) *status = resp.status();
    return resp.ok() ? *resp : etcdserverpb::RangeResponse();
  }
};

TEST_F(StoreSnapshot, RestoresHistoryCompactionPointAndLeasesWithTheirKeys) {
  auto s = OpenStore((dir_ / "src").string());
  ASSERT_NE(s, nullptr);
  for (int i = 0; i < 5; ++i) Put(s.get(), "k" + std::to_string(i), "v" + std::to_string(i));  // revs 2..6
  Put(s.get(), "k0", "new");                                                                   // 7
  Put(s.get(), "k1", std::string(10000, 'b'));                                                 // 8, overflow
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("k2");
  ASSERT_TRUE(s->DeleteRange(del).ok());  // 9
  etcdserverpb::LeaseGrantRequest lg;
  lg.set_id(0x1234);
  lg.set_ttl(300);
  ASSERT_TRUE(s->LeaseGrant(lg).ok());
  Put(s.get(), "l1", "a", 0x1234);  // 10
  Put(s.get(), "l2", "b", 0x1234);  // 11
  etcdserverpb::CompactionRequest c;
  c.set_revision(8);
  ASSERT_TRUE(s->Compact(c).ok());
  PutMany(s.get(), 3000, std::string(30, 'x'));  // 12..41: branch pages
  const std::string snap = Save(s.get(), "snap.db");

  // The file is a bbolt database in etcd's schema, with the trailer.
  {
    std::ifstream in(snap, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string f = ss.str();
    ASSERT_EQ(f.size() % 512, 32u);
    auto db = bolt::Read(std::string_view(f).substr(0, f.size() - 32));
    ASSERT_TRUE(db.ok()) << db.status();
    for (const char* b : {"alarm", "auth", "authRoles", "authUsers", "cluster", "key", "lease", "members",
                          "members_removed", "meta"}) {
      EXPECT_EQ(db->buckets.count(b), 1u) << b;
    }
    // After compaction at 8: k0@7 k1@8 k2@4 k3@5 k4@6, the tombstone at 9,
    // l1, l2 and 3000 more.
    EXPECT_EQ(db->buckets["key"].size(), 5u + 3u + 3000u);
    const std::string& tomb = db->buckets["key"][5].first;
    EXPECT_EQ(tomb.size(), 18u);
    EXPECT_EQ(tomb.back(), 't');
    EXPECT_EQ(db->buckets["lease"].size(), 1u);
    EXPECT_EQ(db->buckets["meta"].size(), 3u);  // consistent_index, finishedCompactRev, scheduledCompactRev
  }

  // Into an existing empty dir, named with a trailing slash.
  const std::string restored = (dir_ / "restored").string();
  fs::create_directories(restored);
  ASSERT_TRUE(RestoreSnapshot(snap, restored + "/").ok());
  // A second restore into the same, now full, dir is refused.
  EXPECT_EQ(RestoreSnapshot(snap, restored).code(), absl::StatusCode::kAlreadyExists);
  auto r = OpenStore(restored);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->Revision(), s->Revision());
  for (int64_t rev : {int64_t{8}, int64_t{9}, int64_t{11}, int64_t{0}}) {
    auto a = Get(s.get(), "k", "l", rev), b = Get(r.get(), "k", "l", rev);
    ASSERT_EQ(a.kvs_size(), b.kvs_size()) << rev;
    for (int i = 0; i < a.kvs_size(); ++i) {
      EXPECT_EQ(a.kvs(i).SerializeAsString(), b.kvs(i).SerializeAsString()) << rev;
    }
    EXPECT_EQ(Get(s.get(), std::string(1, '\0'), std::string(1, '\0'), rev).count(),
              Get(r.get(), std::string(1, '\0'), std::string(1, '\0'), rev).count());
  }
  EXPECT_EQ(Get(r.get(), "k1", "", 0).kvs(0).value(), std::string(10000, 'b'));
  absl::Status st;
  Get(r.get(), "k0", "", 7, &st);
  EXPECT_EQ(st.message(), "etcdserver: mvcc: required revision has been compacted");
  etcdserverpb::LeaseTimeToLiveRequest ttl;
  ttl.set_id(0x1234);
  ttl.set_keys(true);
  auto t = r->LeaseTimeToLive(ttl);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->grantedttl(), 300);
  std::vector<std::string> keys(t->keys().begin(), t->keys().end());
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"l1", "l2"}));
  // The restored store takes writes after the restored history.
  EXPECT_EQ(Put(r.get(), "after", "x"), s->Revision() + 1);
}

// A restore that fails leaves neither the data dir nor its staging dir.
void ExpectRefused(const std::string& snap, const fs::path& dir, const std::string& text) {
  absl::Status st = RestoreSnapshot(snap, (dir / "out").string());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(text), absl::string_view::npos) << st;
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename().string().rfind("out", 0), std::string::npos) << e.path();
  }
}

TEST_F(StoreSnapshot, RefusesTruncatedCorruptOrWronglyHashedFilesLeavingNothing) {
  auto s = OpenStore((dir_ / "src").string());
  ASSERT_NE(s, nullptr);
  PutMany(s.get(), 500, "v");
  const std::string snap = Save(s.get(), "snap.db");
  std::ifstream in(snap, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string good = ss.str();
  fs::path bad_dir = dir_ / "bad";
  fs::create_directories(bad_dir);
  auto write = [&](const std::string& bytes) {
    const std::string p = (dir_ / "damaged.db").string();
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
    return p;
  };
  ExpectRefused(write(good.substr(0, good.size() - 100)), bad_dir, "no sha256 trailer");
  ExpectRefused(write(good.substr(0, good.size() - 4096)), bad_dir, "sha256 mismatch");
  std::string flipped = good;
  flipped[5 * 4096 + 100] ^= 0x40;
  ExpectRefused(write(flipped), bad_dir, "sha256 mismatch");
  // A damaged database under a matching hash: the structure check refuses it.
  std::string broken = good.substr(0, good.size() - 32);
  for (size_t off = 3 * 4096; off < broken.size(); off += 4096)
    bolt::StoreLe<uint16_t>(broken.data() + off + 8, 0x77);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(broken.data()), broken.size(), digest);
  broken.append(reinterpret_cast<const char*>(digest), sizeof digest);
  ExpectRefused(write(broken), bad_dir, "not a valid bbolt database");
  ExpectRefused((dir_ / "missing.db").string(), bad_dir, "missing.db");
}

TEST_F(StoreSnapshot, OlderLmdbSnapshotsStillRestore) {
  const std::string src = (dir_ / "src").string();
  {
    auto s = OpenStore(src);
    ASSERT_NE(s, nullptr);
    PutMany(s.get(), 50, "v");
  }
  // What skiff-store streamed before: a compacting LMDB copy + SHA-256.
  const std::string legacy = (dir_ / "legacy.db").string();
  {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    std::unique_ptr<MDB_env, decltype(&mdb_env_close)> owned(env, mdb_env_close);
    mdb_env_set_maxdbs(env, 4);
    ASSERT_EQ(mdb_env_open(env, (src + "/member/skiff").c_str(), MDB_RDONLY, 0600), 0);
    UniqueFd fd(::open(legacy.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    ASSERT_EQ(mdb_env_copyfd2(env, fd.get(), MDB_CP_COMPACT), 0);
  }
  std::ifstream in(legacy, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string file = ss.str();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(file.data()), file.size(), digest);
  file.append(reinterpret_cast<const char*>(digest), sizeof digest);
  std::ofstream(legacy, std::ios::binary | std::ios::trunc) << file;
  const std::string restored = (dir_ / "restored").string();
  ASSERT_TRUE(RestoreSnapshot(legacy, restored).ok());
  auto r = OpenStore(restored);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(Get(r.get(), std::string(1, '\0'), std::string(1, '\0'), 0).count(), 50);
}

TEST_F(StoreSnapshot, BareDatabaseFileRestoresWithSkipHashCheckOnly) {
  auto s = OpenStore((dir_ / "src").string());
  ASSERT_NE(s, nullptr);
  PutMany(s.get(), 200, "v");
  const std::string snap = Save(s.get(), "snap.db");
  std::ifstream in(snap, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  // What a stopped etcd's member/snap/db looks like: the database alone.
  const std::string bare = (dir_ / "bare.db").string();
  std::ofstream(bare, std::ios::binary) << ss.str().substr(0, ss.str().size() - 32);
  fs::path out = dir_ / "out";
  fs::create_directories(out);
  ExpectRefused(bare, out, "--skip-hash-check");
  ASSERT_TRUE(RestoreSnapshot(bare, (out / "restored").string(), /*skip_hash_check=*/true).ok());
  auto r = OpenStore((out / "restored").string());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(Get(r.get(), std::string(1, '\0'), std::string(1, '\0'), 0).count(), 200);
}

// A snapshot taken while writers run is one revision's state: the restored
// store hashes (HashKV) like the source at that revision.
TEST_F(StoreSnapshot, SnapshotUnderConcurrentWritesIsOneRevisionsState) {
  auto s = OpenStore((dir_ / "src").string());
  ASSERT_NE(s, nullptr);
  PutMany(s.get(), 300, "first");
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  struct JoinOnExit {  // also when an assertion returns early
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~JoinOnExit() {
      stop = true;
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } join_on_exit{stop, writers};
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        etcdserverpb::PutRequest r;
        r.set_key(Key((t * 7919 + i) % 300));
        r.set_value("w" + std::to_string(i));
        if (!s->Put(r).ok()) return;
        if (i % 5 == 0) {
          etcdserverpb::DeleteRangeRequest d;
          d.set_key(Key((t * 31 + i) % 300));
          if (!s->DeleteRange(d).ok()) return;
        }
      }
    });
  }
  auto wait_for_rev = [&](int64_t want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (s->Revision() < want && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    return s->Revision() >= want;
  };
  ASSERT_TRUE(wait_for_rev(200)) << "writers stalled";
  const std::string snap = Save(s.get(), "snap.db");
  EXPECT_TRUE(wait_for_rev(s->Revision() + 10)) << "writers stalled";  // so they went on past the snapshot
  stop = true;
  for (auto& w : writers) w.join();
  const std::string restored = (dir_ / "restored").string();
  ASSERT_TRUE(RestoreSnapshot(snap, restored).ok());
  auto r = OpenStore(restored);
  ASSERT_NE(r, nullptr);
  const int64_t rev = r->Revision();
  EXPECT_GE(rev, 200);  // taken once the store had reached revision 200 (possibly exactly then)
  EXPECT_LT(rev, s->Revision());
  etcdserverpb::HashKVRequest h;
  h.set_revision(rev);
  auto a = s->HashKV(h), b = r->HashKV(h);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->hash(), b->hash());
  auto all_a = Get(s.get(), std::string(1, '\0'), std::string(1, '\0'), rev), all_b = Get(r.get(), std::string(1, '\0'), std::string(1, '\0'), 0);
  ASSERT_EQ(all_a.kvs_size(), all_b.kvs_size());
  for (int i = 0; i < all_a.kvs_size(); ++i)
    EXPECT_EQ(all_a.kvs(i).SerializeAsString(), all_b.kvs(i).SerializeAsString());
}

TEST_F(StoreSnapshot, EmptyStoreSnapshotRestoresToAnEmptyStore) {
  auto s = OpenStore((dir_ / "src").string());
  ASSERT_NE(s, nullptr);
  const std::string snap = Save(s.get(), "snap.db");
  ASSERT_TRUE(RestoreSnapshot(snap, (dir_ / "restored").string()).ok());
  auto r = OpenStore((dir_ / "restored").string());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->Revision(), 1);
  EXPECT_EQ(Get(r.get(), std::string(1, '\0'), std::string(1, '\0'), 0).count(), 0);
  EXPECT_EQ(Put(r.get(), "a", "1"), 2);
}

}  // namespace
}  // namespace skiff::store::testing
