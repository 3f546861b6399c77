// cgroup v2 device access control: a BPF program built from the spec's
// linux.resources.devices plus runc's default allow-list.
#pragma once

#include <linux/bpf.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

std::vector<DeviceCgroupRule> DefaultDeviceRules();
absl::StatusOr<std::vector<bpf_insn>> BuildDeviceProgram(const std::vector<DeviceCgroupRule>& rules);
absl::Status AttachDeviceProgram(int cgroup_fd, const std::vector<bpf_insn>& prog);

}  // namespace skiff::runtime
