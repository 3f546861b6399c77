// Child processes for the cluster tests: Debian's etcd and
// skiff-control-plane on free loopback ports, each killed and reaped by its
// owner, and killed by the kernel if the test process dies (PR_SET_PDEATHSIG).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skiff::controllers::it {

int FreeLoopbackPort();
bool WaitForPort(int port, int timeout_ms);
// The last max_bytes of a file (a child's log, for an error message).
std::string LogTail(const std::string& path, size_t max_bytes);

class Child {
 public:
  Child() = default;
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&& o) noexcept;
  ~Child() { Kill(); }
  static absl::StatusOr<Child> Spawn(const std::vector<std::string>& argv, const std::string& log_path);
  void Kill(int sig = 9);
  // False once the child has exited; it is reaped then, and Kill does nothing.
  bool Alive();
  int pid() const { return pid_; }

 private:
  int pid_ = -1;
};

// A scratch directory /tmp/skiff-ctrl-it-<pid>-<tag>; leftovers of earlier
// runs whose process is gone are removed first.
std::string ScratchDir(const std::string& tag);
void RemoveTree(const std::string& path);

struct Etcd {
  Child proc;
  std::string url;
};
// The starters wait until the child listens; a child that exits first fails
// at once (a port taken meanwhile: retried on other ports), and the error
// carries the end of its log.
absl::StatusOr<Etcd> StartEtcd(const std::string& dir);

struct ControlPlane {
  Child proc;
  std::string address;  // 127.0.0.1:port
  std::string data_dir;
};
// --components as given; --insecure so the tests' client needs no certificate.
absl::StatusOr<ControlPlane> StartControlPlane(const std::string& binary, const std::string& data_dir,
                                               const std::string& etcd_url, const std::string& components,
                                               const std::vector<std::string>& extra = {});

}  // namespace skiff::controllers::it
