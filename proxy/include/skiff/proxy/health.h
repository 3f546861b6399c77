// The agent-wide health of skiff-proxy, answered on --healthz-bind-address
// (default 0.0.0.0:10256) as kube-proxy answers it: healthy unless an update
// from the source has waited longer than the timeout to be programmed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace skiff::proxy {

class ProxierHealth {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  explicit ProxierHealth(std::chrono::milliseconds timeout, Clock clock = std::chrono::system_clock::now)
      : timeout_(timeout), clock_(std::move(clock)) {}

  // The source delivered a change that is not programmed yet. Only the
  // oldest pending change counts.
  void QueuedUpdate();
  // Everything queued so far is programmed.
  void Updated();
  bool Healthy() const;

  struct Answer {
    int code = 200;
    std::string body;  // JSON
  };
  // `/healthz`: {"lastUpdated": ..., "currentTime": ..., "nodeEligible": true}
  // `/livez`: the same without nodeEligible. 200 when healthy, 503 when not.
  Answer Healthz() const { return Render(true); }
  Answer Livez() const { return Render(false); }

 private:
  Answer Render(bool healthz) const;
  std::chrono::milliseconds timeout_;
  Clock clock_;
  std::atomic<int64_t> oldest_pending_ns_{0};  // 0 = nothing pending
  std::atomic<int64_t> last_updated_ns_{0};
};

// "2006-01-02 15:04:05.999999999 +0000 UTC": how kube-proxy (Go's
// time.Time) writes these times; trailing zeros of the fraction dropped.
std::string FormatGoTime(std::chrono::system_clock::time_point t);

}  // namespace skiff::proxy
