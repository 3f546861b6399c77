// skiff controller manager: ReplicaSet, Deployment, EndpointSlice, Namespace,
// garbage collector, node lifecycle, node IPAM and ServiceAccount controllers,
// behind one leader-election Lease (kube-system/skiff-controller-manager).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "skiff/client/client.h"

namespace skiff::controllers {

struct Options {
  std::string identity;  // leader-election holder identity (hostname_pid when empty)
  bool leader_elect = true;
  int lease_duration_seconds = 15;
  std::string cluster_cidr = "10.244.0.0/16";
  int node_cidr_mask_size = 24;
  int node_monitor_grace_period_seconds = 40;
  int default_not_ready_toleration_seconds = 300;
  int default_unreachable_toleration_seconds = 300;
};

// Runs until stop becomes true.
absl::Status Run(std::shared_ptr<skiff::client::Client> api, const Options& opts, const std::atomic<bool>& stop);

}  // namespace skiff::controllers
