#include "skiff/proxy/source.h"

#include <arpa/inet.h>
#include <malloc.h>
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
  if (!synced_) {
    changes_.all = true;
  } else {
    // A re-list or a file reload: record only what differs, so the agent
    // looks at the changed services alone.
    for (const auto& [k, v] : state.services) {
      auto it = state_.services.find(k);
      if (it == state_.services.end() || !(it->second == v)) changes_.services.insert(k);
    }
    for (const auto& [k, v] : state_.services)
      if (!state.services.count(k)) changes_.services.insert(k);
    for (const auto& [k, v] : state.endpoint_slices) {
      auto it = state_.endpoint_slices.find(k);
      if (it == state_.endpoint_slices.end() || !(it->second == v)) changes_.slices.insert(k);
    }
    for (const auto& [k, v] : state_.endpoint_slices)
      if (!state.endpoint_slices.count(k)) changes_.slices.insert(k);
  }
  state_ = std::move(state);
  synced_ = true;
  Bump();
}

void StateStore::UpsertService(Service service) {
  std::lock_guard lock(mu_);
  std::string key = service.Key();
  changes_.services.insert(key);
  state_.services[key] = std::move(service);
  Bump();
}

void StateStore::DeleteService(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  changes_.services.insert(ns + "/" + name);
  state_.services.erase(ns + "/" + name);
  Bump();
}

void StateStore::UpsertEndpointSlice(EndpointSlice slice) {
  std::lock_guard lock(mu_);
  std::string key = slice.Key();
  changes_.slices.insert(key);
  state_.endpoint_slices[key] = std::move(slice);
  Bump();
}

void StateStore::DeleteEndpointSlice(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  changes_.slices.insert(ns + "/" + name);
  state_.endpoint_slices.erase(ns + "/" + name);
  Bump();
}

uint64_t StateStore::Consume(uint64_t seen, int timeout_ms,
                             const std::function<void(const ClusterState&, const ChangeSet&)>& fn) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return generation_ != seen; });
  if (generation_ == seen) return seen;
  fn(state_, changes_);
  changes_ = ChangeSet{};
  return generation_;
}

bool StateStore::synced() const {
  std::lock_guard lock(mu_);
  return synced_;
}

// ---- Kubernetes-shaped YAML/JSON ----

namespace {

// A child of a map, or a null node: yaml-cpp throws when indexing a missing
// child's children, and a missing field must never be fatal.
YAML::Node Get(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap()) return YAML::Node();
  YAML::Node c = n[key];
  return c ? c : YAML::Node();
}

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
  s.ns = Str(Get(Get(obj, "metadata"), "namespace"), "default");
  s.name = Str(Get(Get(obj, "metadata"), "name"));
  if (s.name.empty()) {
    log::Warn("skipping Service without metadata.name");
    return;
  }
  const YAML::Node spec = Get(obj, "spec");
  s.type = Str(Get(spec, "type"), "ClusterIP");
  if (Get(spec, "clusterIPs") && Get(spec, "clusterIPs").IsSequence()) {
    for (const auto& ip : Get(spec, "clusterIPs")) s.cluster_ips.push_back(Str(ip));
  } else if (Get(spec, "clusterIP").IsScalar()) {
    s.cluster_ips.push_back(Str(Get(spec, "clusterIP")));
  }
  if (Get(spec, "externalIPs") && Get(spec, "externalIPs").IsSequence()) {
    for (const auto& ip : Get(spec, "externalIPs")) s.external_ips.push_back(Str(ip));
  }
  s.affinity_client_ip = Str(Get(spec, "sessionAffinity")) == "ClientIP";
  if (s.affinity_client_ip) {
    const YAML::Node t = Get(Get(Get(spec, "sessionAffinityConfig"), "clientIP"), "timeoutSeconds");
    if (t && t.IsScalar()) {
      try {
        long v = t.as<long>();
        if (v > 0 && v <= 86400) s.affinity_timeout_s = static_cast<uint32_t>(v);
      } catch (const YAML::Exception&) {
      }
    }
  }
  s.external_policy_local = Str(Get(spec, "externalTrafficPolicy")) == "Local";
  s.internal_policy_local = Str(Get(spec, "internalTrafficPolicy")) == "Local";
  if (auto hc = ParsePort(Get(spec, "healthCheckNodePort")); hc && s.external_policy_local)
    s.health_check_node_port = *hc;
  if (Get(spec, "ports") && Get(spec, "ports").IsSequence()) {
    for (const auto& p : Get(spec, "ports")) {
      ServicePort sp;
      sp.name = Str(Get(p, "name"));
      auto proto = ParseProtocol(Get(p, "protocol"));
      auto port = ParsePort(Get(p, "port"));
      if (!proto) {
        log::Warn("skipping service port: unsupported protocol ", log::Field("service", s.Key()),
                  " ", log::Field("port", sp.name), " ", log::Field("protocol", Str(Get(p, "protocol"))));
        continue;
      }
      if (!port) {
        log::Warn("skipping service port: invalid port ", log::Field("service", s.Key()), " ",
                  log::Field("port", sp.name), " ", log::Field("value", Str(Get(p, "port"))));
        continue;
      }
      sp.protocol = *proto;
      sp.port = *port;
      if (Get(p, "nodePort").IsScalar()) {
        auto np = ParsePort(Get(p, "nodePort"));
        if (np) sp.node_port = *np;
        else
          log::Warn("ignoring invalid nodePort ", log::Field("service", s.Key()), " ",
                    log::Field("value", Str(Get(p, "nodePort"))));
      }
      s.ports.push_back(sp);
    }
  }
  out->services[s.Key()] = std::move(s);
}

