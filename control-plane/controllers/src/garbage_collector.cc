// Garbage collector: deletes objects whose owners (by ownerReferences uid)
// are all gone (background propagation), deletes the dependents of an owner
// carrying the foregroundDeletion finalizer before releasing it, and removes
// the owner reference from the dependents of an owner carrying the orphan
// finalizer.
#include <map>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

using api::v1::Object;

const char* const kWatched[] = {"pods", "replicasets", "deployments", "endpointslices", "services",
                                "configmaps", "secrets", "serviceaccounts"};

std::string ItemKey(const std::string& resource, const std::string& key) { return resource + "|" + key; }

bool HasFinalizer(const api::v1::ObjectMeta& m, const std::string& f) {
  for (const auto& x : m.finalizers())
    if (x == f) return true;
  return false;
}

class GarbageCollector : public Controller {
 public:
  explicit GarbageCollector(Context ctx) : Controller(std::move(ctx)) {
    for (const char* res : kWatched) {
      std::string r = res;
      Informer* inf = ctx_.informers->For(r);
      informers_[r] = inf;
      inf->AddHandler({[this, r](const ObjectPtr& o) { OnChange(r, o, false); },
                       [this, r](const ObjectPtr&, const ObjectPtr& o) { OnChange(r, o, false); },
                       [this, r](const ObjectPtr& o) { OnChange(r, o, true); }});
    }
  }
  std::string Name() const override { return "garbagecollector"; }

