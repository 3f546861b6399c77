// Load generator for bench/api-latency: the same operations through the API
// server (gRPC, TLS, admin certificate) or directly against etcd.
//
//   skiff-api-bench api  <admin.conf> <phase> [ops]
//   skiff-api-bench etcd <etcd-url>   <phase> [ops]
// phases: create get list watch fanout populate
// Prints "<phase> p50_ms=<x> p99_ms=<y> n=<n>".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "skiff/apiserver/etcd.h"
#include "skiff/apiserver/resources.h"
#include "skiff/client/config.h"
#include "skiff/client/dial.h"

using Clock = std::chrono::steady_clock;
using skiff::api::v1::Object;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void Report(const std::string& phase, std::vector<double> v) {
  if (v.empty()) {
    printf("%s p50_ms=nan p99_ms=nan n=0\n", phase.c_str());
    return;
  }
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
  printf("%s p50_ms=%.3f p99_ms=%.3f n=%zu\n", phase.c_str(), pct(0.50), pct(0.99), v.size());
  fflush(stdout);
}

// Paces fn at `rate` per second, n times; returns per-call latencies.
template <typename Fn>
std::vector<double> Paced(int n, int rate, Fn fn) {
  std::vector<double> lat;
  auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_until(start + std::chrono::microseconds(1000000LL * i / rate));
    auto t0 = Clock::now();
    if (!fn(i)) {
      fprintf(stderr, "operation %d failed\n", i);
      continue;
    }
    lat.push_back(Ms(Clock::now() - t0));
  }
  return lat;
}

Object ConfigMap(const std::string& name) {
  Object o;
  o.mutable_config_map()->mutable_metadata()->set_name(name);
  o.mutable_config_map()->mutable_metadata()->set_namespace_("bench");
  (*o.mutable_config_map()->mutable_metadata()->mutable_labels())["app"] = "bench";
  (*o.mutable_config_map()->mutable_data())["payload"] = std::string(256, 'x');
  return o;
}

Object Pod(int i) {
  Object o;
  auto* p = o.mutable_pod();
  p->mutable_metadata()->set_name(absl::StrCat("pod-", i));
  p->mutable_metadata()->set_namespace_("bench");
  (*p->mutable_metadata()->mutable_labels())["app"] = absl::StrCat("app-", i % 20);
  auto* c = p->mutable_spec()->add_containers();
  c->set_name("app");
  c->set_image("registry.example/app:1.0");
  c->add_ports()->set_container_port(8080);
  (*c->mutable_resources()->mutable_requests())["cpu"] = "100m";
  (*c->mutable_resources()->mutable_requests())["memory"] = "64Mi";
  p->mutable_spec()->set_node_name(absl::StrCat("node-", i % 100));
  return o;
}

Object Node(int i) {
  Object o;
  auto* n = o.mutable_node();
  n->mutable_metadata()->set_name(absl::StrCat("node-", i));
  // insert(), not operator[] + assignment: GCC 12 at -O3 reports a bogus
  // -Wrestrict on the short-string assignment.
  n->mutable_status()->mutable_capacity()->insert({std::string("cpu"), std::string("8")});
  n->mutable_status()->mutable_capacity()->insert({std::string("memory"), std::string("32Gi")});
  auto* a = n->mutable_status()->add_addresses();
  a->set_type("InternalIP");
  a->set_address(absl::StrCat("192.0.2.", i % 250));
  return o;
}

// ---------------------------------------------------------------- API side

