#include "skiff/kubelet/stats.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

namespace skiff::kubelet {
namespace {

bool ReadKeyed(const std::string& path, const std::string& key, uint64_t* out) {
  std::ifstream in(path);
  std::string k;
  uint64_t v;
  while (in >> k >> v) {
    if (k == key) {
      *out = v;
      return true;
    }
  }
  return false;
}

}  // namespace

CgroupUsage ReadCgroupUsage(const std::string& dir) {
  CgroupUsage u;
  u.cpu_known = ReadKeyed(dir + "/cpu.stat", "usage_usec", &u.cpu_usage_usec);
  std::ifstream cur(dir + "/memory.current");
  uint64_t current = 0;
  if (cur >> current) {
    uint64_t inactive = 0;
    ReadKeyed(dir + "/memory.stat", "inactive_file", &inactive);
    u.memory_known = true;
    u.memory_working_set_bytes = current > inactive ? current - inactive : 0;
  }
  return u;
}

CgroupUsage ReadNodeUsage() {
  CgroupUsage u;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  uint64_t user, nice, system, idle, iowait, irq, softirq, steal;
  if (stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal && cpu == "cpu") {
    long hz = sysconf(_SC_CLK_TCK);
    uint64_t busy = user + nice + system + irq + softirq + steal;
    u.cpu_known = hz > 0;
    if (hz > 0) u.cpu_usage_usec = busy * 1000000 / static_cast<uint64_t>(hz);
  }
  uint64_t total = 0, avail = 0;
  std::ifstream mem("/proc/meminfo");
  std::string key, unit;
  uint64_t kb;
  while (mem >> key >> kb >> unit) {
    if (key == "MemTotal:") total = kb;
    if (key == "MemAvailable:") avail = kb;
  }
  if (total > 0) {
    u.memory_known = true;
    u.memory_working_set_bytes = (total - avail) * 1024;
  }
  return u;
}

bool CpuRate::Sample(const std::string& key, uint64_t usage, int64_t now, uint64_t* nano_cores) {
  constexpr int64_t kMinIntervalNs = 50'000'000;
  std::lock_guard<std::mutex> l(mu_);
  auto it = points_.find(key);
  if (it == points_.end()) {
    points_[key] = Point{usage, now, 0, false};
    return false;
  }
  Point& p = it->second;
  if (now - p.at_ns >= kMinIntervalNs && usage >= p.usage_usec) {
    // CPU nanoseconds per wall nanosecond, in billionths of a core.
    unsigned __int128 cpu_ns = static_cast<unsigned __int128>(usage - p.usage_usec) * 1000;
    p.last_rate = static_cast<uint64_t>(cpu_ns * 1'000'000'000ull / static_cast<uint64_t>(now - p.at_ns));
    p.has_rate = true;
    p.usage_usec = usage;
    p.at_ns = now;
  }
  *nano_cores = p.last_rate;
  return p.has_rate;
}

void CpuRate::Forget(int64_t before) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = points_.begin(); it != points_.end();) {
    it = it->second.at_ns < before ? points_.erase(it) : std::next(it);
  }
}

}  // namespace skiff::kubelet
