// Deployment controller: one ReplicaSet per pod template (named
// <deployment>-<pod-template-hash>), rolled with RollingUpdate (maxSurge /
// maxUnavailable, 25% each by default) or Recreate, numbered by the
// deployment.kubernetes.io/revision annotation, pruned to
// revisionHistoryLimit, and rolled back by the
// deployment.kubernetes.io/rollback-to annotation (a revision, 0 = previous).
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "skiff/common/log.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

using api::v1::Deployment;
using api::v1::Object;
using api::v1::PodTemplateSpec;
using api::v1::ReplicaSet;

std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos(&out);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&cos);
  }
  return out;
}

PodTemplateSpec WithoutHash(const PodTemplateSpec& t) {
  PodTemplateSpec c = t;
  c.mutable_metadata()->mutable_labels()->erase(kPodTemplateHashLabel);
  return c;
}

std::string TemplateHash(const PodTemplateSpec& t, int32_t collision_count) {
  std::string data = Deterministic(WithoutHash(t));
  if (collision_count > 0) data += std::to_string(collision_count);
  return objects::SafeHash(data);
}

int64_t Revision(const ReplicaSet& rs) {
  auto it = rs.metadata().annotations().find(kRevisionAnnotation);
  int64_t v = 0;
  if (it != rs.metadata().annotations().end()) (void)absl::SimpleAtoi(it->second, &v);
  return v;
}

// IntOrString percent/absolute against total; percent rounds up for surge and
// down for unavailable, as Kubernetes does.
int Resolve(const std::string& v, const std::string& dflt, int total, bool round_up) {
  std::string s = v.empty() ? dflt : v;
  if (!s.empty() && s.back() == '%') {
    int pct = 0;
    (void)absl::SimpleAtoi(s.substr(0, s.size() - 1), &pct);
    double x = double(pct) * total / 100.0;
    return round_up ? int(std::ceil(x)) : int(std::floor(x));
  }
  int n = 0;
  (void)absl::SimpleAtoi(s, &n);
  return n;
}

int SpecReplicas(const ReplicaSet& rs) { return rs.spec().has_replicas() ? rs.spec().replicas() : 1; }

// Pods a ReplicaSet may have right now: its spec, or more while its
// controller has not yet deleted the pods of a scale-down (status.replicas
// counts the active pods it last saw). maxSurge bounds real pods, so the
// surge arithmetic uses this instead of spec alone.
int PodsOf(const ReplicaSet& rs) { return std::max(SpecReplicas(rs), rs.status().replicas()); }

int64_t ResourceVersion(const api::v1::ObjectMeta& m) {
  int64_t v = 0;
  (void)absl::SimpleAtoi(m.resource_version(), &v);
  return v;
}

int AnnotatedDesired(const ReplicaSet& rs) {
  auto it = rs.metadata().annotations().find(kDesiredReplicasAnnotation);
  int v = -1;
  if (it == rs.metadata().annotations().end() || !absl::SimpleAtoi(it->second, &v)) return -1;
  return v;
}

// What kube-controller-manager's ControllerExpectations do for the
// ReplicaSets a Deployment writes: after the controller created or updated a
// ReplicaSet, its next sync waits until the informer cache shows at least
// that resourceVersion, so it never decides from a cache that lacks its own
// previous writes. Expectations expire (a write the cache will never show,
// e.g. the object was deleted meanwhile, must not block forever).
class WriteExpectations {
 public:
  void Expect(const std::string& deploy, const std::string& rs, int64_t rv) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& e = map_[deploy][rs];
    e.rv = std::max(e.rv, rv);
    e.at = absl::Now();
  }
  // True when the cache (rv of each ReplicaSet it holds, by name) shows every
  // write recorded for `deploy`.
  bool Satisfied(const std::string& deploy, const std::map<std::string, int64_t>& cached) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(deploy);
    if (it == map_.end()) return true;
    absl::Time now = absl::Now();
    for (auto e = it->second.begin(); e != it->second.end();) {
      auto c = cached.find(e->first);
      bool seen = c != cached.end() && c->second >= e->second.rv;
      if (seen || now - e->second.at > absl::Seconds(10)) {
        e = it->second.erase(e);
      } else {
        ++e;
      }
    }
    bool ok = it->second.empty();
    if (ok) map_.erase(it);
    return ok;
  }
  void Forget(const std::string& deploy) {
    std::lock_guard<std::mutex> lock(mu_);
    map_.erase(deploy);
  }
  // A ReplicaSet that is gone (or going) will never show the write.
  void Drop(const std::string& deploy, const std::string& rs) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(deploy);
    if (it != map_.end()) it->second.erase(rs);
  }

 private:
  struct E {
    int64_t rv = 0;
    absl::Time at;
  };
  std::mutex mu_;
  std::map<std::string, std::map<std::string, E>> map_;
};

