// cgroup v2 placement and limits, behind one interface with two drivers:
// `cgroupfs` writes the files directly; `systemd` asks systemd (sd-bus) for a
// transient scope with Delegate=yes and then writes limits inside it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

// Mount point of the cgroup2 hierarchy, from a mountinfo file.
absl::StatusOr<std::string> FindCgroup2Mount(const std::string& mountinfo = "/proc/self/mountinfo");

// A file write the limits translate to: "<dir>/<file>" <- value, needing
// `controller` to be enabled ("" for core files).
struct CgroupWrite {
  std::string controller;
  std::string file;
  std::string value;
};
// Translates OCI resources to cgroup v2 files (cpu.shares -> cpu.weight per
// the OCI conversion, quota/period -> cpu.max, blkio -> io.*, ...). Unified
// entries come last and win.
absl::StatusOr<std::vector<CgroupWrite>> ResourcesToWrites(const Resources& r);

struct CgroupResult {
  std::string dir;                     // absolute cgroup directory
  std::vector<std::string> not_applied;  // "memory.max (controller memory not available)"
};

class CgroupManager {
 public:
  virtual ~CgroupManager() = default;
  virtual const char* name() const = 0;
  // cgroupfs: create the directory now so the init can be cloned straight into
  // it (CLONE_INTO_CGROUP). systemd: nothing exists before AddProcess.
  virtual bool CreatesBeforeProcess() const = 0;
  // Returns the absolute directory for `path` (created when CreatesBeforeProcess).
  virtual absl::StatusOr<std::string> Prepare(const std::string& path) = 0;
  // Moves `pid` into the cgroup (systemd: starts the transient scope with it,
  // with the limits of `r` as unit properties so systemd keeps them).
  virtual absl::Status AddProcess(const std::string& path, const std::string& dir, pid_t pid,
                                  const Resources& r) = 0;
  // Applies limits; unavailable controllers go to not_applied unless strict.
  absl::Status Apply(const std::string& dir, const Resources& r, bool strict,
                     std::vector<std::string>* not_applied);
  // Kills everything in it (cgroup.kill, or SIGKILL to cgroup.procs) and removes it.
  virtual absl::Status Destroy(const std::string& path, const std::string& dir) = 0;

 protected:
  explicit CgroupManager(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

// `root` is the cgroup2 mount point (or a scratch tree shaped like one).
std::unique_ptr<CgroupManager> MakeCgroupfsManager(std::string root);
std::unique_ptr<CgroupManager> MakeSystemdManager(std::string root);

// Helpers shared by drivers and by the runtime.
absl::Status KillCgroup(const std::string& dir);
absl::StatusOr<std::vector<pid_t>> CgroupPids(const std::string& dir);
// Count of oom_kill in <dir>/memory.events (0 when absent).
uint64_t CgroupOomKills(const std::string& dir);
// OOM kills of a container's cgroup counted from a baseline taken at its
// start. systemd stops a scope once its last process exits and removes its
// cgroup, possibly before the container's exit status is read: with the
// scope gone, the parent's count (memory.events is hierarchical: the pod
// slice's) stands in for it.
struct OomBaseline {
  uint64_t own = 0, parent = 0;
};
OomBaseline OomKillsBaseline(const std::string& dir);
bool OomKilledSince(const std::string& dir, const OomBaseline& base);

// What the systemd driver asks for over sd-bus (StartTransientUnit), as data
// so it can be tested without a bus.
struct TransientUnit {
  std::string name;   // "<prefix>-<name>.scope", or "a-b.slice"
  std::string slice;  // a scope's parent, "system.slice"; "" for a slice (its name implies the parent)
  std::string description;
  std::vector<uint32_t> pids;
  bool delegate = true;  // scopes only
  std::map<std::string, uint64_t> u64_properties;  // MemoryMax, TasksMax, CPUQuotaPerSecUSec, CPUWeight
  std::map<std::string, bool> bool_properties;     // MemoryAccounting, CPUAccounting, TasksAccounting
};
// Parses "slice:prefix:name" (runc's systemd cgroupsPath form).
absl::StatusOr<TransientUnit> TransientUnitFor(const std::string& cgroups_path, pid_t pid,
                                               const Resources* r);

// Slices beyond a container's scope (the kubelet's pod slices), for the
// systemd driver. "a-b-c.slice" lives at "/a.slice/a-b.slice/a-b-c.slice"
// below the cgroup2 mount ("-.slice", the root slice, at "").
absl::StatusOr<std::string> SliceCgroupPath(const std::string& slice);
// A transient slice with the limits of `r` (cpu weight and quota, memory.max,
// pids.max) as systemd properties.
absl::StatusOr<TransientUnit> TransientSliceFor(const std::string& slice, const Resources* r);
// Starts the slice over sd-bus; when it already exists (a restarted kubelet),
// sets `u`'s properties on it instead.
absl::Status StartSystemdSlice(const TransientUnit& u);
// Stops a unit (a slice with everything below it) and forgets a failed
// state; a unit systemd does not know is already stopped.
absl::Status StopSystemdUnit(const std::string& name);

}  // namespace skiff::runtime
