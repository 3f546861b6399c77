// Helpers for the privileged runtime tests: run a command and collect its
// output, build a busybox-static bundle with `runc spec`, clean leftovers of
// crashed earlier runs.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace skiff::runtime::testing {

struct CmdResult {
  int code = -1;
  std::string out, err;
};
CmdResult RunCmd(const std::vector<std::string>& argv);

std::string BuildDir();
std::string SkiffRuntime();  // path of the binary under test

// /tmp/skiff-rt-test-<pid>; leftovers of dead pids are deleted (containers
// under both runtimes' roots, cgroups, directories) first.
std::string TestBase();

class Bundle {
 public:
  // Creates <base>/<name>/{rootfs,config.json} via `runc spec`.
  explicit Bundle(const std::string& name);
  nlohmann::json& config() { return config_; }
  void SetArgs(const std::vector<std::string>& args);
  void Save();
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  nlohmann::json config_;
};

}  // namespace skiff::runtime::testing
