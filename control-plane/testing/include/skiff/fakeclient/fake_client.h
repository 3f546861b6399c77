// An in-memory skiff::client::Client with the API server's semantics that
// controllers depend on: resourceVersions from one revision counter,
// optimistic concurrency, generation bumps on spec changes, the status
// subresource, label and field selectors, resumable watches, JSON merge
// patch, generateName, finalizers with deletionTimestamp, deletion
// propagation finalizers (foregroundDeletion, orphan) and namespace
// finalization (spec.finalizers ["kubernetes"]).
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "skiff/client/client.h"

namespace skiff::fakeclient {

class FakeClient : public client::Client {
 public:
  FakeClient() = default;

  absl::StatusOr<client::Object> Create(const std::string& resource, const std::string& ns,
                                        const client::Object& obj) override;
  absl::StatusOr<client::Object> Get(const std::string& resource, const std::string& ns,
                                     const std::string& name) override;
  absl::StatusOr<client::ObjectList> List(const std::string& resource, const std::string& ns,
                                          const client::ListOptions& opts = {}) override;
  absl::StatusOr<std::unique_ptr<client::WatchStream>> Watch(const std::string& resource, const std::string& ns,
                                                             const client::ListOptions& opts = {}) override;
  absl::StatusOr<client::Object> Update(const std::string& resource, const std::string& ns,
                                        const client::Object& obj) override;
  absl::StatusOr<client::Object> UpdateStatus(const std::string& resource, const std::string& ns,
                                              const client::Object& obj) override;
  absl::StatusOr<client::Object> Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                       const std::string& merge_patch_json,
                                       const std::string& subresource = "") override;
  absl::StatusOr<client::Object> Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                        const client::DeleteOptions& opts = {}) override;

  // Test helpers.
  int64_t revision() const;
  // Number of successful writes per verb ("create", "update", "delete", ...).
  int64_t WriteCount(const std::string& verb) const;
  // Makes the next `n` calls of `verb` fail with `status`.
  void InjectFailure(const std::string& verb, absl::Status status, int n = 1);
  // Ends every open watch with an error (as when the server restarts).
  void BreakWatches();

  struct Watcher;

 private:
  struct Stored {
    client::Object obj;
  };
  struct LogEntry {
    int64_t rev;
    std::string resource;
    api::v1::WatchEvent ev;
  };

  absl::Status Injected(const std::string& verb);
  absl::StatusOr<client::Object> UpdateLocked(const std::string& resource, const std::string& ns,
                                              client::Object obj, bool status_only);
  absl::StatusOr<client::Object> DeleteLocked(const std::string& resource, const std::string& ns,
                                              const std::string& name, const client::DeleteOptions& opts);
  void RemoveLocked(const std::string& resource, const std::string& key);
  void EmitLocked(const std::string& resource, const std::string& type, const client::Object& obj);

  mutable std::mutex mu_;
  int64_t rev_ = 1;
  std::map<std::string, std::map<std::string, Stored>> store_;  // resource -> key -> object
  std::deque<LogEntry> log_;
  std::vector<std::weak_ptr<Watcher>> watchers_;
  std::map<std::string, int64_t> writes_;
  std::map<std::string, std::deque<absl::Status>> failures_;
};

}  // namespace skiff::fakeclient
