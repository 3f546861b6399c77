#include "skiff/proxy/desired.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

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

void ComputeServiceFrontends(const Service& svc, const std::vector<const EndpointSlice*>& slices,
                             const NodeConfig& node, std::vector<std::pair<FrontendKey, Frontend>>* out) {
  if (svc.type == ServiceType::kExternalName) return;
  const std::string key = svc.Key();
  std::vector<uint32_t> vips;
  std::vector<Ipv6Address> vips6;  // dual-stack: clusterIPs of the IPv6 family
  for (const std::string& ip : svc.cluster_ips) {
    if (ip.empty() || ip == "None") continue;
    uint32_t a;
    Ipv6Address a6;
    if (ParseIpv4(ip, &a)) vips.push_back(a);
    else if (ParseIpv6(ip, &a6)) vips6.push_back(a6);
    else
      log::Warn("skipping invalid clusterIP ", log::Field("service", key), " ", log::Field("ip", ip));
  }
  // Headless (clusterIP None) services get no frontend at all.
  if (vips.empty() && vips6.empty()) return;
  std::vector<uint32_t> ext_ips;
  std::vector<Ipv6Address> ext_ips6;
  for (const std::string& ip : svc.external_ips) {
    uint32_t a;
    Ipv6Address a6;
    if (ParseIpv4(ip, &a)) ext_ips.push_back(a);
    else if (ParseIpv6(ip, &a6)) ext_ips6.push_back(a6);
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

  for (const ServicePort& sp : svc.ports) {
    std::vector<Candidate> cands, cands6;
    for (const EndpointSlice* es : slices) {
      for (const EndpointPort& ep : es->ports) {
        if (ep.name != sp.name || ep.protocol != sp.protocol) continue;
        for (const Endpoint& e : es->endpoints) {
          bool local = !node.node_name.empty() && e.node_name == node.node_name;
          for (const std::string& a : e.addresses) {
            Candidate c;
            bool v6 = false;
            if (!ParseIpv4(a, &c.backend.address)) {
              if (!ParseIpv6(a, &c.backend.address6)) continue;
              c.backend.v6 = v6 = true;
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
    internal.service_port = key + ":" + sp.name + "/" + (sp.protocol == Protocol::kTcp ? "TCP" : "UDP");
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

namespace {

// FNV-1a over the fields that decide a service's frontends.
class Fingerprint {
 public:
  void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ b[i]) * 0x100000001b3ULL;
  }
  void Str(const std::string& s) {
    Num(s.size());
    Bytes(s.data(), s.size());
  }
  void Num(uint64_t v) { Bytes(&v, sizeof(v)); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

uint64_t FingerprintOf(const Service& svc, const std::vector<const EndpointSlice*>& slices) {
  Fingerprint f;
  f.Num(static_cast<uint64_t>(svc.type));
  f.Num(svc.cluster_ips.size());
  for (const auto& ip : svc.cluster_ips) f.Str(ip);
  f.Num(svc.external_ips.size());
  for (const auto& ip : svc.external_ips) f.Str(ip);
  f.Num(svc.ports.size());
  for (const auto& p : svc.ports) {
    f.Str(p.name);
    f.Num((uint64_t(p.protocol) << 32) | (uint64_t(p.port) << 16) | p.node_port);
  }
  f.Num((uint64_t(svc.affinity_client_ip) << 40) | (uint64_t(svc.external_policy_local) << 36) |
        (uint64_t(svc.internal_policy_local) << 35) | svc.affinity_timeout_s);
  f.Num(slices.size());
  for (const EndpointSlice* es : slices) {
    f.Str(es->name);
    f.Num(es->ports.size());
    for (const auto& p : es->ports) {
      f.Str(p.name);
      f.Num((uint64_t(p.protocol) << 16) | p.port);
    }
    f.Num(es->endpoints.size());
    for (const auto& e : es->endpoints) {
      f.Num(e.addresses.size());
      for (const auto& a : e.addresses) f.Str(a);
      f.Num((e.ready ? 4 : 0) | (e.serving ? 2 : 0) | (e.terminating ? 1 : 0));
      f.Str(e.node_name);
    }
  }
  return f.value();
}

}  // namespace

void DesiredBuilder::LinkSlice(const std::string& service_key, const std::string& slice_key) {
  auto& v = slices_of_[service_key];
  auto it = std::lower_bound(v.begin(), v.end(), slice_key);
  if (it == v.end() || *it != slice_key) v.insert(it, slice_key);
}

namespace {

// Whether `key` is "<ns>/<service>" of the slice, without building the string.
bool SliceBelongsTo(const EndpointSlice& es, const std::string& key) {
  return key.size() == es.ns.size() + 1 + es.service_name.size() && key.compare(0, es.ns.size(), es.ns) == 0 &&
         key[es.ns.size()] == '/' && key.compare(es.ns.size() + 1, std::string::npos, es.service_name) == 0;
}

}  // namespace

void DesiredBuilder::SlicesOf(const std::string& service_key, const ClusterState& state,
                              std::vector<const EndpointSlice*>* mine) {
  auto it = slices_of_.find(service_key);
  if (it == slices_of_.end()) return;
  // Entries of slices that are gone or now name another service are dropped
  // here: the store names a slice's previous service in the ChangeSet, so
  // that service is visited in the same pass as the slice's change.
  auto& v = it->second;
  v.erase(std::remove_if(v.begin(), v.end(),
                         [&](const std::string& sk) {
                           auto es = state.endpoint_slices.find(sk);
                           if (es == state.endpoint_slices.end() || !SliceBelongsTo(es->second, service_key))
                             return true;
                           mine->push_back(&es->second);
                           return false;
                         }),
          v.end());
  if (v.empty()) slices_of_.erase(it);
}

void DesiredBuilder::Drop(const std::string& service_key, const OneOrMore<FrontendKey>& old,
                          const OneOrMore<FrontendKey>* keep,
                          std::map<FrontendKey, std::optional<Frontend>>* delta) {
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

void DesiredBuilder::Visit(const std::string& key, const ClusterState& state,
                           std::map<FrontendKey, std::optional<Frontend>>* delta) {
  std::vector<const EndpointSlice*> mine;
  SlicesOf(key, state, &mine);
  auto sit = state.services.find(key);
  auto cit = cache_.find(key);
  if (sit == state.services.end()) {
    if (cit != cache_.end()) {
      Drop(key, cit->second.keys, nullptr, delta);
      cache_.erase(cit);
    }
    return;
  }
  const Service& svc = sit->second;
  uint64_t fp = FingerprintOf(svc, mine);
  if (cit != cache_.end() && cit->second.fingerprint == fp) return;
  std::vector<std::pair<FrontendKey, Frontend>> fresh;
  Cached c = Compute(svc, mine, fp, &fresh);
  if (cit != cache_.end()) Drop(key, cit->second.keys, &c.keys, delta);
  auto entry = cache_.try_emplace(key).first;
  for (auto& [fk, f] : fresh) {
    owner_[fk] = &entry->first;
    (*delta)[fk] = std::move(f);
  }
  entry->second = std::move(c);
}

DesiredBuilder::Cached DesiredBuilder::Compute(const Service& svc, const std::vector<const EndpointSlice*>& mine,
                                               uint64_t fingerprint,
                                               std::vector<std::pair<FrontendKey, Frontend>>* fresh) const {
  ComputeServiceFrontends(svc, mine, node_, fresh);
  Cached c;
  c.fingerprint = fingerprint;
  c.keys.reserve(fresh->size());
  for (const auto& [fk, f] : *fresh) c.keys.push_back(fk);
  std::sort(c.keys.begin(), c.keys.end());
  return c;
}

void DesiredBuilder::FirstPass(const ClusterState& state, std::map<FrontendKey, std::optional<Frontend>>* delta) {
  // Two loops, so that the builder's own entries are allocated after the
  // whole delta rather than between its nodes: the delta is freed after the
  // pass, and its pages then go back to the system whole instead of staying
  // resident around the long-lived entries (~2 MB at 10k services).
  struct Pending {
    const std::string* key;
    Cached cached;
  };
  std::vector<Pending> pending;
  pending.reserve(state.services.size());
  std::vector<const EndpointSlice*> mine;
  std::vector<std::pair<FrontendKey, Frontend>> fresh;
  for (const auto& [key, svc] : state.services) {
    mine.clear();
    fresh.clear();
    SlicesOf(key, state, &mine);
    pending.push_back({&key, Compute(svc, mine, FingerprintOf(svc, mine), &fresh)});
    for (auto& [fk, f] : fresh) (*delta)[fk] = std::move(f);
  }
  // Same order as the loop above, so the last service to produce a
  // frontend key owns it, as with Visit().
  for (Pending& p : pending) {
    auto entry = cache_.try_emplace(*p.key).first;
    entry->second = std::move(p.cached);
    for (const FrontendKey& fk : entry->second.keys) owner_[fk] = &entry->first;
  }
}

std::map<FrontendKey, std::optional<Frontend>> DesiredBuilder::Update(const ClusterState& state,
                                                                      const ChangeSet& changes) {
  std::map<FrontendKey, std::optional<Frontend>> delta;
  if (changes.all) {
    slices_of_.clear();
    for (const auto& [k, es] : state.endpoint_slices) LinkSlice(es.ns + "/" + es.service_name, k);
    if (cache_.empty()) {
      FirstPass(state, &delta);
      return delta;
    }
    for (const auto& [key, svc] : state.services) Visit(key, state, &delta);
    std::vector<std::string> gone;
    for (const auto& [key, c] : cache_)
      if (!state.services.count(key)) gone.push_back(key);
    for (const std::string& key : gone) Visit(key, state, &delta);
    return delta;
  }
  // A changed slice's previous service is in changes.services (the store
  // puts it there), and is visited like the slice's current one.
  std::set<std::string> visit = changes.services;
  for (const std::string& sk : changes.slices) {
    if (auto es = state.endpoint_slices.find(sk); es != state.endpoint_slices.end()) {
      std::string svc = es->second.ns + "/" + es->second.service_name;
      LinkSlice(svc, sk);
      visit.insert(std::move(svc));
    }
  }
  for (const std::string& key : visit) Visit(key, state, &delta);
  return delta;
}

DesiredState ComputeDesired(const ClusterState& state, const NodeConfig& node) {
  DesiredBuilder b(node);
  DesiredState out;
  for (auto& [fk, f] : b.Update(state))
    if (f) out.frontends.emplace(fk, std::move(*f));
  return out;
}

}  // namespace skiff::proxy