  void OnChange(const std::string& resource, const ObjectPtr& obj, bool deleted) {
    const auto& m = objects::Meta(*obj);
    std::string item = ItemKey(resource, objects::Key(m));
    std::vector<std::string> dependents;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Refresh the reverse index (owner uid -> dependents).
      auto old = owners_of_.find(item);
      if (old != owners_of_.end()) {
        for (const auto& uid : old->second) dependents_[uid].erase(item);
        owners_of_.erase(old);
      }
      if (!deleted) {
        for (const auto& ref : m.owner_references()) {
          dependents_[ref.uid()].insert(item);
          owners_of_[item].insert(ref.uid());
        }
      }
      if (deleted || !m.deletion_timestamp().empty()) {
        auto it = dependents_.find(m.uid());
        if (it != dependents_.end()) dependents.assign(it->second.begin(), it->second.end());
      }
    }
    if (!deleted) EnqueueKey(item);
    for (const auto& d : dependents) EnqueueKey(d);
    // A dependent going away may unblock its owner's foreground deletion.
    if (deleted)
      for (const auto& ref : m.owner_references()) {
        std::string res = objects::ResourceForKind(ref.kind());
        if (!res.empty()) EnqueueKey(ItemKey(res, objects::Key(objects::IsNamespaced(res) ? m.namespace_() : "", ref.name())));
      }
  }

  absl::Status Reconcile(const std::string& item) override {
    auto bar = item.find('|');
    std::string resource = item.substr(0, bar), key = item.substr(bar + 1);
    auto it = informers_.find(resource);
    if (it == informers_.end()) return absl::OkStatus();
    auto obj = it->second->Get(key);
    if (obj == nullptr) return absl::OkStatus();
    const auto& m = objects::Meta(*obj);
    if (!m.deletion_timestamp().empty()) {
      if (HasFinalizer(m, "orphan")) return Orphan(resource, *obj);
      if (HasFinalizer(m, "foregroundDeletion")) return Foreground(resource, *obj);
    }
    if (m.owner_references().empty()) return absl::OkStatus();
    int missing = 0;
    std::set<std::string> dangling;
    for (const auto& ref : m.owner_references()) {
      ASSIGN_OR_RETURN(bool exists, OwnerExists(ref, m.namespace_()));
      if (!exists) {
        missing++;
        dangling.insert(ref.uid());
      }
    }
    if (missing == 0) return absl::OkStatus();
    if (missing == m.owner_references_size()) {
      if (!m.deletion_timestamp().empty()) return absl::OkStatus();
      // The cache may be behind (an orphaning owner may just have removed
      // its reference): decide on the live object, and delete only that
      // exact version.
      auto live = ctx_.api->Get(resource, m.namespace_(), m.name());
      if (!live.ok()) return live.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : live.status();
      const auto& lm = objects::Meta(*live);
      if (lm.uid() != m.uid() || lm.owner_references_size() != m.owner_references_size()) {
        queue_.AddAfter(item, std::chrono::milliseconds(100));
        return absl::OkStatus();
      }
      for (int i = 0; i < lm.owner_references_size(); i++)
        if (lm.owner_references(i).uid() != m.owner_references(i).uid()) {
          queue_.AddAfter(item, std::chrono::milliseconds(100));
          return absl::OkStatus();
        }
      client::DeleteOptions opts;
      opts.precondition_uid = m.uid();
      opts.precondition_resource_version = lm.resource_version();
      opts.propagation_policy = "Background";
      auto r = ctx_.api->Delete(resource, m.namespace_(), m.name(), opts);
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
      return absl::OkStatus();
    }
    // Some owners remain: drop only the references to the missing ones.
    return RemoveRefs(resource, *obj, dangling);
  }

 private:
  absl::StatusOr<bool> OwnerExists(const api::v1::OwnerReference& ref, const std::string& ns) {
    std::string res = objects::ResourceForKind(ref.kind());
    if (res.empty()) return true;  // a kind we do not know: never collect on its account
    std::string owner_ns = objects::IsNamespaced(res) ? ns : "";
    auto inf = informers_.find(res);
    if (inf != informers_.end()) {
      auto o = inf->second->Get(objects::Key(owner_ns, ref.name()));
      if (o != nullptr && objects::Meta(*o).uid() == ref.uid()) return true;
    }
    // Not in the cache (or another uid): ask the API, the cache may lag.
    auto live = ctx_.api->Get(res, owner_ns, ref.name());
    if (live.ok()) return objects::Meta(*live).uid() == ref.uid();
    if (live.status().code() == absl::StatusCode::kNotFound) return false;
    return live.status();
  }

  std::vector<std::string> DependentsOf(const std::string& uid) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = dependents_.find(uid);
    if (it == dependents_.end()) return {};
    return {it->second.begin(), it->second.end()};
  }

  absl::Status RemoveRefs(const std::string& resource, const Object& obj, const std::set<std::string>& uids) {
    for (int attempt = 0; attempt < 3; attempt++) {
      const auto& m = objects::Meta(obj);
      auto cur = ctx_.api->Get(resource, m.namespace_(), m.name());
      if (!cur.ok()) return cur.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : cur.status();
      Object upd = *cur;
      auto* refs = objects::MutableMeta(&upd)->mutable_owner_references();
      int before = refs->size();
      for (int i = refs->size() - 1; i >= 0; i--)
        if (uids.count(refs->Get(i).uid())) refs->DeleteSubrange(i, 1);
      if (refs->size() == before) return absl::OkStatus();
      auto r = ctx_.api->Update(resource, m.namespace_(), upd);
      if (r.ok()) return absl::OkStatus();
      if (r.status().code() != absl::StatusCode::kAborted) return r.status();
    }
    return absl::AbortedError("conflict removing owner references");
  }

  absl::Status RemoveFinalizer(const std::string& resource, const Object& obj, const std::string& fin) {
    for (int attempt = 0; attempt < 3; attempt++) {
      const auto& m = objects::Meta(obj);
      auto cur = ctx_.api->Get(resource, m.namespace_(), m.name());
      if (!cur.ok()) return cur.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : cur.status();
      Object upd = *cur;
      auto* fins = objects::MutableMeta(&upd)->mutable_finalizers();
      for (int i = fins->size() - 1; i >= 0; i--)
        if (fins->Get(i) == fin) fins->DeleteSubrange(i, 1);
      auto r = ctx_.api->Update(resource, m.namespace_(), upd);
      if (r.ok() || r.status().code() == absl::StatusCode::kNotFound) return absl::OkStatus();
      if (r.status().code() != absl::StatusCode::kAborted) return r.status();
    }
    return absl::AbortedError("conflict removing finalizer");
  }

  absl::Status Orphan(const std::string& resource, const Object& owner) {
    const auto& m = objects::Meta(owner);
    for (const auto& d : DependentsOf(m.uid())) {
      auto bar = d.find('|');
      std::string res = d.substr(0, bar);
      auto dep = informers_[res]->Get(d.substr(bar + 1));
      if (dep == nullptr) continue;
      RETURN_IF_ERROR(RemoveRefs(res, *dep, {m.uid()}));
    }
    return RemoveFinalizer(resource, owner, "orphan");
  }

  absl::Status Foreground(const std::string& resource, const Object& owner) {
    const auto& m = objects::Meta(owner);
    int blocking = 0;
    for (const auto& d : DependentsOf(m.uid())) {
      auto bar = d.find('|');
      std::string res = d.substr(0, bar);
      auto dep = informers_[res]->Get(d.substr(bar + 1));
      if (dep == nullptr) continue;
      const auto& dm = objects::Meta(*dep);
      bool blocks = false;
      for (const auto& ref : dm.owner_references())
        if (ref.uid() == m.uid() && ref.has_block_owner_deletion() && ref.block_owner_deletion()) blocks = true;
      if (blocks) blocking++;
      if (dm.deletion_timestamp().empty()) {
        client::DeleteOptions opts;
        opts.propagation_policy = "Foreground";
        opts.precondition_uid = dm.uid();
        auto r = ctx_.api->Delete(res, dm.namespace_(), dm.name(), opts);
        if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
      }
    }
    if (blocking > 0) {
      queue_.AddAfter(ItemKey(resource, objects::Key(m)), std::chrono::milliseconds(500));
      return absl::OkStatus();
    }
    return RemoveFinalizer(resource, owner, "foregroundDeletion");
  }

  std::map<std::string, Informer*> informers_;
  std::mutex mu_;
  std::map<std::string, std::set<std::string>> dependents_;  // owner uid -> items
  std::map<std::string, std::set<std::string>> owners_of_;   // item -> owner uids
};

}  // namespace

std::unique_ptr<Controller> NewGarbageCollector(Context ctx) {
  return std::make_unique<GarbageCollector>(std::move(ctx));
}

}  // namespace skiff::controllers
