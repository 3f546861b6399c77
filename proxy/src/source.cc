#include "skiff/proxy/source.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "yaml-cpp/yaml.h"

namespace skiff::proxy {

// ---- StateStore ----

void StateStore::Bump() {
  ++generation_;
  cv_.notify_all();
}

void StateStore::Replace(ClusterState state) {
  std::lock_guard lock(mu_);
  state_ = std::move(state);
  synced_ = true;
  Bump();
}

void StateStore::UpsertService(Service service) {
  std::lock_guard lock(mu_);
  std::string key = service.Key();
  state_.services[key] = std::move(service);
  Bump();
}

void StateStore::DeleteService(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  state_.services.erase(ns + "/" + name);
  Bump();
}

void StateStore::UpsertEndpointSlice(EndpointSlice slice) {
  std::lock_guard lock(mu_);
  std::string key = slice.Key();
  state_.endpoint_slices[key] = std::move(slice);
  Bump();
}

void StateStore::DeleteEndpointSlice(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  state_.endpoint_slices.erase(ns + "/" + name);
  Bump();
}

uint64_t StateStore::WaitNewer(uint64_t seen, int timeout_ms, ClusterState* out) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return generation_ != seen; });
  if (generation_ != seen && out) *out = state_;
  return generation_;
}

bool StateStore::synced() const {
  std::lock_guard lock(mu_);
  return synced_;
}

// ---- Kubernetes-shaped YAML/JSON ----

