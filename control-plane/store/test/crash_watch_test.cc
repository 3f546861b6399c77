// Multi-process guarantees of skiff-store over gRPC:
//  - crash safety: writers + SIGKILL at random points, restart, every
//    acknowledged write present, revision never goes backwards;
//  - watch guarantees: ordered, unique, atomic (a txn's events in one
//    response), reliable (no gaps) and resumable (restart from a revision,
//    also across a server restart).
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "test_process.h"

namespace skiff::store::testing {
namespace {

std::unique_ptr<etcdserverpb::KV::Stub> KvStub(const std::string& ep) {
  return etcdserverpb::KV::NewStub(grpc::CreateChannel(ep, grpc::InsecureChannelCredentials()));
}

void SetDeadline(grpc::ClientContext* ctx, int ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

TEST(CrashSafety, AcknowledgedWritesSurviveSigkillAndRevisionNeverGoesBack) {
  ScratchDir dir("crash");
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  std::map<std::string, int64_t> acked;  // key -> revision it was acknowledged at
  int64_t last_seen_rev = 0;
  constexpr int kCycles = 20;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    Server s = StartSkiffStore(dir.sub("data"), dir.sub("store.log"));
    ASSERT_GT(s.child.pid(), 0) << "store did not start in cycle " << cycle;
    auto kv = KvStub(s.endpoint());
    // Everything acknowledged so far is there, at its revision.
    {
      etcdserverpb::RangeRequest r;
      r.set_key("crash/");
      r.set_range_end("crash0");
      etcdserverpb::RangeResponse resp;
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 10000);
      ASSERT_TRUE(kv->Range(&ctx, r, &resp).ok());
      std::map<std::string, const mvccpb::KeyValue*> got;
      for (const auto& x : resp.kvs()) got[x.key()] = &x;
      for (const auto& [k, rev] : acked) {
        auto it = got.find(k);
        ASSERT_NE(it, got.end()) << "acknowledged key lost after SIGKILL: " << k << " cycle " << cycle;
        EXPECT_EQ(it->second->value(), k);
        EXPECT_EQ(it->second->mod_revision(), rev);
      }
      EXPECT_GE(resp.header().revision(), last_seen_rev) << "revision went backwards";
      last_seen_rev = resp.header().revision();
    }
    std::mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int t = 0; t < 8; ++t) {
      writers.emplace_back([&, t] {
        auto stub = KvStub(s.endpoint());
        for (int i = 0; !stop; ++i) {
          std::string key = "crash/" + std::to_string(cycle) + "/" + std::to_string(t) + "/" + std::to_string(i);
          etcdserverpb::PutRequest p;
          p.set_key(key);
          p.set_value(key);
          etcdserverpb::PutResponse resp;
          grpc::ClientContext ctx;
          SetDeadline(&ctx, 2000);
          if (!stub->Put(&ctx, p, &resp).ok()) break;
          std::lock_guard<std::mutex> lk(mu);
          acked[key] = resp.header().revision();
          last_seen_rev = std::max(last_seen_rev, resp.header().revision());
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 250)(rng)));
    s.child.Signal(SIGKILL);
    stop = true;
    for (auto& w : writers) w.join();
    s.child.Kill();
  }
  EXPECT_GT(acked.size(), 100u) << "too few writes to prove anything";
}

// Records one watch stream's responses and checks them as they arrive.
struct WatchLog {
  std::vector<std::pair<int64_t, std::string>> events;  // (revision, key), in delivery order
  std::set<int64_t> closed_revs;                          // revisions of earlier responses
  std::string error;
  int64_t last_rev = 0;

