// Pod volumes (emptyDir, hostPath, configMap, secret) and image rootfs mounts.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/api/v1/objects.pb.h"

namespace skiff::kubelet {

class Kubelet;

// Writes `files` (relative name -> content) into dir atomically per file and
// removes files that are no longer listed. Returns true when anything changed.
absl::StatusOr<bool> ProjectFiles(const std::string& dir, const std::map<std::string, std::string>& files, int mode);
// Unmounts memory-backed emptyDirs under <pod_root>/volumes.
void CleanupVolumes(const std::string& pod_root);

absl::StatusOr<std::string> ResolveImageRootfs(Kubelet* k, const api::v1::Container& c, const std::string& container_dir,
                                               bool* read_only, std::vector<std::string>* entrypoint,
                                               std::vector<std::string>* cmd, bool* mounted);
void UnmountImageRootfs(Kubelet* k, const std::string& container_dir);

}  // namespace skiff::kubelet
