// skiff-runtime: runc's command line over skiff::runtime. One file per verb.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "skiff/runtime/container.h"

namespace skiff::runtime::cli {

struct Globals {
  RuntimeOptions runtime;
};

// Arguments after the verb; flags parsed by each verb.
class Args {
 public:
  explicit Args(std::vector<std::string> a) : a_(std::move(a)) {}
  // Takes "--name VALUE", "--name=VALUE" or a short alias; false if absent.
  bool Value(const std::string& name, const std::string& alias, std::string* out);
  bool Flag(const std::string& name, const std::string& alias);
  // What remains, in order; error when an unknown flag is left before `--`.
  absl::StatusOr<std::vector<std::string>> Rest(bool stop_at_first_positional = false);

 private:
  std::vector<std::string> a_;
};

int Fail(const absl::Status& s);
int Fail(const std::string& msg);
absl::StatusOr<int> ParseSignal(const std::string& s);

int CmdCreate(Globals&, Args&);
int CmdStart(Globals&, Args&);
int CmdState(Globals&, Args&);
int CmdKill(Globals&, Args&);
int CmdDelete(Globals&, Args&);
int CmdRun(Globals&, Args&);
int CmdExec(Globals&, Args&);
int CmdList(Globals&, Args&);
int CmdPs(Globals&, Args&);

// Waits for the container's init (our child), forwarding signals; returns its exit code.
int WaitForwarding(Runtime& rt, const std::string& id, pid_t pid, bool is_exec);

}  // namespace skiff::runtime::cli
