// From Services + EndpointSlices to the frontends and backend sets the
// datapath must hold on this node.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/node_hash_map.h"
#include "skiff/proxy/model.h"

namespace skiff::proxy {

// An IPv4 address is `address`; an IPv6 one is `address6` (v6 = true,
// address = 0). Both in network byte order. (Ipv6Address: model.h.)

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

// A change to apply: frontend -> new contents, or nullopt to remove it.
using FrontendDelta = std::map<FrontendKey, std::optional<Frontend>>;

DesiredState ComputeDesired(const ClusterState& state, const NodeConfig& node);

// Incremental ComputeDesired: remembers each service's inputs and frontends
// and recomputes only services whose Service or EndpointSlices changed.
class DesiredBuilder {
 public:
  explicit DesiredBuilder(NodeConfig node);
  ~DesiredBuilder();
  DesiredBuilder(DesiredBuilder&&);
  DesiredBuilder& operator=(DesiredBuilder&&);
  // The frontends of every service whose inputs changed since the previous
  // call (all of that service's frontends, changed or not), and nullopt for
  // the frontends that went away. The first call returns the whole desired
  // state. With a ChangeSet only the named services are looked at (the
  // StateStore names the services of a changed slice, before and after),
  // so one endpoint change costs O(change). The builder keeps no copy of
  // the frontends (ServiceMap holds what is programmed); applying the
  // deltas in order gives ComputeDesired(). `state` must be the same store
  // on every call (the builder's fingerprints use its name ids).
  FrontendDelta Update(const CompactState& state, const ChangeSet& changes);
  // Model objects (tests, ComputeDesired): mirrored into a CompactState of
  // the builder's own, through `changes`, which may name slices alone.
  FrontendDelta Update(const ClusterState& state, const ChangeSet& changes);
  FrontendDelta Update(const ClusterState& state) { return Update(state, ChangeSet::All()); }

 private:
  // Per service only a fingerprint of its inputs and the keys of its
  // frontends, so the builder holds no copy of the cluster state nor of the
  // frontends.
  struct Cached {
    uint64_t fingerprint = 0;
    OneOrMore<FrontendKey> keys;  // sorted (most services have one frontend)
  };
  NodeConfig node_;
  // Decodes the Service of `e` and its slices into the scratch records;
  // returns the fingerprint of those inputs.
  uint64_t Load(const CompactState& state, const CompactState::Entry& e);
  void Visit(const std::string& key, const CompactState& state, FrontendDelta* delta);
  // The builder's first pass (nothing cached yet): every service, with the
  // builder's entries allocated after the delta (see desired.cc).
  void FirstPass(const CompactState& state, FrontendDelta* delta);
  Cached Compute(const CompactState& state, uint64_t fingerprint, std::vector<std::pair<FrontendKey, Frontend>>* fresh) const;
  void Drop(const std::string& service_key, const OneOrMore<FrontendKey>& old, const OneOrMore<FrontendKey>* keep, FrontendDelta* delta);
  // Nodes stay put (owner_ points at their keys); an absl node map needs ~16 B
  // less per service than std::unordered_map (no bucket list, no cached hash).
  absl::node_hash_map<std::string, Cached> cache_;
  // Which service a frontend key belongs to (the last one that produced it):
  // points at that service's key in cache_ (node keys never move).
  // A B-tree: entries sit in arrays, ~40 B each instead of an 80 B map node.
  absl::btree_map<FrontendKey, const std::string*> owner_;
  // Reused between services, so a visit allocates nothing to read records.
  ServiceRecord svc_;
  std::vector<SliceRecord> slices_;
  size_t slice_count_ = 0;
  std::unique_ptr<CompactState> mirror_;  // for Update(ClusterState)
};

std::string Ipv4ToString(uint32_t address_be);
std::string Ipv6ToString(const Ipv6Address& address);

}  // namespace skiff::proxy