int RunApi(const std::string& conf, const std::string& phase, int ops) {
  auto cfg = skiff::client::LoadClientConfig(conf);
  if (!cfg.ok()) {
    fprintf(stderr, "%s\n", cfg.status().ToString().c_str());
    return 1;
  }
  auto c = skiff::client::Dial(cfg->credentials);
  if (!c.ok()) return 1;
  auto& api = **c;
  Object ns;
  ns.mutable_namespace_()->mutable_metadata()->set_name("bench");
  (void)api.Create("namespaces", "", ns);
  std::string tag = std::to_string(getpid());
  if (phase == "create") {
    Report("create", Paced(ops, 100, [&](int i) {
      return api.Create("configmaps", "bench", ConfigMap(absl::StrCat("c-", tag, "-", i))).ok();
    }));
  } else if (phase == "get") {
    Report("get", Paced(ops, 100, [&](int i) {
      return api.Get("configmaps", "bench", absl::StrCat("l-", i % 100)).ok();
    }));
  } else if (phase == "list") {
    for (int i = 0; i < 100; ++i) (void)api.Create("configmaps", "bench", ConfigMap(absl::StrCat("l-", i)));
    Report("list", Paced(ops, 100, [&](int) {
      auto r = api.List("configmaps", "bench", [] { skiff::client::ListOptions o; o.label_selector = "app=bench"; o.limit = 100; return o; }());
      return r.ok() && r->items_size() > 0;
    }));
  } else if (phase == "watch" || phase == "fanout") {
    int watchers = phase == "watch" ? 1 : 100;
    std::vector<std::unique_ptr<skiff::client::WatchStream>> ws;
    auto list = api.List("configmaps", "bench", [] { skiff::client::ListOptions o; o.limit = 1; return o; }());
    for (int i = 0; i < watchers; ++i) {
      auto w = api.Watch("configmaps", "bench", [&] { skiff::client::ListOptions o; o.resource_version = list->resource_version(); return o; }());
      if (!w.ok()) return 1;
      ws.push_back(std::move(*w));
    }
    std::mutex mu;
    std::vector<Clock::time_point> sent(ops);
    std::vector<double> lat;
    std::vector<std::thread> readers;
    for (auto& w : ws) {
      readers.emplace_back([&, w = w.get()] {
        int seen = 0;
        while (seen < ops) {
          auto ev = w->Next();
          if (!ev.ok()) return;
          if (ev->type() != "ADDED") continue;
          std::string name = skiff::apiserver::Meta(ev->object()).name();
          int idx = 0;
          (void)absl::SimpleAtoi(name.substr(name.rfind('-') + 1), &idx);
          auto now = Clock::now();
          std::lock_guard<std::mutex> l(mu);
          lat.push_back(Ms(now - sent[idx]));
          ++seen;
        }
      });
    }
    int rate = phase == "watch" ? 100 : 20;
    Paced(ops, rate, [&](int i) {
      {
        std::lock_guard<std::mutex> l(mu);
        sent[i] = Clock::now();
      }
      return api.Create("configmaps", "bench", ConfigMap(absl::StrCat(phase, "-", tag, "-", i))).ok();
    });
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (lat.size() >= static_cast<size_t>(ops * watchers)) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& w : ws) w->Cancel();
    for (auto& t : readers) t.join();
    Report(phase, lat);
  } else if (phase == "populate") {
    for (int i = 0; i < 100; ++i)
      if (!api.Create("nodes", "", Node(i)).ok()) return 1;
    for (int i = 0; i < ops; ++i)
      if (!api.Create("pods", "bench", Pod(i)).ok()) return 1;
    printf("populate pods=%d nodes=100\n", ops);
  }
  return 0;
}

// ---------------------------------------------------------------- etcd side

