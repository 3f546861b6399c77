// ServiceAccount controller: every active namespace has a ServiceAccount
// named "default"; it comes back if deleted.
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

class ServiceAccountController : public Controller {
 public:
  explicit ServiceAccountController(Context ctx) : Controller(std::move(ctx)) {
    nss_ = ctx_.informers->For("namespaces");
    sas_ = ctx_.informers->For("serviceaccounts");
    nss_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                      [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); }, nullptr});
    sas_->AddHandler({nullptr, nullptr, [this](const ObjectPtr& o) {
                        EnqueueKey(o->service_account().metadata().namespace_());
                      }});
  }
  std::string Name() const override { return "serviceaccount"; }

  absl::Status Reconcile(const std::string& ns) override {
    auto obj = nss_->Get(ns);
    if (obj == nullptr || !obj->namespace_().metadata().deletion_timestamp().empty()) return absl::OkStatus();
    if (sas_->Get(ns + "/default") != nullptr) return absl::OkStatus();
    api::v1::ServiceAccount sa;
    sa.set_api_version("v1");
    sa.set_kind("ServiceAccount");
    sa.mutable_metadata()->set_namespace_(ns);
    sa.mutable_metadata()->set_name("default");
    auto r = ctx_.api->Create("serviceaccounts", ns, objects::Wrap(sa));
    if (r.ok() || r.status().code() == absl::StatusCode::kAlreadyExists) return absl::OkStatus();
    // A namespace being deleted refuses new content; that is fine.
    if (r.status().code() == absl::StatusCode::kPermissionDenied || r.status().code() == absl::StatusCode::kNotFound)
      return absl::OkStatus();
    return r.status();
  }

 private:
  Informer* nss_;
  Informer* sas_;
};

}  // namespace

std::unique_ptr<Controller> NewServiceAccountController(Context ctx) {
  return std::make_unique<ServiceAccountController>(std::move(ctx));
}

}  // namespace skiff::controllers
