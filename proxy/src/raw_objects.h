// Services and EndpointSlices as a source found them, before any rule is
// applied. Every source (YAML, JSON, API protos) fills these and hands them
// to AddService/AddEndpointSlice, the one place that validates and skips
// malformed parts, so all sources skip the same things with the same log
// lines.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "skiff/proxy/model.h"

namespace skiff::proxy {

// A number field: nullopt when absent, `text` keeps what was there for the
// log line when it was not a number.
struct RawNumber {
  std::optional<int64_t> value;
  std::string text;
  bool present = false;
};

struct RawServicePort {
  std::string name;
  std::string protocol;  // empty = TCP
  RawNumber port;
  RawNumber node_port;
};

struct RawService {
  std::string ns, name, type;
  std::vector<std::string> cluster_ips;  // clusterIPs, or the single clusterIP
  std::string cluster_ip;                // clusterIP (must equal clusterIPs[0])
  std::vector<std::string> ip_families;  // ipFamilies: family of clusterIPs[i]
  std::string ip_family_policy;          // SingleStack | PreferDualStack | RequireDualStack
  std::vector<std::string> external_ips;
  std::string session_affinity;
  RawNumber affinity_timeout;
  std::string external_traffic_policy, internal_traffic_policy;
  RawNumber health_check_node_port;
  std::vector<RawServicePort> ports;
};

struct RawEndpoint {
  std::vector<std::string> addresses;
  std::optional<bool> ready, serving, terminating;
  std::string node_name;
};

struct RawEndpointPort {
  std::string name;
  std::string protocol;
  RawNumber port;
};

struct RawEndpointSlice {
  std::string ns, name, service_name;
  std::string address_type;  // empty = IPv4
  std::vector<RawEndpoint> endpoints;
  std::vector<RawEndpointPort> ports;
};

// Validate, log and add to `out`. Returns false (after a warning line) when
// the whole object is skipped. Each warning is also appended to `problems`
// (when given), for an Event on the object.
bool AddService(RawService raw, ClusterState* out, std::vector<std::string>* problems = nullptr);
bool AddEndpointSlice(RawEndpointSlice raw, ClusterState* out);

}  // namespace skiff::proxy