int RunEtcd(const std::string& url, const std::string& phase, int ops) {
  auto c = skiff::apiserver::EtcdClient::Connect({url});
  if (!c.ok()) return 1;
  auto& etcd = **c;
  std::string tag = std::to_string(getpid());
  auto key = [](const std::string& name) { return "/registry/configmaps/bench/" + name; };
  if (phase == "create") {
    Report("create", Paced(ops, 100, [&](int i) {
      std::string name = absl::StrCat("c-", tag, "-", i);
      return etcd.Create(key(name), ConfigMap(name).SerializeAsString()).ok();
    }));
  } else if (phase == "get") {
    Report("get", Paced(ops, 100, [&](int i) {
      auto r = etcd.Range(key(absl::StrCat("l-", i % 100)), "", 0, 0);
      if (!r.ok() || r->kvs.empty()) return false;
      Object o;
      return o.ParseFromString(r->kvs[0].value());
    }));
  } else if (phase == "list") {
    for (int i = 0; i < 100; ++i) (void)etcd.Create(key(absl::StrCat("l-", i)), ConfigMap(absl::StrCat("l-", i)).SerializeAsString());
    std::string prefix = "/registry/configmaps/bench/";
    Report("list", Paced(ops, 100, [&](int) {
      auto r = etcd.Range(prefix, skiff::apiserver::PrefixEnd(prefix), 0, 100);
      if (!r.ok()) return false;
      // Decode like the API server does, for a fair comparison.
      for (const auto& kv : r->kvs) {
        Object o;
        o.ParseFromString(kv.value());
      }
      return true;
    }));
  } else if (phase == "watch" || phase == "fanout") {
    int watchers = phase == "watch" ? 1 : 100;
    std::mutex mu;
    std::vector<Clock::time_point> sent(ops);
    std::vector<double> lat;
    std::atomic<int> ready{0};
    std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
    for (int i = 0; i < watchers; ++i) ctxs.push_back(std::make_unique<grpc::ClientContext>());
    std::vector<std::thread> readers;
    std::string prefix = absl::StrCat("/registry/configmaps/bench/", phase, "-", tag, "-");
    for (int i = 0; i < watchers; ++i) {
      readers.emplace_back([&, i] {
        auto stream = etcd.watch_stub()->Watch(ctxs[i].get());
        etcdserverpb::WatchRequest req;
        req.mutable_create_request()->set_key(prefix);
        req.mutable_create_request()->set_range_end(skiff::apiserver::PrefixEnd(prefix));
        stream->Write(req);
        etcdserverpb::WatchResponse resp;
        int seen = 0;
        bool counted = false;
        while (seen < ops && stream->Read(&resp)) {
          if (resp.created() && !counted) {
            counted = true;
            ready++;
          }
          for (const auto& ev : resp.events()) {
            Object o;
            o.ParseFromString(ev.kv().value());
            std::string k = ev.kv().key();
            int idx = 0;
            (void)absl::SimpleAtoi(k.substr(k.rfind('-') + 1), &idx);
            auto now = Clock::now();
            std::lock_guard<std::mutex> l(mu);
            lat.push_back(Ms(now - sent[idx]));
            ++seen;
          }
        }
        ctxs[i]->TryCancel();
        stream->Finish();
      });
    }
    while (ready < watchers) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    int rate = phase == "watch" ? 100 : 20;
    Paced(ops, rate, [&](int i) {
      {
        std::lock_guard<std::mutex> l(mu);
        sent[i] = Clock::now();
      }
      std::string name = absl::StrCat(phase, "-", tag, "-", i);
      return etcd.Create(key(name), ConfigMap(name).SerializeAsString()).ok();
    });
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (lat.size() >= static_cast<size_t>(ops * watchers)) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& cx : ctxs) cx->TryCancel();
    for (auto& t : readers) t.join();
    Report(phase, lat);
  } else if (phase == "populate") {
    for (int i = 0; i < 100; ++i)
      if (!etcd.Create(absl::StrCat("/registry/nodes/node-", i), Node(i).SerializeAsString()).ok()) return 1;
    for (int i = 0; i < ops; ++i)
      if (!etcd.Create(absl::StrCat("/registry/pods/bench/pod-", i), Pod(i).SerializeAsString()).ok()) return 1;
    printf("populate pods=%d nodes=100\n", ops);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: skiff-api-bench api|etcd <admin.conf|etcd-url> <phase> [ops]\n");
    return 2;
  }
  int ops = 300;
  if (argc > 4) (void)absl::SimpleAtoi(argv[4], &ops);
  std::string mode = argv[1];
  return mode == "api" ? RunApi(argv[2], argv[3], ops) : RunEtcd(argv[2], argv[3], ops);
}
