// The network namespaces of this machine, to run per-netns work (the UDP
// socket iterator) in the pods' namespaces as well as the agent's own.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::proxy {

// Every network namespace the agent can see other than the calling thread's,
// each once: those of all processes (/proc/PID/ns/net) and those kept by a
// bind mount (nsfs mounts in /proc/self/mountinfo: `ip netns`, the kubelet's
// <run-dir>/netns/<pod>). Namespaces that vanish while being looked at are
// skipped.
std::vector<UniqueFd> OtherNetworkNamespaces();

// Runs `fn` once inside each namespace, on a helper thread (the calling
// thread never changes namespace). Returns the first error of `fn`;
// a namespace that cannot be entered any more is skipped.
absl::Status InEachNetworkNamespace(const std::vector<UniqueFd>& namespaces, const std::function<absl::Status()>& fn);

}  // namespace skiff::proxy
