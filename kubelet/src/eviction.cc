// Hard eviction, as the kubelet's eviction manager with --eviction-hard:
// when memory.available or nodefs.available drops under its threshold, the
// node reports MemoryPressure/DiskPressure and evicts one pod per round —
// BestEffort first, then Burstable, then Guaranteed; newest first within a
// class (usage is not measurable on every node) — with grace 0, phase Failed,
// reason Evicted and a Warning event, until the signal recovers.
#include <sys/statvfs.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "pod_worker.h"
#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/kubelet/resources.h"

namespace skiff::kubelet {
namespace {

int64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t kb = 0;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

int QosRank(QosClass q) {
  switch (q) {
    case QosClass::kBestEffort: return 0;
    case QosClass::kBurstable: return 1;
    case QosClass::kGuaranteed: return 2;
  }
  return 2;
}

std::string Quantity(int64_t bytes) { return absl::StrCat(bytes / 1024, "Ki"); }

}  // namespace

absl::Status ParseEvictionHard(const std::string& spec, Config* c) {
  std::string rest = spec;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    size_t lt = item.find('<');
    if (lt == std::string::npos) return absl::InvalidArgumentError("--eviction-hard: expected SIGNAL<QUANTITY in " + item);
    std::string sig = item.substr(0, lt), q = item.substr(lt + 1);
    bool percent = !q.empty() && q.back() == '%';
    if (sig == "nodefs.available" && percent) {
      c->eviction_nodefs_available_fraction = std::atof(q.c_str()) / 100.0;
    } else if (sig == "memory.available" && !percent) {
      auto v = objects::ParseValue(q);
      if (!v.ok()) return absl::InvalidArgumentError("--eviction-hard: bad quantity " + q);
      c->eviction_memory_available_bytes = *v;
    } else {
      return absl::InvalidArgumentError("--eviction-hard: unsupported signal " + item +
                                        " (memory.available<QUANTITY, nodefs.available<PERCENT%)");
    }
  }
  return absl::OkStatus();
}

void Kubelet::SetEvictionThresholds(int64_t memory_available_bytes, double nodefs_available_fraction) {
  std::lock_guard<std::mutex> l(eviction_mu_);
  config_.eviction_memory_available_bytes = memory_available_bytes;
  config_.eviction_nodefs_available_fraction = nodefs_available_fraction;
}

void Kubelet::EvictionLoop() {
  while (!stopping_) {
    EvictOnce();
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(config_.eviction_interval_seconds), [&] { return stopping_.load(); });
  }
}

void Kubelet::EvictOnce() {
  int64_t mem_threshold;
  double fs_threshold;
  {
    std::lock_guard<std::mutex> l(eviction_mu_);
    mem_threshold = config_.eviction_memory_available_bytes;
    fs_threshold = config_.eviction_nodefs_available_fraction;
  }
  std::string signal, message;
  int64_t mem = MemAvailableBytes();
  struct statvfs vfs{};
  if (mem >= 0 && mem < mem_threshold) {
    signal = "memory";
    message = absl::StrCat("The node was low on resource: memory. Threshold quantity: ", Quantity(mem_threshold),
                           ", available: ", Quantity(mem), ".");
  } else if (statvfs(config_.root_dir.c_str(), &vfs) == 0 && vfs.f_blocks > 0) {
    double avail = static_cast<double>(vfs.f_bavail) / static_cast<double>(vfs.f_blocks);
    if (avail < fs_threshold) {
      signal = "ephemeral-storage";
      int64_t bytes = static_cast<int64_t>(vfs.f_bavail) * static_cast<int64_t>(vfs.f_frsize);
      message = absl::StrCat("The node was low on resource: ephemeral-storage. Threshold quantity: ",
                             static_cast<int>(fs_threshold * 100), "%, available: ", Quantity(bytes), ".");
    }
  }
  bool memory_pressure = signal == "memory", disk_pressure = signal == "ephemeral-storage";
  if (memory_pressure != memory_pressure_.exchange(memory_pressure) ||
      disk_pressure != disk_pressure_.exchange(disk_pressure)) {
    log::Info("node pressure: memory=", memory_pressure, " disk=", disk_pressure);
    node_status_dirty_ = true;
    cv_.notify_all();
  }
  if (signal.empty()) return;
  PodWorker* victim = nullptr;
  std::pair<int, std::string> best;
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [uid, w] : workers_) {
    PodWorker::EvictionFacts f;
    if (!w->ForEviction(&f)) continue;  // terminal, terminating or not admitted
    // Lowest QoS rank first; within it the newest start (largest timestamp).
    std::pair<int, std::string> key{-QosRank(f.qos), f.start_time};
    if (!victim || key > best) {
      victim = w.get();
      best = key;
    }
  }
  if (!victim) return;
  log::Warn("evicting pod ", victim->ns_name(), ": ", message);
  victim->Evict(message);
}

}  // namespace skiff::kubelet
