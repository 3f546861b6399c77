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

// Arguments after the verb. Like runc (urfave/cli), flags come before the
// first positional argument; everything from there on is positional.
class Args {
 public:
  explicit Args(std::vector<std::string> a) : a_(std::move(a)) {}
  // Declares the verb's flags: {long, short} pairs taking a value, and booleans.
  absl::Status Parse(const std::vector<std::pair<std::string, std::string>>& with_value,
                     const std::vector<std::pair<std::string, std::string>>& booleans);
  // Takes the next value given for `name` (repeatable flags: call again).
  bool Value(const std::string& name, const std::string& alias, std::string* out);
  bool Flag(const std::string& name, const std::string& alias);
  absl::StatusOr<std::vector<std::string>> Rest(bool unused = false);

 private:
  std::vector<std::string> a_;
  std::vector<std::pair<std::string, std::string>> values_;  // long name -> value, in order
  std::vector<std::string> bools_;
  std::vector<std::string> positional_;
  bool parsed_ = false;
  absl::Status error_;
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

// Blocks the signals run and exec forward (call it before the process
// starts: a signal in between then waits to be forwarded).
void BlockForwardedSignals();
// Waits for the container's init (our child), forwarding signals; returns its exit code.
int WaitForwarding(Runtime& rt, const std::string& id, pid_t pid, bool is_exec);

}  // namespace skiff::runtime::cli
