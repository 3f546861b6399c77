#include "hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::runtime {

absl::Status RunHooks(const std::vector<Hook>& hooks, const std::string& state_json, const char* phase) {
  for (const Hook& h : hooks) {
    std::vector<std::string> args = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = h.env;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return LastErrnoError("pipe for hook");
    UniqueFd rd(fds[0]), wr(fds[1]);
    int pidfd = -1;
    pid_t pid = static_cast<pid_t>(syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, 0, &pidfd, 0, 0));
    if (pid < 0) return LastErrnoError(std::string(phase) + " hook " + h.path);
    if (pid == 0) {
      dup2(rd.get(), 0);
      execve(h.path.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    UniqueFd pfd(pidfd);
    rd.reset();
    (void)!write(wr.get(), state_json.data(), state_json.size());
    wr.reset();
    int timeout_ms = h.timeout ? *h.timeout * 1000 : -1;
    struct pollfd p = {pfd.get(), POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return absl::DeadlineExceededError(std::string(phase) + " hook " + h.path + " timed out");
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return absl::FailedPreconditionError(std::string(phase) + " hook " + h.path + " failed with status " +
                                           std::to_string(status));
  }
  return absl::OkStatus();
}

}  // namespace skiff::runtime
