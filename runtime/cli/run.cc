// run [-d|--detach] [--bundle|-b DIR] [--pid-file F] [--console-socket S] ID
// create + start (+ wait, forwarding signals, + delete) with the container's exit code.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

#include "cli.h"
#include "skiff/common/unique_fd.h"

namespace skiff::runtime::cli {

absl::StatusOr<CreateOptions> ParseCreate(Args& a);

namespace {
// What run and exec forward to the container: everything but SIGCHLD, the
// synchronous faults and what cannot be caught.
sigset_t ForwardedSignals() {
  sigset_t set;
  sigfillset(&set);
  for (int sig : {SIGCHLD, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGKILL, SIGSTOP}) sigdelset(&set, sig);
  return set;
}
}  // namespace

void BlockForwardedSignals() {
  sigset_t set = ForwardedSignals();
  sigprocmask(SIG_BLOCK, &set, nullptr);
}

int WaitForwarding(Runtime& rt, const std::string& id, pid_t pid, bool is_exec) {
  BlockForwardedSignals();  // normally done before the process started
  sigset_t set = ForwardedSignals();
  UniqueFd sfd(signalfd(-1, &set, SFD_CLOEXEC));
  UniqueFd pfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  while (sfd && pfd) {
    struct pollfd p[2] = {{pfd.get(), POLLIN, 0}, {sfd.get(), POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[0].revents) break;
    if (p[1].revents) {
      struct signalfd_siginfo si;
      if (read(sfd.get(), &si, sizeof(si)) == sizeof(si))
        syscall(SYS_pidfd_send_signal, pfd.get(), static_cast<int>(si.ssi_signo), nullptr, 0);
    }
  }
  absl::StatusOr<ExitStatus> ex = is_exec ? Runtime::WaitPid(pid) : rt.Wait(id);
  if (!ex.ok()) return Fail(ex.status());
  return ex->exit_code;
}

int CmdRun(Globals& g, Args& a) {
  auto o = ParseCreate(a);
  if (!o.ok()) return Fail(o.status());
  bool detach = a.Flag("--detach", "-d");
  bool keep = a.Flag("--keep", "");
  Runtime rt(g.runtime);
  if (detach) {
    // Detached: the init must not keep our stdio pipes open unless asked.
    auto st = rt.Create(*o);
    if (!st.ok()) return Fail(st.status());
    absl::Status s = rt.Start(o->id);
    if (!s.ok()) {
      (void)rt.Delete(o->id, true);
      return Fail(s);
    }
    return 0;
  }
  o->start_immediately = true;
  // Blocked before the container starts, so a signal that comes once it runs
  // waits for WaitForwarding instead of killing us (the container's process
  // starts with an empty mask).
  BlockForwardedSignals();
  auto st = rt.Create(*o);
  if (!st.ok()) return Fail(st.status());
  for (const auto& w : st->warnings) fprintf(stderr, "skiff-runtime: warning: cgroup limit not applied: %s\n", w.c_str());
  int code = WaitForwarding(rt, o->id, st->pid, false);
  if (!keep) {
    absl::Status s = rt.Delete(o->id, true);
    if (!s.ok()) Fail(s);
  }
  return code;
}

}  // namespace skiff::runtime::cli
