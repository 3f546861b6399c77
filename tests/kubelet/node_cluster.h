// A Skiff cluster on the lab (tests/lab): skiff-control-plane on host 1 and a
// skiff-kubelet on the hosts a test asks for, each in its host's network
// namespace and cgroup subtree, with a busybox rootfs as image
// "local/busybox". And FindNodeLeaks: what a node still holds for pods (netns,
// pod cgroups, mounts, processes) once its pods are gone.
//
//   auto c = NodeCluster::Start(2, {"--node-monitor-grace-period", "6s"});
//   ASSERT_TRUE(c.ok());
//   ASSERT_TRUE((*c)->StartKubelet(2).ok());
//   (*c)->Ctl({"apply", "-f", file});
//   EXPECT_THAT(FindNodeLeaks((*c)->Scope(2)), IsEmpty());
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lab.h"

namespace skiff::labtest {

// $SKIFF_BUILD_DIR (set by ctest), else "build".
std::string BuildDir();
// Mount point of cgroup2, from /proc/self/mountinfo ("" if none).
std::string Cgroup2Mount();
// A file's content ("" when unreadable): for failure messages.
std::string Slurp(const std::string& path);
// Polls `done` every 200 ms until it holds or `timeout` passes; true if it held.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// What belongs to one node's pods, for FindNodeLeaks.
struct NodeScope {
  std::string run_dir;      // --run-dir: pod netns under <run_dir>/netns, pod state under <run_dir>/pods
  std::string root_dir;     // --root-dir
  std::string cgroup_root;  // absolute path of --cgroup-root (under the cgroup2 mount)
  // Processes allowed to name run_dir in their command line: the kubelet itself.
  std::vector<pid_t> except;
};

// Every leak found, one readable line each; empty when the node is clean:
//  - a file under <run_dir>/netns (a pod network namespace);
//  - a pod cgroup (a directory named pod<uid>) anywhere under cgroup_root,
//    and any process in a cgroup under cgroup_root;
//  - a mount point at or under run_dir or root_dir (/proc/self/mountinfo);
//  - a process, other than those in `except`, whose command line names
//    run_dir (the per-container monitors do).
std::vector<std::string> FindNodeLeaks(const NodeScope& scope);

class NodeCluster {
 public:
  // A lab of `hosts` hosts with skiff-control-plane on host 1 (extra flags
  // appended), serving once this returns. No kubelet yet.
  static absl::StatusOr<std::unique_ptr<NodeCluster>> Start(int hosts,
                                                            const std::vector<std::string>& control_plane_flags);
  ~NodeCluster();
  NodeCluster(const NodeCluster&) = delete;
  NodeCluster& operator=(const NodeCluster&) = delete;

  skiff::lab::Lab& lab() { return *lab_; }
  // Starts a kubelet on `host` as node "h<host>" (extra flags appended) and
  // waits until its Node is registered.
  absl::Status StartKubelet(int host, const std::vector<std::string>& flags = {});
  // SIGTERM to the kubelet and wait for it (pods keep running, as on a real node).
  void StopKubelet(int host);
  pid_t kubelet_pid(int host) const;
  // skiffctl with the admin kubeconfig, run inside host 1.
  skiff::lab::CommandResult Ctl(const std::vector<std::string>& args) const;
  // Writes `yaml` to a file and applies it.
  skiff::lab::CommandResult Apply(const std::string& yaml) const;
  // The node's dirs, cgroup root and kubelet pid for FindNodeLeaks.
  NodeScope Scope(int host) const;
  // The last part of a host's logs (control plane on host 1, kubelets): for failure messages.
  std::string Logs(int host) const;

 private:
  NodeCluster() = default;
  std::unique_ptr<skiff::lab::Lab> lab_;
  skiff::lab::Process control_plane_;
  std::map<int, skiff::lab::Process> kubelets_;
  std::string data_dir_, images_;
  mutable int applied_ = 0;
};

}  // namespace skiff::labtest
