#include "skiff/proxy/desired.h"

#include <arpa/inet.h>

#include <algorithm>
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

std::string Ipv4ToString(uint32_t address_be) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{address_be};
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

DesiredState ComputeDesired(const ClusterState& state, const NodeConfig& node) {
  DesiredState out;
  std::vector<uint32_t> node_ips;
  for (const std::string& ip : node.node_ips) {
    uint32_t a;
    if (ParseIpv4(ip, &a)) node_ips.push_back(a);
  }
  // slices by ns/service
  std::unordered_map<std::string, std::vector<const EndpointSlice*>> slices;
  for (const auto& [key, es] : state.endpoint_slices) slices[es.ns + "/" + es.service_name].push_back(&es);

  for (const auto& [key, svc] : state.services) {
    if (svc.type == "ExternalName") continue;
    std::vector<uint32_t> vips;
    for (const std::string& ip : svc.cluster_ips) {
      if (ip.empty() || ip == "None") continue;
      uint32_t a;
      if (ParseIpv4(ip, &a)) vips.push_back(a);
      else if (ip.find(':') == std::string::npos)
        log::Warn("skipping invalid clusterIP ", log::Field("service", key), " ", log::Field("ip", ip));
    }
    std::vector<uint32_t> ext_ips;
    for (const std::string& ip : svc.external_ips) {
      uint32_t a;
      if (ParseIpv4(ip, &a)) ext_ips.push_back(a);
    }
    // Headless (clusterIP None) services get no frontend at all.
    if (vips.empty()) continue;
    bool node_port = svc.type == "NodePort" || svc.type == "LoadBalancer";
    auto sit = slices.find(key);

    for (const ServicePort& sp : svc.ports) {
      std::vector<Candidate> cands;
      if (sit != slices.end()) {
        for (const EndpointSlice* es : sit->second) {
          for (const EndpointPort& ep : es->ports) {
            if (ep.name != sp.name || ep.protocol != sp.protocol) continue;
            for (const Endpoint& e : es->endpoints) {
              bool local = !node.node_name.empty() && e.node_name == node.node_name;
              for (const std::string& a : e.addresses) {
                Candidate c;
                if (!ParseIpv4(a, &c.backend.address)) continue;
                c.backend.port = ep.port;
                c.backend.proto = static_cast<uint8_t>(sp.protocol);
                c.backend.flags = local ? SKIFF_BE_F_LOCAL : 0;
                if (!e.ready) c.backend.flags |= SKIFF_BE_F_TERMINATING;
                c.ready = e.ready;
                c.serving_terminating = !e.ready && e.serving && e.terminating;
                c.local = local;
                cands.push_back(c);
              }
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
      for (uint32_t vip : vips) out.frontends[{vip, sp.port, proto, SKIFF_LB_SCOPE_SOCK}] = internal;
      for (uint32_t ip : ext_ips) {
        // From the node itself external IPs behave like the cluster IP; from
        // outside they follow externalTrafficPolicy.
        out.frontends[{ip, sp.port, proto, SKIFF_LB_SCOPE_SOCK}] = internal;
        out.frontends[{ip, sp.port, proto, SKIFF_LB_SCOPE_EXT}] = external;
      }
      if (node_port && sp.node_port) {
        Frontend np = external;
        np.flags |= SKIFF_SVC_F_NODEPORT;
        out.frontends[{0, sp.node_port, proto, SKIFF_LB_SCOPE_EXT}] = np;
        // NodePort connections made on the node itself go to any endpoint.
        Frontend np_local = internal;
        np_local.backends = Select(cands, false);
        for (uint32_t ip : node_ips) out.frontends[{ip, sp.node_port, proto, SKIFF_LB_SCOPE_SOCK}] = np_local;
      }
    }
  }
  return out;
}

}  // namespace skiff::proxy
