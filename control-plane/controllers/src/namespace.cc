// Namespace controller: a namespace being deleted (deletionTimestamp set,
// phase Terminating) has its contents deleted first; once nothing is left
// its "kubernetes" finalizer is removed and the API server deletes it.
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

using api::v1::Object;

class NamespaceController : public Controller {
 public:
  explicit NamespaceController(Context ctx) : Controller(std::move(ctx)) {
    nss_ = ctx_.informers->For("namespaces");
    nss_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                      [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); },
                      [this](const ObjectPtr& o) { Enqueue(o); }});
  }
  std::string Name() const override { return "namespace"; }

  absl::Status Reconcile(const std::string& key) override {
    auto obj = nss_->Get(key);
    if (obj != nullptr && obj->namespace_().metadata().deletion_timestamp().empty()) return absl::OkStatus();
    // Deleted outright (no finalizer) or terminating: empty it.
    ASSIGN_OR_RETURN(int remaining, DeleteContents(key));
    if (remaining > 0) {
      queue_.AddAfter(key, std::chrono::milliseconds(500));
      return absl::OkStatus();
    }
    if (obj == nullptr) return absl::OkStatus();
    auto cur = ctx_.api->Get("namespaces", "", key);
    if (!cur.ok()) return cur.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : cur.status();
    Object upd = *cur;
    auto* spec = upd.mutable_namespace_()->mutable_spec();
    bool had = false;
    for (int i = spec->finalizers_size() - 1; i >= 0; i--)
      if (spec->finalizers(i) == "kubernetes") {
        spec->mutable_finalizers()->DeleteSubrange(i, 1);
        had = true;
      }
    if (had) {
      auto r = ctx_.api->Update("namespaces", "", upd);
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
    }
    // A server that does not delete on finalization still gets a final Delete.
    auto again = ctx_.api->Get("namespaces", "", key);
    if (again.ok() && again->namespace_().spec().finalizers().empty() &&
        again->namespace_().metadata().finalizers().empty())
      (void)ctx_.api->Delete("namespaces", "", key);
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<int> DeleteContents(const std::string& ns) {
    int remaining = 0;
    for (const auto& res : objects::AllResources()) {
      if (!objects::IsNamespaced(res)) continue;
      auto list = ctx_.api->List(res, ns);
      if (!list.ok()) {
        if (list.status().code() == absl::StatusCode::kNotFound) continue;
        return list.status();
      }
      for (const auto& item : list->items()) {
        remaining++;
        const auto& m = objects::Meta(item);
        client::DeleteOptions opts;
        if (item.has_pod()) {
          // A pod already terminating past its grace period, or never
          // scheduled, has no kubelet to finish it: force it.
          const auto& pod = item.pod();
          int64_t grace = m.has_deletion_grace_period_seconds() ? m.deletion_grace_period_seconds() : 30;
          if (pod.spec().node_name().empty() ||
              (!m.deletion_timestamp().empty() &&
               objects::ParseTime(m.deletion_timestamp()) + absl::Seconds(grace + 5) < absl::Now()))
            opts.grace_period_seconds = 0;
        }
        if (!m.deletion_timestamp().empty() && !opts.grace_period_seconds.has_value()) continue;
        auto r = ctx_.api->Delete(res, ns, m.name(), opts);
        if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
      }
    }
    return remaining;
  }

  Informer* nss_;
};

}  // namespace

std::unique_ptr<Controller> NewNamespaceController(Context ctx) {
  return std::make_unique<NamespaceController>(std::move(ctx));
}

}  // namespace skiff::controllers
