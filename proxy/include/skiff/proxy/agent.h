// The skiff-proxy agent: a Source feeds a StateStore; the programming loop
// turns each new state into a DesiredState and applies the difference to the
// pinned maps; an HTTP listener serves /metrics and /healthz.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "skiff/proxy/source.h"

namespace skiff::proxy {

struct AgentOptions {
  std::string bpffs_dir = "/sys/fs/bpf/skiff";
  std::string cgroup_root;  // empty: the cgroup2 mount point
  std::string node_name;
  std::vector<std::string> node_ips;
  std::string service_cidr = "10.96.0.0/12";  // dual-stack: "10.96.0.0/12,fd00:96::/108"
  bool service_route = true;           // unreachable route for service_cidr in this netns
  std::string metrics_address = "127.0.0.1:10249";  // "" disables the listener
  std::vector<std::string> tc_interfaces;           // NodePort/external IPs via tc
  // kube-proxy's agent health server: /healthz and /livez. "" disables it.
  std::string healthz_address = "0.0.0.0:10256";
  // Unhealthy (503) once a change from the source has waited this long to be
  // programmed (kube-proxy: twice its sync period, 60 s by default).
  std::chrono::milliseconds healthz_timeout{60000};
};

// Runs until `stop` becomes true (returns OK) or a fatal error. Pinned maps
// and links stay in place when it returns, so the datapath keeps serving.
absl::Status RunAgent(const AgentOptions& options, std::unique_ptr<Source> source, std::atomic<bool>& stop);

// Adds (or replaces) "unreachable <cidr>" in the main table of the current
// network namespace, via rtnetlink.
absl::Status EnsureUnreachableRoute(const std::string& cidr);

// The cgroup2 mount point from /proc/self/mountinfo.
absl::StatusOr<std::string> FindCgroup2Mount();

}  // namespace skiff::proxy
