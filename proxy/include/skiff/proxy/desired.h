// From Services + EndpointSlices to the frontends and backend sets the
// datapath must hold on this node.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "skiff/proxy/model.h"

namespace skiff::proxy {

struct Backend {
  uint32_t address = 0;  // IPv4, network byte order
  uint16_t port = 0;     // host byte order
  uint8_t proto = 0;
  uint8_t flags = 0;     // SKIFF_BE_F_*
  auto operator<=>(const Backend&) const = default;
};

struct FrontendKey {
  uint32_t address = 0;  // IPv4, network byte order; 0 = any node address (tc NodePort)
  uint16_t port = 0;     // host byte order
  uint8_t proto = 0;
  uint8_t scope = 0;     // SKIFF_LB_SCOPE_*
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

std::string Ipv4ToString(uint32_t address_be);

}  // namespace skiff::proxy