namespace {

std::string Str(const YAML::Node& n, const std::string& def = "") {
  if (!n || !n.IsScalar()) return def;
  return n.as<std::string>();
}

std::optional<Protocol> ParseProtocol(const YAML::Node& n) {
  std::string p = Str(n, "TCP");
  if (p == "TCP") return Protocol::kTcp;
  if (p == "UDP") return Protocol::kUdp;
  return std::nullopt;
}

// A port number in 1..65535; nullopt otherwise (0, negative, not a number).
std::optional<uint16_t> ParsePort(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return std::nullopt;
  try {
    long v = n.as<long>();
    if (v < 1 || v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}

bool IsIpv4(const std::string& s) {
  in_addr a;
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool Bool(const YAML::Node& n, bool def) {
  if (!n || !n.IsScalar()) return def;
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    return def;
  }
}

void ParseService(const YAML::Node& obj, ClusterState* out) {
  Service s;
  s.ns = Str(obj["metadata"]["namespace"], "default");
  s.name = Str(obj["metadata"]["name"]);
  if (s.name.empty()) {
    log::Warn("skipping Service without metadata.name");
    return;
  }
  const YAML::Node spec = obj["spec"];
  s.type = Str(spec["type"], "ClusterIP");
  if (spec["clusterIPs"] && spec["clusterIPs"].IsSequence()) {
    for (const auto& ip : spec["clusterIPs"]) s.cluster_ips.push_back(Str(ip));
  } else if (spec["clusterIP"]) {
    s.cluster_ips.push_back(Str(spec["clusterIP"]));
  }
  if (spec["externalIPs"] && spec["externalIPs"].IsSequence()) {
    for (const auto& ip : spec["externalIPs"]) s.external_ips.push_back(Str(ip));
  }
  s.affinity_client_ip = Str(spec["sessionAffinity"]) == "ClientIP";
  if (s.affinity_client_ip) {
    const YAML::Node t = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"];
    if (t && t.IsScalar()) {
      try {
        long v = t.as<long>();
        if (v > 0 && v <= 86400) s.affinity_timeout_s = static_cast<uint32_t>(v);
      } catch (const YAML::Exception&) {
      }
    }
  }
  s.external_policy_local = Str(spec["externalTrafficPolicy"]) == "Local";
  s.internal_policy_local = Str(spec["internalTrafficPolicy"]) == "Local";
  if (spec["ports"] && spec["ports"].IsSequence()) {
    for (const auto& p : spec["ports"]) {
      ServicePort sp;
      sp.name = Str(p["name"]);
      auto proto = ParseProtocol(p["protocol"]);
      auto port = ParsePort(p["port"]);
      if (!proto) {
        log::Warn("skipping service port: unsupported protocol ", log::Field("service", s.Key()),
                  " ", log::Field("port", sp.name), " ", log::Field("protocol", Str(p["protocol"])));
        continue;
      }
      if (!port) {
        log::Warn("skipping service port: invalid port ", log::Field("service", s.Key()), " ",
                  log::Field("port", sp.name), " ", log::Field("value", Str(p["port"])));
        continue;
      }
      sp.protocol = *proto;
      sp.port = *port;
      if (p["nodePort"]) {
        auto np = ParsePort(p["nodePort"]);
        if (np) sp.node_port = *np;
        else
          log::Warn("ignoring invalid nodePort ", log::Field("service", s.Key()), " ",
                    log::Field("value", Str(p["nodePort"])));
      }
      s.ports.push_back(sp);
    }
  }
  out->services[s.Key()] = std::move(s);
}

void ParseEndpointSlice(const YAML::Node& obj, ClusterState* out) {
  EndpointSlice es;
  es.ns = Str(obj["metadata"]["namespace"], "default");
  es.name = Str(obj["metadata"]["name"]);
  es.service_name = Str(obj["metadata"]["labels"]["kubernetes.io/service-name"]);
  if (es.name.empty() || es.service_name.empty()) {
    log::Warn("skipping EndpointSlice without name or kubernetes.io/service-name label ",
              log::Field("name", es.name));
    return;
  }
  std::string at = Str(obj["addressType"], "IPv4");
  if (at != "IPv4") {
    log::Info("skipping EndpointSlice: address type not supported yet ", log::Field("slice", es.Key()), " ",
              log::Field("addressType", at));
    return;
  }
  if (obj["ports"] && obj["ports"].IsSequence()) {
    for (const auto& p : obj["ports"]) {
      EndpointPort ep;
      ep.name = Str(p["name"]);
      auto proto = ParseProtocol(p["protocol"]);
      auto port = ParsePort(p["port"]);
      if (!proto || !port) {
        log::Warn("skipping endpoint port: invalid port or protocol ", log::Field("slice", es.Key()), " ",
                  log::Field("port", ep.name));
        continue;
      }
      ep.protocol = *proto;
      ep.port = *port;
      es.ports.push_back(ep);
    }
  }
  if (obj["endpoints"] && obj["endpoints"].IsSequence()) {
    for (const auto& e : obj["endpoints"]) {
      Endpoint ep;
      if (e["addresses"] && e["addresses"].IsSequence()) {
        for (const auto& a : e["addresses"]) {
          std::string addr = Str(a);
          if (IsIpv4(addr)) ep.addresses.push_back(addr);
          else
            log::Warn("skipping endpoint address ", log::Field("slice", es.Key()), " ", log::Field("address", addr));
        }
      }
      const YAML::Node c = e["conditions"];
      // Kubernetes: a missing ready condition means ready; serving defaults to
      // ready; terminating defaults to false.
      ep.ready = Bool(c["ready"], true);
      ep.serving = Bool(c["serving"], ep.ready);
      ep.terminating = Bool(c["terminating"], false);
      ep.node_name = Str(e["nodeName"]);
      if (!ep.addresses.empty()) es.endpoints.push_back(std::move(ep));
    }
  }
  out->endpoint_slices[es.Key()] = std::move(es);
}

void ParseObject(const YAML::Node& obj, ClusterState* out) {
  if (!obj || !obj.IsMap()) return;
  std::string kind = Str(obj["kind"]);
  if (obj["items"] && obj["items"].IsSequence()) {
    for (const auto& item : obj["items"]) ParseObject(item, out);
    return;
  }
  try {
    if (kind == "Service") ParseService(obj, out);
    else if (kind == "EndpointSlice")
      ParseEndpointSlice(obj, out);
    else if (!kind.empty())
      log::Debug("ignoring object ", log::Field("kind", kind));
  } catch (const YAML::Exception& e) {
    log::Warn("skipping malformed ", kind, ": ", e.what());
  }
}

}  // namespace

absl::StatusOr<ClusterState> ParseClusterStateYaml(const std::string& text) {
  ClusterState state;
  try {
    for (const YAML::Node& doc : YAML::LoadAll(text)) ParseObject(doc, &state);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("parse services file: ", e.what()));
  }
  return state;
}

absl::StatusOr<ClusterState> LoadClusterStateFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return LastErrnoError("open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseClusterStateYaml(ss.str());
}

namespace {

class FileSource final : public Source {
 public:
  FileSource(std::string path, int poll_ms) : path_(std::move(path)), poll_ms_(poll_ms) {}

  absl::Status Run(StateSink& sink, const std::atomic<bool>& stop) override {
    struct timespec last_mtime {};
    off_t last_size = -1;
    bool loaded = false;
    while (!stop.load()) {
      struct stat st;
      if (stat(path_.c_str(), &st) != 0) {
        if (!loaded) return LastErrnoError("stat " + path_);
      } else if (!loaded || st.st_mtim.tv_sec != last_mtime.tv_sec ||
                 st.st_mtim.tv_nsec != last_mtime.tv_nsec || st.st_size != last_size) {
        auto state = LoadClusterStateFile(path_);
        if (state.ok()) {
          log::Info("loaded services file ", log::Field("path", path_), " ",
                    log::Field("services", static_cast<long long>(state->services.size())), " ",
                    log::Field("endpointslices", static_cast<long long>(state->endpoint_slices.size())));
          sink.Replace(*std::move(state));
          loaded = true;
        } else if (!loaded) {
          return state.status();
        } else {
          log::Warn("keeping previous state: ", state.status());
        }
        last_mtime = st.st_mtim;
        last_size = st.st_size;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms_));
    }
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int poll_ms_;
};

}  // namespace

std::unique_ptr<Source> MakeFileSource(std::string path, int poll_ms) {
  return std::make_unique<FileSource>(std::move(path), poll_ms);
}

}  // namespace skiff::proxy
