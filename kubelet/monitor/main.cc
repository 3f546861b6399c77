// skiff-monitor: one per container. It creates the container through
// skiff::runtime (so the container's init is ITS child and it alone can
// collect the exit status), holds the container's stdout/stderr pipes, writes
// them as CRI logs, and records state and exit status in a file the kubelet
// reads. It detaches from the kubelet (own session, double fork), so
// containers keep running while the kubelet restarts.
//
// The process lives in three stages, one pid (the init must stay its child):
//   1. skiff-monitor: detach, create + start the container, write the record,
//      report on the ready fd;
//   2. execve skiff-monitor-pump (static, libc only, < 1 MB resident): copy
//      the pipes into the CRI log until the container exits;
//   3. execve skiff-monitor --finish 1: reap the init, record the exit status
//      (and OOM kill), delete the runtime state.
//
// Usage: skiff-monitor --runtime-root DIR --id ID --bundle DIR --record FILE
//          --log FILE --attempt N [--netns PATH] [--cgroup PATH] [--systemd]
//          [--ready-fd FD] [--log-max-size BYTES] [--log-max-files N]
//          [--pump PATH] [--finish 1]
// The ready fd receives "OK <pid>\n" once the container runs, or "ERR <message>\n".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "skiff/kubelet/container_record.h"
#include "skiff/kubelet/cri_log.h"
#include "skiff/runtime/cgroup.h"
#include "skiff/runtime/container.h"

namespace {

using skiff::kubelet::ContainerRecord;

struct Args {
  std::string runtime_root, id, bundle, record, log, netns, cgroup, pump;
  std::string cgroup_dir;  // --finish: the container's cgroup, for memory.events
  uint64_t oom_base = 0;   // --finish: oom_kill count when the container started
  uint64_t oom_base_parent = 0;  // --finish: the same of its parent (systemd removes an empty scope)
  int attempt = 0;
  bool systemd = false;
  bool finish = false;
  int ready_fd = -1;
  uint64_t log_max_size = skiff::kubelet::kDefaultLogMaxSize;
  int log_max_files = skiff::kubelet::kDefaultLogMaxFiles;
};

void Ready(int fd, const std::string& msg) {
  if (fd < 0) return;
  std::string line = msg + "\n";
  if (write(fd, line.data(), line.size()) < 0) {
  }
  close(fd);
}

std::string NowRfc3339() {
  std::string s = skiff::kubelet::Rfc3339Nano(skiff::kubelet::NowUnixNanos());
  return s.substr(0, 19) + "Z";
}

std::string SelfExe() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : "skiff-monitor";
}

// Stage 3: the init is our child, exited or about to. The runtime cannot
// tell a zombie from a stopped container, so it is reaped here.
int Finish(const Args& a) {
  ContainerRecord rec;
  if (auto r = skiff::kubelet::ReadRecordFile(a.record); r.ok()) rec = *r;
  rec.id = a.id;
  rec.monitor_pid = getpid();
  siginfo_t si{};
  int rc = -1;
  if (rec.pid > 0) {
    while ((rc = waitid(P_PID, rec.pid, &si, WEXITED)) != 0 && errno == EINTR) {
    }
  }
  rec.exited = true;
  rec.finished_at = NowRfc3339();
  if (rc == 0 && si.si_code == CLD_EXITED) {
    rec.exit_code = si.si_status;
  } else if (rc == 0) {
    rec.signal = si.si_status;
    rec.exit_code = 128 + si.si_status;
  } else {
    rec.exit_code = 255;
    rec.error = std::string("wait for the container: ") + strerror(errno);
  }
  if (!a.cgroup_dir.empty())
    rec.oom_killed = skiff::runtime::OomKilledSince(a.cgroup_dir, {a.oom_base, a.oom_base_parent});
  skiff::runtime::RuntimeOptions ro;
  ro.root_dir = a.runtime_root;
  ro.cgroup_driver = a.systemd ? skiff::runtime::CgroupDriver::kSystemd : skiff::runtime::CgroupDriver::kCgroupfs;
  skiff::runtime::Runtime rt(ro);
  rt.Delete(a.id, true).IgnoreError();
  skiff::kubelet::WriteRecordFile(a.record, rec).IgnoreError();
  return 0;
}

