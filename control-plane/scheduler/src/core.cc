#include "skiff/scheduler/core.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"

namespace skiff::scheduler {

using controllers::ObjectPtr;

Scheduler::Scheduler(std::shared_ptr<client::Client> api, CoreOptions opts)
    : api_(std::move(api)), opts_(std::move(opts)) {
  events_ = std::make_unique<controllers::EventRecorder>(api_, "default-scheduler");
  events_->SetInstance(opts_.instance);
}

Scheduler::~Scheduler() = default;

Stats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool Scheduler::Responsible(const api::v1::Pod& pod) const {
  return std::find(opts_.scheduler_names.begin(), opts_.scheduler_names.end(), pod.spec().scheduler_name()) !=
         opts_.scheduler_names.end();
}

void Scheduler::AddPodToCacheLocked(const api::v1::Pod& pod) {
  std::string key = objects::Key(pod.metadata());
  bool terminal = pod.status().phase() == "Succeeded" || pod.status().phase() == "Failed";
  auto it = assigned_.find(key);
  if (it != assigned_.end()) {
    if (assumed_.count(key) && it->second.node == pod.spec().node_name() && !terminal) {
      assumed_.erase(key);  // our binding, now confirmed
      return;
    }
    RemovePodFromCacheLocked(key);
  }
  if (terminal) return;
  PodInfo info = MakePodInfo(pod);
  auto nit = nodes_.find(info.node);
  if (nit == nodes_.end()) {
    // The node is not known yet; account it when the node arrives.
    NodeInfo placeholder;
    placeholder.name = info.node;
    nit = nodes_.emplace(info.node, placeholder).first;
  }
  nit->second.AddPod(info);
  assigned_[key] = std::move(info);
}

void Scheduler::RemovePodFromCacheLocked(const std::string& key) {
  auto it = assigned_.find(key);
  if (it == assigned_.end()) return;
  auto nit = nodes_.find(it->second.node);
  if (nit != nodes_.end()) nit->second.RemovePod(it->second);
  assigned_.erase(it);
  assumed_.erase(key);
}

void Scheduler::MoveAllToActiveLocked() {
  move_cycle_++;
  for (const auto& key : unschedulable_) {
    if (in_active_.insert(key).second) active_.push_back(key);
  }
  unschedulable_.clear();
  cv_.notify_all();
}

void Scheduler::OnPod(const ObjectPtr& obj) {
  const auto& pod = obj->pod();
  std::string key = objects::Key(pod.metadata());
  std::lock_guard<std::mutex> lock(mu_);
  if (!pod.spec().node_name().empty()) {
    bool freed = pod.status().phase() == "Succeeded" || pod.status().phase() == "Failed";
    AddPodToCacheLocked(pod);
    pending_.erase(key);
    unschedulable_.erase(key);
    if (freed) MoveAllToActiveLocked();
    return;
  }
  if (!Responsible(pod) || objects::IsPodTerminating(pod)) {
    pending_.erase(key);
    return;
  }
  if (assumed_.count(key)) return;  // binding in flight
  pending_[key] = obj;
  if (unschedulable_.count(key)) return;  // waits for a cluster change
  if (in_active_.insert(key).second) {
    active_.push_back(key);
    cv_.notify_all();
  }
}

void Scheduler::OnPodDelete(const ObjectPtr& obj) {
  std::string key = objects::Key(obj->pod().metadata());
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(key);
  unschedulable_.erase(key);
  last_reported_.erase(key);
  attempts_.erase(key);
  if (assigned_.count(key)) {
    RemovePodFromCacheLocked(key);
    MoveAllToActiveLocked();
  }
}

void Scheduler::OnNode(const ObjectPtr& old_obj, const ObjectPtr& obj) {
  const auto& node = obj->node();
  NodeInfo fresh = MakeNodeInfo(node);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(fresh.name);
  bool relevant = true;
  if (it != nodes_.end()) {
    NodeInfo& cur = it->second;
    relevant = cur.ready != fresh.ready || cur.unschedulable != fresh.unschedulable || cur.labels != fresh.labels ||
               cur.taints.size() != fresh.taints.size() || cur.allocatable.milli_cpu != fresh.allocatable.milli_cpu ||
               cur.allocatable.memory != fresh.allocatable.memory || cur.allocatable.pods != fresh.allocatable.pods;
    if (!relevant) {
      for (size_t i = 0; i < cur.taints.size(); i++)
        if (cur.taints[i].key() != fresh.taints[i].key() || cur.taints[i].effect() != fresh.taints[i].effect() ||
            cur.taints[i].value() != fresh.taints[i].value())
          relevant = true;
    }
    cur.ready = fresh.ready;
    cur.unschedulable = fresh.unschedulable;
    cur.allocatable = fresh.allocatable;
    cur.labels = std::move(fresh.labels);
    cur.taints = std::move(fresh.taints);
  } else {
    nodes_.emplace(fresh.name, std::move(fresh));
  }
  if (relevant) MoveAllToActiveLocked();
}

void Scheduler::OnNodeDelete(const ObjectPtr& obj) {
  std::lock_guard<std::mutex> lock(mu_);
  nodes_.erase(obj->node().metadata().name());
  // Pods still assigned there stay in assigned_ until their own deletion.
}

void Scheduler::Requeue(const std::string& key, bool backoff) {
  // Caller holds mu_.
  if (!pending_.count(key)) return;
  if (!backoff) {
    if (in_active_.insert(key).second) active_.push_back(key);
    cv_.notify_all();
    return;
  }
  int n = attempts_[key]++;
  auto delay = std::chrono::milliseconds(std::min(1000 << std::min(n, 4), 10000));
  backoff_.emplace(std::chrono::steady_clock::now() + delay, key);
  cv_.notify_all();
}

void Scheduler::ScheduleLoop(const std::atomic<bool>& stop) {
  while (!stop) {
    std::string key;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop) {
        auto now = std::chrono::steady_clock::now();
        while (!backoff_.empty() && backoff_.begin()->first <= now) {
          std::string k = backoff_.begin()->second;
          backoff_.erase(backoff_.begin());
          if (pending_.count(k) && in_active_.insert(k).second) active_.push_back(k);
        }
        if (!active_.empty()) break;
        auto until = backoff_.empty() ? now + std::chrono::milliseconds(100) : backoff_.begin()->first;
        cv_.wait_until(lock, std::min(until, now + std::chrono::milliseconds(100)));
      }
      if (stop) return;
      key = active_.front();
      active_.pop_front();
      in_active_.erase(key);
    }
    ScheduleOne(key);
  }
}

