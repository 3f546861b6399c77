// skiff-store-bench: a small etcd v3 load generator used by bench/store-*.
//   skiff-store-bench put   --endpoint H:P --clients N --conns C --total T --val-size B [--key-space K]
//   skiff-store-bench range --endpoint H:P --clients N --conns C --total T [--key-space K] [--linearizable]
//   skiff-store-bench fill  --endpoint H:P --total T --val-size B      (T keys bench/k/<i>)
// put/range also take --duration S (run S seconds instead of T requests),
// --client h2|grpc (h2, the default: nghttp2 on one epoll thread; grpc: gRPC
// C++ with a thread per client), --threads T (h2 event-loop threads) and
// --token TOKEN (an etcd auth token, sent as "token" metadata; h2 only).
// Prints one line: "op=put clients=.. requests=.. seconds=.. rps=.. p50_ms=.. p99_ms=.. max_ms=.. errors=..
// client_cpu_us_per_req=.."; the last field is this process's CPU time (user +
// system, during the load) per request. Exit status 1 when any request failed;
// the first failure's text goes to stderr.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "load.h"

namespace {

double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace skiff::store::bench;
  if (argc < 2) {
    std::fprintf(stderr, "usage: skiff-store-bench put|range|fill [flags]\n");
    return 2;
  }
  std::map<std::string, std::string> f = {{"endpoint", "127.0.0.1:2379"}, {"clients", "1"}, {"conns", "1"},
                                          {"threads", "1"}, {"total", "10000"}, {"val-size", "256"},
                                          {"key-space", "100000"}, {"client", "h2"}, {"token", ""}};
  LoadOptions o;
  o.op = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--linearizable") {
      o.linearizable = true;
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc && f.count(a.substr(2)) + (a == "--duration") > 0) {
      f[a.substr(2)] = argv[++i];
    } else {
      std::fprintf(stderr, "skiff-store-bench: unknown or incomplete flag %s\n", a.c_str());
      return 2;
    }
  }
  o.endpoint = f["endpoint"];
  o.token = f["token"];
  o.clients = std::max(1, std::atoi(f["clients"].c_str()));
  o.conns = std::max(1, std::atoi(f["conns"].c_str()));
  o.threads = std::max(1, std::atoi(f["threads"].c_str()));
  o.total = std::atoll(f["total"].c_str());
  o.duration = std::atof(f["duration"].c_str());
  o.val_size = static_cast<size_t>(std::atoll(f["val-size"].c_str()));
  o.key_space = std::max<int64_t>(1, std::atoll(f["key-space"].c_str()));
  const std::string client = f["client"];
  if (client != "h2" && client != "grpc") {
    std::fprintf(stderr, "skiff-store-bench: --client is h2 or grpc, not %s\n", client.c_str());
    return 2;
  }
  if (!o.token.empty() && (client != "h2" || o.op == "fill")) {
    std::fprintf(stderr, "skiff-store-bench: --token works with the h2 client's put and range only\n");
    return 2;
  }

  ErrorLog errors;
  if (o.op == "fill") {
    RunGrpcFill(o, errors);
    if (errors.count() > 0) std::fprintf(stderr, "first error: %s\n", errors.first().c_str());
    std::printf("op=fill keys=%lld errors=%lld\n", static_cast<long long>(o.total),
                static_cast<long long>(errors.count()));
    return errors.count() == 0 ? 0 : 1;
  }
  if (o.op != "put" && o.op != "range") {
    std::fprintf(stderr, "skiff-store-bench: unknown operation %s\n", o.op.c_str());
    return 2;
  }
  const double cpu0 = CpuSeconds();
  LoadResult r = client == "h2" ? RunH2Load(o, errors) : RunGrpcLoad(o, errors);
  const double cpu = CpuSeconds() - cpu0;
  auto& all = r.latencies_ms;
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * static_cast<double>(all.size())))];
  };
  const double n = static_cast<double>(all.size());
  if (errors.count() > 0) std::fprintf(stderr, "first error: %s\n", errors.first().c_str());
  std::printf(
      "op=%s clients=%d requests=%zu seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%lld "
      "client_cpu_us_per_req=%.1f\n",
      o.op.c_str(), o.clients, all.size(), r.seconds, r.seconds > 0 ? n / r.seconds : 0.0, pct(0.5), pct(0.99),
      all.empty() ? 0 : all.back(), static_cast<long long>(errors.count()), n > 0 ? cpu * 1e6 / n : 0.0);
  return errors.count() == 0 ? 0 : 1;
}
