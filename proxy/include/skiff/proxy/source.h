// Sources of Services and EndpointSlices, and the store they feed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/proxy/model.h"

namespace skiff::proxy {

// A producer of cluster state. Run() blocks, delivering into `sink`, until
// `stop` becomes true (checked at least every second) or the source fails.
// The API watch plugs in here: list Services and EndpointSlices, call
// sink.Replace(), then forward each watch event as Upsert*/Delete*, and
// re-list + Replace() after a watch is lost.
class Source {
 public:
  virtual ~Source() = default;
  virtual absl::Status Run(StateSink& sink, const std::atomic<bool>& stop) = 0;
};

// Holds the latest state, in compact records, and wakes the programming
// loop on change.
class StateStore final : public StateSink {
 public:
  void Replace(ClusterState state) override;
  void UpsertService(Service service) override;
  void DeleteService(const std::string& ns, const std::string& name) override;
  void UpsertEndpointSlice(EndpointSlice slice) override;
  void DeleteEndpointSlice(const std::string& ns, const std::string& name) override;

  // Waits up to `timeout_ms` for a generation newer than `seen`; then calls
  // `fn` under the store's lock with the state and what changed since the
  // previous call, and returns the new generation (== seen on timeout).
  uint64_t Consume(uint64_t seen, int timeout_ms,
                   const std::function<void(const CompactState&, const ChangeSet&)>& fn);
  bool synced() const;
  // Called (under the store's lock, so it must be quick) on every change
  // delivered by the source; the agent's health marks an update as queued.
  void SetOnChange(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    on_change_ = std::move(fn);
  }

 private:
  void Bump();
  std::function<void()> on_change_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  CompactState state_;
  ChangeSet changes_ = ChangeSet::All();
  uint64_t generation_ = 0;
  bool synced_ = false;
};

// Parses a YAML or JSON document stream (or a `kind: List` / `items:`
// wrapper) of Kubernetes Services and EndpointSlices. Malformed objects and
// ports (port 0, unknown protocol, bad address) are skipped with a warning
// log line; they never fail the whole file.
absl::StatusOr<ClusterState> ParseClusterStateYaml(const std::string& text);
absl::StatusOr<ClusterState> LoadClusterStateFile(const std::string& path);

// --from-file: reads the file, then re-reads it whenever its mtime or size
// changes (checked every `poll_ms`).
std::unique_ptr<Source> MakeFileSource(std::string path, int poll_ms = 500);

}  // namespace skiff::proxy
