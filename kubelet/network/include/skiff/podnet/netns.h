// Named network namespaces kept alive by a bind mount of their nsfs file
// (what `ip netns add` does), without touching the caller's own namespace.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/common/unique_fd.h"

namespace skiff::podnet {

// Creates a new network namespace and pins it at `path` (a file, created).
// Only a short-lived helper thread ever enters the new namespace.
absl::Status CreateNetns(const std::string& path);
// Unmounts and removes `path`; OK when it does not exist.
absl::Status DeleteNetns(const std::string& path);
// True when `path` is a pinned network namespace.
bool IsNetns(const std::string& path);
// Runs fn on a helper thread that has joined the namespace at `path`;
// the caller's threads stay where they are.
absl::Status RunInNetns(const std::string& path, const std::function<absl::Status()>& fn);

}  // namespace skiff::podnet
