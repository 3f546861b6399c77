// Leader election through a coordination.k8s.io Lease, as client-go's
// leaderelection with a LeaseLock. The holder renews every duration/5; a
// candidate takes over once renewTime + leaseDurationSeconds has passed
// (times compared by wall clock, so replicas need synchronised clocks), and a
// holder that cannot renew within 2/3 of the duration steps down.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "skiff/client/client.h"

namespace skiff::controllers {

struct LeaderElectionConfig {
  std::string lease_namespace = "kube-system";
  std::string lease_name;
  std::string identity;
  int lease_duration_seconds = 15;
};

// Runs until `stop`. Whenever this process holds the lease it runs `lead` on
// its own thread; `lead` must return soon after `lost` becomes true (which
// also happens on stop). The lease is released on stop so a peer takes over
// at once.
absl::Status RunWithLeaderElection(std::shared_ptr<client::Client> api, const LeaderElectionConfig& cfg,
                                   const std::atomic<bool>& stop,
                                   const std::function<void(const std::atomic<bool>& lost)>& lead);

// One attempt to acquire or renew: true when `identity` holds the lease after it.
absl::StatusOr<bool> TryAcquireOrRenew(client::Client& api, const LeaderElectionConfig& cfg);

// hostname_pid, the default identity.
std::string DefaultIdentity();

}  // namespace skiff::controllers
