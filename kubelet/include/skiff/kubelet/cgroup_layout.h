// Where the kubelet's pods and containers live in the cgroup tree, for both
// cgroup drivers, and the pod-level cgroup's life.
//
//   cgroupfs: <mount>/<cgroup-root>/{,burstable/,besteffort/}pod<uid>/<container id>
//             (--cgroup-root names the kubepods level itself, default /kubepods)
//   systemd:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
//             skiff-<container id>.scope, the container's linux.cgroupsPath being runc's
//             "kubepods-burstable-pod<uid_>.slice:skiff:<id>"; uid dashes become '_'
//             (systemd reads '-' as nesting). --cgroup-root names the parent slice
//             ("skiff_n2.slice", or a path "skiff-n2" read as the kubelet reads it),
//             so two nodes on one machine get skiff_n2-kubepods.slice and kubepods.slice.
//             Guaranteed pods sit directly in the kubepods slice, as with cgroupfs.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "skiff/kubelet/config.h"
#include "skiff/kubelet/resources.h"

namespace skiff::kubelet {

// The abstract cgroup name of the kubepods level for --cgroup-root, as the
// kubelet's CgroupName: {"kubepods"}, {"skiff-n2", "kubepods"}, ... A root
// whose last element is "kubepods" is that level (the cgroupfs default
// "/kubepods"); otherwise kubepods goes below it. A slice name ("a_b-c.slice",
// also as the last element of a path) is read back into its parts.
std::vector<std::string> KubepodsCgroupName(const std::string& cgroup_root);
// The systemd slice of an abstract name: parts joined by '-', each part's '-'
// escaped to '_', ".slice" appended ({} is the root slice "-.slice").
std::string SystemdSliceName(const std::vector<std::string>& name);

class CgroupLayout {
 public:
  // `cgroup2_mount` "" = no cgroup2 on this node: directories are "" and
  // CreatePod/RemovePod do nothing.
  CgroupLayout(const Config& config, std::string cgroup2_mount);
  CgroupLayout(const std::string& driver, const std::string& cgroup_root, std::string cgroup2_mount);

  bool systemd() const { return systemd_; }
  // cgroupfs: "kubepods/burstable/pod<uid>" (below the mount); systemd: the pod's slice name.
  std::string PodCgroup(QosClass qos, const std::string& uid) const;
  // The pod cgroup's absolute directory ("" without a cgroup2 mount).
  std::string PodDir(QosClass qos, const std::string& uid) const;
  // The container's linux.cgroupsPath for the runtime.
  std::string ContainerCgroupsPath(QosClass qos, const std::string& uid, const std::string& id) const;
  // The container cgroup's absolute directory ("" without a cgroup2 mount).
  std::string ContainerDir(QosClass qos, const std::string& uid, const std::string& id) const;

  // Creates the pod cgroup with the pod's limits (cgroupfs: directories and
  // files; systemd: a transient slice whose properties are the limits). Limits
  // this node cannot apply (a cgroup2 without the controller) are appended to
  // *not_applied. Idempotent: a kubelet restart calls it again.
  absl::Status CreatePod(QosClass qos, const std::string& uid, const PodLimits& limits,
                         std::vector<std::string>* not_applied) const;
  // Removes the pod cgroup and anything still below it (systemd: stops the slice).
  absl::Status RemovePod(QosClass qos, const std::string& uid) const;

 private:
  bool systemd_;
  std::string cgroup_root_, mount_;
  std::vector<std::string> kubepods_;
};

}  // namespace skiff::kubelet
