// The agent's view of the cluster: Services and EndpointSlices reduced to the
// fields service routing needs, and the interface through which a source (a
// file, the API watch) feeds them in.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"

namespace skiff::proxy {

// A list that almost always holds one element (a Service's cluster IP and
// port, an endpoint's address, a slice's port): kept inline, so the store's
// copy of 10k Services and slices needs no heap block per list.
template <typename T>
using OneOrMore = absl::InlinedVector<T, 1>;

enum class Protocol : uint8_t { kTcp = 6, kUdp = 17 };

struct ServicePort {
  std::string name;
  Protocol protocol = Protocol::kTcp;
  uint16_t port = 0;
  uint16_t node_port = 0;  // 0 = none
  bool operator==(const ServicePort&) const = default;
};

// spec.type; a type this agent does not know counts as ClusterIP, as before.
enum class ServiceType : uint8_t { kClusterIP, kNodePort, kLoadBalancer, kExternalName };

struct Service {
  std::string ns;
  std::string name;
  OneOrMore<std::string> cluster_ips;  // empty or "None" = headless
  std::vector<std::string> external_ips;
  OneOrMore<ServicePort> ports;
  ServiceType type = ServiceType::kClusterIP;
  bool affinity_client_ip = false;
  uint32_t affinity_timeout_s = 10800;
  bool external_policy_local = false;     // externalTrafficPolicy: Local
  bool internal_policy_local = false;     // internalTrafficPolicy: Local
  uint16_t health_check_node_port = 0;    // spec.healthCheckNodePort (eTP Local LoadBalancer)

  std::string Key() const { return ns + "/" + name; }
  bool operator==(const Service&) const = default;
};

struct EndpointPort {
  std::string name;
  Protocol protocol = Protocol::kTcp;
  uint16_t port = 0;
  bool operator==(const EndpointPort&) const = default;
};

struct Endpoint {
  OneOrMore<std::string> addresses;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
  std::string node_name;
  bool operator==(const Endpoint&) const = default;
};

struct EndpointSlice {
  std::string ns;
  std::string name;
  std::string service_name;  // label kubernetes.io/service-name
  std::vector<Endpoint> endpoints;
  OneOrMore<EndpointPort> ports;

  std::string Key() const { return ns + "/" + name; }
  bool operator==(const EndpointSlice&) const = default;
};

// The whole input at one moment.
struct ClusterState {
  std::map<std::string, Service> services;              // by ns/name
  std::map<std::string, EndpointSlice> endpoint_slices;  // by ns/name
};

// What changed since a previous look at a ClusterState: keys (ns/name) of
// Services and EndpointSlices that were added, modified or removed. `all`
// means "compare everything" (first sync, re-list, file reload). A changed
// EndpointSlice also puts its Service's key in `services`, and the key of the
// Service it named before when that differs or the slice is gone, so a
// consumer needs no slice -> service index of its own.
struct ChangeSet {
  bool all = false;
  std::set<std::string> services;
  std::set<std::string> slices;
  bool empty() const { return !all && services.empty() && slices.empty(); }
  static ChangeSet All() {
    ChangeSet c;
    c.all = true;
    return c;
  }
};

// Where a source delivers what it sees. Implementations are thread-safe: a
// source may call from its own thread. A list+watch source calls Replace()
// with the result of its list (and again after every re-list), then the
// Upsert/Delete calls for each watch event.
class StateSink {
 public:
  virtual ~StateSink() = default;
  // The complete current state (a list result or a file). Implementations
  // find out themselves what differs from what they had.
  virtual void Replace(ClusterState state) = 0;
  virtual void UpsertService(Service service) = 0;
  virtual void DeleteService(const std::string& ns, const std::string& name) = 0;
  virtual void UpsertEndpointSlice(EndpointSlice slice) = 0;
  virtual void DeleteEndpointSlice(const std::string& ns, const std::string& name) = 0;
};

}  // namespace skiff::proxy
