// The scheduler without leader election: a cache of nodes and assigned pods
// fed by informers, a queue of pending pods, one scheduling thread that
// filters and scores against the cache and assumes the result, and a pool of
// binder threads that write spec.nodeName.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "skiff/client/client.h"
#include "skiff/controllers/events.h"
#include "skiff/controllers/informer.h"
#include "skiff/scheduler/plugins.h"

namespace skiff::scheduler {

struct CoreOptions {
  int binder_threads = 64;  // bindings in flight (measured: 64 beats 32 on the 2-core bench)
  // Pod spec.schedulerName values this scheduler serves.
  std::vector<std::string> scheduler_names = {"", "default-scheduler", "skiff-scheduler"};
  // Events' reportingInstance (the leader-election identity).
  std::string instance;
};

struct Stats {
  int64_t scheduled = 0;
  int64_t bind_failures = 0;
  int64_t unschedulable = 0;
};

class Scheduler {
 public:
  Scheduler(std::shared_ptr<client::Client> api, CoreOptions opts = {});
  ~Scheduler();
  // Blocks until stop.
  void Run(const std::atomic<bool>& stop);
  Stats stats() const;

 private:
  struct Binding {
    std::shared_ptr<const api::v1::Object> pod;
    std::string node;
  };

  // Informer handlers.
  void OnPod(const controllers::ObjectPtr& obj);
  void OnPodDelete(const controllers::ObjectPtr& obj);
  void OnNode(const controllers::ObjectPtr& old_obj, const controllers::ObjectPtr& obj);
  void OnNodeDelete(const controllers::ObjectPtr& obj);

  bool Responsible(const api::v1::Pod& pod) const;
  void AddPodToCacheLocked(const api::v1::Pod& pod);
  void RemovePodFromCacheLocked(const std::string& key);
  void MoveAllToActiveLocked();

  void ScheduleLoop(const std::atomic<bool>& stop);
  void ScheduleOne(const std::string& key);
  void BindLoop(const std::atomic<bool>& stop);
  void Bind(const Binding& b);
  void ReportUnschedulable(const api::v1::Object& pod, const std::string& message);
  void Requeue(const std::string& key, bool backoff);

  std::shared_ptr<client::Client> api_;
  CoreOptions opts_;
  std::unique_ptr<controllers::EventRecorder> events_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Cache.
  std::map<std::string, NodeInfo> nodes_;
  std::map<std::string, PodInfo> assigned_;  // pod key -> info (bound or assumed)
  std::set<std::string> assumed_;
  // Queue.
  std::map<std::string, std::shared_ptr<const api::v1::Object>> pending_;  // latest unassigned pods
  std::deque<std::string> active_;
  std::set<std::string> in_active_;
  std::set<std::string> unschedulable_;
  std::multimap<std::chrono::steady_clock::time_point, std::string> backoff_;
  std::map<std::string, int> attempts_;
  std::map<std::string, std::string> last_reported_;
  uint64_t move_cycle_ = 0;
  std::deque<Binding> bindings_;
  std::condition_variable bind_cv_;
  Stats stats_;
};

}  // namespace skiff::scheduler
