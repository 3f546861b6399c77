// Hollow nodes: simulated Nodes for controller and scheduler tests. Each
// registers a Node (Ready, with allocatable), renews its Lease in
// kube-node-lease, moves pods bound to it to Running with a pod IP and
// Ready=True, and finishes graceful deletions of its pods. No containers.
// Works against any skiff::client::Client (the fake or a real API server).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "skiff/client/client.h"
#include "skiff/controllers/informer.h"
#include "skiff/controllers/workqueue.h"

namespace skiff::fakeclient {

struct HollowOptions {
  std::string cpu = "8";
  std::string memory = "32Gi";
  std::string pods = "110";
  int lease_renew_ms = 1000;
  int workers = 2;
  // When false, pods become Running but not Ready (tests flip readiness).
  bool pods_become_ready = true;
  // When false, bound pods are left alone (scheduler-only benchmarks).
  bool run_pods = true;
};

class HollowNodes {
 public:
  HollowNodes(std::shared_ptr<client::Client> api, HollowOptions opts = {});
  ~HollowNodes();

  absl::Status Start();
  void Stop();
  // Registers a node (and its Lease) and starts simulating it.
  absl::Status AddNode(const std::string& name, const std::map<std::string, std::string>& labels = {});
  // Simulates losing the node: no more Lease renewals, pods left as they are.
  void KillNode(const std::string& name);
  // Brings a killed node back (renewals resume, Ready=True reported again).
  void ReviveNode(const std::string& name);
  int64_t pods_started() const { return pods_started_.load(); }

 private:
  void RenewLoop();
  void Work();
  absl::Status SyncPod(const std::string& key);
  absl::Status RenewLease(const std::string& node);
  absl::Status ReportReady(const std::string& node);

  std::shared_ptr<client::Client> api_;
  HollowOptions opts_;
  std::unique_ptr<controllers::Informer> pods_;
  std::unique_ptr<controllers::Informer> nodes_;
  controllers::WorkQueue queue_;
  std::mutex mu_;
  std::map<std::string, int> alive_;  // node -> index (for pod IPs)
  std::set<std::string> dead_;
  std::map<std::string, int> next_ip_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> pods_started_{0};
  std::vector<std::thread> threads_;
  int node_count_ = 0;
};

}  // namespace skiff::fakeclient
