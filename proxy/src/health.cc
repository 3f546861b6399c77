#include "skiff/proxy/health.h"

#include <ctime>

namespace skiff::proxy {

namespace {

int64_t Nanos(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::chrono::system_clock::time_point FromNanos(int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns)));
}

}  // namespace

void ProxierHealth::QueuedUpdate() {
  int64_t expected = 0;
  oldest_pending_ns_.compare_exchange_strong(expected, Nanos(clock_()));
}

void ProxierHealth::Updated() {
  oldest_pending_ns_.store(0);
  last_updated_ns_.store(Nanos(clock_()));
}

bool ProxierHealth::Healthy() const {
  int64_t pending = oldest_pending_ns_.load();
  if (pending == 0) return true;  // starting up with nothing queued, or synced
  return Nanos(clock_()) - pending < std::chrono::duration_cast<std::chrono::nanoseconds>(timeout_).count();
}

ProxierHealth::Answer ProxierHealth::Render(bool healthz) const {
  auto now = clock_();
  Answer a;
  bool healthy = Healthy();
  // As kube-proxy: a healthy answer reports lastUpdated as now (older
  // clients read "recent lastUpdated" as healthy); an unhealthy one the time
  // of the last successful programming (zero time if none).
  std::string last = healthy ? FormatGoTime(now)
                             : (last_updated_ns_.load() ? FormatGoTime(FromNanos(last_updated_ns_.load()))
                                                        : std::string("0001-01-01 00:00:00 +0000 UTC"));
  a.code = healthy ? 200 : 503;
  a.body = "{\"lastUpdated\": \"" + last + "\",\"currentTime\": \"" + FormatGoTime(now) + "\"";
  // Node eligibility (deletion, the autoscaler's ToBeDeleted taint) is not
  // watched: the node is always eligible.
  if (healthz) a.body += ", \"nodeEligible\": true";
  a.body += "}";
  return a;
}

std::string FormatGoTime(std::chrono::system_clock::time_point t) {
  int64_t ns = Nanos(t);
  time_t secs = static_cast<time_t>(ns / 1000000000);
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    --secs;
  }
  tm tm_utc{};
  gmtime_r(&secs, &tm_utc);
  char buf[64];
  strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm_utc);
  std::string out = buf;
  if (frac) {
    char f[16];
    snprintf(f, sizeof(f), ".%09lld", static_cast<long long>(frac));
    std::string fs = f;
    while (fs.back() == '0') fs.pop_back();
    out += fs;
  }
  return out + " +0000 UTC";
}

}  // namespace skiff::proxy
