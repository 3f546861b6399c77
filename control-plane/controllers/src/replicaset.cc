// ReplicaSet controller: keeps spec.replicas active pods carrying the
// ReplicaSet's controller reference, and reports counts in status.
// Expectations (as kube-controller-manager's) stop a second sync from acting
// on a cache that has not yet seen the pods the first one created or deleted.
#include <algorithm>
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
using api::v1::Pod;

class Expectations {
 public:
  void Expect(const std::string& key, int adds, int dels) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& e = map_[key];
    e.adds = adds;
    e.dels = dels;
    e.at = absl::Now();
  }
  void Observe(const std::string& key, int adds, int dels) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return;
    it->second.adds -= adds;
    it->second.dels -= dels;
  }
  bool Satisfied(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return true;
    if ((it->second.adds <= 0 && it->second.dels <= 0) || absl::Now() - it->second.at > absl::Seconds(30)) {
      map_.erase(it);
      return true;
    }
    return false;
  }
  void Forget(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    map_.erase(key);
  }

 private:
  struct E {
    int adds = 0, dels = 0;
    absl::Time at;
  };
  std::mutex mu_;
  std::map<std::string, E> map_;
};

int PhaseRank(const Pod& p) {
  const auto& ph = p.status().phase();
  if (ph == "Pending") return 0;
  if (ph == "Unknown") return 1;
  return 2;
}

// Pods that should go first when scaling down: unassigned, then pending,
// not ready, then the newest.
bool DeleteFirst(const Pod* a, const Pod* b) {
  bool ua = a->spec().node_name().empty(), ub = b->spec().node_name().empty();
  if (ua != ub) return ua;
  if (PhaseRank(*a) != PhaseRank(*b)) return PhaseRank(*a) < PhaseRank(*b);
  bool ra = objects::IsPodReady(*a), rb = objects::IsPodReady(*b);
  if (ra != rb) return !ra;
  return a->metadata().creation_timestamp() > b->metadata().creation_timestamp();
}

