// The container's init, prepared: everything the clone'd child needs, built
// by the runtime beforehand so the child runs only raw syscalls on ready
// data (no allocation: it may be cloned from a multithreaded process).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "caps.h"
#include "seccomp_filter.h"
#include "skiff/common/unique_fd.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

// Messages on the runtime <-> init socket (SOCK_SEQPACKET).
enum SyncType : int {
  kSyncIdMapsNeeded = 1,  // child: write my uid/gid maps, then kSyncGo
  kSyncHooksNeeded = 2,   // child: run createRuntime/createContainer hooks, then kSyncGo
  kSyncReady = 3,         // child: set up, committed, parent-death signal cleared
  kSyncError = 4,         // child: failed; msg says why
  kSyncGo = 5,
  kSyncCommitted = 6,  // parent: state recorded (value = host pid); child may outlive us
  kSyncPid = 7,        // exec middle process: value = pid of the exec'ed process
};
struct SyncMsg {
  int type = 0;
  int value = 0;
  char msg[504] = {};
};

struct PreparedMount {
  std::string source;
  std::string dest;         // the spec's destination, a path inside the container
  std::string target;       // rootfs + dest, for messages
  std::string type;
  unsigned long flags = 0;  // MS_* except propagation
  unsigned long propagation = 0;
  std::string data;
  bool bind = false;
  bool dev_tmpfs = false;  // /dev tmpfs: populate standard devices after
};

struct PreparedDevice {
  std::string host_path;  // bind source when it exists on the host
  std::string dest;       // path inside the container
  std::string target;     // rootfs + dest, for messages
  mode_t mode = 0;        // S_IFCHR/S_IFBLK | perms
  dev_t dev = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct PreparedSysctl {
  std::string path;  // /proc/sys/...
  std::string value;
};

struct PreparedRlimit {
  int resource = 0;
  struct rlimit limit {};
};

// What a process in the container runs with (init and exec share it).
struct ProcessPlan {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  int umask = -1;
  std::string cwd = "/";
  std::vector<std::string> args, env;
  std::vector<std::string> exec_candidates;  // args[0], or PATH entries joined with it
  std::vector<char*> argv, envp;             // point into args/env
  std::vector<PreparedRlimit> rlimits;
  bool has_caps = false;
  CapMasks caps;
  int last_cap = 0;
  bool no_new_privs = false;
  std::shared_ptr<const SeccompProgram> seccomp;
  bool terminal = false;
  int oom_score_adj = 0;
  bool has_oom_score_adj = false;
  int stdio[3] = {-1, -1, -1};
  int console_socket = -1;
  bool stdio_done = false;
};

struct InitPlan {
  int clone_flags = 0;  // CLONE_NEW*
  struct JoinNs {
    int fd;
    int nstype;
  };
  std::vector<JoinNs> join;
  std::vector<UniqueFd> owned_fds;  // keep join fds, stdio and sockets alive
  bool new_userns = false;
  bool new_mntns = false;
  bool hooks_in_create = false;
  std::string rootfs;
  std::string cgroup2_mount;  // host's, for binding into the container
  bool rootfs_readonly = false;
  unsigned long rootfs_propagation = 0;
  std::vector<PreparedMount> mounts;
  std::vector<PreparedDevice> devices;
  std::vector<std::string> dev_symlinks;  // pairs: target, linkpath
  std::string hostname, domainname;
  std::vector<PreparedSysctl> sysctls;
  std::vector<std::string> masked_paths, readonly_paths;
  int sync_fd = -1;
  int state_dir_fd = -1;  // O_PATH; init opens exec.fifo through it
  bool wait_for_start = true;
  std::string start_hooks_state;  // state JSON for startContainer hooks, up to the pid
  std::string start_hooks_state_suffix;
  int host_pid = 0;  // learned from kSyncCommitted
  std::vector<Hook> start_hooks;
  std::vector<std::vector<char*>> start_hook_argv, start_hook_envp;
  ProcessPlan process;
};

absl::StatusOr<unsigned long> NamespaceFlag(const std::string& type);
const char* NamespaceProcName(int nstype);

// Fills mounts/devices/masked/readonly/sysctls from the spec.
absl::Status PrepareMounts(const Spec& spec, InitPlan* plan);
// Fills a ProcessPlan from process fields (+ seccomp of the container).
absl::Status PrepareProcess(const Process& proc, const Spec* spec, bool default_seccomp, ProcessPlan* out);
void FinalizeArgv(ProcessPlan* p);

// Child side. Never returns: execs the user program or _exit()s.
[[noreturn]] void RunInit(InitPlan* plan);
// Child side of exec, after setns: security setup and execve.
[[noreturn]] void RunExecProcess(ProcessPlan* p, int sync_fd);

// Child helpers (mount.cc) returning 0 or -errno with *what/*obj set.
int SetupRootfs(InitPlan* plan, const char** what, const char** obj);
int FinishRootfs(InitPlan* plan, const char** what, const char** obj);

}  // namespace skiff::runtime
