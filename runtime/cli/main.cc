// skiff-runtime [global flags] VERB [flags] ID ...
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>

#include "cli.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"

namespace skiff::runtime::cli {

absl::Status Args::Parse(const std::vector<std::pair<std::string, std::string>>& with_value,
                         const std::vector<std::pair<std::string, std::string>>& booleans) {
  parsed_ = true;
  auto match = [](const std::vector<std::pair<std::string, std::string>>& set, const std::string& a) -> std::string {
    for (auto& [l, s] : set)
      if (a == l || (!s.empty() && a == s) || a == "-" + l.substr(std::min<size_t>(2, l.size()))) return l;
    return "";
  };
  size_t i = 0;
  for (; i < a_.size(); i++) {
    const std::string& x = a_[i];
    if (x == "--") {
      i++;
      break;
    }
    if (x.size() < 2 || x[0] != '-') break;
    std::string name = x, value;
    bool has_eq = false;
    if (auto eq = x.find('='); eq != std::string::npos) {
      name = x.substr(0, eq);
      value = x.substr(eq + 1);
      has_eq = true;
    }
    if (std::string l = match(with_value, name); !l.empty()) {
      if (!has_eq) {
        if (i + 1 >= a_.size()) return error_ = absl::InvalidArgumentError("flag needs an argument: " + x);
        value = a_[++i];
      }
      values_.push_back({l, value});
      continue;
    }
    if (std::string l = match(booleans, name); !l.empty()) {
      if (!has_eq || value == "true") bools_.push_back(l);
      continue;
    }
    return error_ = absl::InvalidArgumentError("flag provided but not defined: " + x);
  }
  positional_.assign(a_.begin() + i, a_.end());
  return absl::OkStatus();
}

bool Args::Value(const std::string& name, const std::string&, std::string* out) {
  for (auto it = values_.begin(); it != values_.end(); ++it) {
    if (it->first != name) continue;
    *out = it->second;
    values_.erase(it);
    return true;
  }
  return false;
}

bool Args::Flag(const std::string& name, const std::string&) {
  for (auto& b : bools_)
    if (b == name) return true;
  return false;
}

absl::StatusOr<std::vector<std::string>> Args::Rest(bool) {
  if (!parsed_) RETURN_IF_ERROR(Parse({}, {}));
  if (!error_.ok()) return error_;
  return positional_;
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
