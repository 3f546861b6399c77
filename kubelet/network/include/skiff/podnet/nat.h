// The node's NAT for the pod network, in nftables through libnftables (no
// `nft` or `iptables` process): one table `ip skiff_podnet` in the node's
// network namespace (the namespace of the thread that opens it) with
//   - map hostports { proto . port : pod ip . pod port } and a DNAT rule in
//     prerouting (traffic from other hosts) and output (from the node
//     itself) for destinations that are local addresses of the node;
//   - a masquerade rule in postrouting for traffic from this node's podCIDR
//     to anything outside the cluster CIDR.
// Map elements are the only per-pod state, found again by their pod IP, so a
// restarted kubelet can still remove what an earlier one added.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct nft_ctx;

namespace skiff::podnet {

struct PortMapping {
  std::string protocol = "TCP";  // TCP, UDP or SCTP (Kubernetes' spelling; case ignored)
  int host_port = 0;
  int container_port = 0;
};

class NodeNat {
 public:
  inline static const char* kTable = "skiff_podnet";

  // Creates or refreshes the table (existing hostPort elements are kept).
  // cluster_cidr "" = no masquerade rule.
  static absl::StatusOr<std::unique_ptr<NodeNat>> Open(const std::string& pod_cidr, const std::string& cluster_cidr);
  ~NodeNat();

  // Makes the mappings to `pod_ip` exactly `ports` (one transaction).
  absl::Status SetPorts(uint32_t pod_ip, const std::vector<PortMapping>& ports);
  // Removes every mapping to `pod_ip`.
  absl::Status RemovePorts(uint32_t pod_ip) { return SetPorts(pod_ip, {}); }
  // Every mapping, by pod IP.
  absl::StatusOr<std::multimap<uint32_t, PortMapping>> List();
  // Current mappings to `pod_ip`.
  absl::StatusOr<std::vector<PortMapping>> Ports(uint32_t pod_ip);
  // Deletes the whole table (tests, and a node leaving the pod network).
  absl::Status DeleteTable();

 private:
  NodeNat() = default;
  absl::Status Run(const std::string& commands, std::string* output = nullptr, bool json = false);
  nft_ctx* ctx_ = nullptr;
  std::set<uint32_t> mapped_;  // pod IPs that have elements
};

}  // namespace skiff::podnet
