// skiff-store-bench: a small etcd v3 load generator used by bench/store-*.
//   skiff-store-bench put   --endpoint H:P --clients N --conns C --total T --val-size B [--key-space K]
//   skiff-store-bench range --endpoint H:P --clients N --conns C --total T [--key-space K] [--linearizable]
//   skiff-store-bench fill  --endpoint H:P --total T --val-size B      (T keys bench/k/<i>)
// Prints one line: "op=put clients=.. requests=.. seconds=.. rps=.. p50_ms=.. p99_ms=.. max_ms=.. errors=..".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace {
using Clock = std::chrono::steady_clock;

std::string Key(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "bench/k/%08lld", static_cast<long long>(i));
  return buf;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: skiff-store-bench put|range|fill [flags]\n");
    return 2;
  }
  std::string op = argv[1];
  std::map<std::string, std::string> f = {{"endpoint", "127.0.0.1:2379"}, {"clients", "1"}, {"conns", "1"},
                                          {"total", "10000"}, {"val-size", "256"}, {"key-space", "100000"}};
  bool linearizable = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--linearizable") {
      linearizable = true;
      continue;
    }
    if (a.rfind("--", 0) == 0 && i + 1 < argc) f[a.substr(2)] = argv[++i];
  }
  const int clients = std::atoi(f["clients"].c_str());
  const int conns = std::max(1, std::atoi(f["conns"].c_str()));
  // --duration S runs for S seconds instead of a fixed request count.
  const double duration = std::atof(f["duration"].c_str());
  const int64_t total = duration > 0 ? INT64_MAX / 2 : std::atoll(f["total"].c_str());
  const size_t val_size = static_cast<size_t>(std::atoll(f["val-size"].c_str()));
  const int64_t key_space = std::max<int64_t>(1, std::atoll(f["key-space"].c_str()));
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs;
  for (int i = 0; i < conns; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("skiff.bench.conn", i);  // distinct args => distinct subchannels
    args.SetMaxReceiveMessageSize(64 << 20);
    stubs.push_back(etcdserverpb::KV::NewStub(
        grpc::CreateCustomChannel(f["endpoint"], grpc::InsecureChannelCredentials(), args)));
  }
  std::string value(val_size, 'v');
  std::atomic<int64_t> errors{0};
  if (op == "fill") {
    std::atomic<int64_t> next{0};
    std::vector<std::thread> ts;
    for (int c = 0; c < std::max(clients, 4); ++c) {
      ts.emplace_back([&, c] {
        auto* stub = stubs[static_cast<size_t>(c) % stubs.size()].get();
        // 100 puts per txn: loading is not what is measured.
        for (int64_t i; (i = next.fetch_add(100)) < total;) {
          etcdserverpb::TxnRequest t;
          for (int64_t k = i; k < std::min(total, i + 100); ++k) {
            auto* p = t.add_success()->mutable_request_put();
            p->set_key(Key(k));
            p->set_value(value);
          }
          etcdserverpb::TxnResponse resp;
          grpc::ClientContext ctx;
          if (!stub->Txn(&ctx, t, &resp).ok()) errors++;
        }
      });
    }
    for (auto& t : ts) t.join();
    std::printf("op=fill keys=%lld errors=%lld\n", static_cast<long long>(total), static_cast<long long>(errors.load()));
    return errors.load() == 0 ? 0 : 1;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::milliseconds(static_cast<int64_t>(duration * 1000));
  std::vector<std::thread> ts;
  for (int c = 0; c < clients; ++c) {
    ts.emplace_back([&, c] {
      auto* stub = stubs[static_cast<size_t>(c) % stubs.size()].get();
      auto& l = lat[static_cast<size_t>(c)];
      uint64_t x = 88172645463325252ULL ^ static_cast<uint64_t>(c + 1);
      for (int64_t i; (i = next.fetch_add(1)) < total;) {
        if (duration > 0 && Clock::now() >= deadline) break;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::string key = Key(static_cast<int64_t>(x % static_cast<uint64_t>(key_space)));
        grpc::ClientContext ctx;
        auto s = Clock::now();
        grpc::Status st;
        if (op == "put") {
          etcdserverpb::PutRequest r;
          r.set_key(key);
          r.set_value(value);
          etcdserverpb::PutResponse resp;
          st = stub->Put(&ctx, r, &resp);
        } else {
          etcdserverpb::RangeRequest r;
          r.set_key(key);
          r.set_serializable(!linearizable);
          etcdserverpb::RangeResponse resp;
          st = stub->Range(&ctx, r, &resp);
        }
        if (!st.ok()) errors++;
        l.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      }
    });
  }
  for (auto& t : ts) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]; };
  std::printf("op=%s clients=%d requests=%zu seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%lld\n",
              op.c_str(), clients, all.size(), secs, all.size() / secs, pct(0.5), pct(0.99), all.empty() ? 0 : all.back(),
              static_cast<long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}
