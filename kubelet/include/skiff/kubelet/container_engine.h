// Everything the kubelet asks of the container runtime, in one place.
// Containers are created by a per-container skiff-monitor process (so they
// outlive the kubelet); signals, exec and removal go through skiff::runtime
// in-process. This header keeps the runtime types out of the rest of the kubelet.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::kubelet {

struct MountSpec {
  std::string source, destination;
  bool read_only = false;
  bool tmpfs = false;
};

struct ContainerSpec {
  std::string id;            // unique on the node
  std::string bundle_dir;    // config.json is written here
  std::string rootfs;        // absolute
  bool rootfs_read_only = true;
  std::vector<std::string> args, env;
  std::string cwd = "/";
  uint32_t uid = 0, gid = 0;
  std::string hostname;
  std::string netns_path;    // "" = the node's (hostNetwork)
  std::string cgroup_path;   // relative to the cgroup2 mount
  uint64_t cpu_shares = 2;
  std::optional<int64_t> cpu_quota_us;
  std::optional<int64_t> memory_limit;
  std::optional<int64_t> pids_limit;
  std::optional<int> oom_score_adj;  // written to /proc/PID/oom_score_adj of the init
  std::vector<MountSpec> mounts;
  bool privileged = false;
  bool tty = false;
};

struct LaunchPaths {
  std::string record;  // ContainerRecord file the monitor keeps
  std::string log;     // CRI log file
  int attempt = 0;
};

struct ExecResult {
  int exit_code = 0;
  std::string output;  // stdout and stderr together
  bool timed_out = false;
};

class ContainerEngine {
 public:
  ContainerEngine(std::string runtime_root, std::string monitor_path, bool systemd_cgroups);
  // Writes the bundle, starts a monitor, waits until the container runs (or failed).
  absl::Status Launch(const ContainerSpec& spec, const LaunchPaths& paths);
  absl::Status Kill(const std::string& id, int signal, bool all);
  absl::Status Remove(const std::string& id);
  // Runs a command in the container; kills it after timeout_ms.
  absl::StatusOr<ExecResult> ExecSync(const std::string& id, const std::vector<std::string>& argv,
                                      const std::vector<std::string>& env, int timeout_ms);
  // Starts a command with the given stdio (for streaming exec); returns its pid (our child).
  absl::StatusOr<pid_t> ExecStart(const std::string& id, const std::vector<std::string>& argv,
                                  const std::vector<std::string>& env, int in, int out, int err);
  // Same with a terminal: the pty is allocated inside the container (its own
  // devpts) and its master handed back through a console socket; stdin,
  // stdout and stderr are all the pty. *master receives the master fd.
  absl::StatusOr<pid_t> ExecStartTty(const std::string& id, const std::vector<std::string>& argv,
                                     const std::vector<std::string>& env, int* master);
  static absl::StatusOr<int> WaitExec(pid_t pid);
  // Ids the runtime knows about (for garbage collection).
  absl::StatusOr<std::vector<std::string>> List();
  const std::string& runtime_root() const { return runtime_root_; }

 private:
  std::string runtime_root_, monitor_path_;
  bool systemd_;
  std::atomic<uint64_t> console_seq_{0};
};

}  // namespace skiff::kubelet
