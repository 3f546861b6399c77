// skiff-monitor: one per container. It creates the container through
// skiff::runtime (so the container's init is ITS child and it alone can
// collect the exit status), holds the container's stdout/stderr pipes, writes
// them as CRI logs, and records state and exit status in a file the kubelet
// reads. It detaches from the kubelet (own session, double fork), so
// containers keep running while the kubelet restarts.
//
// Usage: skiff-monitor --runtime-root DIR --id ID --bundle DIR --record FILE
//          --log FILE --attempt N [--netns PATH] [--cgroup PATH] [--systemd]
//          [--ready-fd FD] [--log-max-size BYTES] [--log-max-files N]
// The ready fd receives "OK <pid>\n" once the container runs, or "ERR <message>\n".
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "skiff/kubelet/container_record.h"
#include "skiff/kubelet/cri_log.h"
#include "skiff/runtime/container.h"

namespace {

using skiff::kubelet::ContainerRecord;

struct Args {
  std::string runtime_root, id, bundle, record, log, netns, cgroup;
  int attempt = 0;
  bool systemd = false;
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
  // From here on the monitor only copies bytes: give back what setting up took.
  malloc_trim(0);

  skiff::kubelet::CriLogWriter log(a.log, a.log_max_size, a.log_max_files);
  log.Open().IgnoreError();
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, st->pid, 0));
  pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
  bool open_[2] = {true, true};
  bool exited = pidfd < 0;
  char buf[16384];
  // Read until both pipes close; once the init is gone, drain for at most
  // 2 s (a daemonized grandchild might keep a pipe open forever).
  int drain_ms = 2000;
  while (open_[0] || open_[1]) {
    for (int i = 0; i < 2; ++i) fds[i].fd = open_[i] ? (i == 0 ? out[0] : err[0]) : -1;
    fds[2].fd = exited ? -1 : pidfd;
    int n = poll(fds, 3, exited ? 100 : -1);
    if (n < 0 && errno != EINTR) break;
    if (exited && n == 0) {
      drain_ms -= 100;
      if (drain_ms <= 0) break;
    }
    for (int i = 0; i < 2; ++i) {
      if (!open_[i] || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        log.Feed(i + 1, buf, r, skiff::kubelet::NowUnixNanos()).IgnoreError();
      } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
        log.Flush(i + 1, skiff::kubelet::NowUnixNanos()).IgnoreError();
        open_[i] = false;
      }
    }
    if (!exited && (fds[2].revents & POLLIN)) exited = true;
  }
  log.Flush(1, skiff::kubelet::NowUnixNanos()).IgnoreError();
  log.Flush(2, skiff::kubelet::NowUnixNanos()).IgnoreError();
  auto ex = rt.Wait(a.id);
  rec.exited = true;
  rec.finished_at = NowRfc3339();
  if (ex.ok()) {
    rec.exit_code = ex->exit_code;
    rec.signal = ex->signal;
    rec.oom_killed = ex->oom_killed;
  } else {
    rec.exit_code = 255;
    rec.error = "wait: " + std::string(ex.status().message());
  }
  rt.Delete(a.id, true).IgnoreError();
  skiff::kubelet::WriteRecordFile(a.record, rec).IgnoreError();
  return 0;
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
    else {
      fprintf(stderr, "skiff-monitor: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  if (a.runtime_root.empty() || a.id.empty() || a.bundle.empty() || a.record.empty() || a.log.empty()) {
    fprintf(stderr, "skiff-monitor: --runtime-root, --id, --bundle, --record and --log are required\n");
    return 2;
  }
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
