// The pod network of one node: routed veth pairs, no bridge.
//
// Node side (the network namespace the kubelet runs in — never another one):
//   veth "sk<hash>" per pod, holding the gateway address <podCIDR first host>/32,
//   a /32 route to each pod over its veth, a route to every other node's
//   podCIDR via that node's InternalIP, an unreachable route for the service
//   CIDR, and ip_forward on.
// Pod side: its own namespace pinned at <run_dir>/netns/<pod uid>, lo up,
//   eth0 with <pod ip>/32, a link route to the gateway and a default route via it.
// All of it through libnl (rtnetlink); nothing shells out to `ip`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/podnet/cidr.h"
#include "skiff/podnet/ipam.h"
#include "skiff/podnet/nat.h"

struct nl_sock;

namespace skiff::podnet {

// Routes this component owns carry this rtnetlink protocol number, so stale
// ones can be found and removed after a restart.
inline constexpr uint8_t kRouteProtocol = 0x53;  // 'S'

struct PodNetworkOptions {
  std::string run_dir;     // netns files under <run_dir>/netns
  std::string state_dir;   // IPAM files under <state_dir>/ipam/<cidr>
  std::string pod_cidr;    // this node's podCIDR, e.g. 10.244.1.0/24
  std::string service_cidr = "10.96.0.0/12";  // "" = no unreachable route
  // The whole cluster's pod network (every node's podCIDR inside it). Traffic
  // from this node's pods to anything outside it is masqueraded to the
  // node's address. "" = no masquerade.
  std::string cluster_cidr;
  // hostPort and masquerade through nftables (see nat.h). Without it (or
  // when the kernel has no nf_tables) SetHostPorts fails and nothing is
  // masqueraded.
  bool enable_nat = true;
};

struct PodNetworkResult {
  std::string netns_path;
  std::string ip;        // dotted quad
  std::string host_veth;
};

class PodNetwork {
 public:
  // Prepares the node side (ip_forward, service CIDR route) and opens IPAM.
  static absl::StatusOr<std::unique_ptr<PodNetwork>> Open(const PodNetworkOptions& options);
  ~PodNetwork();

  // Idempotent: a pod that already has its namespace, veth and address keeps them.
  absl::StatusOr<PodNetworkResult> Setup(const std::string& pod_uid);
  // Makes the pod's hostPorts exactly `ports`: NODE_IP:host_port (any local
  // address of the node, from other hosts and from the node itself) is
  // DNATed to <pod ip>:container_port. Call after Setup; Teardown removes them.
  absl::Status SetHostPorts(const std::string& pod_uid, const std::vector<PortMapping>& ports);
  // Idempotent: removes hostPorts, veth, namespace and address; OK when already gone.
  absl::Status Teardown(const std::string& pod_uid);
  // What Setup would return, without creating anything (NotFound if no address).
  absl::StatusOr<PodNetworkResult> Lookup(const std::string& pod_uid);
  // Pod uids that have a pinned namespace or an address (for garbage collection).
  std::set<std::string> KnownPods() const;

  // Makes the node's routes to other nodes' podCIDRs exactly `cidr_to_gateway`
  // (podCIDR -> that node's InternalIP); routes for this node's own CIDR are ignored.
  absl::Status SyncNodeRoutes(const std::map<std::string, std::string>& cidr_to_gateway);

  Ipam& ipam() { return *ipam_; }
  static std::string HostVethName(const std::string& pod_uid);
  std::string NetnsPath(const std::string& pod_uid) const;

 private:
  PodNetwork() = default;
  PodNetworkOptions options_;
  std::unique_ptr<Ipam> ipam_;
  // libnl sockets are not thread-safe; pod workers call in from many threads.
  std::mutex mu_;
  ::nl_sock* sock_ = nullptr;  // rtnetlink, node namespace
  std::unique_ptr<NodeNat> nat_;
  absl::Status nat_status_;  // why nat_ is missing
};

}  // namespace skiff::podnet
