// Unit tests of the engine through its in-process API (the same calls the
// gRPC adapter makes): MVCC index, ranges, txns, compaction, restart,
// watch fan-out, leases, quota.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "gtest/gtest.h"
#include "mvcc_index.h"
#include "skiff/store/server.h"
#include "skiff/store/store.h"
#include "store_helpers.h"
#include "store_impl.h"

namespace skiff::store {
namespace {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("skiff-store-test-" + std::to_string(getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

using testing::OpenStore;
using testing::Put;

etcdserverpb::RangeResponse Get(Store* s, const std::string& k, const std::string& end = "", int64_t rev = 0) {
  RangeRequest r;
  r.set_key(k);
  r.set_range_end(end);
  r.set_revision(rev);
  auto resp = s->Range(r);
  EXPECT_TRUE(resp.ok()) << resp.status();
  return resp.ok() ? *resp : etcdserverpb::RangeResponse{};
}

TEST(MvccIndex, ShowsTheEntryVisibleAtEachRevision) {
  MvccIndex idx;
  idx.Append("a", {2, 2, 1, 0, 0, false});
  idx.Append("a", {4, 2, 2, 0, 0, false});
  idx.Append("a", {6, 0, 0, 0, 0, true});
  idx.Append("a", {8, 8, 1, 0, 0, false});
  EXPECT_EQ(idx.Get("a", 1), nullptr);
  EXPECT_EQ(idx.Get("a", 3)->main, 2);
  EXPECT_EQ(idx.Get("a", 5)->version, 2);
  EXPECT_EQ(idx.Get("a", 7), nullptr);
  EXPECT_EQ(idx.Get("a", 0)->create, 8);
}

TEST(MvccIndex, CompactionKeepsNewestLiveEntryAndDropsTombstones) {
  MvccIndex idx;
  idx.Append("a", {2, 2, 1, 0, 0, false});
  idx.Append("a", {4, 2, 2, 0, 0, false});
  idx.Append("b", {3, 3, 1, 0, 0, false});
  idx.Append("b", {5, 0, 0, 0, 0, true});
  std::vector<Revision> removed;
  idx.Compact(5, &removed);
  EXPECT_EQ(removed.size(), 3u);  // a@2, b@3, b@5 (tombstone)
  EXPECT_EQ(idx.Get("a", 5)->main, 4);
  EXPECT_EQ(idx.TotalKeys(), 1u);
}

TEST(Store, PutTracksCreateModAndVersion) {
  TempDir d;
  auto s = OpenStore(d.path());
  EXPECT_EQ(Put(s.get(), "k", "1"), 2);
  EXPECT_EQ(Put(s.get(), "k", "2"), 3);
  auto r = Get(s.get(), "k");
  ASSERT_EQ(r.kvs_size(), 1);
  EXPECT_EQ(r.kvs(0).create_revision(), 2);
  EXPECT_EQ(r.kvs(0).mod_revision(), 3);
  EXPECT_EQ(r.kvs(0).version(), 2);
  EXPECT_EQ(r.kvs(0).value(), "2");
  EXPECT_EQ(Get(s.get(), "k", "", 2).kvs(0).value(), "1");
}

TEST(Store, RangeHonoursPrefixLimitSortAndFilters) {
  TempDir d;
  auto s = OpenStore(d.path());
  for (const char* k : {"p/c", "p/a", "p/b", "q"}) Put(s.get(), k, std::string("v") + k);
  auto all = Get(s.get(), "p/", "p0");
  ASSERT_EQ(all.kvs_size(), 3);
  EXPECT_EQ(all.kvs(0).key(), "p/a");
  RangeRequest r;
  r.set_key("p/");
  r.set_range_end("p0");
  r.set_limit(2);
  auto lim = s->Range(r);
  ASSERT_TRUE(lim.ok());
  EXPECT_EQ(lim->kvs_size(), 2);
  EXPECT_TRUE(lim->more());
  EXPECT_EQ(lim->count(), 3);
  r.set_sort_order(RangeRequest::DESCEND);
  r.set_sort_target(RangeRequest::MOD);
  auto sorted = s->Range(r);
  ASSERT_TRUE(sorted.ok());
  EXPECT_EQ(sorted->kvs(0).key(), "p/b");
  RangeRequest fk;
  fk.set_key("p/b");
  fk.set_range_end(std::string(1, '\0'));
  fk.set_keys_only(true);
  auto from = s->Range(fk);
  ASSERT_TRUE(from.ok());
  ASSERT_EQ(from->kvs_size(), 3);
  EXPECT_TRUE(from->kvs(0).value().empty());
  RangeRequest co;
  co.set_key("p/");
  co.set_range_end("p0");
  co.set_count_only(true);
  co.set_min_mod_revision(3);
  EXPECT_EQ(s->Range(co)->count(), 3);
  EXPECT_EQ(s->Range(co)->kvs_size(), 0);
  RangeRequest future;
  future.set_key("q");
  future.set_revision(100);
  EXPECT_EQ(s->Range(future).status().message(), "etcdserver: mvcc: required revision is a future revision");
}

TEST(Store, TxnComparesAndRunsNestedBranchesAtomically) {
  TempDir d;
  auto s = OpenStore(d.path());
  Put(s.get(), "a", "1");
  etcdserverpb::TxnRequest t;
  auto* c = t.add_compare();
  c->set_key("a");
  c->set_target(Compare::VALUE);
  c->set_result(Compare::EQUAL);
  c->set_value("1");
  auto* p = t.add_success()->mutable_request_put();
  p->set_key("b");
  p->set_value("2");
  auto* nested = t.add_success()->mutable_request_txn();
  auto* nc = nested->add_compare();
  nc->set_key("b");
  nc->set_target(Compare::VERSION);
  nc->set_result(Compare::GREATER);
  nc->set_version(0);
  nested->add_success()->mutable_request_put()->set_key("c");
  nested->add_success()->mutable_request_range()->set_key("b");
  auto resp = s->Txn(t);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_TRUE(resp->succeeded());
  EXPECT_EQ(resp->header().revision(), 3);  // one revision for the whole txn
  EXPECT_TRUE(resp->responses(1).response_txn().succeeded());
  EXPECT_EQ(resp->responses(1).response_txn().responses(1).response_range().kvs(0).value(), "2");
  EXPECT_EQ(Get(s.get(), "c").kvs(0).mod_revision(), 3);

  etcdserverpb::TxnRequest big;
  for (int i = 0; i < 129; ++i) big.add_success()->mutable_request_put()->set_key("k" + std::to_string(i));
  EXPECT_EQ(s->Txn(big).status().message(), "etcdserver: too many operations in txn request");
  etcdserverpb::TxnRequest dup;
  dup.add_success()->mutable_request_put()->set_key("x");
  dup.add_success()->mutable_request_put()->set_key("x");
  EXPECT_EQ(s->Txn(dup).status().message(), "etcdserver: duplicate key given in txn request");
}

TEST(Store, CompactionRemovesHistoryAndReportsEtcdError) {
  TempDir d;
  auto s = OpenStore(d.path());
  Put(s.get(), "a", "1");          // 2
  Put(s.get(), "a", "2");          // 3
  Put(s.get(), "b", "1");          // 4
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("b");
  ASSERT_TRUE(s->DeleteRange(del).ok());  // 5
  etcdserverpb::CompactionRequest c;
  c.set_revision(5);
  c.set_physical(true);
  ASSERT_TRUE(s->Compact(c).ok());
  RangeRequest old;
  old.set_key("a");
  old.set_revision(3);
  EXPECT_EQ(s->Range(old).status().message(), "etcdserver: mvcc: required revision has been compacted");
  EXPECT_EQ(s->Range(old).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Get(s.get(), "a", "", 5).kvs(0).value(), "2");
  EXPECT_EQ(s->Compact(c).status().message(), "etcdserver: mvcc: required revision has been compacted");
}

TEST(Store, RestartRecoversDataRevisionAndCompaction) {
  TempDir d;
  {
    auto s = OpenStore(d.path());
    for (int i = 0; i < 100; ++i) Put(s.get(), "k" + std::to_string(i % 10), std::to_string(i));
    etcdserverpb::DeleteRangeRequest del;
    del.set_key("k9");
    ASSERT_TRUE(s->DeleteRange(del).ok());
  }
  auto s = OpenStore(d.path());
  EXPECT_EQ(s->Revision(), 102);
  EXPECT_EQ(Get(s.get(), "k3").kvs(0).value(), "93");
  EXPECT_EQ(Get(s.get(), "k3").kvs(0).version(), 10);
  EXPECT_EQ(Get(s.get(), "k9").kvs_size(), 0);
  EXPECT_EQ(Put(s.get(), "z", "1"), 103);
}

TEST(Store, ConcurrentWritersShareCommits) {
  TempDir d;
  auto s = OpenStore(d.path());
  std::vector<std::thread> ts;
  for (int t = 0; t < 32; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) Put(s.get(), "t" + std::to_string(t) + "/" + std::to_string(i), "v");
    });
  }
  for (auto& t : ts) t.join();
  Metrics m = s->GetMetrics();
  EXPECT_EQ(m.committed_requests, 640);
  EXPECT_LT(m.commits, 640) << "every put paid its own fsync: no group commit";
  EXPECT_EQ(s->Revision(), 641);
}

std::vector<etcdserverpb::WatchResponse> Drain(WatchStream* w, size_t want_events, int timeout_ms = 5000) {
  std::vector<etcdserverpb::WatchResponse> out;
  size_t events = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (events < want_events && std::chrono::steady_clock::now() < deadline) {
    etcdserverpb::WatchResponse r;
    bool closed = false;
    if (w->NextFor(&r, 200, &closed)) {
      events += static_cast<size_t>(r.events_size());
      out.push_back(r);
    }
    if (closed) break;
  }
  return out;
}

TEST(Watch, DeliversHistoryThenLiveEventsWithPrevKv) {
  TempDir d;
  auto s = OpenStore(d.path());
  Put(s.get(), "w/a", "1");  // 2
  Put(s.get(), "w/a", "2");  // 3
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("w/");
  c.set_range_end("w0");
  c.set_start_revision(2);
  c.set_prev_kv(true);
  ws->Create(c);
  Put(s.get(), "other", "x");  // 4, not watched
  Put(s.get(), "w/b", "3");    // 5
  auto rs = Drain(ws.get(), 3);
  std::vector<int64_t> revs;
  for (const auto& r : rs) {
    for (const auto& e : r.events()) revs.push_back(e.kv().mod_revision());
  }
  ASSERT_TRUE(rs[0].created());
  EXPECT_EQ(revs, (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(rs[1].events(1).prev_kv().value(), "1");
}

// An embedder may drop the store before a watch stream it still holds: the
// stream's reader wakes with "closed", and later calls on it (and its
// destructor) do not touch the freed store (ASan in CI catches it if they do).
TEST(Watch, StreamThatOutlivesItsStoreEndsCleanly) {
  TempDir d;
  auto s = OpenStore(d.path());
  Put(s.get(), "w/a", "1");
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("w/");
  c.set_range_end("w0");
  c.set_start_revision(1);
  ws->Create(c);
  etcdserverpb::WatchResponse r;
  ASSERT_TRUE(ws->Next(&r));
  ASSERT_TRUE(r.created());
  ASSERT_TRUE(ws->Next(&r));
  ASSERT_EQ(r.events_size(), 1);
  std::atomic<bool> reader_done{false};
  std::thread reader([&] {
    etcdserverpb::WatchResponse x;
    while (ws->Next(&x)) {
    }
    reader_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the reader waits in Next
  EXPECT_FALSE(reader_done);
  s.reset();
  reader.join();
  EXPECT_TRUE(reader_done);
  ws->Create(c);
  ws->Cancel(0);
  ws->RequestProgress();
  bool closed = false;
  EXPECT_FALSE(ws->NextFor(&r, 10, &closed));
  EXPECT_TRUE(closed);
  ws.reset();
}

TEST(Watch, CompactedStartRevisionCancelsWithCompactRevision) {
  TempDir d;
  auto s = OpenStore(d.path());
  for (int i = 0; i < 5; ++i) Put(s.get(), "k", std::to_string(i));
  etcdserverpb::CompactionRequest cr;
  cr.set_revision(4);
  ASSERT_TRUE(s->Compact(cr).ok());
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("k");
  c.set_start_revision(2);
  ws->Create(c);
  etcdserverpb::WatchResponse r;
  bool closed;
  ASSERT_TRUE(ws->NextFor(&r, 2000, &closed));
  EXPECT_TRUE(r.created());
  ASSERT_TRUE(ws->NextFor(&r, 2000, &closed));
  EXPECT_TRUE(r.canceled());
  EXPECT_EQ(r.compact_revision(), 4);
}

TEST(Watch, SlowWatcherStallsNeitherWritersNorOtherWatchers) {
  TempDir d;
  auto s = OpenStore(d.path());
  auto slow = s->NewWatchStream();
  auto fast = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("k");
  c.set_range_end(std::string(1, '\0'));
  slow->Create(c);
  fast->Create(c);
  constexpr int kWrites = 3000;
  std::atomic<int> fast_events{0};
  std::vector<int64_t> fast_revs;
  std::thread reader([&] {
    for (const auto& r : Drain(fast.get(), kWrites, 60000)) {
      for (const auto& e : r.events()) fast_revs.push_back(e.kv().mod_revision());
    }
  });
  std::vector<std::thread> ws;
  for (int t = 0; t < 8; ++t) {
    ws.emplace_back([&, t] {
      for (int i = 0; i < kWrites / 8; ++i) Put(s.get(), "k" + std::to_string(t), std::to_string(i));
    });
  }
  for (auto& t : ws) t.join();
  reader.join();
  ASSERT_EQ(fast_revs.size(), static_cast<size_t>(kWrites));
  EXPECT_TRUE(std::is_sorted(fast_revs.begin(), fast_revs.end()));
  // The slow stream never read while 3000 revisions went by; it fell back to
  // history and still sees every event, in order, with no gap.
  EXPECT_GE(s->GetMetrics().slow_watchers, 1);
  std::vector<int64_t> slow_revs;
  for (const auto& r : Drain(slow.get(), kWrites, 20000)) {
    for (const auto& e : r.events()) slow_revs.push_back(e.kv().mod_revision());
  }
  EXPECT_EQ(slow_revs, fast_revs);
}

TEST(Watch, FiltersAndProgressRequest) {
  TempDir d;
  auto s = OpenStore(d.path());
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("f");
  c.add_filters(etcdserverpb::WatchCreateRequest::NOPUT);
  ws->Create(c);
  Put(s.get(), "f", "1");
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("f");
  ASSERT_TRUE(s->DeleteRange(del).ok());
  auto rs = Drain(ws.get(), 1);
  ASSERT_EQ(rs.size(), 2u);
  ASSERT_EQ(rs[1].events_size(), 1);
  EXPECT_EQ(rs[1].events(0).type(), mvccpb::Event::DELETE);
  ws->RequestProgress();
  etcdserverpb::WatchResponse r;
  bool closed;
  ASSERT_TRUE(ws->NextFor(&r, 2000, &closed));
  EXPECT_EQ(r.watch_id(), -1);
  EXPECT_EQ(r.header().revision(), 3);
}

// A progress response at revision R promises every event up to R was sent:
// under concurrent writes, no event at or below the last progress revision may
// arrive after it (the API server's watch cache drops such events).
TEST(Watch, ProgressResponseNeverOvertakesQueuedEvents) {
  TempDir d;
  auto s = OpenStore(d.path());
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("p/");
  c.set_range_end("p0");
  ws->Create(c);
  etcdserverpb::WatchResponse r;
  bool closed = false;
  ASSERT_TRUE(ws->NextFor(&r, 2000, &closed));  // created
  constexpr int kWrites = 3000;
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&, t] {
      for (int i = t; i < kWrites; i += 8) Put(s.get(), "p/" + std::to_string(i % 50), "v");
    });
  }
  int events = 0;
  int64_t progress = 0;
  int violations = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (events < kWrites && std::chrono::steady_clock::now() < deadline) {
    ws->RequestProgress();
    for (int n = 0; n < 2 && ws->NextFor(&r, 100, &closed); ++n) {
      if (r.watch_id() == -1) {
        progress = std::max(progress, r.header().revision());
        continue;
      }
      for (const auto& ev : r.events()) {
        if (ev.kv().mod_revision() <= progress) ++violations;
        ++events;
      }
    }
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(events, kWrites);
  EXPECT_EQ(violations, 0) << "events arrived after a progress response that covered them";
}

// Several watchers on one stream: each gets its own events under its own ID,
// a big revision is split into fragments only for the watcher that asked,
// a cancelled watcher gets nothing more, and progress_notify watchers get
// periodic progress responses while idle.
TEST(Watch, ManyWatchersOnOneStreamFragmentsCancelAndProgressNotify) {
  TempDir d;
  Options o;
  o.progress_notify_interval_ms = 200;
  auto s = OpenStore(d.path(), o);
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c0, c1, c2;
  c0.set_key("m/");
  c0.set_range_end("m0");
  c0.set_fragment(true);
  c1.set_key("m/");
  c1.set_range_end("m0");
  c2.set_key("n");
  c2.set_progress_notify(true);
  for (const auto* c : {&c0, &c1, &c2}) ws->Create(*c);
  etcdserverpb::WatchResponse r;
  bool closed = false;
  for (int id = 0; id < 3; ++id) {
    ASSERT_TRUE(ws->NextFor(&r, 2000, &closed));
    EXPECT_TRUE(r.created());
    EXPECT_EQ(r.watch_id(), id);
  }
  // One txn writes 3 x 450 KB: over the 1 MiB response size, so watcher 0
  // (fragment) gets it in two responses, watcher 1 in one.
  etcdserverpb::TxnRequest txn;
  for (const char* k : {"m/a", "m/b", "m/c"}) {
    auto* p = txn.add_success()->mutable_request_put();
    p->set_key(k);
    p->set_value(std::string(450 * 1000, 'f'));
  }
  auto tr = s->Txn(txn);
  ASSERT_TRUE(tr.ok()) << tr.status();
  const int64_t big = tr->header().revision();
  std::map<int64_t, std::vector<etcdserverpb::WatchResponse>> by_id;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((by_id[0].size() < 2 || by_id[1].empty()) && std::chrono::steady_clock::now() < deadline) {
    if (ws->NextFor(&r, 200, &closed) && r.events_size() > 0) by_id[r.watch_id()].push_back(r);
  }
  ASSERT_EQ(by_id[0].size(), 2u);
  EXPECT_TRUE(by_id[0][0].fragment());
  EXPECT_FALSE(by_id[0][1].fragment());
  EXPECT_EQ(by_id[0][0].events_size() + by_id[0][1].events_size(), 3);
  ASSERT_EQ(by_id[1].size(), 1u);
  EXPECT_EQ(by_id[1][0].events_size(), 3);
  EXPECT_EQ(by_id[1][0].header().revision(), big);
  EXPECT_EQ(by_id.count(2), 0u);

  ws->Cancel(1);
  ASSERT_TRUE(ws->NextFor(&r, 2000, &closed));
  EXPECT_TRUE(r.canceled());
  EXPECT_EQ(r.watch_id(), 1);
  const int64_t after = Put(s.get(), "m/x", "1");
  // Watcher 0 gets the put; watcher 2 (idle, progress_notify) gets progress
  // responses; watcher 1 gets nothing.
  bool got0 = false, progress2 = false;
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!(got0 && progress2) && std::chrono::steady_clock::now() < deadline) {
    if (!ws->NextFor(&r, 200, &closed)) continue;
    EXPECT_NE(r.watch_id(), 1) << "a cancelled watcher got a response";
    if (r.watch_id() == 0 && r.events_size() == 1) got0 = r.events(0).kv().mod_revision() == after;
    if (r.watch_id() == 2 && r.events_size() == 0 && r.header().revision() >= after) progress2 = true;
  }
  EXPECT_TRUE(got0);
  EXPECT_TRUE(progress2);
}

TEST(Lease, ExpiryDeletesAttachedKeysAndNotifiesWatchers) {
  TempDir d;
  Options o;
  o.min_lease_ttl_s = 1;
  auto s = OpenStore(d.path(), o);
  etcdserverpb::LeaseGrantRequest g;
  g.set_ttl(1);
  auto lease = s->LeaseGrant(g);
  ASSERT_TRUE(lease.ok());
  Put(s.get(), "l/a", "1", lease->id());
  Put(s.get(), "l/b", "1", lease->id());
  etcdserverpb::LeaseTimeToLiveRequest ttl;
  ttl.set_id(lease->id());
  ttl.set_keys(true);
  EXPECT_EQ(s->LeaseTimeToLive(ttl)->keys_size(), 2);
  auto ws = s->NewWatchStream();
  etcdserverpb::WatchCreateRequest c;
  c.set_key("l/");
  c.set_range_end("l0");
  ws->Create(c);
  auto rs = Drain(ws.get(), 2, 5000);
  size_t deletes = 0;
  for (const auto& r : rs) {
    for (const auto& e : r.events()) deletes += e.type() == mvccpb::Event::DELETE;
  }
  EXPECT_EQ(deletes, 2u);
  EXPECT_EQ(Get(s.get(), "l/", "l0").kvs_size(), 0);
  EXPECT_EQ(s->LeaseTimeToLive(ttl)->ttl(), -1);
  etcdserverpb::PutRequest p;
  p.set_key("x");
  p.set_lease(lease->id());
  EXPECT_EQ(s->Put(p).status().message(), "etcdserver: requested lease not found");
  etcdserverpb::LeaseRevokeRequest rv;
  rv.set_id(lease->id());
  EXPECT_EQ(s->LeaseRevoke(rv).status().code(), absl::StatusCode::kNotFound);
}

TEST(Lease, KeepAliveExtendsAndLeasesSurviveRestart) {
  TempDir d;
  int64_t id;
  {
    auto s = OpenStore(d.path());
    etcdserverpb::LeaseGrantRequest g;
    g.set_ttl(30);
    auto lease = s->LeaseGrant(g);
    ASSERT_TRUE(lease.ok());
    id = lease->id();
    Put(s.get(), "kept", "1", id);
    etcdserverpb::LeaseKeepAliveRequest ka;
    ka.set_id(id);
    EXPECT_EQ(s->LeaseKeepAlive(ka)->ttl(), 30);
    ka.set_id(12345);
    EXPECT_EQ(s->LeaseKeepAlive(ka)->ttl(), 0);
  }
  auto s = OpenStore(d.path());
  EXPECT_EQ(s->LeaseLeases({})->leases_size(), 1);
  etcdserverpb::LeaseTimeToLiveRequest ttl;
  ttl.set_id(id);
  ttl.set_keys(true);
  auto t = s->LeaseTimeToLive(ttl);
  EXPECT_EQ(t->grantedttl(), 30);
  ASSERT_EQ(t->keys_size(), 1);
  EXPECT_EQ(t->keys(0), "kept");
}

TEST(Quota, NoSpaceAlarmBlocksPutsButAllowsDeletes) {
  TempDir d;
  Options o;
  o.quota_bytes = 256 * 1024;
  auto s = OpenStore(d.path(), o);
  std::string big(16 * 1024, 'x');
  absl::Status last;
  for (int i = 0; i < 200 && last.ok(); ++i) {
    etcdserverpb::PutRequest p;
    p.set_key("big" + std::to_string(i));
    p.set_value(big);
    last = s->Put(p).status();
  }
  EXPECT_EQ(last.message(), "etcdserver: mvcc: database space exceeded");
  EXPECT_EQ(s->Status()->errors_size(), 1);
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("big");
  del.set_range_end("bih");
  EXPECT_TRUE(s->DeleteRange(del).ok());
  etcdserverpb::AlarmRequest a;
  a.set_action(etcdserverpb::AlarmRequest::GET);
  EXPECT_EQ(s->Alarm(a)->alarms_size(), 1);
}

// A negative quota disables it, as etcd's --quota-backend-bytes does: the
// writes that filled a 256 KiB quota above all go in.
TEST(Quota, ANegativeQuotaDisablesIt) {
  TempDir d;
  Options o;
  o.quota_bytes = -1;
  auto s = OpenStore(d.path(), o);
  ASSERT_TRUE(s);
  std::string big(16 * 1024, 'x');
  for (int i = 0; i < 200; ++i) {
    etcdserverpb::PutRequest p;
    p.set_key("big" + std::to_string(i));
    p.set_value(big);
    ASSERT_TRUE(s->Put(p).ok()) << i;
  }
  EXPECT_EQ(s->Status()->errors_size(), 0);
}

TEST(Store, AutoCompactionKeepsOnlyTheRetentionWindow) {
  TempDir d;
  Options o;
  o.auto_compaction_retention_ms = 500;
  auto s = OpenStore(d.path(), o);
  for (int i = 0; i < 20; ++i) Put(s.get(), "ac", std::to_string(i));
  int64_t before = s->Revision();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (s->GetMetrics().compact_revision < before && std::chrono::steady_clock::now() < deadline) {
    Put(s.get(), "tick", "x");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GE(s->GetMetrics().compact_revision, before);
  RangeRequest old;
  old.set_key("ac");
  old.set_revision(2);
  EXPECT_EQ(s->Range(old).status().code(), absl::StatusCode::kOutOfRange);
}


// Deferred LMDB apply: batches are durable in the log and reach LMDB later,
// many per transaction. Every read path must see the same store as when
// each batch is its own LMDB transaction.
void SameOps(Store* s) {
  etcdserverpb::LeaseGrantRequest g;
  g.set_ttl(600);
  g.set_id(77);
  ASSERT_TRUE(s->LeaseGrant(g).ok());
  for (int i = 0; i < 60; ++i) Put(s, "k" + std::to_string(i % 17), std::string(50 + i * 13, 'a' + i % 26), i % 3 == 0 ? 77 : 0);
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("k1");
  del.set_range_end("k2");
  ASSERT_TRUE(s->DeleteRange(del).ok());
  etcdserverpb::TxnRequest t;
  auto* c = t.add_compare();
  c->set_key("k3");
  c->set_target(Compare::VALUE);
  c->set_result(Compare::EQUAL);
  c->set_value(std::string(50 + 54 * 13, 'a' + 54 % 26));
  t.add_success()->mutable_request_put()->set_key("txn-hit");
  t.add_failure()->mutable_request_put()->set_key("txn-miss");
  ASSERT_TRUE(s->Txn(t).ok());
}

TEST(DeferredApply, ReadsHashesAndRestartsMatchOneTransactionPerBatch) {
  TempDir d1, d2;
  Options each;
  each.lmdb_apply_interval_ms = 0;
  Options deferred;
  deferred.lmdb_apply_interval_ms = 3600 * 1000;  // only when something needs LMDB
  auto a = OpenStore(d1.path(), each);
  auto b = OpenStore(d2.path(), deferred);
  ASSERT_NO_FATAL_FAILURE(SameOps(a.get()));
  ASSERT_NO_FATAL_FAILURE(SameOps(b.get()));
  auto* bi = static_cast<StoreImpl*>(b.get());
  // Nothing of it is in LMDB yet: ranges (now and at old revisions) are
  // served from memory.
  EXPECT_GT(bi->GetMetrics().db_size, 0);
  for (int64_t rev : {int64_t{0}, int64_t{10}, int64_t{40}}) {
    auto ra = Get(a.get(), std::string(1, '\0'), std::string(1, '\0'), rev);
    auto rb = Get(b.get(), std::string(1, '\0'), std::string(1, '\0'), rev);
    ra.clear_header();
    rb.clear_header();
    EXPECT_EQ(ra.DebugString(), rb.DebugString()) << "at revision " << rev;
  }
  EXPECT_EQ(Get(b.get(), "txn-hit").kvs_size(), 1);
  // A watch from revision 1 reads history from LMDB: the logged batches are
  // applied first.
  auto w = b->NewWatchStream();
  etcdserverpb::WatchCreateRequest cr;
  cr.set_key("k");
  cr.set_range_end("l");
  cr.set_start_revision(1);
  w->Create(cr);
  int events = 0;
  for (int i = 0; i < 100 && events < 60 + 8; ++i) {
    etcdserverpb::WatchResponse wr;
    bool closed = false;
    if (!w->NextFor(&wr, 2000, &closed)) break;
    events += wr.events_size();
  }
  EXPECT_EQ(events, 60 + 8);  // 60 puts, and the deletes of k1 and k10..k16
  w->Close();
  w.reset();  // a stream must go before its store
  // Hashes of the whole database and of the key space agree.
  ASSERT_NO_FATAL_FAILURE(Put(b.get(), "after-watch", "x"));
  ASSERT_NO_FATAL_FAILURE(Put(a.get(), "after-watch", "x"));
  etcdserverpb::HashKVRequest hk;
  EXPECT_EQ(a->HashKV(hk)->hash(), b->HashKV(hk)->hash());
  // Lease revoke deletes its keys in both.
  etcdserverpb::LeaseRevokeRequest rv;
  rv.set_id(77);
  ASSERT_TRUE(a->LeaseRevoke(rv).ok());
  ASSERT_TRUE(b->LeaseRevoke(rv).ok());
  EXPECT_EQ(a->HashKV(hk)->hash(), b->HashKV(hk)->hash());
  // A restart (a clean close applies and checkpoints) and a compaction. The
  // whole-database hash (member IDs differ between the two stores) must
  // survive the restart.
  ASSERT_NO_FATAL_FAILURE(Put(b.get(), "before-restart", "z"));
  ASSERT_NO_FATAL_FAILURE(Put(a.get(), "before-restart", "z"));
  const uint32_t whole = b->Hash()->hash();
  ASSERT_NO_FATAL_FAILURE(Put(b.get(), "before-restart", "zz"));
  ASSERT_NO_FATAL_FAILURE(Put(a.get(), "before-restart", "zz"));
  EXPECT_NE(b->Hash()->hash(), whole);
  const uint32_t whole2 = b->Hash()->hash();
  const int64_t rev = b->Revision();
  b.reset();
  b = OpenStore(d2.path(), deferred);
  EXPECT_EQ(b->Revision(), rev);
  EXPECT_EQ(b->Hash()->hash(), whole2);
  ASSERT_NO_FATAL_FAILURE(Put(b.get(), "after-restart", "y"));
  ASSERT_NO_FATAL_FAILURE(Put(a.get(), "after-restart", "y"));
  etcdserverpb::CompactionRequest comp;
  comp.set_revision(rev - 5);
  ASSERT_TRUE(a->Compact(comp).ok());
  ASSERT_TRUE(b->Compact(comp).ok());
  EXPECT_EQ(a->HashKV(hk)->hash(), b->HashKV(hk)->hash());
  EXPECT_EQ(Get(a.get(), "after-restart").kvs(0).mod_revision(), Get(b.get(), "after-restart").kvs(0).mod_revision());
}

// Readers racing the apply: a value moves from memory into a newer LMDB
// snapshot than a reader's; the reader must still find it.
TEST(DeferredApply, ReadersNeverMissValuesMovingIntoLmdb) {
  TempDir d;
  Options o;
  o.lmdb_apply_interval_ms = 3600 * 1000;
  auto s = OpenStore(d.path(), o);
  auto* impl = static_cast<StoreImpl*>(s.get());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0}, bad{0};
  std::thread applier([&] {
    while (!stop) {
      EXPECT_TRUE(impl->ApplyPending().ok());
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!stop) {
        RangeRequest r;
        r.set_key("r");
        r.set_range_end("s");
        auto resp = s->Range(r);
        if (!resp.ok()) {
          ++bad;
          continue;
        }
        for (const auto& kv : resp->kvs()) {
          if (kv.value() != "v" + std::to_string(kv.mod_revision())) ++bad;
        }
        ++reads;
      }
    });
  }
  for (int i = 0; i < 1500; ++i) {
    etcdserverpb::PutRequest p;
    p.set_key("r" + std::to_string(i % 20));
    p.set_value("v" + std::to_string(s->Revision() + 1));  // single writer: the revision it gets
    ASSERT_TRUE(s->Put(p).ok());
  }
  stop = true;
  applier.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 10);
}

}  // namespace
// /metrics values keep every digit (a revision past a million, a database
// size in bytes), as Prometheus' Go client writes them.
TEST(Metrics, ValuesKeepEveryDigit) {
  Metrics m;
  m.revision = 123456789;
  m.db_size = 2147483647;
  m.compact_revision = 7;
  std::string text = FormatMetrics(m);
  EXPECT_NE(text.find("\netcd_debugging_mvcc_current_revision 123456789\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\netcd_mvcc_db_total_size_in_bytes 2147483647\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\netcd_debugging_mvcc_compact_revision 7\n"), std::string::npos) << text;
}

}  // namespace skiff::store
