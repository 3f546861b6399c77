// Maintenance RPCs by behaviour, not exit code: HashKV (equal for equal
// histories, different after a different write, fixed at a revision,
// following compaction like etcd), Hash, and Defragment (the database
// shrinks after deletes, every key, revision and hash survives, readers keep
// working during the swap, a crash between the swap and its checkpoint
// record recovers).
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "gtest/gtest.h"
#include "skiff/store/errors.h"
#include "skiff/store/store.h"
#include "store_helpers.h"

namespace skiff::store {
namespace {

namespace fs = std::filesystem;
using testing::OpenStore;
using testing::Put;
using testing::RemoveStale;

class Dir {
 public:
  explicit Dir(const std::string& tag) {
    RemoveStale(fs::temp_directory_path(), "skiff-maint-test-");
    path_ = fs::temp_directory_path() / ("skiff-maint-test-" + std::to_string(getpid()) + "-" + tag);
    fs::remove_all(path_);
  }
  ~Dir() { fs::remove_all(path_); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

Options Opts() {
  Options o;
  o.wal_segment_bytes = 1 << 20;
  return o;
}

absl::StatusOr<etcdserverpb::HashKVResponse> HashKV(Store* s, int64_t rev) {
  etcdserverpb::HashKVRequest r;
  r.set_revision(rev);
  return s->HashKV(r);
}

uint32_t HashKVAt(Store* s, int64_t rev) {
  auto h = HashKV(s, rev);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? h->hash() : 0;
}

void Delete(Store* s, const std::string& k, const std::string& end = "") {
  etcdserverpb::DeleteRangeRequest d;
  d.set_key(k);
  d.set_range_end(end);
  ASSERT_TRUE(s->DeleteRange(d).ok());
}

void Compact(Store* s, int64_t rev) {
  etcdserverpb::CompactionRequest c;
  c.set_revision(rev);
  auto r = s->Compact(c);
  ASSERT_TRUE(r.ok()) << r.status();
}

// The same history on any store: puts, overwrites, deletes and a txn.
void History(Store* s) {
  for (int i = 0; i < 10; ++i) Put(s, "k" + std::to_string(i), "v" + std::to_string(i));
  for (int i = 0; i < 10; i += 3) Put(s, "k" + std::to_string(i), "w" + std::to_string(i));
  Delete(s, "k1");
  etcdserverpb::TxnRequest t;
  t.add_success()->mutable_request_put()->set_key("t1");
  t.mutable_success(0)->mutable_request_put()->set_value("x");
  t.add_success()->mutable_request_delete_range()->set_key("k2");
  ASSERT_TRUE(s->Txn(t).ok());
}

// Two independent stores given the same history.
class MaintenanceTwoStores : public ::testing::Test {
 protected:
  void SetUp() override {
    a = OpenStore(da.path(), Opts());
    b = OpenStore(db.path(), Opts());
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    ASSERT_NO_FATAL_FAILURE(History(a.get()));
    ASSERT_NO_FATAL_FAILURE(History(b.get()));
    rev = a->Revision();
    ASSERT_EQ(rev, b->Revision());
  }
  Dir da{"a"}, db{"b"};
  std::unique_ptr<Store> a, b;
  int64_t rev = 0;
};

TEST_F(MaintenanceTwoStores, HashKVIsEqualForEqualHistoriesAndDiffersAfterADifferentWrite) {
  auto ha = HashKV(a.get(), 0);
  auto hb = HashKV(b.get(), 0);
  ASSERT_TRUE(ha.ok() && hb.ok());
  EXPECT_EQ(ha->hash(), hb->hash());
  EXPECT_EQ(ha->hash_revision(), rev);
  EXPECT_NE(ha->hash(), 0u);
  for (int64_t r = 2; r <= rev; ++r) EXPECT_EQ(HashKVAt(a.get(), r), HashKVAt(b.get(), r)) << "revision " << r;
  // Each revision has its own hash.
  EXPECT_NE(HashKVAt(a.get(), rev - 1), HashKVAt(a.get(), rev));

  // Same key, different values: the stores diverge at rev + 1 only.
  Put(a.get(), "k5", "left");
  Put(b.get(), "k5", "right");
  EXPECT_NE(HashKVAt(a.get(), 0), HashKVAt(b.get(), 0));
  EXPECT_EQ(HashKVAt(a.get(), rev), HashKVAt(b.get(), rev));
  // A different key with the same value diverges too.
  Put(a.get(), "p", "same");
  Put(b.get(), "q", "same");
  EXPECT_NE(HashKVAt(a.get(), rev + 2), HashKVAt(b.get(), rev + 2));
}

TEST_F(MaintenanceTwoStores, HashKVAtARevisionIgnoresLaterWritesRestartsAndFollowsCompaction) {
  const uint32_t at_rev = HashKVAt(a.get(), rev);
  for (Store* s : {a.get(), b.get()}) {
    for (int i = 0; i < 20; ++i) Put(s, "later" + std::to_string(i % 4), std::to_string(i));
  }
  EXPECT_EQ(HashKVAt(a.get(), rev), at_rev) << "writes after a revision change its hash";
  a.reset();
  a = OpenStore(da.path(), Opts());
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(HashKVAt(a.get(), rev), at_rev) << "a restart changes the hash";

  // Compaction: the hash covers what the compaction keeps, so stores that
  // compacted at the same revision agree (what etcd checks between members),
  // and the response names the compact revision.
  const int64_t c = rev - 3;
  Compact(a.get(), c);
  Compact(b.get(), c);
  auto ha = HashKV(a.get(), rev);
  auto hb = HashKV(b.get(), rev);
  ASSERT_TRUE(ha.ok() && hb.ok());
  EXPECT_EQ(ha->hash(), hb->hash());
  EXPECT_EQ(ha->compact_revision(), c);
  EXPECT_EQ(HashKVAt(a.get(), 0), HashKVAt(b.get(), 0));
  // Later writes still leave the hash at rev alone.
  Put(a.get(), "after-compaction", "1");
  EXPECT_EQ(HashKVAt(a.get(), rev), hb->hash());
  // Before the compact revision: etcd's compacted error; future: etcd's.
  auto old = HashKV(a.get(), c - 1);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().message(), "etcdserver: mvcc: required revision has been compacted");
  auto future = HashKV(a.get(), a->Revision() + 5);
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.status().message(), "etcdserver: mvcc: required revision is a future revision");
}

TEST(Maintenance, HashCoversTheWholeDatabaseAndIsStable) {
  Dir d("hash");
  auto s = OpenStore(d.path(), Opts());
  ASSERT_NE(s, nullptr);
  History(s.get());
  auto h1 = s->Hash();
  ASSERT_TRUE(h1.ok());
  etcdserverpb::RangeRequest r;
  r.set_key("k0");
  ASSERT_TRUE(s->Range(r).ok());
  EXPECT_EQ(s->Hash()->hash(), h1->hash()) << "a read changed the hash";
  s.reset();
  s = OpenStore(d.path(), Opts());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Hash()->hash(), h1->hash()) << "a restart changed the hash";
  // A lease is in the database too (not in the key space HashKV covers).
  const uint32_t kv_before = HashKVAt(s.get(), 0);
  etcdserverpb::LeaseGrantRequest g;
  g.set_ttl(600);
  ASSERT_TRUE(s->LeaseGrant(g).ok());
  EXPECT_NE(s->Hash()->hash(), h1->hash());
  EXPECT_EQ(HashKVAt(s.get(), 0), kv_before);
}

int64_t DbSize(Store* s) {
  auto st = s->Status();
  EXPECT_TRUE(st.ok());
  return st.ok() ? st->dbsize() : 0;
}

std::map<std::string, std::pair<std::string, int64_t>> Keys(Store* s) {
  etcdserverpb::RangeRequest r;
  r.set_key(std::string(1, '\0'));
  r.set_range_end(std::string(1, '\0'));
  auto resp = s->Range(r);
  EXPECT_TRUE(resp.ok()) << resp.status();
  std::map<std::string, std::pair<std::string, int64_t>> out;
  if (resp.ok()) {
    for (const auto& kv : resp->kvs()) out[kv.key()] = {kv.value(), kv.mod_revision()};
  }
  return out;
}

TEST(Maintenance, DefragmentShrinksTheDatabaseAfterDeletesAndKeepsEverything) {
  Dir d("defrag");
  const std::string ckpt = d.path() + "/member/skiff/lmdb.ckpt";
  auto s = OpenStore(d.path(), Opts());
  ASSERT_NE(s, nullptr);
  for (int i = 0; i < 20; ++i) Put(s.get(), "keep/" + std::to_string(i), "value" + std::to_string(i));
  // ~8 MB in 40 txns of 100 puts of 2 KiB, then all deleted and compacted.
  const std::string big(2048, 'b');
  for (int t = 0; t < 40; ++t) {
    etcdserverpb::TxnRequest txn;
    for (int i = 0; i < 100; ++i) {
      auto* p = txn.add_success()->mutable_request_put();
      p->set_key("bulk/" + std::to_string(t * 100 + i));
      p->set_value(big);
    }
    ASSERT_TRUE(s->Txn(txn).ok());
  }
  Delete(s.get(), "bulk/", "bulk0");
  Compact(s.get(), s->Revision());
  const int64_t before = DbSize(s.get());
  ASSERT_GT(before, 8 << 20);
  const auto keys = Keys(s.get());
  ASSERT_EQ(keys.size(), 20u);
  const int64_t rev = s->Revision();
  const uint32_t hkv = HashKVAt(s.get(), 0);

  // Readers keep going while the environment is swapped.
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, read_errors{0};
  std::thread reader([&] {
    etcdserverpb::RangeRequest r;
    r.set_key("keep/");
    r.set_range_end("keep0");
    while (!stop) {
      auto resp = s->Range(r);
      if (!resp.ok() || resp->kvs_size() != 20) read_errors++;
      reads++;
    }
  });
  auto df = s->Defragment();
  stop = true;
  reader.join();
  ASSERT_TRUE(df.ok()) << df.status();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(read_errors.load(), 0);

  const int64_t after = DbSize(s.get());
  EXPECT_LT(after, before / 4) << "before " << before << " after " << after;
  EXPECT_EQ(Keys(s.get()), keys);
  EXPECT_EQ(s->Revision(), rev);
  EXPECT_EQ(HashKVAt(s.get(), 0), hkv);
  // Writes, history reads and a restart work on the new file.
  Put(s.get(), "keep/new", "n");
  etcdserverpb::RangeRequest old;
  old.set_key("keep/0");
  old.set_revision(rev);
  ASSERT_EQ(s->Range(old)->kvs_size(), 1);
  auto with_new = Keys(s.get());
  s.reset();
  s = OpenStore(d.path(), Opts());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(Keys(s.get()), with_new);
  EXPECT_LT(DbSize(s.get()), before / 4);
  s.reset();

  // A crash after the swap but before the new checkpoint record: the old
  // record was dropped before the rename, so there is none, and the new
  // (flushed) file opens as it is.
  fs::resize_file(ckpt, 0);
  s = OpenStore(d.path(), Opts());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(Keys(s.get()), with_new);
}

}  // namespace
}  // namespace skiff::store
