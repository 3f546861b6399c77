#include "skiff/proxy/api_source.h"

#include <chrono>
#include <mutex>
#include <thread>

#include "skiff/client/informer.h"
#include "skiff/controllers/events.h"
#include "skiff/common/log.h"
#include "raw_objects.h"

namespace skiff::proxy {
namespace {

RawNumber Number(int64_t v, bool present) {
  RawNumber n;
  n.present = present;
  if (present) {
    n.value = v;
    n.text = std::to_string(v);
  }
  return n;
}

void ServiceToModel(const api::v1::Service& o, ClusterState* out, std::vector<std::string>* problems = nullptr) {
  RawService r;
  r.ns = o.metadata().namespace_();
  r.name = o.metadata().name();
  const auto& spec = o.spec();
  r.type = spec.type();
  r.cluster_ip = spec.cluster_ip();
  if (spec.cluster_ips_size() > 0) r.cluster_ips.assign(spec.cluster_ips().begin(), spec.cluster_ips().end());
  else if (!spec.cluster_ip().empty())
    r.cluster_ips.push_back(spec.cluster_ip());
  r.ip_families.assign(spec.ip_families().begin(), spec.ip_families().end());
  r.ip_family_policy = spec.ip_family_policy();
  r.external_ips.assign(spec.external_ips().begin(), spec.external_ips().end());
  r.session_affinity = spec.session_affinity();
  const auto& cip = spec.session_affinity_config().client_ip();
  r.affinity_timeout = Number(cip.timeout_seconds(), cip.has_timeout_seconds());
  r.external_traffic_policy = spec.external_traffic_policy();
  r.internal_traffic_policy = spec.internal_traffic_policy();
  r.health_check_node_port = Number(spec.health_check_node_port(), spec.health_check_node_port() != 0);
  for (const auto& p : spec.ports()) {
    RawServicePort rp;
    rp.name = p.name();
    rp.protocol = p.protocol();
    rp.port = Number(p.port(), true);
    rp.node_port = Number(p.node_port(), p.node_port() != 0);
    r.ports.push_back(std::move(rp));
  }
  AddService(std::move(r), out, problems);
}

void SliceToModel(const api::v1::EndpointSlice& o, ClusterState* out) {
  RawEndpointSlice r;
  r.ns = o.metadata().namespace_();
  r.name = o.metadata().name();
  if (auto it = o.metadata().labels().find("kubernetes.io/service-name"); it != o.metadata().labels().end())
    r.service_name = it->second;
  r.address_type = o.address_type();
  for (const auto& p : o.ports()) {
    RawEndpointPort rp;
    rp.name = p.name();
    rp.protocol = p.protocol();
    rp.port = Number(p.port(), p.has_port());
    r.ports.push_back(std::move(rp));
  }
  for (const auto& e : o.endpoints()) {
    RawEndpoint re;
    re.addresses.assign(e.addresses().begin(), e.addresses().end());
    if (e.conditions().has_ready()) re.ready = e.conditions().ready();
    if (e.conditions().has_serving()) re.serving = e.conditions().serving();
    if (e.conditions().has_terminating()) re.terminating = e.conditions().terminating();
    re.node_name = e.node_name();
    r.endpoints.push_back(std::move(re));
  }
  AddEndpointSlice(std::move(r), out);
}

// The watch sees objects of one kind; this mirrors the whole cluster state and
// forwards changes once the first complete state went out.
class ApiSource final : public Source {
 public:
  explicit ApiSource(std::shared_ptr<client::Client> api)
      : api_(std::move(api)), events_(std::make_unique<controllers::EventRecorder>(api_, "skiff-proxy")) {}

