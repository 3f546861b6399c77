// An in-memory API for skiffctl's tests: resourceVersions from one counter,
// Kubernetes' error messages, label and field selectors, watches.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "skiff/cli/cli.h"

namespace skiff::cli::testing {

class MemoryApi {
 public:
  // A client view of this store (many may exist; they share the data).
  std::unique_ptr<client::Client> NewClient();
  std::unique_ptr<NodeApi> NewNodeApi();

  // Direct access for test setup and checks (no errors for missing objects).
  void Put(const api::v1::Object& obj);
  std::optional<api::v1::Object> Find(const std::string& resource, const std::string& ns, const std::string& name);
  int64_t writes() const;
  // Ends every open watch (Next returns Cancelled).
  void CancelAllWatches();
  std::string logs = "line 1\nline 2\n";
  std::string fixed_time = "2026-11-22T06:00:00Z";
  // What NodeStats answers per node; a node not in the map is Unavailable
  // (kubelet unreachable); stats_unimplemented = an API server without the call.
  std::map<std::string, api::v1::StatsResponse> stats;
  bool stats_unimplemented = false;

  struct Watcher {
    std::string resource, ns;
    std::deque<api::v1::WatchEvent> events;
    bool cancelled = false;
  };

 private:
  friend class MemoryClient;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t rev_ = 100;
  int64_t writes_ = 0;
  std::map<std::string, std::map<std::string, api::v1::Object>> store_;  // resource -> "ns/name"
  std::vector<std::weak_ptr<Watcher>> watchers_;

 public:
  // Internals shared with the client view.
  absl::StatusOr<api::v1::Object> Create(const std::string& resource, const std::string& ns, api::v1::Object obj);
  absl::StatusOr<api::v1::Object> Get(const std::string& resource, const std::string& ns, const std::string& name);
  absl::StatusOr<api::v1::ObjectList> List(const std::string& resource, const std::string& ns,
                                           const client::ListOptions& opts);
  absl::StatusOr<std::unique_ptr<client::WatchStream>> Watch(const std::string& resource, const std::string& ns,
                                                             const client::ListOptions& opts);
  absl::StatusOr<api::v1::Object> Update(const std::string& resource, const std::string& ns, api::v1::Object obj,
                                         bool status);
  absl::StatusOr<api::v1::Object> Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                        const std::string& patch);
  absl::StatusOr<api::v1::Object> Delete(const std::string& resource, const std::string& ns, const std::string& name);

 private:
  void Emit(const std::string& resource, const std::string& type, const api::v1::Object& obj);
};

}  // namespace skiff::cli::testing
