// Capability and rlimit names -> numbers, and the five capability sets as
// bit masks so the container's init applies them with raw syscalls only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

// -1 when unknown. Accepts "CAP_KILL" (and "kill", as libcap does).
int CapFromName(const std::string& name);
// -1 when unknown ("RLIMIT_NOFILE").
int RlimitFromName(const std::string& name);

struct CapMasks {
  uint64_t bounding = 0, effective = 0, inheritable = 0, permitted = 0, ambient = 0;
};
absl::StatusOr<CapMasks> CapMasksFor(const Capabilities& caps);
// Highest capability number the running kernel knows.
int LastCap();

// Child-side (async-signal-safe, no allocation): drops the bounding set
// (before changing uid), then sets effective/permitted/inheritable and the
// ambient set. Returns 0 or -errno; *what names the failing step.
int ApplyBounding(const CapMasks& m, int last_cap, const char** what);
int ApplyCapSets(const CapMasks& m, int last_cap, const char** what);

}  // namespace skiff::runtime