void ParseEndpointSlice(const YAML::Node& obj, ClusterState* out) {
  EndpointSlice es;
  es.ns = Str(Get(Get(obj, "metadata"), "namespace"), "default");
  es.name = Str(Get(Get(obj, "metadata"), "name"));
  es.service_name = Str(Get(Get(Get(obj, "metadata"), "labels"), "kubernetes.io/service-name"));
  if (es.name.empty() || es.service_name.empty()) {
    log::Warn("skipping EndpointSlice without name or kubernetes.io/service-name label ",
              log::Field("name", es.name));
    return;
  }
  std::string at = Str(Get(obj, "addressType"), "IPv4");
  if (at != "IPv4") {
    log::Info("skipping EndpointSlice: address type not supported yet ", log::Field("slice", es.Key()), " ",
              log::Field("addressType", at));
    return;
  }
  if (Get(obj, "ports") && Get(obj, "ports").IsSequence()) {
    for (const auto& p : Get(obj, "ports")) {
      EndpointPort ep;
      ep.name = Str(Get(p, "name"));
      auto proto = ParseProtocol(Get(p, "protocol"));
      auto port = ParsePort(Get(p, "port"));
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
  if (Get(obj, "endpoints") && Get(obj, "endpoints").IsSequence()) {
    for (const auto& e : Get(obj, "endpoints")) {
      Endpoint ep;
      if (Get(e, "addresses") && Get(e, "addresses").IsSequence()) {
        for (const auto& a : Get(e, "addresses")) {
          std::string addr = Str(a);
          if (IsIpv4(addr)) ep.addresses.push_back(addr);
          else
            log::Warn("skipping endpoint address ", log::Field("slice", es.Key()), " ", log::Field("address", addr));
        }
      }
      const YAML::Node c = Get(e, "conditions");
      // Kubernetes: a missing ready condition means ready; serving defaults to
      // ready; terminating defaults to false.
      ep.ready = Bool(Get(c, "ready"), true);
      ep.serving = Bool(Get(c, "serving"), ep.ready);
      ep.terminating = Bool(Get(c, "terminating"), false);
      ep.node_name = Str(Get(e, "nodeName"));
      if (!ep.addresses.empty()) es.endpoints.push_back(std::move(ep));
    }
  }
  out->endpoint_slices[es.Key()] = std::move(es);
}

void ParseObject(const YAML::Node& obj, ClusterState* out) {
  if (!obj || !obj.IsMap()) return;
  std::string kind = Str(Get(obj, "kind"));
  if (Get(obj, "items") && Get(obj, "items").IsSequence()) {
    for (const auto& item : Get(obj, "items")) ParseObject(item, out);
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
          // The store diffs a replacement against what it holds.
          sink.Replace(*std::move(state));
          loaded = true;
          // yaml-cpp builds a large node graph; give its memory back.
          malloc_trim(0);
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
