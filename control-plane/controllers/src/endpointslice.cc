// EndpointSlice controller: for every Service with a selector, the pods it
// selects that have an IP become endpoints (ready / serving / terminating),
// grouped by the ports they resolve to (a named targetPort can differ per
// pod), at most 100 endpoints per slice. Slices are named
// <service>-<hash of ports>[-<n>] and labelled kubernetes.io/service-name.
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {
namespace {

using api::v1::EndpointSlice;
using api::v1::Object;
using api::v1::Pod;
using api::v1::Service;

constexpr int kMaxEndpointsPerSlice = 100;

// Resolves a service port against a pod: a number, or a container port name.
bool ResolvePort(const api::v1::ServicePort& sp, const Pod& pod, int32_t* out) {
  const std::string& tp = sp.target_port();
  if (tp.empty()) {
    *out = sp.port();
    return true;
  }
  int32_t n;
  if (absl::SimpleAtoi(tp, &n)) {
    *out = n;
    return true;
  }
  std::string proto = sp.protocol().empty() ? "TCP" : sp.protocol();
  for (const auto& c : pod.spec().containers())
    for (const auto& p : c.ports())
      if (p.name() == tp && (p.protocol().empty() ? "TCP" : p.protocol()) == proto) {
        *out = p.container_port();
        return true;
      }
  return false;
}

class EndpointSliceController : public Controller {
 public:
  explicit EndpointSliceController(Context ctx) : Controller(std::move(ctx)) {
    svcs_ = ctx_.informers->For("services");
    pods_ = ctx_.informers->For("pods");
    slices_ = ctx_.informers->For("endpointslices");
    svcs_->AddHandler({[this](const ObjectPtr& o) { Enqueue(o); },
                       [this](const ObjectPtr&, const ObjectPtr& o) { Enqueue(o); },
                       [this](const ObjectPtr& o) { Enqueue(o); }});
    pods_->AddHandler({[this](const ObjectPtr& o) { OnPod(nullptr, o); },
                       [this](const ObjectPtr& old, const ObjectPtr& o) { OnPod(old, o); },
                       [this](const ObjectPtr& o) { OnPod(nullptr, o); }});
    auto on_slice = [this](const ObjectPtr& o) {
      const auto& m = o->endpoint_slice().metadata();
      auto it = m.labels().find(kManagedByLabel);
      auto svc = m.labels().find(kServiceNameLabel);
      if (it != m.labels().end() && it->second == kManagedByValue && svc != m.labels().end())
        EnqueueKey(objects::Key(m.namespace_(), svc->second));
    };
    slices_->AddHandler({on_slice, [on_slice](const ObjectPtr&, const ObjectPtr& o) { on_slice(o); }, on_slice});
  }
  std::string Name() const override { return "endpointslice"; }

  void OnPod(const ObjectPtr& old, const ObjectPtr& obj) {
    const auto& ns = obj->pod().metadata().namespace_();
    for (const auto& s : svcs_->ListNamespace(ns)) {
      const auto& sel = s->service().spec().selector();
      if (sel.empty()) continue;
      auto selector = objects::Selector::FromMap(sel);
      if (selector.Matches(obj->pod().metadata().labels()) ||
          (old != nullptr && selector.Matches(old->pod().metadata().labels())))
        Enqueue(s);
    }
  }

  absl::Status Reconcile(const std::string& key) override {
    std::string ns, name;
    objects::SplitKey(key, &ns, &name);
    auto svc_obj = svcs_->Get(key);
    // Existing slices we manage for this service.
    std::map<std::string, EndpointSlice> existing;
    for (const auto& o : slices_->ListNamespace(ns)) {
      const auto& m = o->endpoint_slice().metadata();
      auto sn = m.labels().find(kServiceNameLabel);
      auto mb = m.labels().find(kManagedByLabel);
      if (sn != m.labels().end() && sn->second == name && mb != m.labels().end() && mb->second == kManagedByValue)
        existing[m.name()] = o->endpoint_slice();
    }
    Overlay(key, &existing);
    std::map<std::string, EndpointSlice> desired;
    if (svc_obj != nullptr && !svc_obj->service().spec().selector().empty() &&
        svc_obj->service().metadata().deletion_timestamp().empty())
      desired = Desired(*svc_obj);

    for (auto& [sname, want] : desired) {
      auto it = existing.find(sname);
      if (it == existing.end()) {
        auto r = ctx_.api->Create("endpointslices", ns, objects::Wrap(want));
        if (!r.ok() && r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
        if (r.ok()) {
          Wrote(key, sname, r->endpoint_slice());
          continue;
        }
        auto cur = ctx_.api->Get("endpointslices", ns, sname);
        if (!cur.ok()) return cur.status();
        it = existing.emplace(sname, cur->endpoint_slice()).first;
      }
      EndpointSlice& have = it->second;
      bool same = have.address_type() == want.address_type() &&
                  google::protobuf::util::MessageDifferencer::Equals(Endpoints(have), Endpoints(want)) &&
                  google::protobuf::util::MessageDifferencer::Equals(Ports(have), Ports(want)) &&
                  have.metadata().labels().size() == want.metadata().labels().size();
      if (!same) {
        EndpointSlice upd = want;
        upd.mutable_metadata()->set_resource_version(have.metadata().resource_version());
        upd.mutable_metadata()->set_uid(have.metadata().uid());
        auto r = ctx_.api->Update("endpointslices", ns, objects::Wrap(upd));
        if (!r.ok()) {
          Forget(key, sname);
          return r.status();
        }
        Wrote(key, sname, r->endpoint_slice());
      }
      existing.erase(it);
    }
    for (const auto& [sname, s] : existing) {
      auto r = ctx_.api->Delete("endpointslices", ns, sname);
      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) return r.status();
      Wrote(key, sname, std::nullopt);
    }
    return absl::OkStatus();
  }

 private:
  // Like Kubernetes' EndpointSlice tracker: what this controller last wrote
  // for a service, laid over the informer's view until the informer has seen
  // it. Without it a reconcile racing its own earlier writes (the informer
  // not yet showing a slice just created, e.g. "<svc>-empty") leaves a stale
  // slice behind or creates a second one.
  static int64_t Rv(const EndpointSlice& s) {
    int64_t v = 0;
    return absl::SimpleAtoi(s.metadata().resource_version(), &v) ? v : 0;
  }
  void Wrote(const std::string& key, const std::string& slice, std::optional<EndpointSlice> s) {
    std::lock_guard<std::mutex> l(written_mu_);
    written_[key][slice] = Written{std::move(s), absl::Now()};
  }
  void Forget(const std::string& key, const std::string& slice) {
    std::lock_guard<std::mutex> l(written_mu_);
    auto w = written_.find(key);
    if (w != written_.end()) w->second.erase(slice);
  }
  void Overlay(const std::string& key, std::map<std::string, EndpointSlice>* existing) {
    std::lock_guard<std::mutex> l(written_mu_);
    auto w = written_.find(key);
    if (w == written_.end()) return;
    for (auto it = w->second.begin(); it != w->second.end();) {
      auto seen = existing->find(it->first);
      bool caught_up;
      const std::optional<EndpointSlice>& mine = it->second.slice;
      if (!mine) {  // we deleted it
        caught_up = seen == existing->end();
      } else {  // we created or updated it
        caught_up = seen != existing->end() && Rv(seen->second) >= Rv(*mine);
      }
      // Someone else's later change can keep the informer from ever matching
      // ours: the overlay only bridges the informer's usual lag.
      if (caught_up || absl::Now() - it->second.at > absl::Seconds(10)) {
        it = w->second.erase(it);
        continue;
      }
      if (!mine) existing->erase(seen);
      else (*existing)[it->first] = *mine;
      ++it;
    }
    if (w->second.empty()) written_.erase(w);
  }

  static EndpointSlice Endpoints(const EndpointSlice& s) {
    EndpointSlice e;
    *e.mutable_endpoints() = s.endpoints();
    return e;
  }
  static EndpointSlice Ports(const EndpointSlice& s) {
    EndpointSlice e;
    *e.mutable_ports() = s.ports();
    return e;
  }

  std::map<std::string, EndpointSlice> Desired(const Object& svc_obj) {
    const Service& svc = svc_obj.service();
    const auto& ns = svc.metadata().namespace_();
    auto selector = objects::Selector::FromMap(svc.spec().selector());
    bool publish_not_ready = svc.spec().publish_not_ready_addresses();
    // ports signature -> (ports, endpoints)
    struct Group {
      std::vector<api::v1::EndpointPort> ports;
      std::vector<api::v1::Endpoint> endpoints;
      std::string address_type;
    };
    std::map<std::string, Group> groups;
    std::vector<ObjectPtr> pods = pods_->ListNamespace(ns);
    std::sort(pods.begin(), pods.end(),
              [](const ObjectPtr& a, const ObjectPtr& b) { return a->pod().metadata().name() < b->pod().metadata().name(); });
    for (const auto& po : pods) {
      const Pod& pod = po->pod();
      if (!selector.Matches(pod.metadata().labels())) continue;
      if (pod.status().pod_ip().empty() || pod.spec().node_name().empty()) continue;
      if (pod.status().phase() == "Succeeded" || pod.status().phase() == "Failed") continue;
      std::vector<api::v1::EndpointPort> ports;
      std::string sig;
      for (const auto& sp : svc.spec().ports()) {
        int32_t port;
        if (!ResolvePort(sp, pod, &port)) continue;
        api::v1::EndpointPort ep;
        ep.set_name(sp.name());
        ep.set_protocol(sp.protocol().empty() ? "TCP" : sp.protocol());
        ep.set_port(port);
        if (!sp.app_protocol().empty()) ep.set_app_protocol(sp.app_protocol());
        absl::StrAppend(&sig, sp.name(), "/", ep.protocol(), "/", port, ";");
        ports.push_back(ep);
      }
      std::string family = pod.status().pod_ip().find(':') != std::string::npos ? "IPv6" : "IPv4";
      sig = family + ":" + sig;
      auto& g = groups[sig];
      g.ports = ports;
      g.address_type = family;
      api::v1::Endpoint e;
      e.add_addresses(pod.status().pod_ip());
      bool terminating = objects::IsPodTerminating(pod);
      bool ready = objects::IsPodReady(pod);
      e.mutable_conditions()->set_ready(publish_not_ready || (ready && !terminating));
      e.mutable_conditions()->set_serving(publish_not_ready || ready);
      e.mutable_conditions()->set_terminating(terminating);
      e.set_node_name(pod.spec().node_name());
      if (!pod.spec().hostname().empty()) e.set_hostname(pod.spec().hostname());
      auto* ref = e.mutable_target_ref();
      ref->set_kind("Pod");
      ref->set_namespace_(ns);
      ref->set_name(pod.metadata().name());
      ref->set_uid(pod.metadata().uid());
      g.endpoints.push_back(e);
    }
    std::map<std::string, EndpointSlice> out;
    for (auto& [sig, g] : groups) {
      std::string base = svc.metadata().name() + "-" + objects::SafeHash(sig);
      for (size_t start = 0, n = 0; start < g.endpoints.size(); start += kMaxEndpointsPerSlice, n++) {
        EndpointSlice s;
        s.set_api_version("discovery.k8s.io/v1");
        s.set_kind("EndpointSlice");
        auto* m = s.mutable_metadata();
        m->set_namespace_(ns);
        m->set_name(n == 0 ? base : absl::StrCat(base, "-", n));
        (*m->mutable_labels())[kServiceNameLabel] = svc.metadata().name();
        (*m->mutable_labels())[kManagedByLabel] = kManagedByValue;
        *m->add_owner_references() = objects::MakeControllerRef("v1", "Service", svc.metadata());
        s.set_address_type(g.address_type);
        for (const auto& p : g.ports) *s.add_ports() = p;
        for (size_t i = start; i < std::min(g.endpoints.size(), start + kMaxEndpointsPerSlice); i++)
          *s.add_endpoints() = g.endpoints[i];
        out[m->name()] = s;
      }
    }
    if (out.empty()) {
      // An empty slice still tells consumers the service has no endpoints.
      EndpointSlice s;
      s.set_api_version("discovery.k8s.io/v1");
      s.set_kind("EndpointSlice");
      auto* m = s.mutable_metadata();
      m->set_namespace_(ns);
      m->set_name(svc.metadata().name() + "-empty");
      (*m->mutable_labels())[kServiceNameLabel] = svc.metadata().name();
      (*m->mutable_labels())[kManagedByLabel] = kManagedByValue;
      *m->add_owner_references() = objects::MakeControllerRef("v1", "Service", svc.metadata());
      s.set_address_type("IPv4");
      for (const auto& sp : svc.spec().ports()) {
        int32_t n = 0;
        if (!sp.target_port().empty() && !absl::SimpleAtoi(sp.target_port(), &n)) continue;
        auto* p = s.add_ports();
        p->set_name(sp.name());
        p->set_protocol(sp.protocol().empty() ? "TCP" : sp.protocol());
        p->set_port(sp.target_port().empty() ? sp.port() : n);
      }
      out[m->name()] = s;
    }
    return out;
  }

  Informer* svcs_;
  Informer* pods_;
  Informer* slices_;
  std::mutex written_mu_;
  struct Written {
    std::optional<EndpointSlice> slice;  // nullopt: deleted
    absl::Time at;
  };
  std::map<std::string, std::map<std::string, Written>> written_;
};

}  // namespace

std::unique_ptr<Controller> NewEndpointSliceController(Context ctx) {
  return std::make_unique<EndpointSliceController>(std::move(ctx));
}

}  // namespace skiff::controllers
