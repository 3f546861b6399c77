// sd_notify for the daemons: READY=1 once serving, WATCHDOG=1 while healthy.
// Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
#pragma once

#include <functional>

namespace skiff::systemd {

void NotifyReady();
void NotifyStopping();
// When the unit sets WatchdogSec, pings WATCHDOG=1 at half that interval from
// a background thread for as long as `healthy` (if given) returns true; a
// daemon that stops being healthy is then restarted by systemd. Returns at
// once; idempotent.
void StartWatchdog(std::function<bool()> healthy = nullptr);

}  // namespace skiff::systemd
