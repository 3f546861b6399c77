#include "skiff/common/systemd.h"

#include <systemd/sd-daemon.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "skiff/common/log.h"

namespace skiff::systemd {

void NotifyReady() { sd_notify(0, "READY=1"); }
void NotifyStopping() { sd_notify(0, "STOPPING=1"); }

void StartWatchdog(std::function<bool()> healthy) {
  static std::once_flag once;
  std::call_once(once, [healthy = std::move(healthy)]() mutable {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
    auto interval = std::chrono::microseconds(usec / 2);
    std::thread([interval, healthy = std::move(healthy)] {
      for (;;) {
        if (!healthy || healthy()) {
          sd_notify(0, "WATCHDOG=1");
        } else {
          log::Warn("unhealthy: withholding the systemd watchdog ping");
        }
        std::this_thread::sleep_for(interval);
      }
    }).detach();
  });
}

}  // namespace skiff::systemd