class DeploymentController : public Controller {
 public:
  explicit DeploymentController(Context ctx) : Controller(std::move(ctx)) {
    deps_ = ctx_.informers->For("deployments");
    rss_ = ctx_.informers->For("replicasets");
    pods_ = ctx_.informers->For("pods");
    deps_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                       [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); },
                       [this](const ObjectPtr& o) {
                         expectations_.Forget(objects::Key(*o));
                         Enqueue(o);
                       }});
    auto on_rs = [this](const ObjectPtr& o) {
      const auto* ref = objects::ControllerOf(o->replica_set().metadata());
      if (ref != nullptr && ref->kind() == "Deployment")
        EnqueueKey(objects::Key(o->replica_set().metadata().namespace_(), ref->name()));
    };
    rss_->AddHandler({on_rs, [on_rs](const ObjectPtr&, const ObjectPtr& o) { on_rs(o); },
                      [this, on_rs](const ObjectPtr& o) {
                        const auto* ref = objects::ControllerOf(o->replica_set().metadata());
                        if (ref != nullptr && ref->kind() == "Deployment")
                          expectations_.Drop(objects::Key(o->replica_set().metadata().namespace_(), ref->name()),
                                             o->replica_set().metadata().name());
                        on_rs(o);
                      }});
    // Recreate waits for old pods to disappear.
    pods_->AddHandler({nullptr, nullptr, [this](const ObjectPtr& o) {
                         const auto* ref = objects::ControllerOf(o->pod().metadata());
                         if (ref == nullptr || ref->kind() != "ReplicaSet") return;
                         auto rs = rss_->Get(objects::Key(o->pod().metadata().namespace_(), ref->name()));
                         if (rs) {
                           const auto* dref = objects::ControllerOf(rs->replica_set().metadata());
                           if (dref != nullptr && dref->kind() == "Deployment")
                             EnqueueKey(objects::Key(o->pod().metadata().namespace_(), dref->name()));
                         }
                       }});
  }
  std::string Name() const override { return "deployment"; }

  absl::Status Reconcile(const std::string& key) override {
    auto obj = deps_->Get(key);
    if (obj == nullptr) {
      expectations_.Forget(key);
      return absl::OkStatus();
    }
    const Deployment& d = obj->deployment();
    const auto& meta = d.metadata();
    if (!meta.deletion_timestamp().empty()) return absl::OkStatus();

    std::vector<ReplicaSet> all;
    std::map<std::string, int64_t> cached;
    for (const auto& o : rss_->ListNamespace(meta.namespace_())) {
      cached[o->replica_set().metadata().name()] = ResourceVersion(o->replica_set().metadata());
      const auto* ref = objects::ControllerOf(o->replica_set().metadata());
      if (ref != nullptr && ref->uid() == meta.uid()) all.push_back(o->replica_set());
    }
    // Not before the cache shows our own previous writes (the ReplicaSet
    // update event enqueues us again; the delay only covers expiry).
    if (!expectations_.Satisfied(key, cached)) {
      queue_.AddAfter(key, std::chrono::milliseconds(500));
      return absl::OkStatus();
    }
    if (meta.annotations().count(kRollbackAnnotation)) return Rollback(*obj);
    std::sort(all.begin(), all.end(), [](const ReplicaSet& a, const ReplicaSet& b) {
      return a.metadata().creation_timestamp() < b.metadata().creation_timestamp();
    });
    PodTemplateSpec want_tmpl = WithoutHash(d.spec().template_());
    std::string want_bytes = Deterministic(want_tmpl);
    int new_idx = -1;
    int64_t max_old_rev = 0;
    for (size_t i = 0; i < all.size(); i++) {
      if (new_idx < 0 && Deterministic(WithoutHash(all[i].spec().template_())) == want_bytes) {
        new_idx = int(i);
      } else {
        max_old_rev = std::max(max_old_rev, Revision(all[i]));
      }
    }
    const int replicas = d.spec().has_replicas() ? d.spec().replicas() : 1;
    bool recreate = d.spec().strategy().type() == "Recreate";
    int surge = recreate ? 0 : Resolve(d.spec().strategy().rolling_update().max_surge(), "25%", replicas, true);
    int unavail =
        recreate ? 0 : Resolve(d.spec().strategy().rolling_update().max_unavailable(), "25%", replicas, false);
    if (!recreate && surge == 0 && unavail == 0) unavail = 1;
    bool progressed = false;
    cur_key_ = key;
    cur_replicas_ = replicas;
    cur_max_ = replicas + surge;

    std::vector<ReplicaSet*> olds;
    for (size_t i = 0; i < all.size(); i++)
      if (int(i) != new_idx) olds.push_back(&all[i]);

    ReplicaSet* nrs = new_idx >= 0 ? &all[new_idx] : nullptr;
    // An old template coming back (rollback) becomes the newest revision.
    if (nrs != nullptr && Revision(*nrs) <= max_old_rev && !d.spec().paused()) {
      (*nrs->mutable_metadata()->mutable_annotations())[kRevisionAnnotation] = std::to_string(max_old_rev + 1);
      RETURN_IF_ERROR(Write(nrs));
    }

    if (!recreate && IsScalingEvent(all, replicas)) {
      // The Deployment was scaled while more than one ReplicaSet is active
      // (mid-rollout or paused): spread the change over them in proportion
      // to their sizes, as Kubernetes does; the rollout continues afterwards.
      RETURN_IF_ERROR(ScaleProportionally(*obj, &all, nrs, replicas, surge));
      progressed = true;
    } else if (d.spec().paused()) {
      // Paused: only keep the newest ReplicaSet at the deployment's scale.
      if (nrs != nullptr && SpecReplicas(*nrs) != replicas && ActiveCount(olds) == 0) {
        nrs->mutable_spec()->set_replicas(replicas);
        RETURN_IF_ERROR(Write(nrs));
      }
    } else if (recreate) {
      bool old_running = false;
      for (auto* rs : olds) {
        if (SpecReplicas(*rs) != 0) {
          rs->mutable_spec()->set_replicas(0);
          RETURN_IF_ERROR(Write(rs));
          progressed = true;
        }
      }
      for (auto* rs : olds)
        for (const auto& p : pods_->ListNamespace(meta.namespace_())) {
          const auto* ref = objects::ControllerOf(p->pod().metadata());
          if (ref != nullptr && ref->uid() == rs->metadata().uid() && p->pod().status().phase() != "Succeeded" &&
              p->pod().status().phase() != "Failed")
            old_running = true;
        }
      if (!old_running) {
        if (nrs == nullptr) {
          ASSIGN_OR_RETURN(nrs, CreateNewRS(*obj, &all, max_old_rev, replicas));
          progressed = true;
        } else if (SpecReplicas(*nrs) != replicas) {
          nrs->mutable_spec()->set_replicas(replicas);
          RETURN_IF_ERROR(Write(nrs));
          progressed = true;
        }
      }
    } else {
      if (nrs == nullptr) {
        int current = 0;
        for (auto* rs : olds) current += PodsOf(*rs);
        int first = ActiveCount(olds) == 0 ? replicas : std::max(0, std::min(replicas, replicas + surge - current));
        ASSIGN_OR_RETURN(nrs, CreateNewRS(*obj, &all, max_old_rev, first));
        olds.clear();
        for (auto& rs : all)
          if (&rs != nrs) olds.push_back(&rs);
        progressed = true;
      }
      // Scale up the new ReplicaSet within maxSurge.
      int target;
      if (ActiveCount(olds) == 0) {
        target = replicas;
      } else {
        int current = PodsOf(*nrs);
        for (auto* rs : olds) current += PodsOf(*rs);
        int max_total = replicas + surge;
        target = SpecReplicas(*nrs);
        if (target > replicas) {
          target = replicas;
        } else if (current < max_total) {
          target += std::min(max_total - current, replicas - target);
        }
      }
      if (target != SpecReplicas(*nrs)) {
        nrs->mutable_spec()->set_replicas(target);
        RETURN_IF_ERROR(Write(nrs));
        progressed = true;
      }
      // Scale down old ReplicaSets within maxUnavailable.
      int all_pods = SpecReplicas(*nrs);
      for (auto* rs : olds) all_pods += SpecReplicas(*rs);
      int min_available = replicas - unavail;
      int new_unavailable = std::max(0, SpecReplicas(*nrs) - nrs->status().available_replicas());
      int max_scaled_down = all_pods - min_available - new_unavailable;
      if (max_scaled_down > 0) {
        // First the old pods that are not available anyway.
        for (auto* rs : olds) {
          if (max_scaled_down <= 0) break;
          int unhealthy = SpecReplicas(*rs) - rs->status().available_replicas();
          int n = std::min(max_scaled_down, std::max(0, unhealthy));
          if (n > 0) {
            rs->mutable_spec()->set_replicas(SpecReplicas(*rs) - n);
            RETURN_IF_ERROR(Write(rs));
            max_scaled_down -= n;
            progressed = true;
          }
        }
        int available = nrs->status().available_replicas();
        for (auto* rs : olds) available += std::min(rs->status().available_replicas(), SpecReplicas(*rs));
        int can = available - min_available;
        for (auto* rs : olds) {
          if (can <= 0) break;
          int n = std::min(can, SpecReplicas(*rs));
          if (n > 0) {
            rs->mutable_spec()->set_replicas(SpecReplicas(*rs) - n);
            RETURN_IF_ERROR(Write(rs));
            can -= n;
            progressed = true;
          }
        }
      }
    }
    RETURN_IF_ERROR(Cleanup(d, all, nrs));
    return SyncStatus(*obj, all, nrs, replicas, unavail, progressed);
  }

 private:
  static int ActiveCount(const std::vector<ReplicaSet*>& rss) {
    int n = 0;
    for (auto* rs : rss) n += SpecReplicas(*rs) > 0 || rs->status().replicas() > 0;
    return n;
  }

  // Any active ReplicaSet stamped with a desired size other than the
  // Deployment's: the Deployment was scaled since.
  static bool IsScalingEvent(const std::vector<ReplicaSet>& all, int replicas) {
    int active = 0;
    bool differs = false;
    for (const auto& rs : all) {
      if (SpecReplicas(rs) == 0) continue;
      active++;
      int want = AnnotatedDesired(rs);
      if (want >= 0 && want != replicas) differs = true;
    }
    return active > 1 && differs;
  }

  absl::Status ScaleProportionally(const Object& dobj, std::vector<ReplicaSet>* all, ReplicaSet* nrs, int replicas,
                                   int surge) {
    std::vector<ReplicaSet*> active;
    int sum = 0;
    for (auto& rs : *all)
      if (SpecReplicas(rs) > 0) {
        active.push_back(&rs);
        sum += SpecReplicas(rs);
      }
    // The new ReplicaSet is full and available: the old ones just go away.
    int allowed = replicas + surge;
    if (nrs != nullptr && SpecReplicas(*nrs) >= replicas && nrs->status().available_replicas() >= replicas) allowed = replicas;
    int to_add = allowed - sum;
    std::map<const ReplicaSet*, int> next;
    for (auto* rs : active) next[rs] = SpecReplicas(*rs);
    if (to_add != 0 && sum > 0) {
      // Largest first; newer first when growing, older first when shrinking.
      std::sort(active.begin(), active.end(), [to_add](const ReplicaSet* a, const ReplicaSet* b) {
        if (SpecReplicas(*a) != SpecReplicas(*b)) return SpecReplicas(*a) > SpecReplicas(*b);
        return to_add > 0 ? a->metadata().creation_timestamp() > b->metadata().creation_timestamp()
                          : a->metadata().creation_timestamp() < b->metadata().creation_timestamp();
      });
      int added = 0;
      for (auto* rs : active) {
        int share = int(std::lround(double(to_add) * SpecReplicas(*rs) / sum));
        // Never past the total change, never below zero.
        if (to_add > 0) share = std::min(share, to_add - added);
        else share = std::max({share, to_add - added, -SpecReplicas(*rs)});
        next[rs] += share;
        added += share;
      }
      // Rounding leftovers go to the largest ReplicaSet (or, shrinking, to
      // whichever still has pods).
      for (auto* rs : active) {
        if (added == to_add) break;
        int rest = to_add - added;
        if (rest < 0) rest = std::max(rest, -next[rs]);
        next[rs] += rest;
        added += rest;
      }
    }
    for (auto& rs : *all) {
      if (SpecReplicas(rs) == 0) continue;
      int n = next[&rs];
      bool resize = n != SpecReplicas(rs);
      if (!resize && AnnotatedDesired(rs) == replicas) continue;
      int old = SpecReplicas(rs);
      rs.mutable_spec()->set_replicas(n);
      RETURN_IF_ERROR(Write(&rs));
      if (resize)
        ctx_.events->Event(RefTo(dobj), "Normal", "ScalingReplicaSet",
                           absl::StrCat("Scaled ", n > old ? "up" : "down", " replica set ", rs.metadata().name(),
                                        " from ", old, " to ", n));
    }
    return absl::OkStatus();
  }

  // Updates a ReplicaSet, stamped with the Deployment's current size (the
  // mark IsScalingEvent compares against), and expects the cache to show it.
  absl::Status Write(ReplicaSet* rs) {
    auto* ann = rs->mutable_metadata()->mutable_annotations();
    (*ann)[kDesiredReplicasAnnotation] = std::to_string(cur_replicas_);
    (*ann)[kMaxReplicasAnnotation] = std::to_string(cur_max_);
    auto r = ctx_.api->Update("replicasets", rs->metadata().namespace_(), objects::Wrap(*rs));
    if (!r.ok()) return r.status();
    *rs = r->replica_set();
    expectations_.Expect(cur_key_, rs->metadata().name(), ResourceVersion(rs->metadata()));
    return absl::OkStatus();
  }

  absl::StatusOr<ReplicaSet*> CreateNewRS(const Object& dobj, std::vector<ReplicaSet>* all, int64_t max_old_rev,
                                          int replicas) {
    const Deployment& d = dobj.deployment();
    int32_t collisions = d.status().has_collision_count() ? d.status().collision_count() : 0;
    for (int attempt = 0; attempt < 5; attempt++, collisions++) {
      std::string hash = TemplateHash(d.spec().template_(), collisions);
      ReplicaSet rs;
      rs.set_api_version("apps/v1");
      rs.set_kind("ReplicaSet");
      auto* m = rs.mutable_metadata();
      m->set_namespace_(d.metadata().namespace_());
      m->set_name(d.metadata().name() + "-" + hash);
      *m->mutable_labels() = d.spec().template_().metadata().labels();
      (*m->mutable_labels())[kPodTemplateHashLabel] = hash;
      (*m->mutable_annotations())[kRevisionAnnotation] = std::to_string(max_old_rev + 1);
      (*m->mutable_annotations())[kDesiredReplicasAnnotation] = std::to_string(cur_replicas_);
      (*m->mutable_annotations())[kMaxReplicasAnnotation] = std::to_string(cur_max_);
      *m->add_owner_references() = objects::MakeControllerRef("apps/v1", "Deployment", d.metadata());
      rs.mutable_spec()->set_replicas(replicas);
      rs.mutable_spec()->set_min_ready_seconds(d.spec().min_ready_seconds());
      *rs.mutable_spec()->mutable_selector() = d.spec().selector();
      (*rs.mutable_spec()->mutable_selector()->mutable_match_labels())[kPodTemplateHashLabel] = hash;
      *rs.mutable_spec()->mutable_template_() = d.spec().template_();
      (*rs.mutable_spec()->mutable_template_()->mutable_metadata()->mutable_labels())[kPodTemplateHashLabel] = hash;
      auto r = ctx_.api->Create("replicasets", m->namespace_(), objects::Wrap(rs));
      if (r.ok()) {
        ctx_.events->Event(RefTo(dobj), "Normal", "ScalingReplicaSet",
                           absl::StrCat("Scaled up replica set ", m->name(), " to ", replicas));
        expectations_.Expect(cur_key_, m->name(), ResourceVersion(r->replica_set().metadata()));
        all->push_back(r->replica_set());
        return &all->back();
      }
      if (r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
      // Same name, different template (or not ours): a hash collision.
      auto existing = ctx_.api->Get("replicasets", m->namespace_(), m->name());
      if (existing.ok()) {
        const auto* ref = objects::ControllerOf(existing->replica_set().metadata());
        if (ref != nullptr && ref->uid() == d.metadata().uid() &&
            Deterministic(WithoutHash(existing->replica_set().spec().template_())) ==
                Deterministic(WithoutHash(d.spec().template_()))) {
          all->push_back(existing->replica_set());
          return &all->back();
        }
      }
    }
    return absl::AbortedError("pod-template-hash collisions for deployment " + d.metadata().name());
  }

  absl::Status Cleanup(const Deployment& d, const std::vector<ReplicaSet>& all, const ReplicaSet* nrs) {
    int limit = d.spec().has_revision_history_limit() ? d.spec().revision_history_limit() : 10;
    std::vector<const ReplicaSet*> idle;
    for (const auto& rs : all)
      if (&rs != nrs && SpecReplicas(rs) == 0 && rs.status().replicas() == 0 && rs.metadata().deletion_timestamp().empty())
        idle.push_back(&rs);
    if (int(idle.size()) <= limit) return absl::OkStatus();
    std::sort(idle.begin(), idle.end(), [](const ReplicaSet* a, const ReplicaSet* b) { return Revision(*a) < Revision(*b); });
    for (size_t i = 0; i + limit < idle.size(); i++) {
      auto r = ctx_.api->Delete("replicasets", idle[i]->metadata().namespace_(), idle[i]->metadata().name());
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
      expectations_.Drop(objects::Key(d.metadata()), idle[i]->metadata().name());
    }
    return absl::OkStatus();
  }

  absl::Status Rollback(const Object& dobj) {
    const Deployment& d = dobj.deployment();
    int64_t to = 0;
    (void)absl::SimpleAtoi(d.metadata().annotations().at(kRollbackAnnotation), &to);
    std::vector<ReplicaSet> all;
    for (const auto& o : rss_->ListNamespace(d.metadata().namespace_())) {
      const auto* ref = objects::ControllerOf(o->replica_set().metadata());
      if (ref != nullptr && ref->uid() == d.metadata().uid()) all.push_back(o->replica_set());
    }
    std::sort(all.begin(), all.end(), [](const ReplicaSet& a, const ReplicaSet& b) { return Revision(a) > Revision(b); });
    const ReplicaSet* target = nullptr;
    if (to == 0) {
      if (all.size() >= 2) target = &all[1];  // the previous revision
    } else {
      for (const auto& rs : all)
        if (Revision(rs) == to) target = &rs;
    }
    Object upd = dobj;
    auto* ud = upd.mutable_deployment();
    ud->mutable_metadata()->mutable_annotations()->erase(kRollbackAnnotation);
    if (target != nullptr) {
      *ud->mutable_spec()->mutable_template_() = WithoutHash(target->spec().template_());
      ctx_.events->Event(RefTo(dobj), "Normal", "DeploymentRollback",
                         absl::StrCat("Rolled back deployment \"", d.metadata().name(), "\" to revision ",
                                      Revision(*target)));
    } else {
      ctx_.events->Event(RefTo(dobj), "Warning", "DeploymentRollbackRevisionNotFound",
                         "Unable to find the revision to rollback to.");
    }
    auto r = ctx_.api->Update("deployments", d.metadata().namespace_(), upd);
    return r.ok() ? absl::OkStatus() : r.status();
  }

  absl::Status SyncStatus(const Object& dobj, const std::vector<ReplicaSet>& all, const ReplicaSet* nrs,
                          int replicas, int unavail, bool progressed) {
    const Deployment& d = dobj.deployment();
    Deployment::Status st;
    int old_pods = 0;
    for (const auto& rs : all) {
      st.set_replicas(st.replicas() + rs.status().replicas());
      st.set_ready_replicas(st.ready_replicas() + rs.status().ready_replicas());
      st.set_available_replicas(st.available_replicas() + rs.status().available_replicas());
      if (&rs != nrs) old_pods += rs.status().replicas() + SpecReplicas(rs);
    }
    if (nrs != nullptr) st.set_updated_replicas(nrs->status().replicas());
    st.set_unavailable_replicas(std::max(0, replicas - st.available_replicas()));
    st.set_observed_generation(d.metadata().generation());
    if (d.status().has_collision_count()) st.set_collision_count(d.status().collision_count());
    *st.mutable_conditions() = d.status().conditions();
    if (st.available_replicas() >= replicas - unavail) {
      objects::SetCondition(st.mutable_conditions(), "Available", "True", "MinimumReplicasAvailable",
                            "Deployment has minimum availability.");
    } else {
      objects::SetCondition(st.mutable_conditions(), "Available", "False", "MinimumReplicasUnavailable",
                            "Deployment does not have minimum availability.");
    }
    std::string rs_name = nrs != nullptr ? nrs->metadata().name() : "";
    bool complete = nrs != nullptr && st.updated_replicas() == replicas && st.replicas() == replicas &&
                    st.available_replicas() == replicas && old_pods == 0 && nrs->status().observed_generation() >=
                    nrs->metadata().generation();
    int deadline = d.spec().has_progress_deadline_seconds() ? d.spec().progress_deadline_seconds() : 600;
    const auto* prog = objects::FindCondition(st.conditions(), "Progressing");
    if (complete) {
      objects::SetCondition(st.mutable_conditions(), "Progressing", "True", "NewReplicaSetAvailable",
                            absl::StrCat("ReplicaSet \"", rs_name, "\" has successfully progressed."));
    } else if (progressed || prog == nullptr || prog->reason() == "NewReplicaSetAvailable") {
      objects::SetCondition(st.mutable_conditions(), "Progressing", "True", "ReplicaSetUpdated",
                            absl::StrCat("ReplicaSet \"", rs_name, "\" is progressing."));
      for (auto& c : *st.mutable_conditions())
        if (c.type() == "Progressing") c.set_last_update_time(objects::Now());
    } else if (prog->status() == "True" && !d.spec().paused() &&
               objects::ParseTime(prog->last_update_time().empty() ? prog->last_transition_time()
                                                                   : prog->last_update_time()) +
                       absl::Seconds(deadline) < absl::Now()) {
      objects::SetCondition(st.mutable_conditions(), "Progressing", "False", "ProgressDeadlineExceeded",
                            absl::StrCat("ReplicaSet \"", rs_name, "\" has timed out progressing."));
    }
    if (!complete) queue_.AddAfter(objects::Key(d.metadata()), std::chrono::seconds(std::min(deadline, 30) + 1));
    Object upd = dobj;
    bool changed = !google::protobuf::util::MessageDifferencer::Equals(st, d.status());
    std::string rev = nrs != nullptr ? nrs->metadata().annotations().count(kRevisionAnnotation)
                                           ? nrs->metadata().annotations().at(kRevisionAnnotation)
                                           : ""
                                     : "";
    auto ann = d.metadata().annotations().find(kRevisionAnnotation);
    if (!rev.empty() && (ann == d.metadata().annotations().end() || ann->second != rev)) {
      (*upd.mutable_deployment()->mutable_metadata()->mutable_annotations())[kRevisionAnnotation] = rev;
      auto r = ctx_.api->Update("deployments", d.metadata().namespace_(), upd);
      if (!r.ok()) return r.status();
      upd = *r;
      changed = true;
    }
    if (!changed) return absl::OkStatus();
    *upd.mutable_deployment()->mutable_status() = st;
    auto r = ctx_.api->UpdateStatus("deployments", d.metadata().namespace_(), upd);
    if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
    return absl::OkStatus();
  }

  Informer* deps_;
  Informer* rss_;
  Informer* pods_;
  WriteExpectations expectations_;
  // The Deployment being reconciled (each key is reconciled by one worker at
  // a time, but two workers may run different keys: these are per call).
  static thread_local std::string cur_key_;
  static thread_local int cur_replicas_;
  static thread_local int cur_max_;
};

thread_local std::string DeploymentController::cur_key_;
thread_local int DeploymentController::cur_replicas_ = 0;
thread_local int DeploymentController::cur_max_ = 0;

}  // namespace

std::unique_ptr<Controller> NewDeploymentController(Context ctx) {
  return std::make_unique<DeploymentController>(std::move(ctx));
}

}  // namespace skiff::controllers