  void Add(const etcdserverpb::WatchResponse& r) {
    std::set<int64_t> here;
    for (const auto& e : r.events()) {
      int64_t rev = e.kv().mod_revision();
      if (rev < last_rev && error.empty()) error = "out of order at " + std::to_string(rev);
      if (closed_revs.count(rev) && error.empty()) error = "revision split over responses: " + std::to_string(rev);
      last_rev = rev;
      here.insert(rev);
      events.emplace_back(rev, e.kv().key());
    }
    closed_revs.insert(here.begin(), here.end());
  }
};

// Watches prefix from start_rev until it has seen until_rev (or timeout).
void WatchUntil(const std::string& ep, int64_t start_rev, int64_t until_rev, WatchLog* log, int timeout_ms = 20000) {
  auto stub = etcdserverpb::Watch::NewStub(grpc::CreateChannel(ep, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_ms);
  auto stream = stub->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  auto* c = req.mutable_create_request();
  c->set_key("wg/");
  c->set_range_end("wg0");
  c->set_start_revision(start_rev);
  stream->Write(req);
  etcdserverpb::WatchResponse r;
  while (log->last_rev < until_rev && stream->Read(&r)) {
    if (r.canceled()) {
      log->error = "canceled: " + r.cancel_reason();
      break;
    }
    log->Add(r);
  }
  ctx.TryCancel();
}

TEST(WatchGuarantees, OrderedUniqueAtomicGaplessAndResumable) {
  ScratchDir dir("watchcheck");
  Server s = StartSkiffStore(dir.sub("data"), dir.sub("store.log"));
  ASSERT_GT(s.child.pid(), 0);
  std::mutex mu;
  std::map<int64_t, std::set<std::string>> expected;  // revision -> keys written at it
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      auto kv = KvStub(s.endpoint());
      for (int i = 0; i < 150; ++i) {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, 10000);
        std::string base = "wg/" + std::to_string(t) + "/" + std::to_string(i);
        if (i % 3 == 0) {
          etcdserverpb::TxnRequest txn;
          for (const char* suffix : {"/a", "/b", "/c"}) {
            auto* p = txn.add_success()->mutable_request_put();
            p->set_key(base + suffix);
            p->set_value("v");
          }
          etcdserverpb::TxnResponse resp;
          ASSERT_TRUE(kv->Txn(&ctx, txn, &resp).ok());
          std::lock_guard<std::mutex> lk(mu);
          for (const char* suffix : {"/a", "/b", "/c"}) expected[resp.header().revision()].insert(base + suffix);
        } else {
          etcdserverpb::PutRequest p;
          p.set_key(base);
          p.set_value("v");
          etcdserverpb::PutResponse resp;
          ASSERT_TRUE(kv->Put(&ctx, p, &resp).ok());
          std::lock_guard<std::mutex> lk(mu);
          expected[resp.header().revision()].insert(base);
        }
      }
    });
  }
  // A live watcher from revision 1 while the writers run, and a second one
  // that stops half way and resumes from its last revision + 1.
  WatchLog full, part1, part2, part3;
  std::thread live([&] { WatchUntil(s.endpoint(), 1, 1 + 4 * 150, &full); });
  std::thread resumed([&] {
    WatchUntil(s.endpoint(), 1, 250, &part1);
    WatchUntil(s.endpoint(), part1.last_rev + 1, 1 + 4 * 150, &part2);
  });
  for (auto& w : writers) w.join();
  live.join();
  resumed.join();
  ASSERT_EQ(expected.size(), 600u);
  const int64_t last = expected.rbegin()->first;

  auto check = [&](const std::vector<WatchLog*>& parts, const char* name) {
    std::vector<std::pair<int64_t, std::string>> all;
    for (auto* p : parts) {
      EXPECT_EQ(p->error, "") << name;
      all.insert(all.end(), p->events.begin(), p->events.end());
    }
    std::map<int64_t, std::set<std::string>> got;
    std::set<std::pair<int64_t, std::string>> seen;
    for (const auto& e : all) {
      EXPECT_TRUE(seen.insert(e).second) << name << ": duplicate event " << e.first << " " << e.second;
      got[e.first].insert(e.second);
    }
    EXPECT_TRUE(std::is_sorted(all.begin(), all.end(),
                               [](const auto& a, const auto& b) { return a.first < b.first; }))
        << name;
    EXPECT_EQ(got, expected) << name << ": missing or extra events";
  };
  check({&full}, "live watcher");
  check({&part1, &part2}, "resumed watcher");

  // Resumable across a crash of the server: replay from the middle.
  s.child.Signal(SIGKILL);
  s.child.Kill();
  Server again = StartSkiffStore(dir.sub("data"), dir.sub("store2.log"));
  ASSERT_GT(again.child.pid(), 0);
  WatchLog after;
  int64_t mid = part1.last_rev + 1;
  WatchUntil(again.endpoint(), mid, last, &after);
  EXPECT_EQ(after.error, "");
  std::map<int64_t, std::set<std::string>> want;
  for (const auto& [rev, keys] : expected) {
    if (rev >= mid) want[rev] = keys;
  }
  std::map<int64_t, std::set<std::string>> got;
  for (const auto& e : after.events) got[e.first].insert(e.second);
  EXPECT_EQ(got, want);
}

