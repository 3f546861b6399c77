// JSON merge patch (RFC 7386).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace skiff::apiserver {

// Applies `patch` to `target` (both JSON texts). FailedPrecondition on bad JSON.
absl::StatusOr<std::string> ApplyMergePatch(const std::string& target, const std::string& patch);

}  // namespace skiff::apiserver
