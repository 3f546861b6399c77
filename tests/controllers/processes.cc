#include "processes.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"

namespace skiff::controllers::it {

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

bool WaitForPort(int port, int timeout_ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    close(fd);
    if (rc == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    Kill();
    pid_ = o.pid_;
    o.pid_ = -1;
  }
  return *this;
}

absl::StatusOr<Child> Child::Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return LastErrnoError("open " + log_path);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(log);
    return LastErrnoError("fork");
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log, 1);
    dup2(log, 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log);
  Child c;
  c.pid_ = pid;
  return c;
}

void Child::Kill(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool Child::Alive() {
  if (pid_ <= 0) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == 0) return true;
  // Reaped (or not ours): never signal this pid again, it may be reused.
  pid_ = -1;
  return false;
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string ScratchDir(const std::string& tag) {
  // Stale leftovers: /tmp/skiff-ctrl-it-<pid>-* of processes that are gone.
  if (DIR* d = opendir("/tmp")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      const std::string prefix = "skiff-ctrl-it-";
      if (n.rfind(prefix, 0) != 0) continue;
      int pid = atoi(n.c_str() + prefix.size());
      if (pid > 0 && pid != getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) RemoveTree("/tmp/" + n);
    }
    closedir(d);
  }
  std::string dir = absl::StrCat("/tmp/skiff-ctrl-it-", getpid(), "-", tag);
  RemoveTree(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string LogTail(const std::string& path, size_t max_bytes) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "(no log)";
  off_t end = lseek(fd, 0, SEEK_END);
  off_t from = end > static_cast<off_t>(max_bytes) ? end - static_cast<off_t>(max_bytes) : 0;
  std::string out(static_cast<size_t>(end - from), '\0');
  ssize_t n = pread(fd, out.data(), out.size(), from);
  close(fd);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

namespace {

// Waits until the child listens on port. A child that exits first ends the
// wait at once; a port another process took meanwhile (FreeLoopbackPort
// closes the port it found before the child binds it) is worth a retry.
enum class Started { kYes, kExited, kTimedOut };
Started WaitForChild(Child& c, int port, int timeout_ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (WaitForPort(port, 100)) return Started::kYes;
    if (!c.Alive()) return Started::kExited;
  }
  return Started::kTimedOut;
}

bool PortTaken(const std::string& log) {
  return log.find("address already in use") != std::string::npos ||
         log.find("Address already in use") != std::string::npos ||
         log.find("Address in use") != std::string::npos;
}

absl::Status NotStarted(const std::string& what, Started why, const std::string& log_path) {
  return absl::UnavailableError(absl::StrCat(what, why == Started::kExited ? " exited" : " did not start in time",
                                             "; the end of ", log_path, ":\n", LogTail(log_path, 2000)));
}

constexpr int kStartAttempts = 3;

}  // namespace

absl::StatusOr<Etcd> StartEtcd(const std::string& dir) {
  const std::string log = dir + "/etcd.log";
  for (int attempt = 1;; ++attempt) {
    int client = FreeLoopbackPort(), peer = FreeLoopbackPort();
    Etcd e;
    e.url = absl::StrCat("http://127.0.0.1:", client);
    std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
    RemoveTree(dir + "/etcd");
    ASSIGN_OR_RETURN(e.proc, Child::Spawn({"/usr/bin/etcd", "--name", "it", "--data-dir", dir + "/etcd",
                                           "--listen-client-urls", e.url, "--advertise-client-urls", e.url,
                                           "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls",
                                           peer_url, "--initial-cluster", "it=" + peer_url, "--log-level", "warn"},
                                          log));
    Started st = WaitForChild(e.proc, client, 20000);
    if (st == Started::kYes) return e;
    e.proc.Kill();
    if (st == Started::kExited && PortTaken(LogTail(log, 4000)) && attempt < kStartAttempts) continue;
    return NotStarted("etcd", st, log);
  }
}

absl::StatusOr<ControlPlane> StartControlPlane(const std::string& binary, const std::string& data_dir,
                                               const std::string& etcd_url, const std::string& components,
                                               const std::vector<std::string>& extra) {
  const std::string log = data_dir + ".log";
  for (int attempt = 1;; ++attempt) {
    int port = FreeLoopbackPort();
    ControlPlane cp;
    cp.address = absl::StrCat("127.0.0.1:", port);
    cp.data_dir = data_dir;
    std::vector<std::string> argv = {binary, "--data-dir", data_dir, "--listen", cp.address, "--etcd-servers",
                                     etcd_url, "--components", components, "--insecure",
                                     "--health-listen", absl::StrCat("127.0.0.1:", FreeLoopbackPort())};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSIGN_OR_RETURN(cp.proc, Child::Spawn(argv, log));
    Started st = WaitForChild(cp.proc, port, 30000);
    if (st == Started::kYes) return cp;
    cp.proc.Kill();
    if (st == Started::kExited && PortTaken(LogTail(log, 4000)) && attempt < kStartAttempts) continue;
    return NotStarted("skiff-control-plane", st, log);
  }
}

}  // namespace skiff::controllers::it