int Run(const Args& a) {
  ContainerRecord rec;
  rec.id = a.id;
  rec.attempt = a.attempt;
  rec.monitor_pid = getpid();
  auto fail = [&](const std::string& msg) {
    rec.error = msg;
    rec.exited = true;
    rec.exit_code = 128;
    rec.finished_at = NowRfc3339();
    skiff::kubelet::WriteRecordFile(a.record, rec).IgnoreError();
    Ready(a.ready_fd, "ERR " + msg);
    return 1;
  };
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return fail(std::string("pipe: ") + strerror(errno));

  skiff::runtime::RuntimeOptions ro;
  ro.root_dir = a.runtime_root;
  ro.cgroup_driver = a.systemd ? skiff::runtime::CgroupDriver::kSystemd : skiff::runtime::CgroupDriver::kCgroupfs;
  skiff::runtime::Runtime rt(ro);
  skiff::runtime::CreateOptions co;
  co.id = a.id;
  co.bundle_dir = a.bundle;
  co.stdio = {-1, out[1], err[1]};
  co.netns_path = a.netns;
  co.cgroup_path = a.cgroup;
  co.default_seccomp = true;
  auto st = rt.Create(co);
  close(out[1]);
  close(err[1]);
  if (!st.ok()) return fail("create container: " + std::string(st.status().message()));
  for (size_t i = 0; i < st->warnings.size(); ++i) rec.warnings += (i ? "; " : "") + st->warnings[i];
  skiff::runtime::OomBaseline oom_base;
  if (!st->cgroup_path.empty()) oom_base = skiff::runtime::OomKillsBaseline(st->cgroup_path);
  if (auto s = rt.Start(a.id); !s.ok()) {
    rt.Delete(a.id, true).IgnoreError();
    return fail("start container: " + std::string(s.message()));
  }
  rec.pid = st->pid;
  rec.started_at = NowRfc3339();
  if (auto s = skiff::kubelet::WriteRecordFile(a.record, rec); !s.ok()) {
    rt.Delete(a.id, true).IgnoreError();
    return fail(std::string(s.message()));
  }
  Ready(a.ready_fd, "OK " + std::to_string(st->pid));
  // Stage 2: the pump, in this same process (keeps the init as our child).
  for (int fd : {out[0], err[0]}) fcntl(fd, F_SETFD, 0);
  std::string self = SelfExe();
  std::string pump = a.pump.empty() ? self.substr(0, self.rfind('/') + 1) + "skiff-monitor-pump" : a.pump;
  std::vector<std::string> args = {pump, "--pid", std::to_string(st->pid), "--out", std::to_string(out[0]),
                                   "--err", std::to_string(err[0]), "--log", a.log,
                                   "--log-max-size", std::to_string(a.log_max_size),
                                   "--log-max-files", std::to_string(a.log_max_files), "--",
                                   self, "--finish", "1", "--runtime-root", a.runtime_root, "--id", a.id,
                                   "--bundle", a.bundle, "--record", a.record, "--log", a.log,
                                   "--systemd", a.systemd ? "1" : "0", "--cgroup-dir", st->cgroup_path,
                                   "--oom-base", std::to_string(oom_base.own),
                                   "--oom-base-parent", std::to_string(oom_base.parent)};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  execv(pump.c_str(), argv.data());
  // No pump: stay as we are and let the container run without logs rather
  // than kill it; the finishing stage still records its exit.
  fprintf(stderr, "skiff-monitor: exec %s: %s\n", pump.c_str(), strerror(errno));
  close(out[0]);
  close(err[0]);
  return Finish(a);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--runtime-root") a.runtime_root = v;
    else if (k == "--id") a.id = v;
    else if (k == "--bundle") a.bundle = v;
    else if (k == "--record") a.record = v;
    else if (k == "--log") a.log = v;
    else if (k == "--netns") a.netns = v;
    else if (k == "--cgroup") a.cgroup = v;
    else if (k == "--attempt") a.attempt = atoi(v.c_str());
    else if (k == "--systemd") a.systemd = v == "1";
    else if (k == "--ready-fd") a.ready_fd = atoi(v.c_str());
    else if (k == "--log-max-size") a.log_max_size = strtoull(v.c_str(), nullptr, 10);
    else if (k == "--log-max-files") a.log_max_files = atoi(v.c_str());
    else if (k == "--pump") a.pump = v;
    else if (k == "--cgroup-dir") a.cgroup_dir = v;
    else if (k == "--oom-base") a.oom_base = strtoull(v.c_str(), nullptr, 10);
    else if (k == "--oom-base-parent") a.oom_base_parent = strtoull(v.c_str(), nullptr, 10);
    else if (k == "--finish") a.finish = v == "1";
    else {
      fprintf(stderr, "skiff-monitor: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  if (a.runtime_root.empty() || a.id.empty() || a.bundle.empty() || a.record.empty() || a.log.empty()) {
    fprintf(stderr, "skiff-monitor: --runtime-root, --id, --bundle, --record and --log are required\n");
    return 2;
  }
  if (a.finish) return Finish(a);
  // Detach: new session, and a second fork so the kubelet is not our parent
  // (it reaps the first child at once; we get reparented to the init/subreaper).
  if (setsid() < 0) {
  }
  pid_t p = fork();
  if (p < 0) return 1;
  if (p > 0) _exit(0);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    // stderr stays: the kubelet may point it at a file for diagnostics.
  }
  return Run(a);
}
