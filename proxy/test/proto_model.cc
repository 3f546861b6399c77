#include "proto_model.h"

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

void ServiceToModel(const api::v1::Service& o, ClusterState* out,
                    std::vector<std::string>* problems = nullptr) {
  RawService r;
  r.ns = o.metadata().namespace_();
  r.name = o.metadata().name();
  const auto& spec = o.spec();
  r.type = spec.type();
  r.cluster_ip = spec.cluster_ip();
  if (spec.cluster_ips_size() > 0)
    r.cluster_ips.assign(spec.cluster_ips().begin(), spec.cluster_ips().end());
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

}  // namespace

absl::StatusOr<ClusterState> ModelFromObjects(const std::vector<api::v1::Object>& objects) {
  ClusterState state;
  for (const auto& o : objects) {
    if (o.has_service())
      ServiceToModel(o.service(), &state);
    else if (o.has_endpoint_slice())
      SliceToModel(o.endpoint_slice(), &state);
    else
      return absl::InvalidArgumentError("neither a Service nor an EndpointSlice");
  }
  return state;
}

}  // namespace skiff::proxy