// What etcdctl 3.4 cannot ask for, over gRPC against skiff-store and a real
// etcd: count_only ranges, a watch progress request (answered with the
// current revision, no events), and the gRPC health service.
TEST(GrpcApi, CountOnlyProgressRequestAndHealthMatchEtcd) {
  ScratchDir dir("grpcapi");
  Server ours = StartSkiffStore(dir.sub("skiff"), dir.sub("skiff.log"));
  ASSERT_GT(ours.child.pid(), 0);
  Server etcd = StartEtcd(dir.sub("etcd"), dir.sub("etcd.log"));
  ASSERT_GT(etcd.child.pid(), 0);
  for (const Server* s : {&ours, &etcd}) {
    SCOPED_TRACE(s == &ours ? "skiff-store" : "etcd");
    auto kv = KvStub(s->endpoint());
    for (const char* k : {"n/a", "n/b", "n/c", "o"}) {
      etcdserverpb::PutRequest p;
      p.set_key(k);
      p.set_value("v");
      etcdserverpb::PutResponse pr;
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 5000);
      ASSERT_TRUE(kv->Put(&ctx, p, &pr).ok());
    }
    etcdserverpb::RangeRequest r;
    r.set_key("n/");
    r.set_range_end("n0");
    r.set_count_only(true);
    etcdserverpb::RangeResponse rr;
    {
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 5000);
      ASSERT_TRUE(kv->Range(&ctx, r, &rr).ok());
    }
    EXPECT_EQ(rr.count(), 3);
    EXPECT_EQ(rr.kvs_size(), 0);
    EXPECT_FALSE(rr.more());
    EXPECT_EQ(rr.header().revision(), 5);

    auto ws = etcdserverpb::Watch::NewStub(grpc::CreateChannel(s->endpoint(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext wctx;
    SetDeadline(&wctx, 10000);
    auto stream = ws->Watch(&wctx);
    etcdserverpb::WatchRequest create;
    create.mutable_create_request()->set_key("n/");
    create.mutable_create_request()->set_range_end("n0");
    ASSERT_TRUE(stream->Write(create));
    etcdserverpb::WatchResponse wr;
    ASSERT_TRUE(stream->Read(&wr));
    EXPECT_TRUE(wr.created());
    etcdserverpb::WatchRequest progress;
    progress.mutable_progress_request();
    ASSERT_TRUE(stream->Write(progress));
    ASSERT_TRUE(stream->Read(&wr));
    EXPECT_FALSE(wr.created());
    EXPECT_EQ(wr.events_size(), 0);
    EXPECT_EQ(wr.header().revision(), 5);
    wctx.TryCancel();

    auto health =
        grpc::health::v1::Health::NewStub(grpc::CreateChannel(s->endpoint(), grpc::InsecureChannelCredentials()));
    grpc::health::v1::HealthCheckRequest hreq;
    grpc::health::v1::HealthCheckResponse hresp;
    grpc::ClientContext hctx;
    SetDeadline(&hctx, 5000);
    ASSERT_TRUE(health->Check(&hctx, hreq, &hresp).ok());
    EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

}  // namespace
}  // namespace skiff::store::testing
