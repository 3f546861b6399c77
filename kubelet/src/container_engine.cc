// The only file of the kubelet that calls skiff::runtime.
// GCC 12 reports a false -Wrestrict inside std::string for the argv building below.
#pragma GCC diagnostic ignored "-Wrestrict"
#include "skiff/kubelet/container_engine.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/runtime/container.h"
#include "skiff/runtime/spec.h"

extern char** environ;

namespace skiff::kubelet {
namespace {

runtime::Spec BuildSpec(const ContainerSpec& c) {
  runtime::Spec s;
  runtime::Process p;
  p.args = c.args;
  p.env = c.env;
  p.cwd = c.cwd.empty() ? "/" : c.cwd;
  p.user.uid = c.uid;
  p.user.gid = c.gid;
  p.terminal = false;
  p.oom_score_adj = c.oom_score_adj;
  runtime::Capabilities caps;
  std::vector<std::string> dflt = {"CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FSETID",     "CAP_FOWNER",
                                   "CAP_MKNOD",  "CAP_NET_RAW",      "CAP_SETGID",     "CAP_SETUID",
                                   "CAP_SETFCAP", "CAP_SETPCAP",     "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                                   "CAP_KILL",   "CAP_AUDIT_WRITE"};
  if (c.privileged) dflt.push_back("CAP_SYS_ADMIN"), dflt.push_back("CAP_NET_ADMIN");
  caps.bounding = caps.effective = caps.permitted = dflt;
  p.capabilities = caps;
  s.process = p;
  s.root.path = c.rootfs;
  s.root.readonly = c.rootfs_read_only;
  s.hostname = c.hostname;
  auto mnt = [&](std::string dst, std::string type, std::string src, std::vector<std::string> opts) {
    runtime::Mount m;
    m.destination = std::move(dst);
    m.type = std::move(type);
    m.source = std::move(src);
    m.options = std::move(opts);
    s.mounts.push_back(std::move(m));
  };
  mnt("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"});
  mnt("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"});
  mnt("/dev/pts", "devpts", "devpts", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"});
  mnt("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"});
  mnt("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"});
  mnt("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"});
  // A shared read-only directory rootfs gets a private writable /tmp.
  if (c.rootfs_read_only) mnt("/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777"});
  for (const MountSpec& m : c.mounts) {
    if (m.tmpfs) {
      mnt(m.destination, "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777"});
    } else {
      mnt(m.destination, "bind", m.source, {"rbind", m.read_only ? "ro" : "rw"});
    }
  }
  runtime::Linux lx;
  lx.namespaces.push_back({"pid", ""});
  lx.namespaces.push_back({"ipc", ""});
  lx.namespaces.push_back({"uts", ""});
  lx.namespaces.push_back({"mount", ""});
  if (!c.netns_path.empty()) lx.namespaces.push_back({"network", c.netns_path});
  runtime::Resources r;
  runtime::CpuResources cpu;
  cpu.shares = c.cpu_shares;
  if (c.cpu_quota_us) {
    cpu.quota = *c.cpu_quota_us;
    cpu.period = 100000;
  }
  r.cpu = cpu;
  if (c.memory_limit) {
    runtime::MemoryResources mem;
    mem.limit = *c.memory_limit;
    r.memory = mem;
  }
  if (c.pids_limit) r.pids_limit = *c.pids_limit;
  lx.resources = r;
  lx.cgroups_path = c.cgroup_path;
  lx.masked_paths = {"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                     "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"};
  lx.readonly_paths = {"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
  s.linux = lx;
  return s;
}

absl::Status WriteFile(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return LastErrnoError("create " + tmp);
    f << data;
    if (!f) return LastErrnoError("write " + tmp);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError("rename " + tmp);
  return absl::OkStatus();
}

runtime::RuntimeOptions RuntimeFor(const std::string& root) {
  runtime::RuntimeOptions o;
  o.root_dir = root;
  return o;
}

runtime::ExecOptions ExecProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  runtime::ExecOptions eo;
  eo.process.args = argv;
  eo.process.env = env;
  if (eo.process.env.empty()) eo.process.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  eo.process.cwd = "/";
  return eo;
}

}  // namespace

ContainerEngine::ContainerEngine(std::string runtime_root, std::string monitor_path, bool systemd)
    : runtime_root_(std::move(runtime_root)), monitor_path_(std::move(monitor_path)), systemd_(systemd) {}

absl::Status ContainerEngine::Launch(const ContainerSpec& c, const LaunchPaths& paths) {
  if (mkdir(c.bundle_dir.c_str(), 0700) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + c.bundle_dir);
  runtime::Spec spec = BuildSpec(c);
  RETURN_IF_ERROR(WriteFile(c.bundle_dir + "/config.json", runtime::SpecToJson(spec)));
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return LastErrnoError("pipe");
  UniqueFd rd(ready[0]), wr(ready[1]);
  std::vector<std::string> args = {monitor_path_,  "--runtime-root", runtime_root_, "--id",     c.id,
                                   "--bundle",     c.bundle_dir,    "--record",     paths.record,
                                   "--log",        paths.log,       "--attempt",    std::to_string(paths.attempt),
                                   "--ready-fd",   "3",             "--systemd",    systemd_ ? "1" : "0"};
  if (!c.netns_path.empty()) args.insert(args.end(), {"--netns", c.netns_path});
  if (!c.cgroup_path.empty()) args.insert(args.end(), {"--cgroup", c.cgroup_path});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), 3);  // dup2 clears O_CLOEXEC on fd 3
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t dfl;
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGTERM);
  sigaddset(&dfl, SIGINT);
  sigaddset(&dfl, SIGPIPE);
  sigaddset(&dfl, SIGCHLD);
  posix_spawnattr_setsigdefault(&attr, &dfl);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, monitor_path_.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return ErrnoError(rc, "spawn " + monitor_path_);
  wr.reset();
  // The monitor forks once more and its first process exits right away.
  int wst = 0;
  while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {
  }
  std::string reply;
  char buf[512];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) return absl::DeadlineExceededError("container " + c.id + " did not start within 60s");
    pollfd p{rd.get(), POLLIN, 0};
    int n = poll(&p, 1, left);
    if (n < 0 && errno == EINTR) continue;
    ssize_t r = read(rd.get(), buf, sizeof(buf));
    if (r <= 0) break;
    reply.append(buf, r);
  }
  if (reply.rfind("OK", 0) == 0) return absl::OkStatus();
  if (reply.rfind("ERR ", 0) == 0) {
    while (!reply.empty() && reply.back() == '\n') reply.pop_back();
    return absl::FailedPreconditionError(reply.substr(4));
  }
  return absl::InternalError("skiff-monitor for " + c.id + " exited without a report");
}

