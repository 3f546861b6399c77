// The container's init and exec'ed processes, from clone to execve.
//
// Everything here after PrepareProcess runs in a child cloned (fork-like,
// without exec) from a possibly multithreaded runtime, so it uses raw
// syscalls on data prepared in InitPlan/ProcessPlan: no allocation, no locks.
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_split.h"
#include "plan.h"
#include "skiff/common/status.h"

namespace skiff::runtime {

// --- runtime side ----------------------------------------------------------

absl::Status PrepareProcess(const Process& proc, const Spec* spec, bool default_seccomp, ProcessPlan* out) {
  out->uid = proc.user.uid;
  out->gid = proc.user.gid;
  out->groups.assign(proc.user.additional_gids.begin(), proc.user.additional_gids.end());
  out->umask = proc.user.umask ? static_cast<int>(*proc.user.umask) : -1;
  out->cwd = proc.cwd.empty() ? "/" : proc.cwd;
  out->args = proc.args;
  out->env = proc.env;
  if (out->args.empty()) return absl::InvalidArgumentError("process.args: must not be empty");
  const std::string& prog = out->args[0];
  if (prog.find('/') != std::string::npos) {
    out->exec_candidates.push_back(prog);
  } else {
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const std::string& e : proc.env)
      if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty()))
      out->exec_candidates.push_back(std::string(dir) + "/" + prog);
  }
  for (size_t i = 0; i < proc.rlimits.size(); i++) {
    int res = RlimitFromName(proc.rlimits[i].type);
    if (res < 0)
      return absl::InvalidArgumentError("process.rlimits[" + std::to_string(i) + "].type: unknown rlimit \"" +
                                        proc.rlimits[i].type + "\"");
    PreparedRlimit r;
    r.resource = res;
    r.limit.rlim_cur = proc.rlimits[i].soft;
    r.limit.rlim_max = proc.rlimits[i].hard;
    out->rlimits.push_back(r);
  }
  if (proc.capabilities) {
    ASSIGN_OR_RETURN(out->caps, CapMasksFor(*proc.capabilities));
    out->has_caps = true;
  }
  out->last_cap = LastCap();
  out->no_new_privs = proc.no_new_privileges;
  out->terminal = proc.terminal;
  if (proc.oom_score_adj) {
    out->oom_score_adj = *proc.oom_score_adj;
    out->has_oom_score_adj = true;
  }
  const Seccomp* profile = nullptr;
  Seccomp def;
  if (spec && spec->linux && spec->linux->seccomp) {
    profile = &*spec->linux->seccomp;
  } else if (default_seccomp) {
    def = RuntimeDefaultSeccomp();
    profile = &def;
  }
  if (profile) {
    ASSIGN_OR_RETURN(out->seccomp, CompileSeccomp(*profile));
  }
  return absl::OkStatus();
}

void FinalizeArgv(ProcessPlan* p) {
  p->argv.clear();
  p->envp.clear();
  for (auto& a : p->args) p->argv.push_back(a.data());
  p->argv.push_back(nullptr);
  for (auto& e : p->env) p->envp.push_back(e.data());
  p->envp.push_back(nullptr);
}

// --- child side ------------------------------------------------------------
namespace {

void SendSync(int fd, int type, int value, const char* msg) {
  SyncMsg m;
  m.type = type;
  m.value = value;
  if (msg) snprintf(m.msg, sizeof(m.msg), "%s", msg);
  (void)!send(fd, &m, sizeof(m), MSG_NOSIGNAL);
}

[[noreturn]] void Fail(int sync_fd, const char* what, const char* obj, int neg_errno) {
  char buf[sizeof(SyncMsg::msg)];
  if (obj && *obj)
    snprintf(buf, sizeof(buf), "%s %s: %s", what, obj, strerror(-neg_errno));
  else
    snprintf(buf, sizeof(buf), "%s: %s", what, strerror(-neg_errno));
  if (sync_fd >= 0) {
    SendSync(sync_fd, kSyncError, -neg_errno, buf);
  } else {
    (void)!write(2, buf, strlen(buf));
    (void)!write(2, "\n", 1);
  }
  _exit(127);
}

// Blocks for a message of `want` type; false when the runtime is gone.
// kSyncCommitted may arrive at any point (the runtime sends it as soon as it
// has recorded our pid, without waiting for us): it is noted in *host_pid.
bool WaitSync(int fd, int want, int* host_pid) {
  SyncMsg m;
  for (;;) {
    ssize_t n = recv(fd, &m, sizeof(m), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(m))) return false;
    if (m.type == kSyncCommitted && host_pid) {
      *host_pid = m.value;
      if (want == kSyncCommitted) return true;
      continue;
    }
    return m.type == want;
  }
}

