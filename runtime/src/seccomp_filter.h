// Seccomp: a spec profile compiled (with libseccomp) into a classic BPF
// program once, in the runtime, so the container's init installs it with one
// raw seccomp(2) call and no allocation.
#pragma once

#include <linux/filter.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

struct SeccompProgram {
  std::vector<struct sock_filter> filter;
  unsigned int flags = 0;  // SECCOMP_FILTER_FLAG_*
};

// Compiles `profile`; results are cached by profile content, so a kubelet
// starting many containers with the same profile compiles it once.
absl::StatusOr<std::shared_ptr<const SeccompProgram>> CompileSeccomp(const Seccomp& profile);

// Child-side: installs the program. Returns 0 or -errno.
int InstallSeccomp(const SeccompProgram& prog);

}  // namespace skiff::runtime
