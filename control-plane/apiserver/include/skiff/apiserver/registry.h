// The generic storage semantics of every resource on top of etcd: metadata
// (uid, generation, timestamps, generateName), optimistic concurrency,
// graceful deletion and finalizers, the status subresource, merge patch,
// defaulting/validation, ClusterIP/NodePort allocation, lists with
// pagination at one revision, and watches served by per-resource caches.
#pragma once

#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "skiff/api/v1/api.pb.h"
#include "skiff/apiserver/etcd.h"
#include "skiff/apiserver/resources.h"
#include "skiff/apiserver/watch_cache.h"
#include "skiff/common/status.h"

namespace skiff::apiserver {

struct RegistryOptions {
  std::string service_cluster_ip_range = "10.96.0.0/12";
  int node_port_min = 30000;
  int node_port_max = 32767;
  WatchCache::Options cache;
};

struct DeleteParams {
  std::optional<int64_t> grace_period_seconds;
  std::string precondition_uid;
  std::string precondition_resource_version;
  std::string propagation_policy;
  bool dry_run = false;
};

struct ListParams {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;
  std::string continue_token;
  std::string resource_version;
};

class Registry {
 public:
  Registry(EtcdClient* etcd, RegistryOptions opts);
  ~Registry();
  // Starts the watch caches and creates the built-in namespaces, the
  // `kubernetes` Service (pointing at `advertise_ip:port`) and RBAC roles.
  absl::Status Start(const std::string& advertise_ip, int port);
  void Stop();

  absl::StatusOr<Object> Create(const std::string& resource, const std::string& ns, Object obj, bool dry_run = false);
  absl::StatusOr<Object> Get(const std::string& resource, const std::string& ns, const std::string& name);
  absl::StatusOr<api::v1::ObjectList> List(const std::string& resource, const std::string& ns, const ListParams& p);
  // resource_version "" or "0": synthetic ADDED first.
  absl::StatusOr<std::shared_ptr<CacheWatcher>> Watch(const std::string& resource, const std::string& ns,
                                                      const std::string& label_selector,
                                                      const std::string& field_selector,
                                                      const std::string& resource_version);
  void Unwatch(const std::string& resource, const std::shared_ptr<CacheWatcher>& w);
  absl::StatusOr<Object> Update(const std::string& resource, const std::string& ns, Object obj,
                                const std::string& subresource, bool dry_run = false);
  absl::StatusOr<Object> Patch(const std::string& resource, const std::string& ns, const std::string& name,
                               const std::string& merge_patch, const std::string& subresource, bool dry_run = false);
  absl::StatusOr<Object> Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                const DeleteParams& p);

  WatchCache* cache(const std::string& resource);
  EtcdClient* etcd() { return etcd_; }
  int64_t requests_total() const { return requests_; }

 private:
  struct Stored {
    Object obj;
    int64_t mod_revision;
  };
  absl::StatusOr<Stored> Read(const ResourceInfo& info, const std::string& ns, const std::string& name);
  absl::StatusOr<Object> UpdateOnce(const ResourceInfo& info, const std::string& ns, Object obj,
                                    const std::string& subresource, bool dry_run, bool* retryable);
  // Writes `next` over `cur` (or deletes it when a finalizer-less deletion completes).
  absl::StatusOr<Object> Commit(const ResourceInfo& info, const Stored& cur, Object next, bool dry_run);
  absl::StatusOr<Object> DeleteNow(const ResourceInfo& info, const Stored& cur, bool dry_run);
  // Service allocations: keys to create and delete in the same Txn.
  absl::Status PlanServiceAllocations(const api::v1::Service* old, api::v1::Service* svc,
                                      std::vector<std::string>* create_keys, std::vector<std::string>* delete_keys,
                                      bool* user_chosen, bool avoid_taken);
  absl::Status EnsureBootstrapObjects(const std::string& advertise_ip, int port);
  void NamespaceCleanup(std::string ns);

  EtcdClient* etcd_;
  RegistryOptions opts_;
  uint32_t cidr_base_ = 0, cidr_size_ = 0;
  std::mutex caches_mu_;  // guards the map; the caches themselves are never removed before ~Registry
  std::map<std::string, std::unique_ptr<WatchCache>> caches_;
  std::atomic<int64_t> requests_{0};
  std::mutex threads_mu_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};
};

// Kubernetes' error messages.
std::string QualifiedResource(const ResourceInfo& info);
absl::Status NotFoundError(const ResourceInfo& info, const std::string& name);
absl::Status AlreadyExistsError(const ResourceInfo& info, const std::string& name);
absl::Status ConflictError(const ResourceInfo& info, const std::string& name);
std::string NowRfc3339();
std::string NewUid();

}  // namespace skiff::apiserver
