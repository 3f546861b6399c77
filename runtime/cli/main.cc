// skiff-runtime [global flags] VERB [flags] ID ...
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>

#include "cli.h"
#include "skiff/common/log.h"

namespace skiff::runtime::cli {

bool Args::Value(const std::string& name, const std::string& alias, std::string* out) {
  for (size_t i = 0; i < a_.size(); i++) {
    if (a_[i] == "--") return false;
    const std::string& x = a_[i];
    if ((x == name || (!alias.empty() && x == alias)) && i + 1 < a_.size()) {
      *out = a_[i + 1];
      a_.erase(a_.begin() + i, a_.begin() + i + 2);
      return true;
    }
    if (x.rfind(name + "=", 0) == 0) {
      *out = x.substr(name.size() + 1);
      a_.erase(a_.begin() + i);
      return true;
    }
    if (x.size() > 1 && x[0] != '-') break;  // flags come before positionals
  }
  return false;
}

bool Args::Flag(const std::string& name, const std::string& alias) {
  for (size_t i = 0; i < a_.size(); i++) {
    if (a_[i] == "--") return false;
    if (a_[i] == name || (!alias.empty() && a_[i] == alias) || a_[i] == name + "=true") {
      a_.erase(a_.begin() + i);
      return true;
    }
    if (a_[i] == name + "=false") {
      a_.erase(a_.begin() + i);
      return false;
    }
    if (a_[i].size() > 1 && a_[i][0] != '-') break;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> Args::Rest(bool stop_at_first_positional) {
  std::vector<std::string> out;
  bool positional = false;
  for (size_t i = 0; i < a_.size(); i++) {
    if (!positional && a_[i] == "--") {
      positional = true;
      continue;
    }
    if (!positional && a_[i].size() > 1 && a_[i][0] == '-')
      return absl::InvalidArgumentError("flag provided but not defined: " + a_[i]);
    out.push_back(a_[i]);
    if (stop_at_first_positional) positional = true;
  }
  return out;
}

int Fail(const absl::Status& s) { return Fail(std::string(s.message())); }
int Fail(const std::string& msg) {
  fprintf(stderr, "skiff-runtime: %s\n", msg.c_str());
  return 1;
}

absl::StatusOr<int> ParseSignal(const std::string& s) {
  if (!s.empty() && isdigit(static_cast<unsigned char>(s[0]))) {
    int v = atoi(s.c_str());
    if (v <= 0 || v >= NSIG) return absl::InvalidArgumentError("invalid signal: " + s);
    return v;
  }
  std::string n = s.rfind("SIG", 0) == 0 ? s.substr(3) : s;
  for (int i = 1; i < NSIG; i++) {
    const char* abbrev = sigabbrev_np(i);
    if (abbrev && n == abbrev) return i;
  }
  return absl::InvalidArgumentError("unknown signal \"" + s + "\"");
}

}  // namespace skiff::runtime::cli

using namespace skiff::runtime::cli;

static void Usage() {
  fprintf(stderr,
          "usage: skiff-runtime [--root DIR] [--systemd-cgroup] [--strict-cgroups] COMMAND [flags] ID\n"
          "commands: create start state kill delete run exec list ps\n");
}

int main(int argc, char** argv) {
  skiff::log::Init("skiff-runtime", skiff::log::Level::kWarning);
  Globals g;
  int i = 1;
  for (; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--root" && i + 1 < argc) g.runtime.root_dir = argv[++i];
    else if (a.rfind("--root=", 0) == 0) g.runtime.root_dir = a.substr(7);
    else if (a == "--systemd-cgroup") g.runtime.cgroup_driver = skiff::runtime::CgroupDriver::kSystemd;
    else if (a == "--strict-cgroups") g.runtime.strict_cgroups = true;
    else if (a == "--debug") skiff::log::SetLevel(skiff::log::Level::kDebug);
    else if ((a == "--log" || a == "--log-format" || a == "--criu" || a == "--rootless") && i + 1 < argc) ++i;
    else if (a.rfind("--log", 0) == 0 || a.rfind("--rootless", 0) == 0) continue;
    else if (a == "-h" || a == "--help") return Usage(), 0;
    else if (a == "-v" || a == "--version") return printf("skiff-runtime version 0.1.0\nspec: 1.0.2\n"), 0;
    else break;
  }
  if (i >= argc) return Usage(), 1;
  std::string verb = argv[i++];
  Args args(std::vector<std::string>(argv + i, argv + argc));
  static const std::map<std::string, int (*)(Globals&, Args&)> kVerbs = {
      {"create", CmdCreate}, {"start", CmdStart}, {"state", CmdState}, {"kill", CmdKill},
      {"delete", CmdDelete}, {"run", CmdRun},     {"exec", CmdExec},   {"list", CmdList},
      {"ps", CmdPs}};
  auto it = kVerbs.find(verb);
  if (it == kVerbs.end()) {
    Usage();
    return Fail("unknown command \"" + verb + "\"");
  }
  return it->second(g, args);
}