  absl::Status Run(StateSink& sink, const std::atomic<bool>& stop) override {
    sink_ = &sink;
    client::Informer services(api_.get(), "services", "", {}, Handlers(/*services=*/true));
    client::Informer slices(api_.get(), "endpointslices", "", {}, Handlers(/*services=*/false));
    services.Start();
    slices.Start();
    bool live = false;
    while (!stop.load()) {
      if (!live && services.HasSynced() && slices.HasSynced()) {
        std::lock_guard lock(mu_);
        sink.Replace(mirror_);
        live_ = live = true;
        log::Info("api source synced ", log::Field("services", static_cast<long long>(mirror_.services.size())),
                  " ", log::Field("endpointslices", static_cast<long long>(mirror_.endpoint_slices.size())));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    services.Stop();
    slices.Stop();
    return absl::OkStatus();
  }

 private:
  client::InformerHandlers Handlers(bool services) {
    client::InformerHandlers h;
    auto upsert = [this, services](const client::Object& o) { Upsert(o, services); };
    h.on_add = upsert;
    h.on_update = [upsert](const client::Object&, const client::Object& cur) { upsert(cur); };
    h.on_delete = [this, services](const client::Object& o) { Remove(o, services); };
    return h;
  }

  void Upsert(const client::Object& o, bool services) {
    absl::StatusOr<ClusterState> model;
    if (services) {
      // Malformed parts are skipped with a log line (AddService) and, for
      // whoever looks at the Service, a Warning event.
      std::vector<std::string> problems;
      model = ClusterState{};
      ServiceToModel(o.service(), &*model, &problems);
      if (!problems.empty()) {
        std::string msg;
        for (const std::string& p : problems) msg += (msg.empty() ? "" : "; ") + p;
        events_->Event(controllers::RefTo(o), "Warning", "InvalidServiceSpec", msg);
      }
    } else {
      model = ModelFromObjects({o});
    }
    const auto& meta = services ? o.service().metadata() : o.endpoint_slice().metadata();
    std::string key = meta.namespace_() + "/" + meta.name();
    std::lock_guard lock(mu_);
    if (!model.ok()) {
      log::Warn("skipping ", services ? "service " : "endpointslice ", key, ": ", model.status());
      return;
    }
    if (services) {
      auto it = model->services.find(key);
      if (it == model->services.end()) {
        // Malformed (the parser logged why): make sure nothing stale stays.
        if (mirror_.services.erase(key) && live_) sink_->DeleteService(meta.namespace_(), meta.name());
        return;
      }
      mirror_.services[key] = it->second;
      if (live_) sink_->UpsertService(it->second);
    } else {
      auto it = model->endpoint_slices.find(key);
      if (it == model->endpoint_slices.end()) {
        if (mirror_.endpoint_slices.erase(key) && live_) sink_->DeleteEndpointSlice(meta.namespace_(), meta.name());
        return;
      }
      mirror_.endpoint_slices[key] = it->second;
      if (live_) sink_->UpsertEndpointSlice(it->second);
    }
  }

  void Remove(const client::Object& o, bool services) {
    const auto& meta = services ? o.service().metadata() : o.endpoint_slice().metadata();
    std::string key = meta.namespace_() + "/" + meta.name();
    std::lock_guard lock(mu_);
    if (services) {
      mirror_.services.erase(key);
      if (live_) sink_->DeleteService(meta.namespace_(), meta.name());
    } else {
      mirror_.endpoint_slices.erase(key);
      if (live_) sink_->DeleteEndpointSlice(meta.namespace_(), meta.name());
    }
  }

  std::shared_ptr<client::Client> api_;
  std::unique_ptr<controllers::EventRecorder> events_;
  StateSink* sink_ = nullptr;
  std::mutex mu_;
  ClusterState mirror_;
  bool live_ = false;
};

}  // namespace

absl::StatusOr<ClusterState> ModelFromObjects(const std::vector<client::Object>& objects) {
  ClusterState state;
  for (const auto& o : objects) {
    if (o.has_service()) ServiceToModel(o.service(), &state);
    else if (o.has_endpoint_slice())
      SliceToModel(o.endpoint_slice(), &state);
    else
      return absl::InvalidArgumentError("neither a Service nor an EndpointSlice");
  }
  return state;
}

std::unique_ptr<Source> MakeApiSource(std::shared_ptr<client::Client> api) {
  return std::make_unique<ApiSource>(std::move(api));
}

}  // namespace skiff::proxy
