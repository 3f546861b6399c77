// OCI hooks run by the runtime: the container's state JSON on stdin, the
// hook's own args/env, a timeout, a non-zero exit is an error.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "skiff/runtime/spec.h"

namespace skiff::runtime {

absl::Status RunHooks(const std::vector<Hook>& hooks, const std::string& state_json, const char* phase);

}  // namespace skiff::runtime
