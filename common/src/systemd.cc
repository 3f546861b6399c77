#include "skiff/common/systemd.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "skiff/common/log.h"
#include "skiff/common/unique_fd.h"

namespace skiff::systemd {

namespace {

// The sd_notify protocol without libsystemd (which maps ~1 MB of itself and
// its compression and crypto libraries into every daemon): one datagram to
// the AF_UNIX socket named by $NOTIFY_SOCKET ("@" = abstract namespace).
void Notify(const char* state) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof(addr.sun_path)) return;
  memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return;
  sendto(fd.get(), state, strlen(state), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr),
         static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
}

// $WATCHDOG_USEC, when $WATCHDOG_PID is unset or names this process; 0 = off.
uint64_t WatchdogUsec() {
  const char* usec = getenv("WATCHDOG_USEC");
  if (usec == nullptr) return 0;
  if (const char* pid = getenv("WATCHDOG_PID"); pid != nullptr && strtoll(pid, nullptr, 10) != getpid()) return 0;
  return strtoull(usec, nullptr, 10);
}

}  // namespace

void NotifyReady() { Notify("READY=1"); }
void NotifyStopping() { Notify("STOPPING=1"); }

void StartWatchdog(std::function<bool()> healthy) {
  static std::once_flag once;
  std::call_once(once, [healthy = std::move(healthy)]() mutable {
    uint64_t usec = WatchdogUsec();
    if (usec == 0) return;
    auto interval = std::chrono::microseconds(usec / 2);
    std::thread([interval, healthy = std::move(healthy)] {
      for (;;) {
        if (!healthy || healthy()) {
          Notify("WATCHDOG=1");
        } else {
          log::Warn("unhealthy: withholding the systemd watchdog ping");
        }
        std::this_thread::sleep_for(interval);
      }
    }).detach();
  });
}

}  // namespace skiff::systemd
