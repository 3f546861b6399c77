// `--config FILE` for every daemon: a YAML map whose keys are the daemon's
// flags without their dashes. ExpandConfigArgs turns it into command-line
// flags placed before the real ones, so the command line (and
// /etc/default/skiff-* arguments) win over the file.
//
//   # /etc/skiff/kubelet.yaml
//   root-dir: /var/lib/skiff/kubelet
//   cgroup-driver: systemd
//
// Usage in main():  auto args = skiff::ExpandConfigArgs(argc, argv);
//                   if (!args.ok()) { print args.status(); return 1; }
//                   then parse args->argv() instead of argc/argv.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skiff {

class ExpandedArgs {
 public:
  std::vector<std::string>& args() { return args_; }
  // argv-style view (valid while this object lives); argv()[argc()] == nullptr.
  char** argv();
  int argc() const { return static_cast<int>(args_.size()); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> ptrs_;
};

// Reads `--config FILE` / `--config=FILE` from argv (removing it) and inserts
// `--key=value` for each entry of FILE right after argv[0]. A scalar list
// value becomes one comma-separated value. A missing file named by --config is
// an error; no --config leaves argv unchanged.
absl::StatusOr<ExpandedArgs> ExpandConfigArgs(int argc, char** argv);

}  // namespace skiff
