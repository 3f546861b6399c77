#include "skiff/scheduler/plugins.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skiff/controllers/objects.h"

namespace skiff::scheduler {

namespace {

constexpr int64_t kDefaultMilliCpu = 100;
constexpr int64_t kDefaultMemory = 200LL * 1024 * 1024;

Resources FromList(const google::protobuf::Map<std::string, std::string>& list, bool* has_cpu, bool* has_mem) {
  Resources r;
  for (const auto& [name, q] : list) {
    if (name == "cpu") {
      r.milli_cpu = objects::ParseMilli(q).value_or(0);
      if (has_cpu) *has_cpu = true;
    } else if (name == "memory") {
      r.memory = objects::ParseValue(q).value_or(0);
      if (has_mem) *has_mem = true;
    } else if (name == "pods") {
      r.pods = objects::ParseValue(q).value_or(0);
    } else {
      r.scalar[name] = objects::ParseValue(q).value_or(0);
    }
  }
  return r;
}

void MaxInto(Resources* a, const Resources& b) {
  a->milli_cpu = std::max(a->milli_cpu, b.milli_cpu);
  a->memory = std::max(a->memory, b.memory);
  for (const auto& [k, v] : b.scalar) a->scalar[k] = std::max(a->scalar[k], v);
}

}  // namespace

void Resources::Add(const Resources& r, int sign) {
  milli_cpu += sign * r.milli_cpu;
  memory += sign * r.memory;
  pods += sign * r.pods;
  for (const auto& [k, v] : r.scalar) scalar[k] += sign * v;
}

PodInfo MakePodInfo(const api::v1::Pod& pod) {
  PodInfo info;
  info.key = objects::Key(pod.metadata());
  info.node = pod.spec().node_name();
  Resources sum, nonzero;
  for (const auto& c : pod.spec().containers()) {
    // Requests default to limits when only limits are set.
    auto reqs = c.resources().requests();
    for (const auto& [k, v] : c.resources().limits())
      if (!reqs.count(k)) reqs[k] = v;
    bool has_cpu = false, has_mem = false;
    Resources r = FromList(reqs, &has_cpu, &has_mem);
    sum.Add(r);
    Resources nz = r;
    if (!has_cpu) nz.milli_cpu = kDefaultMilliCpu;
    if (!has_mem) nz.memory = kDefaultMemory;
    nonzero.Add(nz);
    for (const auto& p : c.ports()) {
      if (p.host_port() <= 0) continue;
      info.host_ports.push_back({p.host_ip(), p.protocol().empty() ? "TCP" : p.protocol(), p.host_port()});
    }
  }
  for (const auto& c : pod.spec().init_containers()) {
    auto reqs = c.resources().requests();
    for (const auto& [k, v] : c.resources().limits())
      if (!reqs.count(k)) reqs[k] = v;
    Resources r = FromList(reqs, nullptr, nullptr);
    MaxInto(&sum, r);
    MaxInto(&nonzero, r);
  }
  sum.pods = 1;
  nonzero.pods = 1;
  info.requests = sum;
  info.nonzero_requests = nonzero;
  if (const auto* ref = objects::ControllerOf(pod.metadata())) info.owner_uid = ref->uid();
  return info;
}

void NodeInfo::AddPod(const PodInfo& p) {
  requested.Add(p.requests);
  nonzero_requested.Add(p.nonzero_requests);
  for (const auto& hp : p.host_ports) used_ports.insert(hp);
  if (!p.owner_uid.empty()) owner_counts[p.owner_uid]++;
  pod_count++;
}

void NodeInfo::RemovePod(const PodInfo& p) {
  requested.Add(p.requests, -1);
  nonzero_requested.Add(p.nonzero_requests, -1);
  for (const auto& hp : p.host_ports) {
    auto it = used_ports.find(hp);
    if (it != used_ports.end()) used_ports.erase(it);
  }
  if (!p.owner_uid.empty() && --owner_counts[p.owner_uid] <= 0) owner_counts.erase(p.owner_uid);
  pod_count--;
}

NodeInfo MakeNodeInfo(const api::v1::Node& node) {
  NodeInfo n;
  n.name = node.metadata().name();
  const auto* ready = objects::FindCondition(node.status().conditions(), "Ready");
  n.ready = ready != nullptr && ready->status() == "True";
  n.unschedulable = node.spec().unschedulable();
  const auto& list = node.status().allocatable().empty() ? node.status().capacity() : node.status().allocatable();
  n.allocatable = FromList(list, nullptr, nullptr);
  if (!list.count("pods")) n.allocatable.pods = 110;
  n.labels.insert(node.metadata().labels().begin(), node.metadata().labels().end());
  n.taints.assign(node.spec().taints().begin(), node.spec().taints().end());
  return n;
}

std::string FilterNodeReady(const NodeInfo& node) { return node.ready ? "" : "node(s) were not ready"; }

std::string FilterUnschedulable(const api::v1::Pod& pod, const NodeInfo& node) {
  if (!node.unschedulable) return "";
  api::v1::Taint t;
  t.set_key("node.kubernetes.io/unschedulable");
  t.set_effect("NoSchedule");
  return ToleratesAll(pod.spec().tolerations(), t) ? "" : "node(s) were unschedulable";
}

std::vector<std::string> FilterResources(const PodInfo& pod, const NodeInfo& node) {
  std::vector<std::string> out;
  if (node.pod_count + 1 > node.allocatable.pods) out.push_back("Too many pods");
  const auto& req = pod.requests;
  if (req.milli_cpu > 0 && node.requested.milli_cpu + req.milli_cpu > node.allocatable.milli_cpu)
    out.push_back("Insufficient cpu");
  if (req.memory > 0 && node.requested.memory + req.memory > node.allocatable.memory)
    out.push_back("Insufficient memory");
  for (const auto& [name, v] : req.scalar) {
    if (v <= 0) continue;
    auto alloc = node.allocatable.scalar.find(name);
    auto used = node.requested.scalar.find(name);
    int64_t have = alloc == node.allocatable.scalar.end() ? 0 : alloc->second;
    int64_t taken = used == node.requested.scalar.end() ? 0 : used->second;
    if (taken + v > have) out.push_back("Insufficient " + name);
  }
  return out;
}

bool MatchNodeSelectorTerm(const api::v1::NodeSelectorTerm& term, const NodeInfo& node) {
  if (term.match_expressions().empty() && term.match_fields().empty()) return false;
  for (const auto& e : term.match_expressions()) {
    objects::Requirement r;
    r.key = e.key();
    const std::string& op = e.operator_();
    using Op = objects::Requirement::Op;
    if (op == "In") r.op = Op::kIn;
    else if (op == "NotIn") r.op = Op::kNotIn;
    else if (op == "Exists") r.op = Op::kExists;
    else if (op == "DoesNotExist") r.op = Op::kDoesNotExist;
    else if (op == "Gt") r.op = Op::kGt;
    else if (op == "Lt") r.op = Op::kLt;
    else return false;
    r.values.assign(e.values().begin(), e.values().end());
    auto it = node.labels.find(r.key);
    if (!objects::MatchRequirement(r, it == node.labels.end() ? nullptr : &it->second)) return false;
  }
  for (const auto& f : term.match_fields()) {
    if (f.key() != "metadata.name") return false;
    bool in = std::find(f.values().begin(), f.values().end(), node.name) != f.values().end();
    if (f.operator_() == "In" && !in) return false;
    if (f.operator_() == "NotIn" && in) return false;
    if (f.operator_() != "In" && f.operator_() != "NotIn") return false;
  }
  return true;
}

std::string FilterNodeAffinity(const api::v1::Pod& pod, const NodeInfo& node) {
  static const std::string kReason = "node(s) didn't match Pod's node affinity/selector";
  for (const auto& [k, v] : pod.spec().node_selector()) {
    auto it = node.labels.find(k);
    if (it == node.labels.end() || it->second != v) return kReason;
  }
  const auto& req = pod.spec().affinity().node_affinity().required_during_scheduling_ignored_during_execution();
  if (req.node_selector_terms().empty()) return "";
  for (const auto& term : req.node_selector_terms())
    if (MatchNodeSelectorTerm(term, node)) return "";
  return kReason;
}

bool Tolerates(const api::v1::Toleration& tol, const api::v1::Taint& taint) {
  if (!tol.effect().empty() && tol.effect() != taint.effect()) return false;
  if (tol.key().empty()) return tol.operator_() == "Exists";
  if (tol.key() != taint.key()) return false;
  if (tol.operator_() == "Exists") return true;
  return tol.value() == taint.value();
}

bool ToleratesAll(const google::protobuf::RepeatedPtrField<api::v1::Toleration>& tols, const api::v1::Taint& taint) {
  for (const auto& t : tols)
    if (Tolerates(t, taint)) return true;
  return false;
}

std::string FilterTaints(const api::v1::Pod& pod, const NodeInfo& node) {
  for (const auto& t : node.taints) {
    if (t.effect() != "NoSchedule" && t.effect() != "NoExecute") continue;
    if (!ToleratesAll(pod.spec().tolerations(), t))
      return absl::StrCat("node(s) had untolerated taint {", t.key(), ": ", t.value(), "}");
  }
  return "";
}

std::string FilterHostPorts(const PodInfo& pod, const NodeInfo& node) {
  for (const auto& want : pod.host_ports) {
    for (auto it = node.used_ports.lower_bound({"", "", want.port});
         it != node.used_ports.end() && it->port == want.port; ++it) {
      if (it->protocol != want.protocol) continue;
      bool wild_a = it->ip.empty() || it->ip == "0.0.0.0";
      bool wild_b = want.ip.empty() || want.ip == "0.0.0.0";
      if (wild_a || wild_b || it->ip == want.ip) return "node(s) didn't have free ports for the requested pod ports";
    }
  }
  return "";
}

bool RunFilters(const api::v1::Pod& pod, const PodInfo& info, const NodeInfo& node, std::vector<std::string>* why) {
  std::string r;
  if (!(r = FilterNodeReady(node)).empty() || !(r = FilterUnschedulable(pod, node)).empty() ||
      !(r = FilterNodeAffinity(pod, node)).empty() || !(r = FilterTaints(pod, node)).empty()) {
    if (why) why->push_back(r);
    return false;
  }
  auto res = FilterResources(info, node);
  if (!res.empty()) {
    if (why) why->insert(why->end(), res.begin(), res.end());
    return false;
  }
  if (!(r = FilterHostPorts(info, node)).empty()) {
    if (why) why->push_back(r);
    return false;
  }
  return true;
}

namespace {
int64_t FreeFraction(int64_t requested, int64_t capacity) {
  if (capacity <= 0 || requested > capacity) return 0;
  return (capacity - requested) * 100 / capacity;
}
}  // namespace

int64_t ScoreLeastAllocated(const PodInfo& pod, const NodeInfo& node) {
  int64_t cpu = FreeFraction(node.nonzero_requested.milli_cpu + pod.nonzero_requests.milli_cpu,
                             node.allocatable.milli_cpu);
  int64_t mem = FreeFraction(node.nonzero_requested.memory + pod.nonzero_requests.memory, node.allocatable.memory);
  return (cpu + mem) / 2;
}

int64_t ScoreBalancedAllocation(const PodInfo& pod, const NodeInfo& node) {
  if (node.allocatable.milli_cpu <= 0 || node.allocatable.memory <= 0) return 0;
  double cpu = double(node.nonzero_requested.milli_cpu + pod.nonzero_requests.milli_cpu) / node.allocatable.milli_cpu;
  double mem = double(node.nonzero_requested.memory + pod.nonzero_requests.memory) / node.allocatable.memory;
  cpu = std::min(cpu, 1.0);
  mem = std::min(mem, 1.0);
  // Half the absolute difference is the standard deviation of two fractions.
  double sd = std::abs(cpu - mem) / 2;
  return static_cast<int64_t>((1 - sd) * 100);
}

int64_t RawSpread(const PodInfo& pod, const NodeInfo& node) {
  if (pod.owner_uid.empty()) return 0;
  auto it = node.owner_counts.find(pod.owner_uid);
  return it == node.owner_counts.end() ? 0 : it->second;
}

int64_t RawPreferredAffinity(const api::v1::Pod& pod, const NodeInfo& node) {
  int64_t sum = 0;
  for (const auto& p :
       pod.spec().affinity().node_affinity().preferred_during_scheduling_ignored_during_execution())
    if (p.weight() != 0 && MatchNodeSelectorTerm(p.preference(), node)) sum += p.weight();
  return sum;
}

void NormalizeSpread(std::vector<int64_t>* raw) {
  int64_t mx = 0;
  for (auto v : *raw) mx = std::max(mx, v);
  for (auto& v : *raw) v = mx == 0 ? 100 : (mx - v) * 100 / mx;
}

void NormalizeMax(std::vector<int64_t>* raw) {
  int64_t mx = 0;
  for (auto v : *raw) mx = std::max(mx, v);
  for (auto& v : *raw) v = mx == 0 ? 0 : v * 100 / mx;
}

std::string UnschedulableMessage(size_t node_count, const std::map<std::string, int>& reasons) {
  std::string msg = absl::StrCat("0/", node_count, " nodes are available");
  if (node_count == 0) return msg + ": no nodes available to schedule pods.";
  std::string sep = ": ";
  for (const auto& [reason, n] : reasons) {
    absl::StrAppend(&msg, sep, n, " ", reason);
    sep = ", ";
  }
  return msg + ".";
}

}  // namespace skiff::scheduler
