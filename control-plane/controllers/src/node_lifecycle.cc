// Node lifecycle: a node whose Lease (kube-node-lease/<node>) has not been
// renewed for node_monitor_grace_period becomes Ready=Unknown and gets the
// node.kubernetes.io/unreachable:NoExecute taint; a node reporting
// Ready=False gets node.kubernetes.io/not-ready:NoExecute. Pods on a node
// with NoExecute taints are evicted at once when they do not tolerate them,
// or after their tolerationSeconds (pods without a toleration for these two
// taints get the cluster default, as the DefaultTolerationSeconds admission
// plugin would have given them).
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "skiff/common/log.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

using api::v1::Object;

bool Tolerates(const api::v1::Toleration& tol, const api::v1::Taint& taint) {
  if (!tol.effect().empty() && tol.effect() != taint.effect()) return false;
  if (tol.key().empty()) return tol.operator_() == "Exists";
  if (tol.key() != taint.key()) return false;
  if (tol.operator_() == "Exists") return true;
  return tol.value() == taint.value();
}

class NodeLifecycleController : public Controller {
 public:
  explicit NodeLifecycleController(Context ctx) : Controller(std::move(ctx)) {
    nodes_ = ctx_.informers->For("nodes");
    leases_ = ctx_.informers->For("leases");
    pods_ = ctx_.informers->For("pods");
    nodes_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                        [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); }, nullptr});
    // New pods on a tainted node must be checked too.
    pods_->AddHandler({[this](const ObjectPtr& o) {
                         if (!o->pod().spec().node_name().empty()) EnqueueKey(o->pod().spec().node_name());
                       },
                       [this](const ObjectPtr& old, const ObjectPtr& o) {
                         if (old->pod().spec().node_name().empty() && !o->pod().spec().node_name().empty())
                           EnqueueKey(o->pod().spec().node_name());
                       },
                       nullptr});
  }
  std::string Name() const override { return "nodelifecycle"; }

  absl::Status Reconcile(const std::string& name) override {
    auto obj = nodes_->Get(name);
    if (obj == nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      probes_.erase(name);
      return absl::OkStatus();
    }
    const auto& node = obj->node();
    absl::Time now = absl::Now();
    absl::Duration grace = absl::Seconds(ctx_.opts.node_monitor_grace_period_seconds);
    // The last time we saw the node's heartbeat change, by our own clock.
    std::string beat;
    if (auto lease = leases_->Get("kube-node-lease/" + name)) beat = lease->lease().spec().renew_time();
    if (beat.empty()) {
      if (const auto* c = objects::FindCondition(node.status().conditions(), "Ready"))
        beat = c->last_heartbeat_time();
    }
    absl::Time last_seen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& p = probes_[name];
      if (p.beat != beat || p.seen == absl::Time()) {
        p.beat = beat;
        p.seen = now;
      }
      last_seen = p.seen;
    }
    bool expired = now - last_seen > grace;
    const auto* ready = objects::FindCondition(node.status().conditions(), "Ready");
    std::string ready_status = ready ? ready->status() : "Unknown";

    if (expired && ready_status != "Unknown") {
      Object upd = *obj;
      auto* conds = upd.mutable_node()->mutable_status()->mutable_conditions();
      objects::SetCondition(conds, "Ready", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.");
      auto r = ctx_.api->UpdateStatus("nodes", "", upd);
      if (!r.ok()) return r.status();
      ctx_.events->Event(RefTo(*obj), "Normal", "NodeNotReady", "Node " + name + " status is now: NodeNotReady");
      ready_status = "Unknown";
      obj = std::make_shared<const Object>(*r);
    }
    // The taints that describe the state.
    std::string want_taint;
    if (ready_status == "Unknown" && expired) want_taint = kTaintUnreachable;
    if (ready_status == "False") want_taint = kTaintNotReady;
    RETURN_IF_ERROR(SyncTaints(obj, want_taint));
    obj = nodes_->Get(name) ? nodes_->Get(name) : obj;
    absl::Duration next = std::min(absl::Seconds(1), grace / 4);
    absl::Duration evict_next = absl::InfiniteDuration();
    RETURN_IF_ERROR(Evict(name, want_taint, now, &evict_next));
    next = std::min(next, evict_next);
    queue_.AddAfter(name, std::chrono::milliseconds(std::max<int64_t>(50, absl::ToInt64Milliseconds(next))));
    return absl::OkStatus();
  }

 private:
  absl::Status SyncTaints(const ObjectPtr& obj, const std::string& want) {
    const auto& node = obj->node();
    bool has_want = want.empty();
    bool has_other = false;
    for (const auto& t : node.spec().taints()) {
      bool ours = (t.key() == kTaintUnreachable || t.key() == kTaintNotReady) && t.effect() == "NoExecute";
      if (!ours) continue;
      if (t.key() == want) has_want = true;
      else has_other = true;
    }
    if (has_want && !has_other) return absl::OkStatus();
    for (int attempt = 0; attempt < 3; attempt++) {
      auto cur = ctx_.api->Get("nodes", "", node.metadata().name());
      if (!cur.ok()) return cur.status();
      Object upd = *cur;
      auto* taints = upd.mutable_node()->mutable_spec()->mutable_taints();
      bool present = false;
      for (int i = taints->size() - 1; i >= 0; i--) {
        const auto& t = taints->Get(i);
        if ((t.key() == kTaintUnreachable || t.key() == kTaintNotReady) && t.effect() == "NoExecute") {
          if (t.key() == want) {
            present = true;
          } else {
            taints->DeleteSubrange(i, 1);
          }
        }
      }
      if (want.empty() || !present) ForgetTaints(node.metadata().name());
      if (!want.empty() && !present) {
        FirstSeen(node.metadata().name(), want, absl::Now());
        auto* t = taints->Add();
        t->set_key(want);
        t->set_effect("NoExecute");
        t->set_time_added(objects::Now());
      }
      auto r = ctx_.api->Update("nodes", "", upd);
      if (r.ok()) return absl::OkStatus();
      if (r.status().code() != absl::StatusCode::kAborted) return r.status();
    }
    return absl::AbortedError("conflict updating node taints");
  }

  absl::Status Evict(const std::string& node_name, const std::string& state_taint, absl::Time now,
                     absl::Duration* next) {
    auto node = nodes_->Get(node_name);
    if (node == nullptr) return absl::OkStatus();
    std::vector<api::v1::Taint> taints;
    for (const auto& t : node->node().spec().taints())
      if (t.effect() == "NoExecute") taints.push_back(t);
    if (taints.empty()) return absl::OkStatus();
    for (const auto& po : pods_->List()) {
      const auto& pod = po->pod();
      if (pod.spec().node_name() != node_name || objects::IsPodTerminating(pod)) continue;
      // When is this pod due? InfiniteFuture = never.
      absl::Time due = absl::InfiniteFuture();
      for (const auto& t : taints) {
        bool tolerated = false;
        absl::Duration longest = absl::ZeroDuration();
        bool forever = false;
        for (const auto& tol : pod.spec().tolerations()) {
          if (!Tolerates(tol, t)) continue;
          tolerated = true;
          if (!tol.has_toleration_seconds()) {
            forever = true;
          } else {
            longest = std::max(longest, absl::Seconds(std::max<int64_t>(0, tol.toleration_seconds())));
          }
        }
        if (!tolerated && (t.key() == kTaintUnreachable || t.key() == kTaintNotReady)) {
          tolerated = true;
          longest = absl::Seconds(t.key() == kTaintUnreachable ? ctx_.opts.default_unreachable_toleration_seconds
                                                               : ctx_.opts.default_not_ready_toleration_seconds);
        }
        // timeAdded has whole seconds; our own first sighting is finer.
        absl::Time added = std::max(objects::ParseTime(t.time_added()), FirstSeen(node_name, t.key(), now));
        absl::Time t_due = !tolerated ? absl::InfinitePast() : forever ? absl::InfiniteFuture() : added + longest;
        due = std::min(due, t_due);
      }
      if (due == absl::InfiniteFuture()) continue;
      if (due > now) {
        *next = std::min(*next, due - now);
        continue;
      }
      client::DeleteOptions opts;
      // The kubelet of an unreachable node will not finish a graceful delete.
      if (state_taint == kTaintUnreachable) opts.grace_period_seconds = 0;
      opts.precondition_uid = pod.metadata().uid();
      auto r = ctx_.api->Delete("pods", pod.metadata().namespace_(), pod.metadata().name(), opts);
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
      ctx_.events->Event(RefTo(*po), "Normal", "TaintManagerEviction",
                         "Marking for deletion Pod " + objects::Key(pod.metadata()));
      log::Info("evicted pod ", log::Field("pod", objects::Key(pod.metadata())), " ", log::Field("node", node_name));
    }
    return absl::OkStatus();
  }

  absl::Time FirstSeen(const std::string& node, const std::string& key, absl::Time now) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = taint_seen_.find(node + "|" + key);
    if (it == taint_seen_.end()) it = taint_seen_.emplace(node + "|" + key, now).first;
    return it->second;
  }
  void ForgetTaints(const std::string& node) {
    std::lock_guard<std::mutex> lock(mu_);
    taint_seen_.erase(node + "|" + kTaintUnreachable);
    taint_seen_.erase(node + "|" + kTaintNotReady);
  }

  struct Probe {
    std::string beat;
    absl::Time seen;
  };
  Informer* nodes_;
  Informer* leases_;
  Informer* pods_;
  std::mutex mu_;
  std::map<std::string, Probe> probes_;
  std::map<std::string, absl::Time> taint_seen_;
};

}  // namespace

std::unique_ptr<Controller> NewNodeLifecycleController(Context ctx) {
  return std::make_unique<NodeLifecycleController>(std::move(ctx));
}

}  // namespace skiff::controllers
