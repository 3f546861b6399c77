// The closed-loop load skiff-store-bench puts on an etcd v3 server, shared by
// its two client implementations (lean nghttp2 and gRPC C++).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace skiff::store::bench {

using Clock = std::chrono::steady_clock;

struct LoadOptions {
  std::string op;        // "put" or "range"
  std::string endpoint;  // host:port (an http:// prefix is accepted)
  int clients = 1;       // logical closed-loop clients, one request outstanding each
  int conns = 1;         // TCP connections the clients are spread over round-robin
  int threads = 1;       // event-loop threads (h2 client only)
  int64_t total = 10000;
  double duration = 0;   // seconds; > 0 replaces total
  size_t val_size = 256;
  int64_t key_space = 100000;
  bool linearizable = false;
  std::string token;     // etcd auth token sent as "token" metadata (h2 client only); "" = none
};

// The benchmark's key names: bench/k/%08lld.
inline std::string BenchKey(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "bench/k/%08lld", static_cast<long long>(i));
  return buf;
}

// Client c's key sequence: xorshift64 over [0, key_space).
class KeySequence {
 public:
  KeySequence(int client, int64_t key_space)
      : x_(88172645463325252ULL ^ static_cast<uint64_t>(client + 1)), space_(static_cast<uint64_t>(key_space)) {}
  std::string Next() {
    x_ ^= x_ << 13;
    x_ ^= x_ >> 7;
    x_ ^= x_ << 17;
    return BenchKey(static_cast<int64_t>(x_ % space_));
  }

 private:
  uint64_t x_;
  uint64_t space_;
};

// Hands out request slots until --total is used up or --duration is over.
class RequestBudget {
 public:
  explicit RequestBudget(const LoadOptions& o)
      : total_(o.duration > 0 ? INT64_MAX / 2 : o.total),
        timed_(o.duration > 0),
        deadline_(Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.duration * 1000))) {}
  bool Take(Clock::time_point now) {
    if (next_.fetch_add(1, std::memory_order_relaxed) >= total_) return false;
    return !(timed_ && now >= deadline_);
  }

 private:
  std::atomic<int64_t> next_{0};
  const int64_t total_;
  const bool timed_;
  const Clock::time_point deadline_;
};

// Counts errors and keeps the first one's text.
class ErrorLog {
 public:
  void Add(const std::string& what) {
    if (count_.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> l(mu_);
      first_ = what;
    }
  }
  int64_t count() const { return count_.load(); }
  std::string first() const {
    std::lock_guard<std::mutex> l(mu_);
    return first_;
  }

 private:
  std::atomic<int64_t> count_{0};
  mutable std::mutex mu_;
  std::string first_;
};

struct LoadResult {
  std::vector<double> latencies_ms;  // one per request sent, failed ones too
  double seconds = 0;
};

// HTTP/2 (prior knowledge) + gRPC framing on nghttp2, one epoll loop per thread.
LoadResult RunH2Load(const LoadOptions& o, ErrorLog& errors);
// gRPC C++ synchronous stubs, one thread per client.
LoadResult RunGrpcLoad(const LoadOptions& o, ErrorLog& errors);
// Loads keys 0..total-1 with 100-put txns (gRPC C++).
void RunGrpcFill(const LoadOptions& o, ErrorLog& errors);

}  // namespace skiff::store::bench