class ReplicaSetController : public Controller {
 public:
  explicit ReplicaSetController(Context ctx) : Controller(std::move(ctx)) {
    rs_ = ctx_.informers->For("replicasets");
    pods_ = ctx_.informers->For("pods");
    rs_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                     [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); },
                     [this](const ObjectPtr& o) {
                       expectations_.Forget(objects::Key(*o));
                       Enqueue(o);
                     }});
    pods_->AddHandler({[this](const ObjectPtr& o) { OnPod(nullptr, o, false); },
                       [this](const ObjectPtr& old, const ObjectPtr& o) { OnPod(old, o, false); },
                       [this](const ObjectPtr& o) { OnPod(nullptr, o, true); }});
  }
  std::string Name() const override { return "replicaset"; }

  void OnPod(const ObjectPtr& old, const ObjectPtr& obj, bool deleted) {
    const auto& pod = obj->pod();
    const auto* ref = objects::ControllerOf(pod.metadata());
    std::string owner_key;
    if (ref != nullptr && ref->kind() == "ReplicaSet") {
      owner_key = objects::Key(pod.metadata().namespace_(), ref->name());
      if (deleted) {
        if (!objects::IsPodTerminating(pod)) expectations_.Observe(owner_key, 0, 1);
      } else if (old == nullptr) {
        expectations_.Observe(owner_key, 1, 0);
      } else if (!objects::IsPodTerminating(old->pod()) && objects::IsPodTerminating(pod)) {
        expectations_.Observe(owner_key, 0, 1);
      }
      EnqueueKey(owner_key);
    } else if (ref == nullptr && !deleted) {
      // An orphan: any ReplicaSet whose selector matches may adopt it.
      for (const auto& rs : rs_->ListNamespace(pod.metadata().namespace_())) {
        auto sel = objects::Selector::FromProto(rs->replica_set().spec().selector());
        if (sel.ok() && !sel->Empty() && sel->Matches(pod.metadata().labels())) Enqueue(rs);
      }
    }
  }

  absl::Status Reconcile(const std::string& key) override {
    auto obj = rs_->Get(key);
    if (obj == nullptr) {
      expectations_.Forget(key);
      return absl::OkStatus();
    }
    const auto& rs = obj->replica_set();
    const auto& meta = rs.metadata();
    auto sel_or = objects::Selector::FromProto(rs.spec().selector());
    if (!sel_or.ok()) return absl::OkStatus();  // invalid selector: nothing to do
    const objects::Selector& sel = *sel_or;

    std::vector<const Pod*> owned;
    std::vector<ObjectPtr> keep;  // keeps pointees alive
    bool live_checked = false, live_ok = false;
    for (const auto& p : pods_->ListNamespace(meta.namespace_())) {
      const auto& pod = p->pod();
      const auto* ref = objects::ControllerOf(pod.metadata());
      if (ref != nullptr) {
        if (ref->uid() != meta.uid()) continue;
      } else {
        // Adopt orphans that match, unless we are being deleted.
        if (sel.Empty() || !sel.Matches(pod.metadata().labels()) || !meta.deletion_timestamp().empty() ||
            objects::IsPodTerminating(pod))
          continue;
        // Re-check the owner live first: the cache may not show a deletion
        // yet, and adopting for a ReplicaSet about to vanish would get the
        // pod garbage-collected (an orphaning delete would be undone).
        if (!live_checked) {
          auto live = ctx_.api->Get("replicasets", meta.namespace_(), meta.name());
          live_ok = live.ok() && live->replica_set().metadata().uid() == meta.uid() &&
                    live->replica_set().metadata().deletion_timestamp().empty();
          live_checked = true;
        }
        if (!live_ok) continue;
        Object adopted = *p;
        *adopted.mutable_pod()->mutable_metadata()->add_owner_references() =
            objects::MakeControllerRef("apps/v1", "ReplicaSet", meta);
        auto r = ctx_.api->Update("pods", meta.namespace_(), adopted);
        if (!r.ok()) {
          // As kube-controller-manager's claimPods: a failed adoption fails
          // this sync (and requeues it) instead of counting without the pod,
          // which would create a replacement and later scale a pod away.
          if (r.status().code() != absl::StatusCode::kNotFound)
            return absl::Status(r.status().code(), absl::StrCat("adopt pod ", pod.metadata().name(), ": ",
                                                                r.status().message()));
          continue;
        }
        keep.push_back(std::make_shared<const Object>(*r));
        owned.push_back(&keep.back()->pod());
        continue;
      }
      keep.push_back(p);
      owned.push_back(&p->pod());
    }
    std::vector<const Pod*> active;
    for (const auto* p : owned)
      if (objects::IsPodActive(*p)) active.push_back(p);

    absl::Status manage_status;
    int want = rs.spec().has_replicas() ? rs.spec().replicas() : 1;
    if (meta.deletion_timestamp().empty() && expectations_.Satisfied(key)) {
      int diff = want - static_cast<int>(active.size());
      if (diff > 0) {
        diff = std::min(diff, 500);
        expectations_.Expect(key, diff, 0);
        int created = 0;
        for (int i = 0; i < diff; i++) {
          auto st = CreatePod(rs);
          if (!st.ok()) {
            manage_status = st;
            expectations_.Observe(key, diff - created, 0);  // the rest will not arrive
            break;
          }
          created++;
        }
        if (created > 0)
          ctx_.events->Event(RefTo(*obj), "Normal", "SuccessfulCreate",
                             absl::StrCat("Created ", created, " pod(s)"));
      } else if (diff < 0) {
        std::sort(active.begin(), active.end(), DeleteFirst);
        int n = std::min(-diff, 500);
        expectations_.Expect(key, 0, n);
        for (int i = 0; i < n; i++) {
          const auto& pm = active[i]->metadata();
          auto r = ctx_.api->Delete("pods", pm.namespace_(), pm.name());
          if (!r.ok()) {
            expectations_.Observe(key, 0, 1);
            if (r.status().code() != absl::StatusCode::kNotFound) manage_status = r.status();
          } else {
            ctx_.events->Event(RefTo(*obj), "Normal", "SuccessfulDelete", "Deleted pod: " + pm.name());
          }
        }
      }
    }

    // Status from what the cache shows now.
    absl::Time now = absl::Now();
    api::v1::ReplicaSet::Status st;
    bool waiting_for_min_ready = false;
    auto tmpl_sel = objects::Selector::FromMap(rs.spec().template_().metadata().labels());
    for (const auto* p : active) {
      st.set_replicas(st.replicas() + 1);
      if (tmpl_sel.Matches(p->metadata().labels())) st.set_fully_labeled_replicas(st.fully_labeled_replicas() + 1);
      if (objects::IsPodReady(*p)) {
        st.set_ready_replicas(st.ready_replicas() + 1);
        if (objects::IsPodAvailable(*p, rs.spec().min_ready_seconds(), now)) {
          st.set_available_replicas(st.available_replicas() + 1);
        } else {
          waiting_for_min_ready = true;
        }
      }
    }
    st.set_observed_generation(meta.generation());
    *st.mutable_conditions() = rs.status().conditions();
    const auto& cur = rs.status();
    if (cur.replicas() != st.replicas() || cur.fully_labeled_replicas() != st.fully_labeled_replicas() ||
        cur.ready_replicas() != st.ready_replicas() || cur.available_replicas() != st.available_replicas() ||
        cur.observed_generation() != st.observed_generation()) {
      Object upd = *obj;
      *upd.mutable_replica_set()->mutable_status() = st;
      auto r = ctx_.api->UpdateStatus("replicasets", meta.namespace_(), upd);
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
    }
    if (waiting_for_min_ready) queue_.AddAfter(key, std::chrono::milliseconds(rs.spec().min_ready_seconds() * 1000 + 100));
    return manage_status;
  }

 private:
  absl::Status CreatePod(const api::v1::ReplicaSet& rs) {
    Pod pod;
    pod.set_api_version("v1");
    pod.set_kind("Pod");
    auto* m = pod.mutable_metadata();
    m->set_namespace_(rs.metadata().namespace_());
    m->set_generate_name(rs.metadata().name() + "-");
    *m->mutable_labels() = rs.spec().template_().metadata().labels();
    *m->mutable_annotations() = rs.spec().template_().metadata().annotations();
    *m->add_owner_references() = objects::MakeControllerRef("apps/v1", "ReplicaSet", rs.metadata());
    *pod.mutable_spec() = rs.spec().template_().spec();
    for (int attempt = 0; attempt < 3; attempt++) {
      m->set_name(rs.metadata().name() + "-" + objects::RandomSuffix());
      auto r = ctx_.api->Create("pods", m->namespace_(), objects::Wrap(pod));
      if (r.ok()) return absl::OkStatus();
      if (r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
    }
    return absl::AlreadyExistsError("could not find a free pod name");
  }

  Informer* rs_;
  Informer* pods_;
  Expectations expectations_;
};

}  // namespace

std::unique_ptr<Controller> NewReplicaSetController(Context ctx) {
  return std::make_unique<ReplicaSetController>(std::move(ctx));
}

}  // namespace skiff::controllers
