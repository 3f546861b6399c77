// From Services + EndpointSlices to the frontends and backend sets the
// datapath must hold on this node.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <string>
#include <vector>

#include "skiff/proxy/model.h"

namespace skiff::proxy {

// An IPv4 address is `address`; an IPv6 one is `address6` (v6 = true,
// address = 0). Both in network byte order.
using Ipv6Address = std::array<uint32_t, 4>;

struct Backend {
  uint32_t address = 0;  // IPv4, network byte order
  uint16_t port = 0;     // host byte order
  uint8_t proto = 0;
  uint8_t flags = 0;     // SKIFF_BE_F_*
  bool v6 = false;
  Ipv6Address address6{};
  auto operator<=>(const Backend&) const = default;
};

struct FrontendKey {
  uint32_t address = 0;  // IPv4, network byte order; 0 = any node address (tc NodePort)
  uint16_t port = 0;     // host byte order
  uint8_t proto = 0;
  uint8_t scope = 0;     // SKIFF_LB_SCOPE_*
  bool v6 = false;       // IPv6 frontend (socket LB only): address6, address = 0
  Ipv6Address address6{};
  auto operator<=>(const FrontendKey&) const = default;
};

struct Frontend {
  std::string service_port;  // "ns/name:port-name/proto": frontends of one service port share ids
  uint16_t flags = 0;        // SKIFF_SVC_F_*
  uint32_t affinity_timeout_s = 0;
  std::vector<Backend> backends;  // sorted, unique; empty = refuse
  bool operator==(const Frontend&) const = default;
};

struct DesiredState {
  std::map<FrontendKey, Frontend> frontends;
};

struct NodeConfig {
  std::string node_name;
  std::vector<std::string> node_ips;  // NodePort frontends for traffic from the node itself
};

DesiredState ComputeDesired(const ClusterState& state, const NodeConfig& node);

// The frontends of one service given its endpoint slices.
void ComputeServiceFrontends(const Service& svc, const std::vector<const EndpointSlice*>& slices,
                             const NodeConfig& node, std::vector<std::pair<FrontendKey, Frontend>>* out);

// Incremental ComputeDesired: remembers each service's inputs and frontends
// and recomputes only services whose Service or EndpointSlices changed.
class DesiredBuilder {
 public:
  explicit DesiredBuilder(NodeConfig node) : node_(std::move(node)) {}
  // The frontends that changed since the previous call (nullopt = removed).
  // With a ChangeSet only the named services (and the services of the named
  // slices) are looked at, so one endpoint change costs O(change).
  std::map<FrontendKey, std::optional<Frontend>> Update(const ClusterState& state, const ChangeSet& changes);
  std::map<FrontendKey, std::optional<Frontend>> Update(const ClusterState& state) {
    return Update(state, ChangeSet::All());
  }
  const std::map<FrontendKey, Frontend>& current() const { return current_; }

 private:
  // Per service only a fingerprint of its inputs and the keys of its
  // frontends (the frontends themselves live once, in current_), so the
  // builder does not hold a second copy of the cluster state.
  struct Cached {
    uint64_t fingerprint = 0;
    std::vector<FrontendKey> keys;  // sorted
  };
  NodeConfig node_;
  void Visit(const std::string& key, const ClusterState& state, std::map<FrontendKey, std::optional<Frontend>>* delta);
  void Drop(const std::string& service_key, const std::vector<FrontendKey>& old,
            const std::vector<FrontendKey>* keep, std::map<FrontendKey, std::optional<Frontend>>* delta);
  std::unordered_map<std::string, Cached> cache_;
  // service key -> slice keys, sorted (a vector: most services have one slice)
  std::unordered_map<std::string, std::vector<std::string>> slices_of_;
  void LinkSlice(const std::string& service_key, const std::string& slice_key);
  void UnlinkSlice(const std::string& service_key, const std::string& slice_key);
  std::unordered_map<std::string, std::string> service_of_;           // slice key -> service key
  std::map<FrontendKey, Frontend> current_;
};

std::string Ipv4ToString(uint32_t address_be);
std::string Ipv6ToString(const Ipv6Address& address);

}  // namespace skiff::proxy
