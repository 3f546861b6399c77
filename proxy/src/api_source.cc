#include "skiff/proxy/api_source.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "skiff/client/informer.h"
#include "skiff/common/log.h"

namespace skiff::proxy {
namespace {

absl::StatusOr<std::string> ToJson(const client::Object& obj) {
  google::protobuf::util::JsonPrintOptions opts;
  std::string out;
  if (obj.has_service()) {
    auto st = google::protobuf::util::MessageToJsonString(obj.service(), &out, opts);
    if (!st.ok()) return absl::InternalError("service to JSON: " + std::string(st.message()));
    return "{\"kind\":\"Service\"," + out.substr(1);
  }
  if (obj.has_endpoint_slice()) {
    auto st = google::protobuf::util::MessageToJsonString(obj.endpoint_slice(), &out, opts);
    if (!st.ok()) return absl::InternalError("endpointslice to JSON: " + std::string(st.message()));
    return "{\"kind\":\"EndpointSlice\"," + out.substr(1);
  }
  return absl::InvalidArgumentError("neither a Service nor an EndpointSlice");
}

// The watch sees objects of one kind; this mirrors the whole cluster state and
// forwards changes once the first complete state went out.
class ApiSource final : public Source {
 public:
  explicit ApiSource(std::shared_ptr<client::Client> api) : api_(std::move(api)) {}

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
    auto model = ModelFromObjects({o});
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
  StateSink* sink_ = nullptr;
  std::mutex mu_;
  ClusterState mirror_;
  bool live_ = false;
};

}  // namespace

absl::StatusOr<ClusterState> ModelFromObjects(const std::vector<client::Object>& objects) {
  std::string text;
  for (const auto& o : objects) {
    auto json = ToJson(o);
    if (!json.ok()) return json.status();
    text += "---\n" + *json + "\n";
  }
  return ParseClusterStateYaml(text);
}

std::unique_ptr<Source> MakeApiSource(std::shared_ptr<client::Client> api) {
  return std::make_unique<ApiSource>(std::move(api));
}

}  // namespace skiff::proxy
