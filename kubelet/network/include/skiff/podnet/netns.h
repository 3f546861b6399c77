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
// `inside`, if given, runs while the calling thread is in the new namespace
// (a socket opened there stays bound to it). The calling thread is back in
// its own namespace when this returns; no other thread ever sees the new one.
absl::Status CreateNetns(const std::string& path, const std::function<absl::Status()>& inside = nullptr);
// Unmounts and removes `path`; OK when it does not exist.
absl::Status DeleteNetns(const std::string& path);
// True when `path` is a pinned network namespace.
bool IsNetns(const std::string& path);
// Runs fn on a helper thread that has joined the namespace at `path`;
// the caller's threads stay where they are.
absl::Status RunInNetns(const std::string& path, const std::function<absl::Status()>& fn);
// Runs fn on the calling thread switched into the namespace at `path`, and
// switches it back (cheaper than RunInNetns: no thread).
absl::Status EnterNetns(const std::string& path, const std::function<absl::Status()>& fn);

}  // namespace skiff::podnet
