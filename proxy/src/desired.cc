#include "skiff/proxy/desired.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "skiff/common/log.h"
#include "skiff_bpf/lb.h"

namespace skiff::proxy {

namespace {

bool ParseIpv4(const std::string& s, uint32_t* out) {
  in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = a.s_addr;
  return true;
}

bool ParseIpv6(const std::string& s, Ipv6Address* out) {
  in6_addr a;
  if (inet_pton(AF_INET6, s.c_str(), &a) != 1) return false;
  static_assert(sizeof(a) == sizeof(*out));
  memcpy(out->data(), &a, sizeof(a));
  return true;
}

struct Candidate {
  Backend backend;
  bool ready;
  bool serving_terminating;
  bool local;
};

// Kubernetes' rule: ready endpoints; when there are none, the serving
// terminating ones; with a Local policy only endpoints on this node.
std::vector<Backend> Select(const std::vector<Candidate>& all, bool local_only) {
  std::vector<Backend> ready, terminating;
  for (const Candidate& c : all) {
    if (local_only && !c.local) continue;
    if (c.ready) ready.push_back(c.backend);
    else if (c.serving_terminating) terminating.push_back(c.backend);
  }
  std::vector<Backend>& out = ready.empty() ? terminating : ready;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

std::string Ipv6ToString(const Ipv6Address& address) {
  char buf[INET6_ADDRSTRLEN];
  in6_addr a;
  memcpy(&a, address.data(), sizeof(a));
  inet_ntop(AF_INET6, &a, buf, sizeof(buf));
  return buf;
}

std::string Ipv4ToString(uint32_t address_be) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{address_be};
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

namespace {

// The frontends of one service given its endpoint slices, from the store's
// records (addresses already binary, names as ids of `names`).
void ComputeServiceFrontends(const NameTable& names, const ServiceRecord& svc, const SliceRecord* slices,
                             size_t slice_count, const NodeConfig& node,
                             std::vector<std::pair<FrontendKey, Frontend>>* out) {
  if (svc.type == ServiceType::kExternalName) return;
  std::string key = names.Name(svc.ns);
  key += '/';
  key += svc.name;
  std::vector<uint32_t> vips;
  std::vector<Ipv6Address> vips6;  // dual-stack: clusterIPs of the IPv6 family
  for (const RecordIp& ip : svc.cluster_ips) {
    if (ip.family == 4) vips.push_back(ip.v4);
    else if (ip.family == 6) vips6.push_back(ip.v6);
    else if (!ip.text.empty() && ip.text != "None")
      log::Warn("skipping invalid clusterIP ", log::Field("service", key), " ", log::Field("ip", std::string(ip.text)));
  }
  // Headless (clusterIP None) services get no frontend at all.
  if (vips.empty() && vips6.empty()) return;
  std::vector<uint32_t> ext_ips;
  std::vector<Ipv6Address> ext_ips6;
  for (const RecordIp& ip : svc.external_ips) {
    if (ip.family == 4) ext_ips.push_back(ip.v4);
    else if (ip.family == 6) ext_ips6.push_back(ip.v6);
  }
  std::vector<uint32_t> node_ips;
  std::vector<Ipv6Address> node_ips6;
  for (const std::string& ip : node.node_ips) {
    uint32_t a;
    Ipv6Address a6;
    if (ParseIpv4(ip, &a)) node_ips.push_back(a);
    else if (ParseIpv6(ip, &a6)) node_ips6.push_back(a6);
  }
  bool node_port = svc.type == ServiceType::kNodePort || svc.type == ServiceType::kLoadBalancer;
  // An endpoint is local when its node name is --node-name (none is when
  // that name is empty, or no endpoint ever named it).
  uint32_t here = node.node_name.empty() ? NameTable::kNone : names.Find(node.node_name);

  for (const ServiceRecord::Port& sp : svc.ports) {
    std::vector<Candidate> cands, cands6;
    for (size_t si = 0; si < slice_count; ++si) {
      const SliceRecord& es = slices[si];
      for (const SliceRecord::Port& ep : es.ports) {
        if (ep.name != sp.name || ep.protocol != sp.protocol) continue;
        for (const SliceRecord::Endpoint& e : es.endpoints) {
          bool local = here != NameTable::kNone && e.node == here;
          for (uint32_t ai = e.first; ai < e.first + e.count; ++ai) {
            const RecordIp& a = es.addresses[ai];
            Candidate c;
            bool v6 = false;
            if (a.family == 4) {
              c.backend.address = a.v4;
            } else if (a.family == 6) {
              c.backend.address6 = a.v6;
              c.backend.v6 = v6 = true;
            } else {
              continue;
            }
            c.backend.port = ep.port;
            c.backend.proto = static_cast<uint8_t>(sp.protocol);
            c.backend.flags = local ? SKIFF_BE_F_LOCAL : 0;
            if (!e.ready) c.backend.flags |= SKIFF_BE_F_TERMINATING;
            c.ready = e.ready;
            c.serving_terminating = !e.ready && e.serving && e.terminating;
            c.local = local;
            (v6 ? cands6 : cands).push_back(c);
          }
        }
      }
    }
    Frontend internal;
    internal.service_port = key + ":" + names.Name(sp.name) + "/" + (sp.protocol == Protocol::kTcp ? "TCP" : "UDP");
    internal.flags = svc.affinity_client_ip ? SKIFF_SVC_F_AFFINITY : 0;
    internal.affinity_timeout_s = svc.affinity_client_ip ? svc.affinity_timeout_s : 0;
    internal.backends = Select(cands, svc.internal_policy_local);
    Frontend external = internal;
    external.backends = Select(cands, svc.external_policy_local);
    if (svc.external_policy_local) external.flags |= SKIFF_SVC_F_LOCAL;

    uint8_t proto = static_cast<uint8_t>(sp.protocol);
    for (uint32_t vip : vips) out->push_back({{vip, sp.port, proto, SKIFF_LB_SCOPE_SOCK}, internal});
    // IPv6 (the IPv6 EndpointSlices of a dual-stack or IPv6 service): the
    // same frontends as IPv4. Cluster IPs for the socket LB; external IPs
    // and NodePorts for the socket LB (from the node) and for tc (from
    // outside, address :: = any node address).
    if (!vips6.empty()) {
      Frontend internal6 = internal;
      internal6.backends = Select(cands6, svc.internal_policy_local);
      Frontend external6 = internal6;
      external6.backends = Select(cands6, svc.external_policy_local);
      if (svc.external_policy_local) external6.flags |= SKIFF_SVC_F_LOCAL;
      auto add6 = [&](const Ipv6Address& a, uint16_t port, const Frontend& f, uint8_t scope) {
        FrontendKey fk{0, port, proto, scope};
        fk.v6 = true;
        fk.address6 = a;
        out->push_back({fk, f});
      };
      for (const Ipv6Address& vip : vips6) add6(vip, sp.port, internal6, SKIFF_LB_SCOPE_SOCK);
      for (const Ipv6Address& ip : ext_ips6) {
        add6(ip, sp.port, internal6, SKIFF_LB_SCOPE_SOCK);
        add6(ip, sp.port, external6, SKIFF_LB_SCOPE_EXT);
      }
      if (node_port && sp.node_port) {
        Frontend np6 = external6;
        np6.flags |= SKIFF_SVC_F_NODEPORT;
        add6(Ipv6Address{}, sp.node_port, np6, SKIFF_LB_SCOPE_EXT);
        Frontend np_local6 = internal6;
        np_local6.backends = Select(cands6, false);
        for (const Ipv6Address& ip : node_ips6) add6(ip, sp.node_port, np_local6, SKIFF_LB_SCOPE_SOCK);
      }
    }
    // External IPs and node ports are IPv4 (tc); a single-stack IPv6
    // service has none here.
    if (vips.empty()) continue;
    for (uint32_t ip : ext_ips) {
      // From the node itself external IPs behave like the cluster IP; from
      // outside they follow externalTrafficPolicy.
      out->push_back({{ip, sp.port, proto, SKIFF_LB_SCOPE_SOCK}, internal});
      out->push_back({{ip, sp.port, proto, SKIFF_LB_SCOPE_EXT}, external});
    }
    if (node_port && sp.node_port) {
      Frontend np = external;
      np.flags |= SKIFF_SVC_F_NODEPORT;
      out->push_back({{0, sp.node_port, proto, SKIFF_LB_SCOPE_EXT}, np});
      // NodePort connections made on the node itself go to any endpoint.
      Frontend np_local = internal;
      np_local.backends = Select(cands, false);
      for (uint32_t ip : node_ips) out->push_back({{ip, sp.node_port, proto, SKIFF_LB_SCOPE_SOCK}, np_local});
    }
  }
}

// FNV-1a over the encoded fields that decide a service's frontends.
class Fingerprint {
 public:
  void Bytes(std::string_view b) {
    Num(b.size());
    for (char c : b) h_ = (h_ ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  }
  void Num(uint64_t v) {
    for (size_t i = 0; i < sizeof(v); ++i) h_ = (h_ ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

}  // namespace

DesiredBuilder::DesiredBuilder(NodeConfig node) : node_(std::move(node)) {}
DesiredBuilder::~DesiredBuilder() = default;
DesiredBuilder::DesiredBuilder(DesiredBuilder&&) = default;
DesiredBuilder& DesiredBuilder::operator=(DesiredBuilder&&) = default;

uint64_t DesiredBuilder::Load(const CompactState& state, const CompactState::Entry& e) {
  state.Decode(e.service.get(), &svc_);
  if (slices_.size() < e.slices.size()) slices_.resize(e.slices.size());
  slice_count_ = e.slices.size();
  Fingerprint f;
  f.Bytes(svc_.routing_bytes);
  f.Num(slice_count_);
  for (size_t i = 0; i < slice_count_; ++i) {
    state.Decode(e.slices[i], &slices_[i]);
    f.Bytes(slices_[i].bytes);
  }
  return f.value();
}

void DesiredBuilder::Drop(const std::string& service_key, const OneOrMore<FrontendKey>& old,
                          const OneOrMore<FrontendKey>* keep, FrontendDelta* delta) {
  for (const FrontendKey& fk : old) {
    if (keep && std::binary_search(keep->begin(), keep->end(), fk)) continue;
    auto it = owner_.find(fk);
    // Only if it is still ours (another service may have taken the address).
    if (it != owner_.end() && *it->second == service_key) {
      owner_.erase(it);
      (*delta)[fk] = std::nullopt;
    }
  }
}

void DesiredBuilder::Visit(const std::string& key, const CompactState& state, FrontendDelta* delta) {
  const CompactState::Entry* e = state.Find(key);
  auto cit = cache_.find(key);
  if (!e || !e->service) {
    if (cit != cache_.end()) {
      Drop(key, cit->second.keys, nullptr, delta);
      cache_.erase(cit);
    }
    return;
  }
  uint64_t fp = Load(state, *e);
  if (cit != cache_.end() && cit->second.fingerprint == fp) return;
  std::vector<std::pair<FrontendKey, Frontend>> fresh;
  Cached c = Compute(state, fp, &fresh);
  if (cit != cache_.end()) Drop(key, cit->second.keys, &c.keys, delta);
  auto entry = cache_.try_emplace(key).first;
  for (auto& [fk, f] : fresh) {
    owner_[fk] = &entry->first;
    (*delta)[fk] = std::move(f);
  }
  entry->second = std::move(c);
}

DesiredBuilder::Cached DesiredBuilder::Compute(const CompactState& state, uint64_t fingerprint,
                                               std::vector<std::pair<FrontendKey, Frontend>>* fresh) const {
  ComputeServiceFrontends(state.names(), svc_, slices_.data(), slice_count_, node_, fresh);
  Cached c;
  c.fingerprint = fingerprint;
  c.keys.reserve(fresh->size());
  for (const auto& [fk, f] : *fresh) c.keys.push_back(fk);
  std::sort(c.keys.begin(), c.keys.end());
  return c;
}

void DesiredBuilder::FirstPass(const CompactState& state, FrontendDelta* delta) {
  // Two loops, so that the builder's own entries are allocated after the
  // whole delta rather than between its nodes: the delta is freed after the
  // pass, and its pages then go back to the system whole instead of staying
  // resident around the long-lived entries (~2 MB at 10k services).
  struct Pending {
    const CompactState::Entry* entry;
    Cached cached;
  };
  std::vector<Pending> pending;
  pending.reserve(state.service_count());
  std::vector<std::pair<FrontendKey, Frontend>> fresh;
  state.ForEach([&](const CompactState::Entry& e) {
    if (!e.service) return;
    fresh.clear();
    uint64_t fp = Load(state, e);
    pending.push_back({&e, Compute(state, fp, &fresh)});
    for (auto& [fk, f] : fresh) (*delta)[fk] = std::move(f);
  });
  // Same order as the loop above, so the last service to produce a
  // frontend key owns it, as with Visit().
  for (Pending& p : pending) {
    auto entry = cache_.try_emplace(state.KeyOf(*p.entry)).first;
    entry->second = std::move(p.cached);
    for (const FrontendKey& fk : entry->second.keys) owner_[fk] = &entry->first;
  }
}

FrontendDelta DesiredBuilder::Update(const CompactState& state, const ChangeSet& changes) {
  FrontendDelta delta;
  if (changes.all) {
    if (cache_.empty()) {
      FirstPass(state, &delta);
      return delta;
    }
    std::vector<std::string> keys;
    keys.reserve(state.service_count());
    state.ForEach([&](const CompactState::Entry& e) {
      if (e.service) keys.push_back(state.KeyOf(e));
    });
    for (const auto& [key, c] : cache_) {
      const CompactState::Entry* e = state.Find(key);
      if (!e || !e->service) keys.push_back(key);
    }
    for (const std::string& key : keys) Visit(key, state, &delta);
    return delta;
  }
  // A changed slice's services (the one it named before and the one it
  // names now) are in changes.services: the store puts them there.
  for (const std::string& key : changes.services) Visit(key, state, &delta);
  return delta;
}

FrontendDelta DesiredBuilder::Update(const ClusterState& state, const ChangeSet& changes) {
  if (!mirror_) mirror_ = std::make_unique<CompactState>();
  if (changes.all) {
    mirror_->Assign(state);
    return Update(*mirror_, changes);
  }
  ChangeSet c = changes;
  auto split = [](const std::string& key) {
    size_t slash = key.find('/');
    return std::make_pair(key.substr(0, slash), slash == std::string::npos ? "" : key.substr(slash + 1));
  };
  for (const std::string& key : changes.services) {
    if (auto it = state.services.find(key); it != state.services.end()) {
      mirror_->PutService(it->second);
    } else {
      auto [ns, name] = split(key);
      mirror_->EraseService(ns, name);
    }
  }
  for (const std::string& key : changes.slices) {
    if (auto it = state.endpoint_slices.find(key); it != state.endpoint_slices.end()) {
      mirror_->PutSlice(it->second, &c.services);
    } else {
      auto [ns, name] = split(key);
      mirror_->EraseSlice(ns, name, &c.services);
    }
  }
  return Update(*mirror_, c);
}

DesiredState ComputeDesired(const ClusterState& state, const NodeConfig& node) {
  DesiredBuilder b(node);
  DesiredState out;
  for (auto& [fk, f] : b.Update(state))
    if (f) out.frontends.emplace(fk, std::move(*f));
  return out;
}

}  // namespace skiff::proxy
