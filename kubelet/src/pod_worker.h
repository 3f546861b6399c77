// One goroutine-like worker per pod: a thread that converges the pod's
// sandbox (network, cgroup, volumes) and containers with its spec, runs its
// probes, and reports status; on deletion it terminates gracefully and cleans up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/kubelet/container_record.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/kubelet/pod_status.h"
#include "skiff/kubelet/resources.h"

namespace skiff::kubelet {

// The projected service account volume's name among the pod's volume mounts.
inline constexpr char kServiceAccountVolume[] = "kube-api-access-skiff";

class PodWorker {
 public:
  PodWorker(Kubelet* kubelet, const api::v1::Pod& pod);
  ~PodWorker();
  void Update(const api::v1::Pod& pod);
  // The pod object is gone from the API (force deletion, or never ours again).
  void MarkDeleted();
  void Stop();
  bool finished() const { return finished_; }
  const std::string& uid() const { return uid_; }
  std::string ns_name() const;
  absl::StatusOr<ContainerLocation> Locate(const std::string& container);
  void Count(int* running_pods, int* running_containers);
  void Running(std::vector<RunningContainer>* out);
  struct EvictionFacts {
    QosClass qos = QosClass::kBestEffort;
    std::string start_time;
  };
  // False when the pod is no candidate (not admitted, terminal, terminating, evicted).
  bool ForEviction(EvictionFacts* facts);
  // Kills the pod's containers with grace 0 and fails it with reason Evicted.
  void Evict(const std::string& message);
  // Requests this pod holds on the node (0 once it is terminal or rejected).
  void Requests(int64_t* milli_cpu, int64_t* memory_bytes, int* pods);

 private:
  struct ProbeState {
    absl::Time next = absl::InfinitePast();
    int successes = 0, failures = 0;
    bool ok = false;
  };
  struct CState {
    std::string name;
    bool init = false;
    int attempts = 0;
    std::optional<ContainerRecord> current, previous;
    int backoff_exp = 0;
    std::string waiting_reason, waiting_message;
    ProbeState liveness, readiness, startup;
    bool started = false;  // startup probe passed (or none)
    bool image_mounted = false;
    int pull_failures = 0;                            // image pull back-off: 10 s doubling to 300 s
    absl::Time pull_retry_at = absl::InfinitePast();
  };

  void Loop();
  void Sync();
  bool Admit();
  void Terminate(int64_t grace_seconds);
  void Cleanup();
  void PushStatus(bool force = false);
  absl::Status EnsureSandbox();
  absl::Status PrepareVolumes(std::map<std::string, MountSpec>* mounts, std::string* reason);
  absl::Status ProjectServiceAccountToken(std::map<std::string, MountSpec>* mounts);
  absl::Status StartContainer(const api::v1::Container& c, CState& s);
  absl::StatusOr<std::vector<std::string>> BuildEnv(const api::v1::Container& c, std::string* reason);
  absl::StatusOr<std::string> ResolveRootfs(const api::v1::Container& c, CState& s, bool* read_only,
                                            std::vector<std::string>* image_entrypoint,
                                            std::vector<std::string>* image_cmd);
  void Refresh(CState& s);
  void RunProbes(const api::v1::Container& c, CState& s);
  // *why: Kubernetes' probe output/error text; *errored: the probe could not run (e.g. unknown named port).
  bool Probe(const api::v1::Container& c, CState& s, const api::v1::Probe& p, std::string* why, bool* errored);
  void KillContainer(CState& s, int64_t grace_seconds, const api::v1::Container* spec);
  CState& State(const std::string& name, bool init);        // takes mu_
  CState& StateLocked(const std::string& name, bool init);  // mu_ held
  std::string PodRunDir() const;
  std::string PodRootDir() const;
  std::string ContainerId(const std::string& name, int attempt) const;
  std::string LogDir() const;
  bool RestartWanted(const ContainerRecord& r) const;
  PodFacts Facts();

  Kubelet* k_;
  std::string uid_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Written only by the worker thread (under mu_); other threads read it under mu_.
  api::v1::Pod pod_;
  api::v1::Pod pending_;  // the newest object from Update(), taken by the next Sync()
  bool has_pending_ = false;
  // name, namespace and uid only: events are recorded from the worker thread while Update()
  // replaces pod_ under mu_, so events never read pod_.
  api::v1::Pod ident_;
  bool dirty_ = true;
  bool deleted_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  std::map<std::string, CState> containers_;  // guarded by mu_ for readers; written by the worker thread
  std::string pod_ip_, netns_path_;
  bool sandbox_ready_ = false;
  bool rejected_ = false;
  std::string evict_message_;  // set by Evict(), acted on by the worker
  bool evicted_ = false;
  int64_t sa_token_refresh_unix_ = 0;  // when the projected token is due for renewal
  std::string reject_reason_, reject_message_;
  bool admitted_ = false;
  std::string last_pushed_;
  api::v1::Pod::Status last_status_;
  std::string start_time_;
  absl::Time first_seen_ = absl::Now();
  bool latency_recorded_ = false;
  absl::Time volumes_refreshed_ = absl::InfinitePast();
  std::map<std::string, MountSpec> volume_mounts_;
  std::map<std::string, std::string> warned_;  // reason -> message already sent as an event
  std::thread thread_;
};

}  // namespace skiff::kubelet
