// skiff-control-plane's node lifecycle flags, through the real binary: bad
// values are refused (exit 2) with a message that names the flag, before the
// daemon opens a store or a port; --help documents each flag.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace {

struct Outcome {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

std::string Binary() {
  const char* b = getenv("SKIFF_BUILD_DIR");
  return std::string(b ? b : "build") + "/bin/skiff-control-plane";
}

Outcome RunControlPlane(const std::vector<std::string>& args) {
  Outcome out;
  int fds[2];
  if (pipe(fds) != 0) return out;
  pid_t pid = fork();
  if (pid < 0) return out;
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<std::string> argv = {Binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> ptrs;
    for (auto& a : argv) ptrs.push_back(a.data());
    ptrs.push_back(nullptr);
    execv(ptrs[0], ptrs.data());
    _exit(127);
  }
  close(fds[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.output.append(buf, n);
  close(fds[0]);
  int status = 0;
  if (waitpid(pid, &status, 0) == pid && WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
  return out;
}

struct BadValue {
  std::string flag;
  std::string value;
  std::string says;  // part of the expected message
};

TEST(ControlPlaneFlags, RefusesBadNodeLifecycleValuesNamingTheFlag) {
  // A data dir that must never be created: the flags fail before anything starts.
  std::string data = "/tmp/skiff-cp-flags-" + std::to_string(getpid());
  const std::vector<BadValue> cases = {
      {"--node-monitor-grace-period", "forty", "invalid duration"},
      {"--node-monitor-grace-period", "40", "invalid duration"},  // a unit is required, as in Go
      {"--node-monitor-grace-period", "0s", "out of range"},
      {"--node-monitor-grace-period", "-5s", "out of range"},
      {"--node-monitor-grace-period", "1500ms", "whole number of seconds"},
      {"--default-unreachable-toleration-seconds", "-1", "invalid value"},
      {"--default-unreachable-toleration-seconds", "5s", "invalid value"},
      {"--default-not-ready-toleration-seconds", "ten", "invalid value"},
      {"--default-not-ready-toleration-seconds", "", "invalid value"},
  };
  for (const auto& c : cases) {
    for (bool inline_form : {false, true}) {
      std::vector<std::string> args = {"--data-dir", data};
      if (inline_form) {
        args.push_back(c.flag + "=" + c.value);
      } else {
        args.push_back(c.flag);
        args.push_back(c.value);
      }
      auto r = RunControlPlane(args);
      EXPECT_EQ(r.exit_code, 2) << c.flag << " " << c.value << ": " << r.output;
      EXPECT_NE(r.output.find(c.flag + ":"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find(c.says), std::string::npos) << c.flag << " " << c.value << ": " << r.output;
    }
  }
  auto missing = RunControlPlane({"--data-dir", data, "--node-monitor-grace-period"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("--node-monitor-grace-period needs a value"), std::string::npos) << missing.output;
  EXPECT_NE(access(data.c_str(), F_OK), 0) << "the data dir was created although the flags were bad";
}

TEST(ControlPlaneFlags, ConfigFileKeysAreCheckedLikeFlags) {
  // --config FILE: keys are the flags without dashes (/etc/skiff/control-plane.yaml).
  std::string data = "/tmp/skiff-cp-flags-" + std::to_string(getpid());
  std::string file = data + ".yaml";
  FILE* f = fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("node-monitor-grace-period: 1500ms\ndefault-unreachable-toleration-seconds: 5\n", f);
  fclose(f);
  auto r = RunControlPlane({"--config", file, "--data-dir", data});
  unlink(file.c_str());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--node-monitor-grace-period: 1500ms is not a whole number of seconds"), std::string::npos)
      << r.output;
  EXPECT_NE(access(data.c_str(), F_OK), 0);
}

TEST(ControlPlaneFlags, HelpDocumentsNodeLifecycleFlagsAndDefaults) {
  auto r = RunControlPlane({"--help"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* s : {"--node-monitor-grace-period DURATION", "(default 40s)",
                        "--default-unreachable-toleration-seconds N", "--default-not-ready-toleration-seconds N",
                        "node.kubernetes.io/unreachable:NoExecute", "(default 300)"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << " missing from:\n" << r.output;
}

}  // namespace
