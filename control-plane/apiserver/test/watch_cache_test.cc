// The watch cache over the etcd v3 API, on the embedded store served
// in-process on a unix socket.
#include "skiff/apiserver/watch_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "skiff/store/server.h"
#include "skiff/store/store.h"

namespace skiff::apiserver {

// Feeds the cache what its etcd watch would deliver, in a chosen order.
class WatchCacheTestPeer {
 public:
  static void Deliver(WatchCache& c, const std::vector<mvccpb::Event>& evs, int64_t header_rev) {
    c.OnEvents(evs, header_rev);
  }
};

namespace {

mvccpb::Event PodPut(const ResourceInfo& info, const std::string& name, int64_t rev) {
  Object o;
  o.mutable_pod()->mutable_metadata()->set_name(name);
  o.mutable_pod()->mutable_metadata()->set_namespace_("ns");
  mvccpb::Event ev;
  ev.set_type(mvccpb::Event::PUT);
  ev.mutable_kv()->set_key(StorageKey(info, "ns", name));
  ev.mutable_kv()->set_value(o.SerializeAsString());
  ev.mutable_kv()->set_mod_revision(rev);
  ev.mutable_kv()->set_create_revision(rev);
  ev.mutable_kv()->set_version(1);
  return ev;
}

// etcd before 3.4.24 / 3.5.8 (Debian's is 3.4.23) can answer a progress
// request ahead of events still queued on the stream. Such an event must
// still be applied and reach watchers; it used to be dropped as a replay.
TEST(WatchCacheOrdering, AnEventOvertakenByAProgressResponseIsStillApplied) {
  const ResourceInfo& info = *LookupResource("pods").value();
  WatchCache cache(nullptr, info, WatchCache::Options{});
  auto w = cache.Watch(WatchFilter(), 0).value();
  WatchCacheTestPeer::Deliver(cache, {}, 10);                       // progress: "up to 10"
  WatchCacheTestPeer::Deliver(cache, {PodPut(info, "late", 9)}, 10);  // ...then the event at 9
  int64_t rev = 0;
  auto items = cache.List(WatchFilter(), &rev);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(Meta(*items[0]).name(), "late");
  auto ev = w->Next(std::chrono::milliseconds(100));
  ASSERT_TRUE(ev.ok() && ev->has_value());
  EXPECT_EQ((*ev)->type, "ADDED");
  // A replay of an applied event is still dropped; a later progress response
  // makes the earlier progress revision the cache's revision.
  WatchCacheTestPeer::Deliver(cache, {PodPut(info, "late", 9)}, 10);
  EXPECT_FALSE(w->Next(std::chrono::milliseconds(50))->has_value());
  WatchCacheTestPeer::Deliver(cache, {}, 12);
  EXPECT_EQ(cache.revision(), 10);
}

class WatchCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat("/tmp/skiff-watchcache-test-", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    skiff::store::Options so;
    so.data_dir = dir_ + "/store";
    auto s = skiff::store::Store::Open(so);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    skiff::store::ServerOptions sso;
    sso.listen_client_urls = {"unix://" + dir_ + "/sock"};
    auto srv = skiff::store::Server::Start(store_.get(), sso);
    ASSERT_TRUE(srv.ok()) << srv.status();
    server_ = std::move(*srv);
    auto c = EtcdClient::Connect({"unix://" + dir_ + "/sock"});
    ASSERT_TRUE(c.ok());
    etcd_ = std::move(*c);
    info_ = *LookupResource("pods").value();
  }
  void TearDown() override {
    cache_.reset();
    etcd_.reset();
    if (server_) server_->Shutdown();
    server_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartCache(size_t capacity) {
    WatchCache::Options o;
    o.capacity = capacity;
    cache_ = std::make_unique<WatchCache>(etcd_.get(), info_, o);
    ASSERT_TRUE(cache_->Start().ok());
  }
  int64_t Put(const std::string& ns, const std::string& name, const std::string& node, int64_t expect_rev = -1) {
    Object o;
    o.mutable_pod()->mutable_metadata()->set_name(name);
    o.mutable_pod()->mutable_metadata()->set_namespace_(ns);
    (*o.mutable_pod()->mutable_metadata()->mutable_labels())["app"] = name.substr(0, 1);
    o.mutable_pod()->mutable_spec()->set_node_name(node);
    std::string key = StorageKey(info_, ns, name);
    auto kv = etcd_->Get(key);
    auto r = kv.ok() ? etcd_->Update(key, o.SerializeAsString(), kv->mod_revision())
                     : etcd_->Create(key, o.SerializeAsString());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : 0;
  }
  int64_t Del(const std::string& ns, const std::string& name) {
    std::string key = StorageKey(info_, ns, name);
    auto kv = etcd_->Get(key);
    auto r = etcd_->Delete(key, kv->mod_revision());
    return r.ok() ? *r : 0;
  }
  static std::vector<std::string> Drain(CacheWatcher* w, size_t n) {
    std::vector<std::string> out;
    while (out.size() < n) {
      auto ev = w->Next(std::chrono::seconds(5));
      if (!ev.ok() || !ev->has_value()) break;
      out.push_back((*ev)->type + " " + Meta(*(*ev)->object).name() + " " + Meta(*(*ev)->object).resource_version());
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<skiff::store::Store> store_;
  std::unique_ptr<skiff::store::Server> server_;
  std::unique_ptr<EtcdClient> etcd_;
  ResourceInfo info_;
  std::unique_ptr<WatchCache> cache_;
};

TEST_F(WatchCacheTest, FansOutEventsToEveryWatcherWithItsFilter) {
  StartCache(100);
  WatchFilter all;
  WatchFilter ns_a;
  ns_a.ns = "a";
  WatchFilter on_n1;
  on_n1.fields = FieldSelector::Parse("spec.nodeName=n1").value();
  int64_t rev = cache_->revision();
  auto w_all = cache_->Watch(all, rev).value();
  auto w_ns = cache_->Watch(ns_a, rev).value();
  auto w_node = cache_->Watch(on_n1, rev).value();
  int64_t r1 = Put("a", "p1", "");
  int64_t r2 = Put("b", "p2", "n1");
  int64_t r3 = Put("a", "p1", "n1");  // now matches spec.nodeName=n1
  int64_t r4 = Del("a", "p1");
  EXPECT_EQ(Drain(w_all.get(), 4), (std::vector<std::string>{absl::StrCat("ADDED p1 ", r1), absl::StrCat("ADDED p2 ", r2),
                                                              absl::StrCat("MODIFIED p1 ", r3), absl::StrCat("DELETED p1 ", r4)}));
  EXPECT_EQ(Drain(w_ns.get(), 3), (std::vector<std::string>{absl::StrCat("ADDED p1 ", r1), absl::StrCat("MODIFIED p1 ", r3),
                                                             absl::StrCat("DELETED p1 ", r4)}));
  EXPECT_EQ(Drain(w_node.get(), 3), (std::vector<std::string>{absl::StrCat("ADDED p2 ", r2), absl::StrCat("ADDED p1 ", r3),
                                                               absl::StrCat("DELETED p1 ", r4)}));
  EXPECT_EQ(cache_->watcher_count(), 3u);
  cache_->Unwatch(w_all);
  EXPECT_EQ(cache_->watcher_count(), 2u);
}

TEST_F(WatchCacheTest, ReplaysFromAResourceVersionInTheWindow) {
  StartCache(100);
  int64_t r1 = Put("a", "x1", "");
  int64_t r2 = Put("a", "x2", "");
  int64_t r3 = Put("a", "x3", "");
  ASSERT_TRUE(cache_->WaitForRevision(r3, std::chrono::seconds(5)));
  auto w = cache_->Watch(WatchFilter(), r1).value();
  EXPECT_EQ(Drain(w.get(), 2), (std::vector<std::string>{absl::StrCat("ADDED x2 ", r2), absl::StrCat("ADDED x3 ", r3)}));
}

TEST_F(WatchCacheTest, StartsWithSyntheticAddsForAFreshWatch) {
  Put("a", "s1", "");
  Put("a", "s2", "");
  StartCache(100);
  auto w = cache_->Watch(WatchFilter(), -1).value();
  auto got = Drain(w.get(), 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].substr(0, 8), "ADDED s1");
  EXPECT_EQ(got[1].substr(0, 8), "ADDED s2");
  int64_t rev;
  EXPECT_EQ(cache_->List(WatchFilter(), &rev).size(), 2u);
  EXPECT_GT(rev, 0);
}

TEST_F(WatchCacheTest, AResourceVersionOlderThanTheWindowIsTooOld) {
  StartCache(5);
  int64_t first = Put("a", "old", "");
  int64_t last = 0;
  for (int i = 0; i < 10; ++i) last = Put("a", "old", absl::StrCat("n", i));
  ASSERT_TRUE(cache_->WaitForRevision(last, std::chrono::seconds(5)));
  auto w = cache_->Watch(WatchFilter(), first);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(w.status().message().substr(0, 26 + std::to_string(first).size()),
            absl::StrCat("too old resource version: ", first));
  EXPECT_TRUE(cache_->Watch(WatchFilter(), last - 2).ok());
}

TEST_F(WatchCacheTest, ProgressRevisionMovesWithoutEvents) {
  StartCache(100);
  auto w = cache_->Watch(WatchFilter(), cache_->revision()).value();
  // A write to another resource advances the store revision only.
  ASSERT_TRUE(etcd_->Create("/registry/configmaps/a/unrelated", "x").ok());
  auto now = etcd_->CurrentRevision().value();
  ASSERT_TRUE(cache_->WaitForRevision(now, std::chrono::seconds(5)));
  EXPECT_GE(w->progress_revision(), now);
}

}  // namespace
}  // namespace skiff::apiserver