absl::Status ContainerEngine::Kill(const std::string& id, int signal, bool all) {
  runtime::RuntimeOptions o;
  o.root_dir = runtime_root_;
  o.cgroup_driver = systemd_ ? runtime::CgroupDriver::kSystemd : runtime::CgroupDriver::kCgroupfs;
  runtime::Runtime rt(o);
  return rt.Kill(id, signal, all);
}

absl::Status ContainerEngine::Remove(const std::string& id) {
  runtime::RuntimeOptions o;
  o.root_dir = runtime_root_;
  o.cgroup_driver = systemd_ ? runtime::CgroupDriver::kSystemd : runtime::CgroupDriver::kCgroupfs;
  runtime::Runtime rt(o);
  absl::Status st = rt.Delete(id, true);
  if (absl::IsNotFound(st)) return absl::OkStatus();
  return st;
}

absl::StatusOr<std::vector<std::string>> ContainerEngine::List() {
  runtime::RuntimeOptions o;
  o.root_dir = runtime_root_;
  runtime::Runtime rt(o);
  ASSIGN_OR_RETURN(auto states, rt.List());
  std::vector<std::string> ids;
  for (auto& s : states) ids.push_back(s.id);
  return ids;
}

absl::StatusOr<pid_t> ContainerEngine::ExecStart(const std::string& id, const std::vector<std::string>& argv,
                                                 const std::vector<std::string>& env, int in, int out, int err) {
  runtime::ExecOptions eo = ExecProcess(argv, env);
  eo.stdio = {in, out, err};
  return runtime::Runtime(RuntimeFor(runtime_root_)).Exec(id, eo);
}

absl::StatusOr<pid_t> ContainerEngine::ExecStartTty(const std::string& id, const std::vector<std::string>& argv,
                                                    const std::vector<std::string>& env, int* master) {
  // The console socket sits beside the runtime root (not in it: every entry
  // there is a container id).
  std::string dir = runtime_root_.substr(0, runtime_root_.find_last_of('/'));
  if (dir.empty()) dir = "/tmp";
  std::string path = absl::StrCat(dir, "/console-", getpid(), "-", console_seq_++, ".sock");
  UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) return LastErrnoError("console socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError("console socket path too long: " + path);
  memcpy(addr.sun_path, path.c_str(), path.size());
  unlink(path.c_str());
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return LastErrnoError("bind " + path);
  struct Unlink {
    std::string p;
    ~Unlink() { unlink(p.c_str()); }
  } unlink_later{path};
  if (listen(listener.get(), 1) != 0) return LastErrnoError("listen " + path);
  runtime::ExecOptions eo = ExecProcess(argv, env);
  eo.process.env.push_back("TERM=xterm");
  eo.process.terminal = true;
  eo.console_socket = path;
  ASSIGN_OR_RETURN(pid_t pid, runtime::Runtime(RuntimeFor(runtime_root_)).Exec(id, eo));
  // The process connected (queued in the backlog) and sent the master before it ran.
  pollfd p{listener.get(), POLLIN, 0};
  UniqueFd conn;
  if (poll(&p, 1, 10000) == 1) conn = UniqueFd(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) {
    kill(pid, SIGKILL);
    WaitExec(pid).IgnoreError();
    return absl::InternalError("exec " + id + ": no terminal received on the console socket");
  }
  char byte[256];
  char ctrl[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{byte, sizeof(byte)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof(ctrl);
  ssize_t n = recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC);
  cmsghdr* c = n >= 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
    kill(pid, SIGKILL);
    WaitExec(pid).IgnoreError();
    return absl::InternalError("exec " + id + ": console socket message without a terminal");
  }
  memcpy(master, CMSG_DATA(c), sizeof(int));
  return pid;
}

absl::StatusOr<int> ContainerEngine::WaitExec(pid_t pid) {
  ASSIGN_OR_RETURN(runtime::ExitStatus ex, runtime::Runtime::WaitPid(pid));
  return ex.exit_code;
}

absl::StatusOr<ExecResult> ContainerEngine::ExecSync(const std::string& id, const std::vector<std::string>& argv,
                                                     const std::vector<std::string>& env, int timeout_ms) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return LastErrnoError("pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  ASSIGN_OR_RETURN(pid_t pid, ExecStart(id, argv, env, -1, wr.get(), wr.get()));
  wr.reset();
  ExecResult res;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  while (true) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) {
      res.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd pf{rd.get(), POLLIN, 0};
    int n = poll(&pf, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) continue;
    ssize_t r = read(rd.get(), buf, sizeof(buf));
    if (r <= 0) break;
    if (res.output.size() < 1 << 20) res.output.append(buf, r);
  }
  auto code = WaitExec(pid);
  res.exit_code = code.ok() ? *code : 255;
  return res;
}

}  // namespace skiff::kubelet
