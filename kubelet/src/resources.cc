#include "skiff/kubelet/resources.h"

#include <algorithm>

#include "skiff/controllers/objects.h"

namespace skiff::kubelet {
namespace {

int64_t Milli(const google::protobuf::Map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) return 0;
  auto v = objects::ParseMilli(it->second);
  return v.ok() ? *v : 0;
}
int64_t Value(const google::protobuf::Map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) return 0;
  auto v = objects::ParseValue(it->second);
  return v.ok() ? *v : 0;
}
// Requests default to limits when only limits are set (API defaulting).
int64_t Request(const api::v1::Container& c, const std::string& key, bool milli) {
  const auto& r = c.resources();
  if (r.requests().count(key)) return milli ? Milli(r.requests(), key) : Value(r.requests(), key);
  if (r.limits().count(key)) return milli ? Milli(r.limits(), key) : Value(r.limits(), key);
  return 0;
}

}  // namespace

const char* QosClassName(QosClass q) {
  switch (q) {
    case QosClass::kGuaranteed: return "Guaranteed";
    case QosClass::kBurstable: return "Burstable";
    case QosClass::kBestEffort: return "BestEffort";
  }
  return "BestEffort";
}

QosClass ComputeQos(const api::v1::PodSpec& spec) {
  bool any = false, all_guaranteed = true;
  auto visit = [&](const api::v1::Container& c) {
    const auto& r = c.resources();
    for (const char* k : {"cpu", "memory"}) {
      bool has_req = r.requests().count(k) > 0, has_lim = r.limits().count(k) > 0;
      if (has_req || has_lim) any = true;
      if (!has_lim) {
        all_guaranteed = false;
        continue;
      }
      if (has_req && r.requests().at(k) != r.limits().at(k)) {
        bool milli = std::string(k) == "cpu";
        int64_t a = milli ? Milli(r.requests(), k) : Value(r.requests(), k);
        int64_t b = milli ? Milli(r.limits(), k) : Value(r.limits(), k);
        if (a != b) all_guaranteed = false;
      }
    }
  };
  for (const auto& c : spec.init_containers()) visit(c);
  for (const auto& c : spec.containers()) visit(c);
  if (!any) return QosClass::kBestEffort;
  return all_guaranteed ? QosClass::kGuaranteed : QosClass::kBurstable;
}

uint64_t MilliCpuToShares(int64_t milli) {
  if (milli <= 0) return 2;
  uint64_t s = static_cast<uint64_t>(milli) * 1024 / 1000;
  return std::max<uint64_t>(s, 2);
}

uint64_t SharesToWeight(uint64_t shares) {
  shares = std::clamp<uint64_t>(shares, 2, 262144);
  return 1 + ((shares - 2) * 9999) / 262142;
}

int64_t MilliCpuToQuota(int64_t milli, uint64_t period_us) {
  if (milli <= 0) return 0;
  int64_t q = milli * static_cast<int64_t>(period_us) / 1000;
  return std::max<int64_t>(q, 1000);
}

std::string PodCgroupPath(const std::string& root, QosClass qos, const std::string& uid) {
  std::string r = root;
  while (!r.empty() && r.front() == '/') r.erase(0, 1);
  while (!r.empty() && r.back() == '/') r.pop_back();
  std::string base = r.empty() ? "" : r + "/";
  switch (qos) {
    case QosClass::kGuaranteed: return base + "pod" + uid;
    case QosClass::kBurstable: return base + "burstable/pod" + uid;
    case QosClass::kBestEffort: return base + "besteffort/pod" + uid;
  }
  return base + "pod" + uid;
}

std::string ContainerCgroupPath(const std::string& pod_cgroup, const std::string& id) {
  return pod_cgroup + "/" + id;
}

ContainerLimits LimitsFor(const api::v1::Container& c) {
  ContainerLimits l;
  l.cpu_shares = MilliCpuToShares(Request(c, "cpu", true));
  const auto& lim = c.resources().limits();
  if (lim.count("cpu")) l.cpu_quota_us = MilliCpuToQuota(Milli(lim, "cpu"));
  if (lim.count("memory")) l.memory_bytes = Value(lim, "memory");
  return l;
}

int OomScoreAdj(QosClass qos, const api::v1::Container& c, int64_t capacity) {
  if (qos == QosClass::kGuaranteed) return kGuaranteedOomScoreAdj;
  if (qos == QosClass::kBestEffort) return kBestEffortOomScoreAdj;
  int64_t request = Request(c, "memory", false);
  int64_t adj = capacity > 0 ? 1000 - (1000 * request) / capacity : 1000;
  // 2, not 0 or 1: those would rank the container with system daemons.
  if (adj < 2) adj = 2;
  if (adj >= kBestEffortOomScoreAdj) adj = kBestEffortOomScoreAdj - 1;
  return static_cast<int>(adj);
}

int64_t PodRequestMilliCpu(const api::v1::PodSpec& spec) {
  int64_t sum = 0, init_max = 0;
  for (const auto& c : spec.containers()) sum += Request(c, "cpu", true);
  for (const auto& c : spec.init_containers()) init_max = std::max(init_max, Request(c, "cpu", true));
  return std::max(sum, init_max);
}

PodLimits PodLimitsFor(const api::v1::PodSpec& spec, std::optional<int64_t> pids_limit) {
  PodLimits p;
  p.cpu_shares = MilliCpuToShares(PodRequestMilliCpu(spec));
  p.pids = pids_limit;
  // Sum over containers, max with each init container; nullopt once one lacks the limit.
  auto limit = [&](const char* key, bool milli) -> std::optional<int64_t> {
    int64_t sum = 0, init_max = 0;
    for (const auto* list : {&spec.containers(), &spec.init_containers()}) {
      for (const auto& c : *list) {
        const auto& lim = c.resources().limits();
        if (!lim.count(key)) return std::nullopt;
        int64_t v = milli ? Milli(lim, key) : Value(lim, key);
        if (list == &spec.containers()) sum += v;
        else init_max = std::max(init_max, v);
      }
    }
    if (spec.containers().empty()) return std::nullopt;
    return std::max(sum, init_max);
  };
  if (auto cpu = limit("cpu", true); cpu && *cpu > 0) p.cpu_quota_us = MilliCpuToQuota(*cpu);
  if (auto mem = limit("memory", false); mem && *mem > 0) p.memory_bytes = *mem;
  return p;
}

int64_t PodRequestMemory(const api::v1::PodSpec& spec) {
  int64_t sum = 0, init_max = 0;
  for (const auto& c : spec.containers()) sum += Request(c, "memory", false);
  for (const auto& c : spec.init_containers()) init_max = std::max(init_max, Request(c, "memory", false));
  return std::max(sum, init_max);
}

}  // namespace skiff::kubelet