int SetupConsole(ProcessPlan* p, const char** what) {
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) {
    *what = "open /dev/ptmx";
    return -errno;
  }
  int unlock = 0;
  if (ioctl(master, TIOCSPTLCK, &unlock) != 0) {
    *what = "unlock pty";
    return -errno;
  }
  int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
  if (slave < 0) {
    *what = "open pty peer";
    return -errno;
  }
  // runc's console-socket protocol: one message, the master fd in SCM_RIGHTS.
  char name[] = "/dev/ptmx";
  struct iovec iov = {name, sizeof(name) - 1};
  char cbuf[CMSG_SPACE(sizeof(int))];
  memset(cbuf, 0, sizeof(cbuf));
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof(cbuf);
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &master, sizeof(int));
  if (sendmsg(p->console_socket, &msg, MSG_NOSIGNAL) < 0) {
    *what = "send pty master to console socket";
    return -errno;
  }
  close(master);
  close(p->console_socket);
  p->console_socket = -1;
  if (setsid() < 0) {
    *what = "setsid";
    return -errno;
  }
  if (ioctl(slave, TIOCSCTTY, 0) != 0) {
    *what = "set controlling terminal";
    return -errno;
  }
  for (int i = 0; i < 3; i++) {
    if (dup2(slave, i) < 0) {
      *what = "dup pty to stdio";
      return -errno;
    }
  }
  if (slave > 2) close(slave);
  return 0;
}

int SetupStdio(ProcessPlan* p, const char** what) {
  if (p->terminal && p->console_socket >= 0) return SetupConsole(p, what);
  // Move the fds above 2 first so dup2 into 0..2 cannot clobber a later one.
  int moved[3];
  for (int i = 0; i < 3; i++) {
    moved[i] = fcntl(p->stdio[i], F_DUPFD_CLOEXEC, 3);
    if (moved[i] < 0) {
      *what = "dup stdio";
      return -errno;
    }
  }
  for (int i = 0; i < 3; i++) {
    if (dup2(moved[i], i) < 0) {
      *what = "dup2 stdio";
      return -errno;
    }
    close(moved[i]);
  }
  return 0;
}

// The part shared by init (after start) and exec'ed processes.
[[noreturn]] void BecomeProcess(ProcessPlan* p, int sync_fd) {
  const char* what = "";
  int rc;
  if (p->umask >= 0) umask(p->umask);
  for (const PreparedRlimit& r : p->rlimits)
    if (setrlimit(r.resource, &r.limit) != 0) Fail(sync_fd, "setrlimit", "", -errno);
  if (!p->stdio_done && (rc = SetupStdio(p, &what)) < 0) Fail(sync_fd, what, "", rc);
  bool seccomp_early = p->seccomp && !p->no_new_privs;
  if (p->has_caps) {
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) Fail(sync_fd, "prctl", "PR_SET_KEEPCAPS", -errno);
    if ((rc = ApplyBounding(p->caps, p->last_cap, &what)) < 0) Fail(sync_fd, what, "", rc);
  }
  if (seccomp_early) {
    // Without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes on
    // while we still have it (runc does the same).
    if ((rc = InstallSeccomp(*p->seccomp)) < 0) Fail(sync_fd, "install seccomp filter", "", rc);
  }
  if (syscall(SYS_setgroups, p->groups.size(), p->groups.data()) != 0 && errno != EPERM)
    Fail(sync_fd, "setgroups", "", -errno);
  if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) != 0) Fail(sync_fd, "setgid", "", -errno);
  if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) != 0) Fail(sync_fd, "setuid", "", -errno);
  if (chdir(p->cwd.c_str()) != 0) Fail(sync_fd, "chdir to cwd", p->cwd.c_str(), -errno);
  if (p->has_caps) {
    if ((rc = ApplyCapSets(p->caps, p->last_cap, &what)) < 0) Fail(sync_fd, what, "", rc);
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
  }
  if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail(sync_fd, "prctl", "PR_SET_NO_NEW_PRIVS", -errno);
  // Nothing the runtime opened (or the caller leaked) may reach the program.
  syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
  if (p->seccomp && !seccomp_early) {
    if ((rc = InstallSeccomp(*p->seccomp)) < 0) Fail(sync_fd, "install seccomp filter", "", rc);
  }
  // The program starts like runc's: no signal blocked or ignored, whatever
  // the caller had (ignored signals and the mask survive execve).
  // The raw call: glibc's sigaction refuses the two signals it reserves (32,
  // 33), which a caller may still have ignored. An all-zero kernel sigaction
  // is SIG_DFL with no flags and an empty mask.
  const unsigned long dfl[4] = {};
  for (int sig = 1; sig < NSIG; ++sig) syscall(SYS_rt_sigaction, sig, dfl, nullptr, sizeof(unsigned long));  // KILL, STOP: EINVAL
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  int err = ENOENT;
  for (const std::string& c : p->exec_candidates) {
    execve(c.c_str(), p->argv.data(), p->envp.data());
    if (errno != ENOENT && errno != ENOTDIR) err = errno;
  }
  Fail(sync_fd, "exec", p->args[0].c_str(), -err);
}

