// create [--bundle|-b DIR] [--pid-file F] [--console-socket S] [--seccomp-default] ID
#include <cstdio>

#include "cli.h"
#include "skiff/common/status.h"

namespace skiff::runtime::cli {

// Shared by create and run.
absl::StatusOr<CreateOptions> ParseCreate(Args& a) {
  CreateOptions o;
  RETURN_IF_ERROR(a.Parse({{"--bundle", "-b"}, {"--pid-file", ""}, {"--console-socket", ""}, {"--netns", ""},
                           {"--cgroup-path", ""}, {"--preserve-fds", ""}},
                          {{"--seccomp-default", ""}, {"--no-pivot", ""}, {"--no-new-keyring", ""},
                           {"--detach", "-d"}, {"--keep", ""}}));
  a.Value("--bundle", "-b", &o.bundle_dir);
  a.Value("--pid-file", "", &o.pid_file);
  a.Value("--console-socket", "", &o.console_socket);
  a.Value("--netns", "", &o.netns_path);
  a.Value("--cgroup-path", "", &o.cgroup_path);
  o.default_seccomp = a.Flag("--seccomp-default", "");
  a.Flag("--no-pivot", "");
  a.Flag("--no-new-keyring", "");
  std::string ignored;
  a.Value("--preserve-fds", "", &ignored);
  ASSIGN_OR_RETURN(std::vector<std::string> rest, a.Rest());
  if (rest.size() != 1) return absl::InvalidArgumentError("requires exactly 1 argument (container id)");
  o.id = rest[0];
  o.stdio = {0, 1, 2};
  return o;
}

int CmdCreate(Globals& g, Args& a) {
  auto o = ParseCreate(a);
  if (!o.ok()) return Fail(o.status());
  Runtime rt(g.runtime);
  auto st = rt.Create(*o);
  if (!st.ok()) return Fail(st.status());
  for (const auto& w : st->warnings) fprintf(stderr, "skiff-runtime: warning: cgroup limit not applied: %s\n", w.c_str());
  return 0;
}

}  // namespace skiff::runtime::cli
