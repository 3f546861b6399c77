// skiff-monitor-pump: the long-lived half of a container's monitor.
//
// skiff-monitor creates and starts the container (it needs skiff::runtime and
// its libraries), then execve()s this program in the same process, so the
// container's init stays our child. Here only the C library is used and the
// binary is linked -static: nothing but the pages touched while copying bytes
// is resident (the per-container RSS target is 1 MB).
//
// It copies the container's stdout/stderr pipes into the CRI log until both
// close (draining at most 2 s after the init exited, since a daemonized
// grandchild may hold a pipe forever), and then execve()s the finishing argv
// given after "--": skiff-monitor --finish, which reaps the init (still our
// child), records the exit status and deletes the runtime state.
//
// Usage: skiff-monitor-pump --pid PID --out FD --err FD --log FILE
//          --log-max-size BYTES --log-max-files N -- FINISH-ARGV...
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cri_sink.h"

namespace {

using skiff::kubelet::CriNowUnixNanos;
using skiff::kubelet::CriSink;

CriSink g_sink;  // in .bss: pages are only touched when used

void Say(const char* a, const char* b) {
  const char* parts[3] = {"skiff-monitor-pump: ", a, b};
  for (const char* p : parts) {
    if (p && write(2, p, strlen(p)) < 0) return;
  }
  if (write(2, "\n", 1) < 0) return;
}

}  // namespace

int main(int argc, char** argv) {
  long pid = -1, out = -1, err = -1, max_files = 5;
  unsigned long long max_size = 10ull << 20;
  const char* log = nullptr;
  char** finish = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--") == 0) {
      finish = argv + i + 1;
      break;
    }
    if (strcmp(argv[i], "--help") == 0) {
      Say("usage: skiff-monitor-pump --pid PID --out FD --err FD --log FILE --log-max-size BYTES "
          "--log-max-files N -- FINISH-ARGV... (started by skiff-monitor)", nullptr);
      return 0;
    }
    if (i + 1 >= argc) {
      Say("missing value for ", argv[i]);
      return 2;
    }
    const char* k = argv[i];
    const char* v = argv[++i];
    if (strcmp(k, "--pid") == 0) pid = strtol(v, nullptr, 10);
    else if (strcmp(k, "--out") == 0) out = strtol(v, nullptr, 10);
    else if (strcmp(k, "--err") == 0) err = strtol(v, nullptr, 10);
    else if (strcmp(k, "--log") == 0) log = v;
    else if (strcmp(k, "--log-max-size") == 0) max_size = strtoull(v, nullptr, 10);
    else if (strcmp(k, "--log-max-files") == 0) max_files = strtol(v, nullptr, 10);
    else {
      Say("unknown flag ", k);
      return 2;
    }
  }
  if (pid <= 0 || out < 0 || err < 0 || !log || !finish || !finish[0]) {
    Say("--pid, --out, --err, --log and -- FINISH-ARGV are required", nullptr);
    return 2;
  }
  if (int rc = skiff::kubelet::CriSinkInit(&g_sink, log, max_size, static_cast<int>(max_files)); rc != 0) {
    Say("log path too long: ", log);
  } else if (skiff::kubelet::CriSinkOpen(&g_sink) != 0) {
    Say("cannot open log ", log);  // keep draining the pipes; lines go nowhere
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  int fds_in[2] = {static_cast<int>(out), static_cast<int>(err)};
  bool open_[2] = {true, true};
  bool exited = pidfd < 0;
  static char buf[8192];
  int drain_ms = 2000;
  // A container may close its stdio and keep running: then wait on the pidfd alone.
  while (open_[0] || open_[1] || !exited) {
    pollfd fds[3] = {{open_[0] ? fds_in[0] : -1, POLLIN, 0},
                     {open_[1] ? fds_in[1] : -1, POLLIN, 0},
                     {exited ? -1 : pidfd, POLLIN, 0}};
    int n = poll(fds, 3, exited ? 100 : -1);
    if (n < 0 && errno != EINTR) break;
    if (exited && n == 0) {
      drain_ms -= 100;
      if (drain_ms <= 0) break;
    }
    for (int i = 0; i < 2; ++i) {
      if (!open_[i] || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(fds_in[i], buf, sizeof(buf));
      if (r > 0) {
        skiff::kubelet::CriSinkFeed(&g_sink, i + 1, buf, static_cast<size_t>(r), CriNowUnixNanos());
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        skiff::kubelet::CriSinkFlush(&g_sink, i + 1, CriNowUnixNanos());
        open_[i] = false;
      }
    }
    if (!exited && (fds[2].revents & POLLIN)) exited = true;
  }
  skiff::kubelet::CriSinkFlush(&g_sink, 1, CriNowUnixNanos());
  skiff::kubelet::CriSinkFlush(&g_sink, 2, CriNowUnixNanos());
  skiff::kubelet::CriSinkClose(&g_sink);
  close(fds_in[0]);
  close(fds_in[1]);
  if (pidfd >= 0) close(pidfd);
  execv(finish[0], finish);
  Say("exec finishing monitor: ", strerror(errno));
  return 1;
}
