// exec [--process FILE] [-d] [-e K=V]... [--cwd DIR] [-u UID[:GID]] [--cap CAP]...
//      [--no-new-privs] [-t --console-socket S] [--pid-file F] ID [COMMAND ARGS...]
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.h"

namespace skiff::runtime::cli {

int CmdExec(Globals& g, Args& a) {
  ExecOptions o;
  if (auto s = a.Parse({{"--process", "-p"}, {"--cwd", ""}, {"--user", "-u"}, {"--console-socket", ""},
                        {"--pid-file", ""}, {"--env", "-e"}, {"--cap", "-c"}},
                       {{"--detach", "-d"}, {"--tty", "-t"}, {"--no-new-privs", ""}});
      !s.ok())
    return Fail(s);
  std::string process_file, cwd, user, v;
  a.Value("--process", "-p", &process_file);
  bool detach = a.Flag("--detach", "-d");
  bool tty = a.Flag("--tty", "-t");
  a.Value("--cwd", "", &cwd);
  a.Value("--user", "-u", &user);
  a.Value("--console-socket", "", &o.console_socket);
  a.Value("--pid-file", "", &o.pid_file);
  bool nnp = a.Flag("--no-new-privs", "");
  std::vector<std::string> env, caps;
  while (a.Value("--env", "-e", &v)) env.push_back(v);
  while (a.Value("--cap", "-c", &v)) caps.push_back(v);
  auto rest = a.Rest(/*stop_at_first_positional=*/true);
  if (!rest.ok()) return Fail(rest.status());
  if (rest->empty()) return Fail("requires at least 1 argument (container id)");
  std::string id = (*rest)[0];
  Runtime rt(g.runtime);
  auto st = rt.State(id);
  if (!st.ok()) return Fail(st.status());
  if (!process_file.empty()) {
    std::ifstream in(process_file);
    if (!in) return Fail("cannot read " + process_file);
    std::stringstream ss;
    ss << in.rdbuf();
    // Reuse the config parser: wrap the process in a minimal config.
    auto spec = ParseSpec("{\"ociVersion\":\"1.0.2\",\"root\":{\"path\":\"/\"},\"process\":" + ss.str() + "}");
    if (!spec.ok()) return Fail(spec.status());
    o.process = *spec->process;
  } else {
    if (rest->size() < 2) return Fail("exec needs a command or --process");
    // Defaults from the container's own process, like runc.
    std::ifstream in(g.runtime.root_dir + "/" + id + "/config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto spec = ParseSpec(ss.str());
    if (spec.ok() && spec->process) o.process = *spec->process;
    o.process.args.assign(rest->begin() + 1, rest->end());
    o.process.terminal = tty;
    o.process.oom_score_adj.reset();
  }
  for (auto& e : env) o.process.env.push_back(e);
  if (!cwd.empty()) o.process.cwd = cwd;
  if (!user.empty()) {
    auto colon = user.find(':');
    o.process.user.uid = std::stoul(user.substr(0, colon));
    if (colon != std::string::npos) o.process.user.gid = std::stoul(user.substr(colon + 1));
  }
  if (!caps.empty()) {
    if (!o.process.capabilities) o.process.capabilities.emplace();
    for (auto& c : caps) {
      o.process.capabilities->bounding.push_back(c);
      o.process.capabilities->effective.push_back(c);
      o.process.capabilities->permitted.push_back(c);
    }
  }
  if (nnp) o.process.no_new_privileges = true;
  o.stdio = {0, 1, 2};
  if (!detach) BlockForwardedSignals();  // see CmdRun
  auto pid = rt.Exec(id, o);
  if (!pid.ok()) return Fail(pid.status());
  if (detach) return 0;
  return WaitForwarding(rt, id, *pid, true);
}

}  // namespace skiff::runtime::cli
