#include "bundle.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <filesystem>
#include <fstream>

namespace skiff::runtime::testing {
namespace fs = std::filesystem;

CmdResult RunCmd(const std::vector<std::string>& argv) {
  CmdResult r;
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return r;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  struct pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  // A detached container keeps our pipes open, so stop reading once the
  // command itself has exited and the pipes are drained.
  int status = 0;
  bool exited = false;
  for (int spins = 0; spins < 3000;) {
    int n = poll(p, 2, exited ? 0 : 20);
    bool got = false;
    for (int i = 0; n > 0 && i < 2; i++) {
      if (p[i].fd < 0 || !p[i].revents) continue;
      char buf[4096];
      ssize_t k = read(p[i].fd, buf, sizeof(buf));
      if (k <= 0) {
        close(p[i].fd);
        p[i].fd = -1;
      } else {
        (i == 0 ? r.out : r.err).append(buf, k);
        got = true;
      }
    }
    if (p[0].fd < 0 && p[1].fd < 0) break;
    if (exited && !got) break;
    if (!exited && waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (!got) spins++;
  }
  for (auto& x : p)
    if (x.fd >= 0) close(x.fd);
  if (!exited) waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string BuildDir() {
  const char* b = getenv("SKIFF_BUILD_DIR");
  if (b && *b) return b;
  // Test binaries live in <build>/tests.
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path().string();
}
std::string SkiffRuntime() { return BuildDir() + "/bin/skiff-runtime"; }

namespace {
void CleanStale() {
  for (auto& e : fs::directory_iterator("/tmp")) {
    std::string n = e.path().filename().string();
    if (n.rfind("skiff-rt-test-", 0) != 0) continue;
    int pid = atoi(n.c_str() + strlen("skiff-rt-test-"));
    if (pid <= 0 || kill(pid, 0) == 0) continue;
    std::string base = e.path().string();
    CmdResult l = RunCmd({SkiffRuntime(), "--root", base + "/skiff-root", "list", "-q"});
    std::istringstream ids(l.out);
    for (std::string id; std::getline(ids, id);)
      if (!id.empty()) RunCmd({SkiffRuntime(), "--root", base + "/skiff-root", "delete", "-f", id});
    l = RunCmd({"runc", "--root", base + "/runc-root", "list", "-q"});
    std::istringstream rids(l.out);
    for (std::string id; std::getline(rids, id);)
      if (!id.empty()) RunCmd({"runc", "--root", base + "/runc-root", "delete", "-f", id});
    std::error_code ec;
    fs::remove_all(base, ec);
  }
}
}  // namespace

std::string TestBase() {
  static std::string base = [] {
    CleanStale();
    std::string b = "/tmp/skiff-rt-test-" + std::to_string(getpid());
    fs::create_directories(b);
    return b;
  }();
  return base;
}

Bundle::Bundle(const std::string& name) {
  dir_ = TestBase() + "/" + name;
  fs::remove_all(dir_);
  fs::create_directories(dir_ + "/rootfs/bin");
  for (const char* d : {"proc", "dev", "sys", "tmp", "etc"}) fs::create_directories(dir_ + "/rootfs/" + d);
  fs::copy_file("/bin/busybox", dir_ + "/rootfs/bin/busybox");
  for (const char* applet : {"sh", "id", "hostname", "cat", "ls", "grep", "mount", "sleep", "true", "false", "echo",
                             "touch", "unshare", "wc", "sed", "awk", "head", "kill", "readlink", "stat"})
    fs::create_symlink("busybox", dir_ + "/rootfs/bin/" + applet);
  fs::copy_file(BuildDir() + "/tests/runtime_test_probe", dir_ + "/rootfs/bin/probe");
  std::ofstream(dir_ + "/rootfs/etc/passwd") << "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n";
  std::ofstream(dir_ + "/rootfs/etc/group") << "root:x:0:\nnobody:x:65534:\n";
  RunCmd({"runc", "spec", "--bundle", dir_});
  std::ifstream in(dir_ + "/config.json");
  config_ = nlohmann::json::parse(in);
  config_["process"]["terminal"] = false;
}

void Bundle::SetArgs(const std::vector<std::string>& args) {
  config_["process"]["args"] = args;
  Save();
}

void Bundle::Save() { std::ofstream(dir_ + "/config.json") << config_.dump(1); }

}  // namespace skiff::runtime::testing
