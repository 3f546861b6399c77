// The lab from C++: a small cluster topology on one machine (N hosts, each a
// network namespace on a bridged switch, with its own cgroup v2 subtree,
// bpffs mount and state directories). A thin owner over tests/lab/skiff-lab:
// creating a Lab first removes stale labs of crashed runs; destroying it (or
// exit, or SIGINT/SIGTERM/SIGHUP) removes everything it made.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skiff::lab {

struct Host {
  int index = 0;           // 1-based
  std::string name;        // "h1"
  std::string netns;       // /run/netns/<lab>-h1
  std::string address;     // 10.250.0.11
  std::string cgroup;      // <cgroup2>/skiff-lab/<lab>/h1
  std::string dir;         // /run/skiff-lab/<lab>/h1 (root/, run/, log/, etc/ inside)
  std::string bpffs;       // <dir>/bpf, a bpffs mount of its own
};

// A process started inside a host. Killed (SIGKILL) and reaped when the
// handle is destroyed, unless Wait() already reaped it.
class Process {
 public:
  Process() = default;
  explicit Process(pid_t pid) : pid_(pid) {}
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&& o) noexcept;
  Process& operator=(Process&& o) noexcept;
  ~Process();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // Sends a signal (no-op once reaped).
  void Signal(int sig) const;
  // Waits for exit; returns the exit code, or 128+signal.
  int Wait();

 private:
  pid_t pid_ = -1;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

class Lab {
 public:
  // Creates a lab of `hosts` hosts with a name unique to this process.
  static absl::StatusOr<std::unique_ptr<Lab>> Create(int hosts);
  ~Lab();
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  const std::string& name() const { return name_; }
  const std::vector<Host>& hosts() const { return hosts_; }
  const Host& host(int index) const { return hosts_.at(index - 1); }

  // Runs a command in a host's netns and cgroup and waits for it.
  CommandResult Run(int host, const std::vector<std::string>& argv) const;
  // Starts a long-running command in a host, stdout+stderr to `log_file`.
  absl::StatusOr<Process> Start(int host, const std::vector<std::string>& argv, const std::string& log_file) const;

  absl::Status Cut(int host) const;
  absl::Status Restore(int host) const;
  // Removes the lab now (also done by the destructor).
  absl::Status Destroy();

  // Path of the skiff-lab script.
  static std::string Script();
  // Runs a command on the machine itself (no namespace change).
  static CommandResult RunOnMachine(const std::vector<std::string>& argv);

 private:
  Lab() = default;
  std::string name_;
  std::vector<Host> hosts_;
  bool destroyed_ = false;
};

}  // namespace skiff::lab
