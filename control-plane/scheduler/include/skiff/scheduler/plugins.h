// The scheduler's node model and its filter and score plugins, as pure
// functions over that model so each can be tested alone.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "skiff/api/v1/objects.pb.h"

namespace skiff::scheduler {

struct Resources {
  int64_t milli_cpu = 0;
  int64_t memory = 0;
  int64_t pods = 0;
  std::map<std::string, int64_t> scalar;  // other resources, whole units

  void Add(const Resources& r, int sign = 1);
};

struct HostPort {
  std::string ip;  // "" or 0.0.0.0 = all addresses
  std::string protocol;
  int32_t port = 0;
  bool operator<(const HostPort& o) const {
    return std::tie(port, protocol, ip) < std::tie(o.port, o.protocol, o.ip);
  }
};

// What the scheduler needs of a pod.
struct PodInfo {
  std::string key;  // ns/name
  std::string node;
  Resources requests;
  Resources nonzero_requests;  // with 100m / 200Mi defaults, for scoring
  std::vector<HostPort> host_ports;
  std::string owner_uid;  // controller owner (ReplicaSet), for spreading
};

PodInfo MakePodInfo(const api::v1::Pod& pod);

struct NodeInfo {
  std::string name;
  bool ready = false;
  bool unschedulable = false;
  Resources allocatable;
  Resources requested;
  Resources nonzero_requested;
  std::map<std::string, std::string> labels;
  std::vector<api::v1::Taint> taints;
  std::multiset<HostPort> used_ports;
  std::map<std::string, int> owner_counts;
  int pod_count = 0;

  void AddPod(const PodInfo& p);
  void RemovePod(const PodInfo& p);
};

NodeInfo MakeNodeInfo(const api::v1::Node& node);

// Filters: "" when the node fits, else the reason Kubernetes prints
// ("Insufficient cpu", "node(s) didn't match Pod's node affinity/selector", ...).
// Several resource shortfalls are reported together, so this returns a list.
std::string FilterNodeReady(const NodeInfo& node);
std::string FilterUnschedulable(const api::v1::Pod& pod, const NodeInfo& node);
std::vector<std::string> FilterResources(const PodInfo& pod, const NodeInfo& node);
std::string FilterNodeAffinity(const api::v1::Pod& pod, const NodeInfo& node);
std::string FilterTaints(const api::v1::Pod& pod, const NodeInfo& node);
std::string FilterHostPorts(const PodInfo& pod, const NodeInfo& node);

// All filters in order; appends reasons, returns true when the node fits.
bool RunFilters(const api::v1::Pod& pod, const PodInfo& info, const NodeInfo& node, std::vector<std::string>* why);

bool Tolerates(const api::v1::Toleration& tol, const api::v1::Taint& taint);
bool ToleratesAll(const google::protobuf::RepeatedPtrField<api::v1::Toleration>& tols, const api::v1::Taint& taint);
bool MatchNodeSelectorTerm(const api::v1::NodeSelectorTerm& term, const NodeInfo& node);

// Scores, 0..100 (raw, before normalisation where noted).
int64_t ScoreLeastAllocated(const PodInfo& pod, const NodeInfo& node);
int64_t ScoreBalancedAllocation(const PodInfo& pod, const NodeInfo& node);
// Raw: pods of the same owner on the node. Normalised by NormalizeSpread.
int64_t RawSpread(const PodInfo& pod, const NodeInfo& node);
// Raw: sum of the weights of matching preferred terms. Normalised by NormalizeMax.
int64_t RawPreferredAffinity(const api::v1::Pod& pod, const NodeInfo& node);
// (max - raw) * 100 / max; 100 for all when max is 0.
void NormalizeSpread(std::vector<int64_t>* raw);
// raw * 100 / max; 0 for all when max is 0.
void NormalizeMax(std::vector<int64_t>* raw);

// "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match ...".
std::string UnschedulableMessage(size_t node_count, const std::map<std::string, int>& reasons);

}  // namespace skiff::scheduler