bool FindExecutable(const ProcessPlan& p) {
  for (const std::string& c : p.exec_candidates) {
    struct stat st;
    if (stat(c.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111)) return true;
  }
  return false;
}

void RunStartHooks(InitPlan* plan) {
  for (size_t i = 0; i < plan->start_hooks.size(); i++) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) Fail(-1, "startContainer hook", "pipe", -errno);
    pid_t pid = static_cast<pid_t>(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
    if (pid < 0) Fail(-1, "startContainer hook", plan->start_hooks[i].path.c_str(), -errno);
    if (pid == 0) {
      dup2(fds[0], 0);
      execve(plan->start_hooks[i].path.c_str(), plan->start_hook_argv[i].data(), plan->start_hook_envp[i].data());
      _exit(127);
    }
    close(fds[0]);
    char pidbuf[16];
    int n = snprintf(pidbuf, sizeof(pidbuf), "%d", plan->host_pid);
    (void)!write(fds[1], plan->start_hooks_state.data(), plan->start_hooks_state.size());
    (void)!write(fds[1], pidbuf, n);
    (void)!write(fds[1], plan->start_hooks_state_suffix.data(), plan->start_hooks_state_suffix.size());
    (void)!write(fds[1], "\n", 1);
    close(fds[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      Fail(-1, "startContainer hook failed:", plan->start_hooks[i].path.c_str(), -EIO);
  }
}

}  // namespace

void RunInit(InitPlan* plan) {
  const int sync = plan->sync_fd;
  // Until the runtime has recorded us, we must not outlive it.
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  const char* what = "";
  const char* obj = "";
  for (const auto& j : plan->join) {
    if (setns(j.fd, j.nstype) != 0) Fail(sync, "join namespace", NamespaceProcName(j.nstype), -errno);
  }
  if (plan->new_userns) {
    SendSync(sync, kSyncIdMapsNeeded, 0, nullptr);
    if (!WaitSync(sync, kSyncGo, &plan->host_pid)) _exit(1);
    if (syscall(SYS_setresgid, 0, 0, 0) != 0) Fail(sync, "setgid 0 in user namespace", "", -errno);
    if (syscall(SYS_setresuid, 0, 0, 0) != 0) Fail(sync, "setuid 0 in user namespace", "", -errno);
  }
  int rc;
  if ((rc = SetupRootfs(plan, &what, &obj)) < 0) Fail(sync, what, obj, rc);
  if (!plan->hostname.empty() && sethostname(plan->hostname.data(), plan->hostname.size()) != 0)
    Fail(sync, "sethostname", plan->hostname.c_str(), -errno);
  if (!plan->domainname.empty() && setdomainname(plan->domainname.data(), plan->domainname.size()) != 0)
    Fail(sync, "setdomainname", plan->domainname.c_str(), -errno);
  if (plan->hooks_in_create) {
    SendSync(sync, kSyncHooksNeeded, 0, nullptr);
    if (!WaitSync(sync, kSyncGo, &plan->host_pid)) _exit(1);
  }
  if ((rc = FinishRootfs(plan, &what, &obj)) < 0) Fail(sync, what, obj, rc);
  if (!FindExecutable(plan->process)) {
    char msg[400];
    snprintf(msg, sizeof(msg), "exec: \"%s\": executable file not found in $PATH", plan->process.args[0].c_str());
    SendSync(sync, kSyncError, ENOENT, msg);
    _exit(127);
  }
  // stdio (and the console, sent over the console socket) before `create`
  // returns, as runc does.
  if ((rc = SetupStdio(&plan->process, &what)) < 0) Fail(sync, what, "", rc);
  plan->process.stdio_done = true;
  // The runtime records our pid right after clone and then sends
  // kSyncCommitted; from then on we may outlive it. Ready goes out only after
  // the parent-death signal is cleared, so the runtime may exit as soon as it
  // has read it: one hand-off instead of a ready/commit/ack round trip.
  if (plan->host_pid == 0 && !WaitSync(sync, kSyncCommitted, &plan->host_pid)) _exit(1);
  prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
  SendSync(sync, kSyncReady, 0, nullptr);
  close(sync);
  if (plan->wait_for_start) {
    // Blocks until `start` opens the fifo for reading.
    int fifo = openat(plan->state_dir_fd, "exec.fifo", O_WRONLY | O_CLOEXEC);
    if (fifo < 0) Fail(-1, "open", "exec.fifo", -errno);
    if (write(fifo, "0", 1) != 1) Fail(-1, "write", "exec.fifo", -errno);
    close(fifo);
  }
  if (plan->state_dir_fd >= 0) close(plan->state_dir_fd);
  RunStartHooks(plan);
  BecomeProcess(&plan->process, -1);
}

void RunExecProcess(ProcessPlan* p, int sync_fd) { BecomeProcess(p, sync_fd); }

}  // namespace skiff::runtime