void Scheduler::ScheduleOne(const std::string& key) {
  thread_local std::mt19937 rng(std::random_device{}());
  std::unique_lock<std::mutex> lock(mu_);
  auto pit = pending_.find(key);
  if (pit == pending_.end()) return;
  ObjectPtr obj = pit->second;
  const auto& pod = obj->pod();
  uint64_t cycle = move_cycle_;
  PodInfo info = MakePodInfo(pod);

  std::vector<NodeInfo*> feasible;
  std::map<std::string, int> reasons;
  std::vector<std::string> why;
  for (auto& [name, node] : nodes_) {
    if (node.allocatable.pods == 0 && !node.ready) {
      // Placeholder for pods on a node we have not seen.
      continue;
    }
    why.clear();
    if (RunFilters(pod, info, node, &why)) {
      feasible.push_back(&node);
    } else {
      for (const auto& r : why) reasons[r]++;
    }
  }
  size_t node_count = 0;
  for (const auto& [name, node] : nodes_)
    if (!(node.allocatable.pods == 0 && !node.ready)) node_count++;

  if (feasible.empty()) {
    std::string msg = UnschedulableMessage(node_count, reasons);
    stats_.unschedulable++;
    bool report = last_reported_[key] != msg;
    last_reported_[key] = msg;
    if (cycle != move_cycle_) {
      Requeue(key, true);
    } else {
      unschedulable_.insert(key);
    }
    lock.unlock();
    if (report) ReportUnschedulable(*obj, msg);
    return;
  }

  std::vector<int64_t> spread(feasible.size()), pref(feasible.size());
  bool has_pref =
      !pod.spec().affinity().node_affinity().preferred_during_scheduling_ignored_during_execution().empty();
  for (size_t i = 0; i < feasible.size(); i++) {
    spread[i] = RawSpread(info, *feasible[i]);
    if (has_pref) pref[i] = RawPreferredAffinity(pod, *feasible[i]);
  }
  NormalizeSpread(&spread);
  NormalizeMax(&pref);
  int64_t best = -1;
  std::vector<size_t> best_idx;
  for (size_t i = 0; i < feasible.size(); i++) {
    int64_t s = ScoreLeastAllocated(info, *feasible[i]) + ScoreBalancedAllocation(info, *feasible[i]) + spread[i] +
                pref[i];
    if (s > best) {
      best = s;
      best_idx.clear();
    }
    if (s == best) best_idx.push_back(i);
  }
  NodeInfo* chosen = feasible[best_idx[rng() % best_idx.size()]];
  info.node = chosen->name;
  chosen->AddPod(info);
  assigned_[key] = info;
  assumed_.insert(key);
  pending_.erase(key);
  bindings_.push_back({obj, chosen->name});
  bind_cv_.notify_one();
}

