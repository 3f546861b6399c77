// Pod resources the way the kubelet computes them: QoS class, the cgroup
// layout (kubepods → burstable|besteffort → pod<uid> → container; Guaranteed
// pods directly under kubepods), and CPU shares / cgroup v2 weight.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "skiff/api/v1/objects.pb.h"

namespace skiff::kubelet {

enum class QosClass { kGuaranteed, kBurstable, kBestEffort };
const char* QosClassName(QosClass q);  // "Guaranteed", "Burstable", "BestEffort"
QosClass ComputeQos(const api::v1::PodSpec& spec);

// Kubernetes' MilliCPUToShares: 1024 per CPU, at least 2 (also for no request).
uint64_t MilliCpuToShares(int64_t milli_cpu);
// cgroup v2 weight from shares (the kubelet's / runc's conversion): 1 + ((shares - 2) * 9999) / 262142.
uint64_t SharesToWeight(uint64_t shares);
// CFS quota in microseconds for a limit over `period_us` (min 1000 µs, as the kubelet).
int64_t MilliCpuToQuota(int64_t milli_cpu, uint64_t period_us = 100000);

// Paths relative to the cgroup2 mount ("kubepods/burstable/pod<uid>").
std::string PodCgroupPath(const std::string& cgroup_root, QosClass qos, const std::string& pod_uid);
std::string ContainerCgroupPath(const std::string& pod_cgroup, const std::string& container_id);

struct ContainerLimits {
  uint64_t cpu_shares = 2;
  std::optional<int64_t> cpu_quota_us;  // with period 100000
  std::optional<int64_t> memory_bytes;
};
// From the container's requests and limits (requests default to limits).
ContainerLimits LimitsFor(const api::v1::Container& c);

// /proc/PID/oom_score_adj of a container (Kubernetes' GetContainerOOMScoreAdjust):
// Guaranteed -997, BestEffort 1000, Burstable 1000 - 1000*memoryRequest/capacity
// clamped to [2, 999] so a Burstable container is always killed before a
// Guaranteed one and after a BestEffort one.
inline constexpr int kGuaranteedOomScoreAdj = -997;
inline constexpr int kBestEffortOomScoreAdj = 1000;
int OomScoreAdj(QosClass qos, const api::v1::Container& c, int64_t memory_capacity_bytes);

// The pod-level cgroup's limits (Kubernetes' ResourceConfigForPod): shares
// from the pod's effective cpu request; cpu quota and memory limit only when
// every container (init containers too) declares that limit, then the sum
// over containers, at least each init container's; pids.max as given.
struct PodLimits {
  uint64_t cpu_shares = 2;
  std::optional<int64_t> cpu_quota_us;  // with period 100000
  std::optional<int64_t> memory_bytes;
  std::optional<int64_t> pids;
};
PodLimits PodLimitsFor(const api::v1::PodSpec& spec, std::optional<int64_t> pids_limit);

// Sum over containers, max with each init container (Kubernetes' effective request).
int64_t PodRequestMilliCpu(const api::v1::PodSpec& spec);
int64_t PodRequestMemory(const api::v1::PodSpec& spec);

}  // namespace skiff::kubelet
