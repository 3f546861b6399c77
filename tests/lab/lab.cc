#include "lab.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>

#include "skiff/common/status.h"

namespace skiff::lab {
namespace {

// Labs alive in this process, removed on exit and on fatal signals.
std::mutex g_mu;
std::set<std::string>& LiveLabs() {
  static auto* labs = new std::set<std::string>();
  return *labs;
}

void DownByName(const std::string& name) {
  Lab::RunOnMachine({Lab::Script(), "down", name});
}

void DownAll() {
  std::set<std::string> labs;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    labs.swap(LiveLabs());
  }
  for (const auto& n : labs) DownByName(n);
}

void OnSignal(int sig) {
  DownAll();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void InstallCleanupOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit(DownAll);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, OnSignal);
  });
}

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> v;
  for (const auto& a : args) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  return v;
}

}  // namespace

Process::Process(Process&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = o.pid_;
    o.pid_ = -1;
  }
  return *this;
}
Process::~Process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}
void Process::Signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}
int Process::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string Lab::Script() {
  if (const char* s = std::getenv("SKIFF_LAB_SCRIPT")) return s;
  if (const char* src = std::getenv("SKIFF_SOURCE_DIR")) return std::string(src) + "/tests/lab/skiff-lab";
  return SKIFF_LAB_SCRIPT_DEFAULT;
}

CommandResult Lab::RunOnMachine(const std::vector<std::string>& argv) {
  CommandResult r;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    r.output = "pipe failed";
    return r;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    r.output = "fork failed";
    return r;
  }
  if (pid == 0) {
    ::dup2(pipefd[1], STDOUT_FILENO);
    ::dup2(pipefd[1], STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    auto args = Argv(argv);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  ::close(pipefd[1]);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  Process p(pid);
  r.exit_code = p.Wait();
  return r;
}

absl::StatusOr<std::unique_ptr<Lab>> Lab::Create(int hosts) {
  InstallCleanupOnce();
  // Stale labs from crashed runs go first.
  RunOnMachine({Script(), "gc"});

  static int counter = 0;
  std::ostringstream name;
  name << "sk" << std::hex << (::getpid() & 0xfffff) << "x" << counter++;
  std::unique_ptr<Lab> lab(new Lab());
  lab->name_ = name.str();
  {
    std::lock_guard<std::mutex> lock(g_mu);
    LiveLabs().insert(lab->name_);
  }
  CommandResult r =
      RunOnMachine({Script(), "up", lab->name_, std::to_string(hosts), "--owner", std::to_string(::getpid())});
  if (r.exit_code != 0) {
    return absl::InternalError("skiff-lab up " + lab->name_ + " failed: " + r.output);
  }
  std::map<std::string, std::string> kv;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  for (int i = 1; i <= hosts; ++i) {
    std::string p = "H" + std::to_string(i) + "_";
    Host h;
    h.index = i;
    h.name = "h" + std::to_string(i);
    h.netns = kv[p + "NETNS"];
    h.address = kv[p + "ADDR"];
    h.cgroup = kv[p + "CGROUP"];
    h.dir = kv[p + "DIR"];
    h.bpffs = kv[p + "BPFFS"];
    if (h.netns.empty() || h.address.empty()) return absl::InternalError("skiff-lab info incomplete: " + r.output);
    lab->hosts_.push_back(h);
  }
  return lab;
}

Lab::~Lab() { (void)Destroy(); }

absl::Status Lab::Destroy() {
  if (destroyed_) return absl::OkStatus();
  destroyed_ = true;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    LiveLabs().erase(name_);
  }
  CommandResult r = RunOnMachine({Script(), "down", name_});
  if (r.exit_code != 0) return absl::InternalError("skiff-lab down " + name_ + ": " + r.output);
  return absl::OkStatus();
}

CommandResult Lab::Run(int host, const std::vector<std::string>& argv) const {
  std::vector<std::string> full = {Script(), "exec", name_, "h" + std::to_string(host), "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  return RunOnMachine(full);
}

absl::StatusOr<Process> Lab::Start(int host, const std::vector<std::string>& argv, const std::string& log_file) const {
  std::vector<std::string> full = {Script(), "exec", name_, "h" + std::to_string(host), "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return LastErrnoError("open " + log_file);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return LastErrnoError("fork");
  }
  if (pid == 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    auto args = Argv(full);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  ::close(fd);
  return Process(pid);
}

absl::Status Lab::Cut(int host) const {
  auto r = RunOnMachine({Script(), "cut", name_, "h" + std::to_string(host)});
  if (r.exit_code != 0) return absl::InternalError("cut: " + r.output);
  return absl::OkStatus();
}

absl::Status Lab::Restore(int host) const {
  auto r = RunOnMachine({Script(), "restore", name_, "h" + std::to_string(host)});
  if (r.exit_code != 0) return absl::InternalError("restore: " + r.output);
  return absl::OkStatus();
}

}  // namespace skiff::lab
