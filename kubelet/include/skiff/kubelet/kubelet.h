// skiff-kubelet's engine: node registration and lease, the pod watch, one
// worker per pod converging its containers, pod network and cgroups, and the
// status it reports. cmd/main.cc wires flags, the API client and the servers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/api/v1/objects.pb.h"
#include "skiff/client/client.h"
#include "skiff/kubelet/config.h"
#include "skiff/kubelet/container_engine.h"

namespace skiff::podnet {
class PodNetwork;
}

namespace skiff::kubelet {

class PodWorker;

struct KubeletMetrics {
  std::vector<double> start_latency_seconds;  // pod created -> all containers running, per pod
  int running_pods = 0;
  int running_containers = 0;
};

// What the Kubelet gRPC service needs to find a container.
struct ContainerLocation {
  std::string container_id;   // runtime id of the newest attempt ("" if never started)
  std::string log_path;       // newest attempt's log
  std::string previous_log_path;
  bool running = false;
  std::string netns_path;
  std::string pod_ip;
};

// A running container, for stats.
struct RunningContainer {
  std::string ns, pod, container, id;
  std::string cgroup_dir;  // absolute; "" when the node has no cgroup2 mount
};

// A ServiceAccount token for a pod (TokenRequest bound to the pod) and the
// CA a pod should trust for the API server.
struct ServiceAccountToken {
  std::string token;
  int64_t expiration_unix = 0;
  std::string ca_crt;
};
using TokenSource = std::function<absl::StatusOr<ServiceAccountToken>(
    const std::string& ns, const std::string& service_account, const std::string& pod_name, const std::string& pod_uid)>;
inline constexpr char kServiceAccountMountPath[] = "/var/run/secrets/kubernetes.io/serviceaccount";

// "--eviction-hard memory.available<100Mi,nodefs.available<10%" into c.
absl::Status ParseEvictionHard(const std::string& spec, Config* c);

class Kubelet {
 public:
  Kubelet(Config config, std::shared_ptr<client::Client> client);
  ~Kubelet();

  // Registers the node, sets up the pod network, re-adopts what runs, starts
  // the lease, node and pod loops. Returns once the first pod list was handled.
  absl::Status Start();
  // Stops the loops and workers. Containers keep running (like kubelet's stop).
  void Stop();
  bool Healthy() const;
  // The kubelet's own loops make progress (whether or not the API server
  // answers): what the systemd watchdog follows.
  bool Alive() const;

  absl::StatusOr<ContainerLocation> Locate(const std::string& ns, const std::string& pod,
                                           const std::string& container);
  ContainerEngine& engine() { return *engine_; }
  KubeletMetrics Metrics();
  std::vector<RunningContainer> RunningContainers();
  const Config& config() const { return config_; }
  std::string PodCidr() const { return pod_cidr_; }
  std::string NodeIp() const { return node_ip_; }

  // Used by workers.
  void RecordEvent(const api::v1::Pod& pod, const std::string& type, const std::string& reason,
                   const std::string& message);
  void ObserveStartLatency(double seconds);
  client::Client& api() { return *client_; }
  podnet::PodNetwork* network() { return network_.get(); }
  const std::string& cgroup2_mount() const { return cgroup2_; }
  std::string allocatable(const std::string& key);
  std::string capacity(const std::string& key);
  // Requests held by admitted pods other than `uid`.
  void UsedExcept(const std::string& uid, int64_t* milli_cpu, int64_t* memory, int* pods);
  void* image_store() { return image_store_; }
  // Where pods get their service account token volume from (automountServiceAccountToken);
  // without one, pods get none. Set before Start().
  void SetTokenSource(TokenSource source) { token_source_ = std::move(source); }
  const TokenSource& token_source() const { return token_source_; }
  // Changes the hard eviction thresholds at run time (tests, config reload).
  void SetEvictionThresholds(int64_t memory_available_bytes, double nodefs_available_fraction);
  // One round of the eviction manager (the loop runs it every eviction_interval_seconds).
  void EvictOnce();
  bool memory_pressure() const { return memory_pressure_; }
  bool disk_pressure() const { return disk_pressure_; }

 private:
  absl::Status RegisterNode();
  absl::Status EnsurePodCidr();
  api::v1::Node BuildNodeStatus(const api::v1::Node& base);
  void LeaseLoop();
  void NodeLoop();
  void PodLoop();
  void HandlePod(const std::string& type, const api::v1::Pod& pod);
  void ReconcileList(const std::vector<api::v1::Pod>& pods);
  void CleanupOrphans(const std::set<std::string>& live_uids);
  void ReapWorkers();
  // Static pods: manifests in config_.manifest_dir run as mirror pods
  // "<name>-<node>" (annotation kubernetes.io/config.mirror) created here.
  void StaticPodLoop();
  void SyncStaticPods();
  // Hard eviction: memory.available / nodefs.available under their thresholds
  // evicts pods, BestEffort first, then Burstable, then Guaranteed.
  void EvictionLoop();

  Config config_;
  std::shared_ptr<client::Client> client_;
  std::unique_ptr<ContainerEngine> engine_;
  std::unique_ptr<podnet::PodNetwork> network_;
  std::string pod_cidr_, node_ip_, cgroup2_;
  std::map<std::string, std::string> allocatable_, capacity_;
  void* image_store_ = nullptr;  // skiff::image::Store when built with it

  std::atomic<bool> stopping_{false};
  std::string last_static_error_;
  TokenSource token_source_;
  std::mutex eviction_mu_;  // guards the eviction thresholds in config_
  std::atomic<bool> memory_pressure_{false}, disk_pressure_{false}, node_status_dirty_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::unique_ptr<PodWorker>> workers_;  // by pod uid
  std::unique_ptr<client::WatchStream> pod_watch_, node_watch_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> last_lease_ok_{0};
  std::atomic<int64_t> lease_loop_tick_{0};  // unix seconds of the lease loop's latest round
  std::mutex metrics_mu_;
  std::vector<double> start_latency_;
};

}  // namespace skiff::kubelet
