// Helpers for the store's multi-process tests: free loopback ports, child
// processes that are killed and reaped on destruction, running etcdctl.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace skiff::store::testing {

// A port the kernel just handed out on 127.0.0.1 (bind to :0), so parallel
// runs do not collide.
inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

inline bool PortOpen(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

inline std::string BinDir() {
  const char* b = std::getenv("SKIFF_BUILD_DIR");
  if (b != nullptr) return std::string(b) + "/bin";
  // Fall back to the tests/ sibling when run by hand.
  return (std::filesystem::canonical("/proc/self/exe").parent_path().parent_path() / "bin").string();
}

// A child process; killed with SIGKILL and reaped when destroyed.
class Child {
 public:
  Child() = default;
  Child(const std::vector<std::string>& argv, const std::string& log_path, const std::string& stdin_data = "",
        bool capture = false) {
    int in[2] = {-1, -1};
    int out[2] = {-1, -1};
    if (::pipe2(in, O_CLOEXEC) != 0) return;
    if (capture && ::pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(capture ? out[1] : log, 1);
      ::dup2(log, 2);
      ::setenv("ETCDCTL_API", "3", 1);
      ::setpgid(0, 0);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(in[0]);
    if (!stdin_data.empty()) {
      size_t off = 0;
      while (off < stdin_data.size()) {
        ssize_t n = ::write(in[1], stdin_data.data() + off, stdin_data.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
    }
    ::close(in[1]);
    if (capture) {
      ::close(out[1]);
      out_fd_ = out[0];
    }
  }
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), out_fd_(std::exchange(o.out_fd_, -1)) {}
  Child& operator=(Child&& o) noexcept {
    Kill();
    pid_ = std::exchange(o.pid_, -1);
    out_fd_ = std::exchange(o.out_fd_, -1);
    return *this;
  }
  ~Child() { Kill(); }
  pid_t pid() const { return pid_; }
  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Reads all stdout (capture mode) and waits; returns the exit status.
  int Wait(std::string* out = nullptr) {
    if (out_fd_ >= 0) {
      char buf[65536];
      ssize_t n;
      while ((n = ::read(out_fd_, buf, sizeof(buf))) > 0) {
        if (out != nullptr) out->append(buf, static_cast<size_t>(n));
      }
      ::close(out_fd_);
      out_fd_ = -1;
    }
    int st = 0;
    if (pid_ > 0) ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
      pid_ = -1;
    }
    if (out_fd_ >= 0) {
      ::close(out_fd_);
      out_fd_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
};

inline bool WaitForPort(int port, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (PortOpen(port)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A scratch directory named after the test and pid; stale ones of an earlier
// crashed run with the same name are removed first.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) {
    path_ = std::filesystem::temp_directory_path() / ("skiff-store-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
    // Leftovers of crashed runs (their pid is gone).
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
      std::string n = e.path().filename().string();
      std::string prefix = "skiff-store-" + name + "-";
      if (n.rfind(prefix, 0) != 0) continue;
      int pid = std::atoi(n.substr(prefix.size()).c_str());
      if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0) {
        std::error_code ec;
        std::filesystem::remove_all(e.path(), ec);
      }
    }
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string sub(const std::string& s) const { return (path_ / s).string(); }

 private:
  std::filesystem::path path_;
};

struct Server {
  Child child;
  int port = 0;
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }
};

inline Server StartSkiffStore(const std::string& data_dir, const std::string& log, int port = 0,
                              std::vector<std::string> extra = {}) {
  Server s;
  s.port = port ? port : FreePort();
  std::vector<std::string> argv = {BinDir() + "/skiff-store", "--data-dir", data_dir, "--listen-client-urls",
                                   "http://127.0.0.1:" + std::to_string(s.port), "--advertise-client-urls",
                                   "http://127.0.0.1:" + std::to_string(s.port)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  s.child = Child(argv, log);
  if (!WaitForPort(s.port)) s.child.Kill();
  return s;
}

// peer_port: the one a restored data dir was made for (0: any free one).
inline Server StartEtcd(const std::string& data_dir, const std::string& log, int peer_port = 0,
                        const std::vector<std::string>& extra = {}) {
  Server s;
  s.port = FreePort();
  int peer = peer_port ? peer_port : FreePort();
  std::string c = "http://127.0.0.1:" + std::to_string(s.port);
  std::string p = "http://127.0.0.1:" + std::to_string(peer);
  std::vector<std::string> argv = {"/usr/bin/etcd", "--data-dir", data_dir, "--listen-client-urls", c,
                                   "--advertise-client-urls", c, "--listen-peer-urls", p,
                                   "--initial-advertise-peer-urls", p, "--initial-cluster", "default=" + p};
  argv.insert(argv.end(), extra.begin(), extra.end());
  s.child = Child(argv, log);
  if (!WaitForPort(s.port)) s.child.Kill();
  // Wait for the member to elect itself.
  for (int i = 0; i < 100; ++i) {
    Child probe({"etcdctl", "--endpoints", s.endpoint(), "endpoint", "health"}, "/dev/null", "", true);
    if (probe.Wait() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return s;
}

struct CmdResult {
  int code = 0;
  std::string out;
  std::string err;
};

inline CmdResult Etcdctl(const std::string& endpoint, const std::vector<std::string>& args,
                         const std::string& stdin_data = "", const std::string& errlog = "") {
  std::string err_path = errlog.empty()
                             ? (std::filesystem::temp_directory_path() /
                                ("skiff-store-etcdctl-err-" + std::to_string(::getpid())))
                                   .string()
                             : errlog;
  std::filesystem::remove(err_path);
  std::vector<std::string> argv = {"etcdctl", "--endpoints", endpoint, "--command-timeout", "10s"};
  argv.insert(argv.end(), args.begin(), args.end());
  Child c(argv, err_path, stdin_data, true);
  CmdResult r;
  r.code = c.Wait(&r.out);
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  std::filesystem::remove(err_path);
  return r;
}

// The "Error: ..." line etcdctl prints, without client-side log noise.
inline std::string ErrorLine(const std::string& err) {
  std::istringstream in(err);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Error:", 0) == 0) return line;
  }
  return "";
}

}  // namespace skiff::store::testing