void Scheduler::ReportUnschedulable(const api::v1::Object& obj, const std::string& message) {
  events_->Event(controllers::RefTo(obj), "Warning", "FailedScheduling", message);
  for (int attempt = 0; attempt < 3; attempt++) {
    auto cur = attempt == 0 ? absl::StatusOr<api::v1::Object>(obj)
                            : api_->Get("pods", obj.pod().metadata().namespace_(), obj.pod().metadata().name());
    if (!cur.ok()) return;
    api::v1::Object o = *cur;
    if (!o.pod().spec().node_name().empty()) return;
    if (!objects::SetCondition(o.mutable_pod()->mutable_status()->mutable_conditions(), "PodScheduled", "False",
                               "Unschedulable", message))
      return;
    auto st = api_->UpdateStatus("pods", o.pod().metadata().namespace_(), o);
    if (st.ok() || st.status().code() != absl::StatusCode::kAborted) return;
  }
}

void Scheduler::BindLoop(const std::atomic<bool>& stop) {
  while (true) {
    Binding b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      bind_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop || !bindings_.empty(); });
      if (bindings_.empty()) {
        if (stop) return;
        continue;
      }
      b = std::move(bindings_.front());
      bindings_.pop_front();
    }
    Bind(b);
  }
}

void Scheduler::Bind(const Binding& b) {
  const auto& meta = b.pod->pod().metadata();
  std::string key = objects::Key(meta);
  api::v1::Object o = *b.pod;
  absl::Status st;
  for (int attempt = 0; attempt < 5; attempt++) {
    o.mutable_pod()->mutable_spec()->set_node_name(b.node);
    auto r = api_->Update("pods", meta.namespace_(), o);
    if (r.ok()) {
      st = absl::OkStatus();
      o = *r;
      break;
    }
    st = r.status();
    if (st.code() != absl::StatusCode::kAborted) break;
    auto cur = api_->Get("pods", meta.namespace_(), meta.name());
    if (!cur.ok()) {
      st = cur.status();
      break;
    }
    if (cur->pod().metadata().uid() != meta.uid() || !cur->pod().spec().node_name().empty()) {
      st = absl::AbortedError("pod changed under the binding");
      break;
    }
    o = *cur;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!st.ok()) {
    stats_.bind_failures++;
    log::Warn("binding failed ", log::Field("pod", key), " ", log::Field("node", b.node), " ", st);
    if (assumed_.count(key)) RemovePodFromCacheLocked(key);
    if (st.code() != absl::StatusCode::kNotFound) {
      pending_[key] = b.pod;
      Requeue(key, true);
    }
    return;
  }
  stats_.scheduled++;
  attempts_.erase(key);
  bool had_failed = last_reported_.erase(key) > 0;
  events_->Event(controllers::RefTo(*b.pod), "Normal", "Scheduled",
                 absl::StrCat("Successfully assigned ", key, " to ", b.node));
  if (had_failed) {
    if (objects::SetCondition(o.mutable_pod()->mutable_status()->mutable_conditions(), "PodScheduled", "True", "",
                              ""))
      (void)api_->UpdateStatus("pods", meta.namespace_(), o);
  }
}

void Scheduler::Run(const std::atomic<bool>& stop) {
  controllers::Informer nodes(api_, "nodes");
  controllers::Informer pods(api_, "pods");
  nodes.AddHandler({[this](const ObjectPtr& o) { OnNode(nullptr, o); },
                    [this](const ObjectPtr& old, const ObjectPtr& o) { OnNode(old, o); },
                    [this](const ObjectPtr& o) { OnNodeDelete(o); }});
  pods.AddHandler({[this](const ObjectPtr& o) { OnPod(o); }, [this](const ObjectPtr&, const ObjectPtr& o) { OnPod(o); },
                   [this](const ObjectPtr& o) { OnPodDelete(o); }});
  nodes.Start();
  nodes.WaitForSync(stop);
  pods.Start();
  pods.WaitForSync(stop);
  std::vector<std::thread> binders;
  for (int i = 0; i < opts_.binder_threads; i++) binders.emplace_back([&] { BindLoop(stop); });
  ScheduleLoop(stop);
  {
    std::lock_guard<std::mutex> lock(mu_);
    bind_cv_.notify_all();
  }
  for (auto& t : binders) t.join();
  pods.Stop();
  nodes.Stop();
  events_->Flush();
}

}  // namespace skiff::scheduler
