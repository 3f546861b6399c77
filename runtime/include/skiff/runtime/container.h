// skiff::runtime — create and run OCI containers in-process.
//
// This is the library behind `skiff-runtime` (runc's command line) and the
// API the kubelet links directly. Lifecycle follows the OCI runtime spec:
//
//   Runtime rt({.root_dir = "/run/skiff/runtime"});
//   CreateOptions o;
//   o.id = "pod1-nginx";
//   o.bundle_dir = "/var/lib/skiff/pods/.../nginx";   // rootfs is resolved here
//   o.spec = spec;               // optional: in-memory spec instead of config.json
//   o.stdio = {in_fd, out_fd, err_fd};   // dup'ed into the container as 0,1,2
//   o.netns_path = "/run/netns/pod1";    // join the pod's network namespace
//   o.cgroup_path = "kubepods/burstable/pod<uid>/<id>";  // relative to the cgroup2 root
//   ASSIGN_OR_RETURN(ContainerState st, rt.Create(o));   // init waits before the user program
//   RETURN_IF_ERROR(rt.Start(o.id));                     // runs process.args
//   ASSIGN_OR_RETURN(ExitStatus ex, rt.Wait(o.id));      // blocks; see Wait below
//   RETURN_IF_ERROR(rt.Delete(o.id, /*force=*/false));
//
// Processes: Create clones the container's init as a CHILD OF THE CALLING
// PROCESS (no intermediate runtime process, no re-exec). Whoever calls Create
// therefore receives SIGCHLD for it and is the one that can collect its exit
// status: call Wait(id) (or waitid on ContainerState::pid) from that process.
// A per-container monitor process that calls Create itself is the intended
// way to let containers outlive the kubelet. From any other process Wait only
// learns *that* the container exited (pidfd), and State reports "stopped".
//
// Stdio: the three fds in StdioFds are duplicated into the container as
// 0/1/2 (the caller keeps and closes its own copies). -1 means /dev/null.
// Set process.terminal + console_socket to get a pty master over a unix socket
// (runc's --console-socket protocol, SCM_RIGHTS).
//
// cgroups: cgroup v2 only. cgroup_path (or the spec's linux.cgroupsPath) is
// relative to the cgroup2 mount found in /proc/self/mountinfo, and with the
// systemd driver is "slice:prefix:name". Limits a hierarchy cannot honour
// (e.g. the hybrid layout whose cgroup2 has no memory controller) are skipped
// and listed in ContainerState::warnings, unless strict_cgroups is set, in
// which case Create fails and leaves nothing behind.
//
// Thread-safety: a Runtime is safe to use from several threads for different
// ids. The clone'd child runs only pre-built data and raw syscalls, so Create
// and Exec are safe to call from a multithreaded process.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

inline constexpr char kDefaultRootDir[] = "/run/skiff/runtime";

enum class CgroupDriver { kCgroupfs, kSystemd };

struct RuntimeOptions {
  std::string root_dir = kDefaultRootDir;  // one sub-directory per container id
  CgroupDriver cgroup_driver = CgroupDriver::kCgroupfs;
  bool strict_cgroups = false;  // fail when a requested limit cannot be applied
};

struct StdioFds {
  int in = -1;  // -1: /dev/null
  int out = -1;
  int err = -1;
};

struct CreateOptions {
  std::string id;
  // Directory holding config.json (when spec is unset) and against which a
  // relative root.path is resolved.
  std::string bundle_dir;
  std::optional<Spec> spec;  // overrides <bundle_dir>/config.json
  StdioFds stdio;
  // Join this network namespace (overrides a "network" entry of the spec).
  std::string netns_path;
  // Overrides linux.cgroupsPath. Empty in both: "skiff/<id>".
  std::string cgroup_path;
  // Use RuntimeDefaultSeccomp() when the spec has no linux.seccomp.
  bool default_seccomp = false;
  std::string pid_file;        // written with the init's pid (runc --pid-file)
  std::string console_socket;  // runc --console-socket
  // Create and Start in one step (`run`): the init does not wait on the
  // exec fifo, saving a round trip. Poststart hooks still run.
  bool start_immediately = false;
};

enum class ContainerStatus { kCreating, kCreated, kRunning, kStopped };
const char* ContainerStatusName(ContainerStatus s);

struct ContainerState {
  std::string oci_version;
  std::string id;
  ContainerStatus status = ContainerStatus::kCreating;
  pid_t pid = 0;  // init pid in the caller's pid namespace; 0 when stopped
  std::string bundle;
  std::map<std::string, std::string> annotations;
  std::string created;      // RFC 3339
  std::string cgroup_path;  // absolute path of the container's cgroup v2 dir
  std::vector<std::string> warnings;  // limits not applied, on Create
  // OCI state JSON, exactly what `skiff-runtime state` prints.
  std::string ToJson() const;
};

struct ExitStatus {
  bool known = false;     // false: not our child, we only know it exited
  int exit_code = 0;      // shell convention: 128+signal when killed
  int signal = 0;         // non-zero when killed by a signal
  bool oom_killed = false;  // memory.events oom_kill grew while it ran
};

struct ExecOptions {
  Process process;  // args, env, cwd, user, capabilities...; container's seccomp applies
  StdioFds stdio;
  std::string console_socket;
  std::string pid_file;
};

class Runtime {
 public:
  explicit Runtime(RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Sets up namespaces, rootfs, cgroup and security settings; the init waits
  // for Start before exec'ing process.args. On error nothing is left behind.
  absl::StatusOr<ContainerState> Create(const CreateOptions& options);
  // Lets a created container run its program. Error if not "created".
  absl::Status Start(const std::string& id);
  absl::StatusOr<ContainerState> State(const std::string& id);
  // Sends `signal` to the init (all = every process of the container).
  absl::Status Kill(const std::string& id, int signal, bool all = false);
  // Removes a stopped (or created) container; force kills a running one first.
  absl::Status Delete(const std::string& id, bool force);
  // Starts another process inside a running container; returns its pid
  // (a child of the caller; collect it with WaitPid).
  absl::StatusOr<pid_t> Exec(const std::string& id, const ExecOptions& options);
  // Waits for the container's init to exit. timeout_ms < 0: forever.
  // DeadlineExceeded on timeout.
  absl::StatusOr<ExitStatus> Wait(const std::string& id, int timeout_ms = -1);
  // Waits for a child process of the caller (an Exec'ed process).
  static absl::StatusOr<ExitStatus> WaitPid(pid_t pid);
  absl::StatusOr<std::vector<ContainerState>> List();
  // Pids of all processes in the container's cgroup (host pid namespace).
  absl::StatusOr<std::vector<pid_t>> Pids(const std::string& id);

  const RuntimeOptions& options() const { return options_; }

 private:
  RuntimeOptions options_;
};

// Exit code the CLI uses for a status: 0 for OK, 1 otherwise (runc's convention).
int ExitCodeFor(const absl::Status& s);

}  // namespace skiff::runtime
