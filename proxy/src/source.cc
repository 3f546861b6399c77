#include "skiff/proxy/source.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "raw_objects.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace skiff::proxy {

// ---- StateStore ----

namespace {

std::string ServiceKeyOf(const EndpointSlice& es) { return es.ns + "/" + es.service_name; }

}  // namespace

// A slice change names the slice and the services it belonged to before and
// after (see ChangeSet).
void StateStore::NoteSlice(const std::string& key, const EndpointSlice* after) {
  changes_.slices.insert(key);
  if (auto old = state_.endpoint_slices.find(key); old != state_.endpoint_slices.end())
    changes_.services.insert(ServiceKeyOf(old->second));
  if (after) changes_.services.insert(ServiceKeyOf(*after));
}

void StateStore::Bump() {
  ++generation_;
  if (on_change_) on_change_();
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
      if (it == state_.endpoint_slices.end() || !(it->second == v)) NoteSlice(k, &v);
    }
    for (const auto& [k, v] : state_.endpoint_slices)
      if (!state.endpoint_slices.count(k)) NoteSlice(k, nullptr);
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
  NoteSlice(key, &slice);
  state_.endpoint_slices[key] = std::move(slice);
  Bump();
}

void StateStore::DeleteEndpointSlice(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  NoteSlice(ns + "/" + name, nullptr);
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

// ---- Validation: the one set of rules for every source ----

namespace {

std::optional<Protocol> ParseProtocol(const std::string& p) {
  if (p.empty() || p == "TCP") return Protocol::kTcp;
  if (p == "UDP") return Protocol::kUdp;
  return std::nullopt;
}

// A port number in 1..65535; nullopt otherwise (absent, 0, negative, not a number).
std::optional<uint16_t> ValidPort(const RawNumber& n) {
  if (!n.value || *n.value < 1 || *n.value > 65535) return std::nullopt;
  return static_cast<uint16_t>(*n.value);
}

bool IsIpv4(const std::string& s) {
  in_addr a;
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool IsIpv6(const std::string& s) {
  in6_addr a;
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

// The clusterIPs that count, as kube-proxy reads them: with spec.ipFamilies,
// clusterIPs[i] is the address of family ipFamilies[i] (an address of the
// other family, or one without a family entry, is skipped); without it,
// each address counts for its own family. ipFamilyPolicy SingleStack keeps
// only the primary. Headless ("None") and empty lists pass unchanged.
template <typename Problem>
std::vector<std::string> ClusterIpsByFamily(const RawService& raw, const std::string& key, Problem&& problem) {
  std::vector<std::string> ips = raw.cluster_ips;
  auto warn = [&](const std::string& what) {
    log::Warn("service ", log::Field("service", key), " ", what);
    problem(what);
  };
  if (!raw.cluster_ip.empty() && !ips.empty() && raw.cluster_ip != ips[0])
    warn("clusterIP " + raw.cluster_ip + " differs from clusterIPs[0] " + ips[0] + ": using clusterIPs");
  const std::string& policy = raw.ip_family_policy;
  if (!policy.empty() && policy != "SingleStack" && policy != "PreferDualStack" && policy != "RequireDualStack")
    warn("unknown ipFamilyPolicy " + policy + " ignored");
  if (ips.empty() || ips[0] == "None" || ips[0].empty()) return ips;
  std::vector<std::string> out;
  if (raw.ip_families.empty()) {
    out = std::move(ips);
  } else {
    std::vector<std::string> seen;
    for (size_t i = 0; i < ips.size(); ++i) {
      if (i >= raw.ip_families.size()) {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: no ipFamilies entry for it");
        continue;
      }
      const std::string& fam = raw.ip_families[i];
      if (fam != "IPv4" && fam != "IPv6") {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: unknown ip family " + fam);
        continue;
      }
      if (std::find(seen.begin(), seen.end(), fam) != seen.end()) {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: a second " + fam + " address");
        continue;
      }
      if ((fam == "IPv4" && !IsIpv4(ips[i])) || (fam == "IPv6" && !IsIpv6(ips[i]))) {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: not an " + fam + " address");
        continue;
      }
      seen.push_back(fam);
      out.push_back(ips[i]);
    }
  }
  if (policy == "SingleStack" && out.size() > 1) {
    warn("ipFamilyPolicy SingleStack: only the primary clusterIP " + out[0] + " is used");
    out.resize(1);
  }
  if (policy == "RequireDualStack" && out.size() < 2)
    warn("ipFamilyPolicy RequireDualStack but only " + std::to_string(out.size()) + " usable clusterIP(s)");
  return out;
}

}  // namespace

bool AddService(RawService raw, ClusterState* out, std::vector<std::string>* problems) {
  auto problem = [&](std::string what) {
    if (problems) problems->push_back(std::move(what));
  };
  Service s;
  s.ns = raw.ns.empty() ? "default" : std::move(raw.ns);
  s.name = std::move(raw.name);
  if (s.name.empty()) {
    log::Warn("skipping Service without metadata.name");
    problem("no metadata.name");
    return false;
  }
  if (raw.type == "NodePort") s.type = ServiceType::kNodePort;
  else if (raw.type == "LoadBalancer") s.type = ServiceType::kLoadBalancer;
  else if (raw.type == "ExternalName") s.type = ServiceType::kExternalName;
  std::vector<std::string> cluster_ips = ClusterIpsByFamily(raw, s.Key(), problem);
  s.cluster_ips.assign(std::make_move_iterator(cluster_ips.begin()), std::make_move_iterator(cluster_ips.end()));
  s.external_ips = std::move(raw.external_ips);
  s.affinity_client_ip = raw.session_affinity == "ClientIP";
  if (s.affinity_client_ip && raw.affinity_timeout.value && *raw.affinity_timeout.value > 0 &&
      *raw.affinity_timeout.value <= 86400)
    s.affinity_timeout_s = static_cast<uint32_t>(*raw.affinity_timeout.value);
  s.external_policy_local = raw.external_traffic_policy == "Local";
  s.internal_policy_local = raw.internal_traffic_policy == "Local";
  if (auto hc = ValidPort(raw.health_check_node_port); hc && s.external_policy_local) s.health_check_node_port = *hc;
  for (RawServicePort& p : raw.ports) {
    ServicePort sp;
    sp.name = std::move(p.name);
    auto proto = ParseProtocol(p.protocol);
    auto port = ValidPort(p.port);
    if (!proto) {
      log::Warn("skipping service port: unsupported protocol ", log::Field("service", s.Key()), " ",
                log::Field("port", sp.name), " ", log::Field("protocol", p.protocol));
      problem("port \"" + sp.name + "\" skipped: unsupported protocol " + p.protocol);
      continue;
    }
    if (!port) {
      log::Warn("skipping service port: invalid port ", log::Field("service", s.Key()), " ",
                log::Field("port", sp.name), " ", log::Field("value", p.port.text));
      problem("port \"" + sp.name + "\" skipped: invalid port " + (p.port.text.empty() ? "0" : p.port.text));
      continue;
    }
    sp.protocol = *proto;
    sp.port = *port;
    if (p.node_port.present && !(p.node_port.value && *p.node_port.value == 0)) {
      if (auto np = ValidPort(p.node_port)) {
        sp.node_port = *np;
      } else {
        log::Warn("ignoring invalid nodePort ", log::Field("service", s.Key()), " ",
                  log::Field("value", p.node_port.text));
        problem("port \"" + sp.name + "\": invalid nodePort " + p.node_port.text + " ignored");
      }
    }
    s.ports.push_back(std::move(sp));
  }
  std::string key = s.Key();
  out->services[key] = std::move(s);
  return true;
}

bool AddEndpointSlice(RawEndpointSlice raw, ClusterState* out) {
  EndpointSlice es;
  es.ns = raw.ns.empty() ? "default" : std::move(raw.ns);
  es.name = std::move(raw.name);
  es.service_name = std::move(raw.service_name);
  if (es.name.empty() || es.service_name.empty()) {
    log::Warn("skipping EndpointSlice without name or kubernetes.io/service-name label ",
              log::Field("name", es.name));
    return false;
  }
  // IPv4 (also when absent) and IPv6 slices are used; FQDN slices are not.
  const bool v6 = raw.address_type == "IPv6";
  if (!raw.address_type.empty() && raw.address_type != "IPv4" && !v6) {
    log::Info("skipping EndpointSlice: address type not supported ", log::Field("slice", es.Key()), " ",
              log::Field("addressType", raw.address_type));
    return false;
  }
  for (RawEndpointPort& p : raw.ports) {
    EndpointPort ep;
    ep.name = std::move(p.name);
    auto proto = ParseProtocol(p.protocol);
    auto port = ValidPort(p.port);
    if (!proto || !port) {
      log::Warn("skipping endpoint port: invalid port or protocol ", log::Field("slice", es.Key()), " ",
                log::Field("port", ep.name));
      continue;
    }
    ep.protocol = *proto;
    ep.port = *port;
    es.ports.push_back(std::move(ep));
  }
  for (RawEndpoint& e : raw.endpoints) {
    Endpoint ep;
    for (std::string& a : e.addresses) {
      if (v6 ? IsIpv6(a) : IsIpv4(a)) ep.addresses.push_back(std::move(a));
      else
        log::Warn("skipping endpoint address ", log::Field("slice", es.Key()), " ", log::Field("address", a));
    }
    // Kubernetes: a missing ready condition means ready; serving defaults to
    // ready; terminating defaults to false.
    ep.ready = e.ready.value_or(true);
    ep.serving = e.serving.value_or(ep.ready);
    ep.terminating = e.terminating.value_or(false);
    ep.node_name = std::move(e.node_name);
    if (!ep.addresses.empty()) es.endpoints.push_back(std::move(ep));
  }
  std::string key = es.Key();
  out->endpoint_slices[key] = std::move(es);
  return true;
}

// ---- YAML (any Kubernetes-shaped document stream) ----

namespace {

// A child of a map, or a null node: yaml-cpp throws when indexing a missing
// child's children, and a missing field must never be fatal.
YAML::Node Get(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap()) return YAML::Node();
  YAML::Node c = n[key];
  return c ? c : YAML::Node();
}

std::string Str(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return "";
  return n.as<std::string>();
}

RawNumber Num(const YAML::Node& n) {
  RawNumber r;
  if (!n) return r;
  r.present = true;
  if (!n.IsScalar()) return r;
  r.text = n.as<std::string>();
  try {
    r.value = n.as<long>();
  } catch (const YAML::Exception&) {
  }
  return r;
}

std::optional<bool> Bool(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return std::nullopt;
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}

std::vector<std::string> Strs(const YAML::Node& n) {
  std::vector<std::string> out;
  if (n && n.IsSequence())
    for (const auto& x : n) out.push_back(Str(x));
  return out;
}

struct YamlAccess {
  using Node = YAML::Node;
  static Node Field(const Node& n, const char* key) { return Get(n, key); }
  static std::string String(const Node& n) { return Str(n); }
  static RawNumber Number(const Node& n) { return Num(n); }
  static std::optional<bool> Boolean(const Node& n) { return Bool(n); }
  static std::vector<std::string> Strings(const Node& n) { return Strs(n); }
  static bool IsList(const Node& n) { return n && n.IsSequence(); }
  template <typename F>
  static void Each(const Node& n, F f) {
    if (IsList(n))
      for (const auto& x : n) f(Node(x));
  }
};

}  // namespace

// One walk over a Kubernetes-shaped Service / EndpointSlice for every tree
// representation (yaml-cpp nodes, nlohmann JSON), through an accessor.
template <typename A>
void ConvertService(const typename A::Node& obj, ClusterState* out) {
  RawService r;
  const auto meta = A::Field(obj, "metadata");
  r.ns = A::String(A::Field(meta, "namespace"));
  r.name = A::String(A::Field(meta, "name"));
  const auto spec = A::Field(obj, "spec");
  r.type = A::String(A::Field(spec, "type"));
  r.cluster_ip = A::String(A::Field(spec, "clusterIP"));
  if (A::IsList(A::Field(spec, "clusterIPs"))) r.cluster_ips = A::Strings(A::Field(spec, "clusterIPs"));
  else if (!r.cluster_ip.empty())
    r.cluster_ips.push_back(r.cluster_ip);
  r.ip_families = A::Strings(A::Field(spec, "ipFamilies"));
  r.ip_family_policy = A::String(A::Field(spec, "ipFamilyPolicy"));
  r.external_ips = A::Strings(A::Field(spec, "externalIPs"));
  r.session_affinity = A::String(A::Field(spec, "sessionAffinity"));
  r.affinity_timeout = A::Number(A::Field(A::Field(A::Field(spec, "sessionAffinityConfig"), "clientIP"), "timeoutSeconds"));
  r.external_traffic_policy = A::String(A::Field(spec, "externalTrafficPolicy"));
  r.internal_traffic_policy = A::String(A::Field(spec, "internalTrafficPolicy"));
  r.health_check_node_port = A::Number(A::Field(spec, "healthCheckNodePort"));
  A::Each(A::Field(spec, "ports"), [&](const typename A::Node& p) {
    RawServicePort rp;
    rp.name = A::String(A::Field(p, "name"));
    rp.protocol = A::String(A::Field(p, "protocol"));
    rp.port = A::Number(A::Field(p, "port"));
    rp.node_port = A::Number(A::Field(p, "nodePort"));
    r.ports.push_back(std::move(rp));
  });
  AddService(std::move(r), out);
}

template <typename A>
void ConvertEndpointSlice(const typename A::Node& obj, ClusterState* out) {
  RawEndpointSlice r;
  const auto meta = A::Field(obj, "metadata");
  r.ns = A::String(A::Field(meta, "namespace"));
  r.name = A::String(A::Field(meta, "name"));
  r.service_name = A::String(A::Field(A::Field(meta, "labels"), "kubernetes.io/service-name"));
  r.address_type = A::String(A::Field(obj, "addressType"));
  A::Each(A::Field(obj, "ports"), [&](const typename A::Node& p) {
    RawEndpointPort rp;
    rp.name = A::String(A::Field(p, "name"));
    rp.protocol = A::String(A::Field(p, "protocol"));
    rp.port = A::Number(A::Field(p, "port"));
    r.ports.push_back(std::move(rp));
  });
  A::Each(A::Field(obj, "endpoints"), [&](const typename A::Node& e) {
    RawEndpoint re;
    re.addresses = A::Strings(A::Field(e, "addresses"));
    const auto c = A::Field(e, "conditions");
    re.ready = A::Boolean(A::Field(c, "ready"));
    re.serving = A::Boolean(A::Field(c, "serving"));
    re.terminating = A::Boolean(A::Field(c, "terminating"));
    re.node_name = A::String(A::Field(e, "nodeName"));
    r.endpoints.push_back(std::move(re));
  });
  AddEndpointSlice(std::move(r), out);
}

namespace {

void ParseObject(const YAML::Node& obj, ClusterState* out) {
  if (!obj || !obj.IsMap()) return;
  std::string kind = Str(Get(obj, "kind"));
  if (Get(obj, "items").IsSequence()) {
    for (const auto& item : Get(obj, "items")) ParseObject(item, out);
    return;
  }
  try {
    if (kind == "Service") ConvertService<YamlAccess>(obj, out);
    else if (kind == "EndpointSlice")
      ConvertEndpointSlice<YamlAccess>(obj, out);
    else if (!kind.empty())
      log::Debug("ignoring object ", log::Field("kind", kind));
  } catch (const YAML::Exception& e) {
    log::Warn("skipping malformed ", kind, ": ", e.what());
  }
}

// ---- JSON: streamed, one object at a time ----

using Json = nlohmann::json;

const Json* JGet(const Json* n, const char* key) {
  if (!n || !n->is_object()) return nullptr;
  auto it = n->find(key);
  return it == n->end() ? nullptr : &*it;
}

std::string JStr(const Json* n) {
  if (!n) return "";
  if (n->is_string()) return n->get<std::string>();
  if (n->is_number() || n->is_boolean()) return n->dump();
  return "";
}

RawNumber JNum(const Json* n) {
  RawNumber r;
  if (!n || n->is_null()) return r;
  r.present = true;
  r.text = n->is_string() ? n->get<std::string>() : n->dump();
  if (n->is_number_integer()) r.value = n->get<int64_t>();
  else if (n->is_string()) {
    // YAML reads "80" as a number too; keep the two sources alike.
    char* end = nullptr;
    const std::string& t = n->get_ref<const std::string&>();
    long v = strtol(t.c_str(), &end, 10);
    if (!t.empty() && end && *end == '\0') r.value = v;
  }
  return r;
}

std::optional<bool> JBool(const Json* n) {
  if (!n || !n->is_boolean()) return std::nullopt;
  return n->get<bool>();
}

std::vector<std::string> JStrs(const Json* n) {
  std::vector<std::string> out;
  if (n && n->is_array())
    for (const auto& x : *n) out.push_back(JStr(&x));
  return out;
}

struct JsonAccess {
  using Node = const Json*;
  static Node Field(Node n, const char* key) { return JGet(n, key); }
  static std::string String(Node n) { return JStr(n); }
  static RawNumber Number(Node n) { return JNum(n); }
  static std::optional<bool> Boolean(Node n) { return JBool(n); }
  static std::vector<std::string> Strings(Node n) { return JStrs(n); }
  static bool IsList(Node n) { return n && n->is_array(); }
  template <typename F>
  static void Each(Node n, F f) {
    if (IsList(n))
      for (const auto& x : *n) f(&x);
  }
};

void JsonObject(const Json& obj, ClusterState* out) {
  if (!obj.is_object()) return;
  std::string kind = JStr(JGet(&obj, "kind"));
  if (const Json* items = JGet(&obj, "items"); items && items->is_array()) {
    for (const auto& item : *items) JsonObject(item, out);
    return;
  }
  if (kind == "Service") ConvertService<JsonAccess>(&obj, out);
  else if (kind == "EndpointSlice")
    ConvertEndpointSlice<JsonAccess>(&obj, out);
  else if (!kind.empty())
    log::Debug("ignoring object ", log::Field("kind", kind));
}

// A single JSON document (an object or a `kind: List`): each item is turned
// into the model as soon as the parser closes it and then dropped, so a
// 10k-service list never exists as one tree in memory.
std::optional<ClusterState> ParseJsonStream(const std::string& text) {
  ClusterState state;
  auto cb = [&](int depth, Json::parse_event_t ev, Json& j) {
    if (ev == Json::parse_event_t::object_end && depth == 2 && j.is_object() && j.contains("kind") &&
        j.contains("metadata")) {
      JsonObject(j, &state);
      return false;  // consumed: do not keep it in the items array
    }
    return true;
  };
  Json top = Json::parse(text, cb, /*allow_exceptions=*/false);
  if (top.is_discarded()) return std::nullopt;
  JsonObject(top, &state);
  return state;
}

}  // namespace

absl::StatusOr<ClusterState> ParseClusterStateYaml(const std::string& text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    // JSON is YAML too, but yaml-cpp needs ~60x the text in memory for it.
    // A stream of several JSON documents falls through to yaml-cpp.
    if (auto st = ParseJsonStream(text)) return *std::move(st);
  }
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
