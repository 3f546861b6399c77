// Resource usage of the node and of each running container, read from cgroup
// v2 files and /proc: what the Kubelet.Stats RPC (and `skiffctl top` through
// the API server) reports.
//
// cpu: cgroup2's cpu.stat usage_usec exists in every cgroup even without the
// cpu controller; nano-cores is its rate between two samples.
// memory: working set = memory.current - inactive_file (memory.stat), like
// cAdvisor; only with the memory controller. On a hybrid host without it the
// value is unknown and reported as such (known = false), never as 0.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "skiff/api/v1/kubelet.pb.h"

namespace skiff::kubelet {

class Kubelet;

struct CgroupUsage {
  bool cpu_known = false;
  uint64_t cpu_usage_usec = 0;
  bool memory_known = false;
  uint64_t memory_working_set_bytes = 0;
};

// Reads <dir>/cpu.stat, <dir>/memory.current and <dir>/memory.stat.
CgroupUsage ReadCgroupUsage(const std::string& dir);
// The node: /proc/stat (busy jiffies) and /proc/meminfo (MemTotal - MemAvailable).
CgroupUsage ReadNodeUsage();

// Turns cumulative CPU microseconds into nano-cores between calls, per key.
class CpuRate {
 public:
  // Returns false until a key has two samples at least `min_interval_ns` apart.
  bool Sample(const std::string& key, uint64_t usage_usec, int64_t now_ns, uint64_t* nano_cores);
  // Drops keys not sampled since `before_ns`.
  void Forget(int64_t before_ns);

 private:
  struct Point {
    uint64_t usage_usec = 0;
    int64_t at_ns = 0;
    uint64_t last_rate = 0;
    bool has_rate = false;
  };
  std::mutex mu_;
  std::map<std::string, Point> points_;
};

// The Kubelet.Stats reply: node usage and one entry per running container.
// Containers seen for the first time are sampled twice, 100 ms apart, for a
// CPU rate. Values a node cannot measure are listed in
// ContainerStats.unavailable ("cpu", "memory") and left 0.
void FillStats(Kubelet* kubelet, CpuRate* rate, api::v1::StatsResponse* resp);

}  // namespace skiff::kubelet
