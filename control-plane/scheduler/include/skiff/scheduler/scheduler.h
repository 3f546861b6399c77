// skiff-scheduler: assigns unscheduled pods to nodes. Runs inside
// skiff-control-plane (or alone) as a client of the API server.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "skiff/client/client.h"

namespace skiff::scheduler {

struct Options {
  std::string identity;  // leader-election holder identity (hostname_pid when empty)
  bool leader_elect = true;
  int lease_duration_seconds = 15;
  // Binding RPCs in flight at once (0: CoreOptions' default).
  int binder_threads = 0;
};

// Runs until stop becomes true. With leader_elect, only the holder of the
// Lease kube-system/skiff-scheduler schedules.
absl::Status Run(std::shared_ptr<skiff::client::Client> api, const Options& opts, const std::atomic<bool>& stop);

}  // namespace skiff::scheduler
