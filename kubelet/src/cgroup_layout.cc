#include "skiff/kubelet/cgroup_layout.h"

#include <errno.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_split.h"
#include "skiff/common/status.h"
#include "skiff/runtime/cgroup.h"

namespace skiff::kubelet {
namespace {

namespace fs = std::filesystem;

constexpr char kScopePrefix[] = "skiff";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> PodName(const std::vector<std::string>& kubepods, QosClass qos, const std::string& uid) {
  std::vector<std::string> name = kubepods;
  if (qos == QosClass::kBurstable) name.push_back("burstable");
  if (qos == QosClass::kBestEffort) name.push_back("besteffort");
  name.push_back("pod" + uid);
  return name;
}

runtime::Resources ToRuntime(const PodLimits& l) {
  runtime::Resources r;
  runtime::CpuResources cpu;
  cpu.shares = l.cpu_shares;
  if (l.cpu_quota_us) {
    cpu.quota = *l.cpu_quota_us;
    cpu.period = 100000;
  }
  r.cpu = cpu;
  if (l.memory_bytes) {
    runtime::MemoryResources mem;
    mem.limit = *l.memory_bytes;
    r.memory = mem;
  }
  r.pids_limit = l.pids;
  return r;
}

}  // namespace

std::vector<std::string> KubepodsCgroupName(const std::string& cgroup_root) {
  std::vector<std::string> parts = absl::StrSplit(cgroup_root, '/', absl::SkipEmpty());
  std::vector<std::string> name;
  if (!parts.empty() && EndsWith(parts.back(), ".slice")) {
    // The kubelet's ParseSystemdToCgroupName: only the last slice counts, its
    // name holds the whole nesting.
    std::string base = parts.back().substr(0, parts.back().size() - 6);
    if (base != "-" && !base.empty()) {
      for (absl::string_view p : absl::StrSplit(base, '-', absl::SkipEmpty())) {
        std::string part(p);
        for (char& ch : part)
          if (ch == '_') ch = '-';
        name.push_back(part);
      }
    }
  } else {
    name = parts;
  }
  if (name.empty() || name.back() != "kubepods") name.push_back("kubepods");
  return name;
}

std::string SystemdSliceName(const std::vector<std::string>& name) {
  if (name.empty()) return "-.slice";
  std::string out;
  for (const std::string& part : name) {
    if (!out.empty()) out += '-';
    for (char ch : part) out += ch == '-' ? '_' : ch;
  }
  return out + ".slice";
}

CgroupLayout::CgroupLayout(const Config& config, std::string cgroup2_mount)
    : CgroupLayout(config.cgroup_driver, config.cgroup_root, std::move(cgroup2_mount)) {}

CgroupLayout::CgroupLayout(const std::string& driver, const std::string& cgroup_root, std::string cgroup2_mount)
    : systemd_(driver == "systemd"),
      cgroup_root_(cgroup_root),
      mount_(std::move(cgroup2_mount)),
      kubepods_(KubepodsCgroupName(cgroup_root)) {}

std::string CgroupLayout::PodCgroup(QosClass qos, const std::string& uid) const {
  if (systemd_) return SystemdSliceName(PodName(kubepods_, qos, uid));
  return PodCgroupPath(cgroup_root_, qos, uid);
}

std::string CgroupLayout::PodDir(QosClass qos, const std::string& uid) const {
  if (mount_.empty()) return "";
  if (!systemd_) return mount_ + "/" + PodCgroup(qos, uid);
  auto path = runtime::SliceCgroupPath(PodCgroup(qos, uid));
  return path.ok() ? mount_ + *path : "";
}

std::string CgroupLayout::ContainerCgroupsPath(QosClass qos, const std::string& uid, const std::string& id) const {
  if (systemd_) return PodCgroup(qos, uid) + ":" + kScopePrefix + ":" + id;
  return ContainerCgroupPath(PodCgroup(qos, uid), id);
}

std::string CgroupLayout::ContainerDir(QosClass qos, const std::string& uid, const std::string& id) const {
  std::string pod = PodDir(qos, uid);
  if (pod.empty()) return "";
  if (!systemd_) return ContainerCgroupPath(pod, id);
  return pod + "/" + kScopePrefix + "-" + id + ".scope";
}

absl::Status CgroupLayout::CreatePod(QosClass qos, const std::string& uid, const PodLimits& limits,
                                     std::vector<std::string>* not_applied) const {
  if (mount_.empty()) return absl::OkStatus();
  runtime::Resources res = ToRuntime(limits);
  if (systemd_) {
    ASSIGN_OR_RETURN(runtime::TransientUnit slice, runtime::TransientSliceFor(PodCgroup(qos, uid), &res));
    return runtime::StartSystemdSlice(slice);
  }
  auto cgroupfs = runtime::MakeCgroupfsManager(mount_);
  ASSIGN_OR_RETURN(std::string dir, cgroupfs->Prepare(PodCgroup(qos, uid)));
  return cgroupfs->Apply(dir, res, /*strict=*/false, not_applied);
}

absl::Status CgroupLayout::RemovePod(QosClass qos, const std::string& uid) const {
  if (mount_.empty()) return absl::OkStatus();
  // Stopping the slice also stops any container scope still in it.
  if (systemd_) return runtime::StopSystemdUnit(PodCgroup(qos, uid));
  std::string dir = PodDir(qos, uid);
  // Container cgroups are removed by the runtime; anything left is a leak we still clean.
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory()) rmdir(e.path().c_str());
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) return LastErrnoError("rmdir " + dir);
  return absl::OkStatus();
}

}  // namespace skiff::kubelet
