#include "skiff/proxy/api_source.h"

#include <malloc.h>
#include <time.h>

#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api_conn.h"
#include "api_wire.h"
#include "raw_objects.h"
#include "skiff/client/config.h"
#include "skiff/common/log.h"

namespace skiff::proxy {
namespace {

constexpr char kWatchPath[] = "/skiff.api.v1.Api/Watch";
constexpr char kCreatePath[] = "/skiff.api.v1.Api/Create";
constexpr int kConnectTimeoutMs = 10000;

std::string NowRfc3339() {
  time_t t = time(nullptr);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Sleeps up to `ms`, returning early once `stop` is set.
void Pause(int ms, const std::atomic<bool>& stop) {
  for (int slept = 0; slept < ms && !stop.load(); slept += 50)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

class ApiSource final : public Source {
 public:
  explicit ApiSource(ApiSourceConfig cfg) : cfg_(std::move(cfg)) {}

  absl::Status Run(StateSink& sink, const std::atomic<bool>& stop) override {
    sink_ = &sink;
    int backoff_ms = 200;
    while (!stop.load()) {
      auto conn = GrpcConnection::Connect(cfg_.credentials, kConnectTimeoutMs, stop);
      if (!conn.ok()) {
        if (stop.load()) break;
        log::Warn("api source: ", conn.status(), "; retrying in ", backoff_ms, " ms");
        Pause(backoff_ms, stop);
        backoff_ms = std::min(backoff_ms * 2, 5000);
        continue;
      }
      conn_ = conn->get();
      log::Info("api source: connected to ", cfg_.credentials.server, " (", conn_->security(), ")");
      bool progressed = Serve(stop);
      conn_ = nullptr;
      conn->reset();
      if (stop.load()) break;
      if (progressed) backoff_ms = 200;
      Pause(progressed ? 100 : backoff_ms, stop);
      if (!progressed) backoff_ms = std::min(backoff_ms * 2, 5000);
    }
    return absl::OkStatus();
  }

 private:
  struct Watch {
    Watch(const char* r, bool s) : resource(r), services(s) {}
    const char* resource;
    bool services;
    std::string resource_version;  // the last one seen: where to resume
    int32_t stream = 0;
    bool initial = false;  // still in the ADDED burst of existing objects
    size_t received = 0;
  };

  // Runs both watches on the current connection until it breaks or a watch
  // ends. Returns whether any event arrived (for the backoff).
  bool Serve(const std::atomic<bool>& stop) {
    restart_ = false;
    progressed_ = false;
    if (full_) pending_ = ClusterState{};
    for (Watch* w : {&services_, &slices_}) {
      w->initial = full_;
      w->received = 0;
      wire::WatchRequestFields req;
      req.resource = w->resource;
      req.resource_version = full_ ? "" : w->resource_version;
      req.allow_watch_bookmarks = true;
      req.send_initial_events = full_;
      auto id = conn_->StartCall(
          kWatchPath, wire::EncodeWatchRequest(req), [this, w](std::string_view m) { OnMessage(*w, m); },
          [this, w](const absl::Status& st) { OnClose(*w, st); });
      if (!id.ok()) {
        log::Warn("api source: watch ", w->resource, ": ", id.status());
        return false;
      }
      w->stream = *id;
    }
    while (!stop.load() && !restart_) {
      absl::Status st = conn_->Poll(200);
      if (!st.ok()) {
        if (!stop.load() && !restart_)
          log::Warn("api source: connection to ", cfg_.credentials.server, " lost: ", st);
        break;
      }
    }
    return progressed_;
  }

  void OnClose(Watch& w, const absl::Status& st) {
    w.stream = 0;
    if (absl::IsCancelled(st) || restart_) return;
    if (absl::IsOutOfRange(st)) {
      log::Info("api source: watch ", w.resource, " from ", w.resource_version, ": ", st,
                "; watching again from the start");
      full_ = true;
    } else {
      log::Warn("api source: watch ", w.resource,
                " ended: ", st.ok() ? absl::UnavailableError("closed by the server") : st);
    }
    Restart();
  }

  // Ends both watches; Run() dials again and resumes (or starts over when
  // full_ was set).
  void Restart() {
    restart_ = true;
    for (Watch* w : {&services_, &slices_})
      if (w->stream) conn_->CancelCall(w->stream);
  }

  void OnMessage(Watch& w, std::string_view msg) {
    auto ev = wire::DecodeWatchEvent(msg);
    if (!ev.ok()) {
      log::Warn("api source: skipping an undecodable ", w.resource, " watch event: ", ev.status());
      return;
    }
    progressed_ = true;
    if (ev->type == "ERROR") {
      log::Warn("api source: watch ", w.resource, ": error ", ev->error_code, ": ", ev->error_message,
                "; watching again from the start");
      full_ = true;
      Restart();
      return;
    }
    if (!ev->resource_version.empty()) w.resource_version = ev->resource_version;
    if (ev->type == "BOOKMARK") {
      if (ev->initial_events_end && w.initial) {
        w.initial = false;
        MaybeGoLive();
      }
      return;
    }
    auto want =
        w.services ? wire::WatchEventView::Kind::kService : wire::WatchEventView::Kind::kEndpointSlice;
    if (ev->kind != want) return;
    ++w.received;
    if (ev->type == "DELETED")
      Delete(w, *ev);
    else
      Upsert(w, *ev);
  }

  // Both initial bursts are in: the first complete state goes to the sink
  // by move; from now on the sink's copy is the only one.
  void MaybeGoLive() {
    if (!full_ || services_.initial || slices_.initial) return;
    full_ = false;
    log::Info("api source synced ", log::Field("services", static_cast<long long>(services_.received)), " ",
              log::Field("endpointslices", static_cast<long long>(slices_.received)));
    sink_->Replace(std::move(pending_));
    pending_ = ClusterState{};
    malloc_trim(0);
  }

  void Delete(Watch& w, const wire::WatchEventView& ev) {
    std::string key = absl::StrCat(ev.ns(), "/", ev.name());
    if (full_) {
      if (w.services)
        pending_.services.erase(key);
      else
        pending_.endpoint_slices.erase(key);
    } else if (w.services) {
      sink_->DeleteService(ev.ns(), ev.name());
    } else {
      sink_->DeleteEndpointSlice(ev.ns(), ev.name());
    }
  }

  void Upsert(Watch& w, wire::WatchEventView& ev) {
    std::string ns = ev.ns(), name = ev.name(), key = absl::StrCat(ns, "/", name);
    ClusterState one;
    ClusterState* into = full_ ? &pending_ : &one;
    if (w.services) {
      // Malformed parts are skipped with a log line (AddService) and, for
      // whoever looks at the Service, a Warning event.
      std::vector<std::string> problems;
      std::string rv = ev.resource_version;
      bool kept = AddService(std::move(ev.service), into, &problems);
      if (!problems.empty()) {
        std::string msg;
        for (const std::string& p : problems) msg += (msg.empty() ? "" : "; ") + p;
        RecordWarning(ns, name, ev.uid, rv, "InvalidServiceSpec", msg);
      }
      if (full_) {
        if (!kept) pending_.services.erase(key);
      } else if (auto it = one.services.find(key); kept && it != one.services.end()) {
        sink_->UpsertService(std::move(it->second));
      } else {
        // Malformed as a whole (the parser logged why): nothing stale stays.
        sink_->DeleteService(ns, name);
      }
    } else {
      bool kept = AddEndpointSlice(std::move(ev.slice), into);
      if (full_) {
        if (!kept) pending_.endpoint_slices.erase(key);
      } else if (auto it = one.endpoint_slices.find(key); kept && it != one.endpoint_slices.end()) {
        sink_->UpsertEndpointSlice(std::move(it->second));
      } else {
        sink_->DeleteEndpointSlice(ns, name);
      }
    }
  }

  // A Warning Event on the Service, as controllers::EventRecorder writes one
  // (once per object version, reason and message in this process).
  void RecordWarning(const std::string& ns, const std::string& name, const std::string& uid,
                     const std::string& rv, const std::string& reason, const std::string& message) {
    std::string dedup = absl::StrCat(uid, "/", rv, "/", reason, "/", message);
    if (!recorded_.insert(dedup).second) return;
    if (recorded_.size() > 4096) recorded_.clear();
    wire::EventFields ev;
    ev.ns = ns.empty() ? "default" : ns;
    auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    ev.name = absl::StrFormat("%s.%x", name, static_cast<unsigned long long>(nanos));
    ev.involved_ns = ns;
    ev.involved_name = name;
    ev.involved_uid = uid;
    ev.involved_resource_version = rv;
    ev.type = "Warning";
    ev.reason = reason;
    ev.message = message;
    ev.component = cfg_.component;
    ev.timestamp = NowRfc3339();
    auto id = conn_->StartCall(
        kCreatePath, wire::EncodeCreateEventRequest(ev), nullptr,
        [what = absl::StrCat("event ", reason, " on service ", ns, "/", name)](const absl::Status& st) {
          if (!st.ok() && !absl::IsCancelled(st)) log::Warn("api source: ", what, ": ", st);
        });
    if (!id.ok()) log::Warn("api source: event ", reason, " on service ", ns, "/", name, ": ", id.status());
  }

  ApiSourceConfig cfg_;
  StateSink* sink_ = nullptr;
  GrpcConnection* conn_ = nullptr;
  Watch services_{"services", true};
  Watch slices_{"endpointslices", false};
  bool full_ = true;  // the next watches start from "" and end in a Replace()
  bool restart_ = false;
  bool progressed_ = false;
  ClusterState pending_;  // the state being collected before a Replace()
  std::set<std::string> recorded_;
};

}  // namespace

absl::StatusOr<ApiSourceConfig> LoadApiSourceConfig(const std::string& kubeconfig,
                                                    const std::string& server) {
  auto cfg = client::LoadClientConfig(kubeconfig.empty() ? client::DefaultConfigPath() : kubeconfig);
  if (!cfg.ok()) return cfg.status();
  ApiSourceConfig out;
  out.credentials = std::move(cfg->credentials);
  if (!server.empty()) out.credentials.server = server;
  const client::Credentials& c = out.credentials;
  if (c.server.empty()) return absl::InvalidArgumentError("client config: no server address");
  if (!c.insecure && !c.client_cert_pem.empty() && c.client_key_pem.empty())
    return absl::InvalidArgumentError("client config: a client certificate needs its key");
  return out;
}

std::unique_ptr<Source> MakeApiSource(ApiSourceConfig config) {
  return std::make_unique<ApiSource>(std::move(config));
}

}  // namespace skiff::proxy
