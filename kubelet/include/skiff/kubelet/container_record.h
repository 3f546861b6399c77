// What the per-container monitor records about its container, shared with
// the kubelet through one small file (<run-dir>/pods/<uid>/<container>/state),
// rewritten atomically (write + rename) on every change. The kubelet reads it
// to learn the container's state, also after the kubelet itself restarted.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::kubelet {

struct ContainerRecord {
  std::string id;          // runtime container id
  int attempt = 0;         // restart count when this instance started
  pid_t monitor_pid = 0;
  pid_t pid = 0;           // container init (host pid namespace)
  std::string started_at;  // RFC 3339
  bool exited = false;
  int exit_code = 0;
  int signal = 0;
  bool oom_killed = false;
  std::string finished_at;
  std::string error;       // the container could not be created or started
  std::string warnings;    // limits that could not be applied, "; "-separated

  std::string Serialize() const;
  static absl::StatusOr<ContainerRecord> Parse(const std::string& text);
};

absl::Status WriteRecordFile(const std::string& path, const ContainerRecord& r);
absl::StatusOr<ContainerRecord> ReadRecordFile(const std::string& path);

}  // namespace skiff::kubelet
