// The API client every component uses (controllers, scheduler, kubelet,
// proxy, skiffctl). The gRPC implementation lives in control-plane/client/src
// (target skiff::client); tests may implement the interface in memory.
//
// Verbs mirror api.proto. `resource` is the plural lower-case name
// ("pods", "services", ...); an empty namespace means cluster-scoped (or all
// namespaces for List/Watch). Errors come back as absl::Status with the
// codes listed in api.proto (NotFound, AlreadyExists, Aborted = Conflict,
// InvalidArgument = Invalid, OutOfRange = Gone/too old, Unauthenticated,
// PermissionDenied, Unavailable) and Kubernetes' messages.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/api/v1/api.pb.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/client/credentials.h"

namespace skiff::client {

using ::skiff::api::v1::Object;
using ::skiff::api::v1::ObjectList;
using ::skiff::api::v1::WatchEvent;

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;
  std::string continue_token;
  std::string resource_version;
};

struct DeleteOptions {
  std::optional<int64_t> grace_period_seconds;
  std::string precondition_uid;
  std::string precondition_resource_version;
  std::string propagation_policy;  // Background (default), Foreground, Orphan
};

// A running watch. Next() blocks until an event arrives, the watch ends
// (returns an error status; OutOfRange means "too old resource version",
// relist), or Cancel() is called from another thread (returns Cancelled).
class WatchStream {
 public:
  virtual ~WatchStream() = default;
  virtual absl::StatusOr<WatchEvent> Next() = 0;
  virtual void Cancel() = 0;
};

class Client {
 public:
  virtual ~Client() = default;

  virtual absl::StatusOr<Object> Create(const std::string& resource, const std::string& ns, const Object& obj) = 0;
  virtual absl::StatusOr<Object> Get(const std::string& resource, const std::string& ns,
                                     const std::string& name) = 0;
  virtual absl::StatusOr<ObjectList> List(const std::string& resource, const std::string& ns,
                                          const ListOptions& opts = {}) = 0;
  // resource_version "" = send ADDED for everything that exists, then changes.
  virtual absl::StatusOr<std::unique_ptr<WatchStream>> Watch(const std::string& resource, const std::string& ns,
                                                             const ListOptions& opts = {}) = 0;
  // Optimistic concurrency on obj's metadata.resourceVersion (Aborted on conflict).
  virtual absl::StatusOr<Object> Update(const std::string& resource, const std::string& ns, const Object& obj) = 0;
  virtual absl::StatusOr<Object> UpdateStatus(const std::string& resource, const std::string& ns,
                                              const Object& obj) = 0;
  // JSON merge patch (RFC 7386).
  virtual absl::StatusOr<Object> Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                       const std::string& merge_patch_json, const std::string& subresource = "") = 0;
  virtual absl::StatusOr<Object> Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                        const DeleteOptions& opts = {}) = 0;
};

}  // namespace skiff::client
