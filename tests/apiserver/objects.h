// Minimal valid objects of every kind, for the verb suites.
#pragma once

#include <string>

#include "skiff/api/v1/objects.pb.h"

namespace skiff::apitest {

using ::skiff::api::v1::Object;

inline Object MakeObject(const std::string& resource, const std::string& ns, const std::string& name) {
  Object o;
  auto meta = [&](auto* m) {
    m->set_name(name);
    if (!ns.empty()) m->set_namespace_(ns);
    (*m->mutable_labels())["suite"] = "verbs";
  };
  if (resource == "namespaces") {
    meta(o.mutable_namespace_()->mutable_metadata());
  } else if (resource == "nodes") {
    meta(o.mutable_node()->mutable_metadata());
    auto* a = o.mutable_node()->mutable_status()->add_addresses();
    a->set_type("InternalIP");
    a->set_address("127.0.0.1");
  } else if (resource == "pods") {
    meta(o.mutable_pod()->mutable_metadata());
    auto* c = o.mutable_pod()->mutable_spec()->add_containers();
    c->set_name("app");
    c->set_image("busybox:1.36");
  } else if (resource == "services") {
    meta(o.mutable_service()->mutable_metadata());
    (*o.mutable_service()->mutable_spec()->mutable_selector())["app"] = name;
    o.mutable_service()->mutable_spec()->add_ports()->set_port(80);
  } else if (resource == "endpointslices") {
    meta(o.mutable_endpoint_slice()->mutable_metadata());
    o.mutable_endpoint_slice()->set_address_type("IPv4");
    auto* e = o.mutable_endpoint_slice()->add_endpoints();
    e->add_addresses("10.244.0.5");
  } else if (resource == "deployments" || resource == "replicasets") {
    api::v1::LabelSelector sel;
    (*sel.mutable_match_labels())["app"] = name;
    api::v1::PodTemplateSpec t;
    (*t.mutable_metadata()->mutable_labels())["app"] = name;
    auto* c = t.mutable_spec()->add_containers();
    c->set_name("app");
    c->set_image("busybox:1.36");
    if (resource == "deployments") {
      meta(o.mutable_deployment()->mutable_metadata());
      *o.mutable_deployment()->mutable_spec()->mutable_selector() = sel;
      *o.mutable_deployment()->mutable_spec()->mutable_template_() = t;
    } else {
      meta(o.mutable_replica_set()->mutable_metadata());
      *o.mutable_replica_set()->mutable_spec()->mutable_selector() = sel;
      *o.mutable_replica_set()->mutable_spec()->mutable_template_() = t;
    }
  } else if (resource == "leases") {
    meta(o.mutable_lease()->mutable_metadata());
    o.mutable_lease()->mutable_spec()->set_holder_identity("me");
  } else if (resource == "events") {
    meta(o.mutable_event()->mutable_metadata());
    o.mutable_event()->mutable_involved_object()->set_kind("Pod");
    o.mutable_event()->mutable_involved_object()->set_name("x");
    o.mutable_event()->set_reason("Test");
  } else if (resource == "configmaps") {
    meta(o.mutable_config_map()->mutable_metadata());
    (*o.mutable_config_map()->mutable_data())["k"] = "v";
  } else if (resource == "secrets") {
    meta(o.mutable_secret()->mutable_metadata());
    (*o.mutable_secret()->mutable_data())["k"] = "v";
  } else if (resource == "serviceaccounts") {
    meta(o.mutable_service_account()->mutable_metadata());
  } else if (resource == "roles") {
    meta(o.mutable_role()->mutable_metadata());
    auto* r = o.mutable_role()->add_rules();
    r->add_verbs("get");
    r->add_api_groups("");
    r->add_resources("pods");
  } else if (resource == "clusterroles") {
    meta(o.mutable_cluster_role()->mutable_metadata());
    auto* r = o.mutable_cluster_role()->add_rules();
    r->add_verbs("get");
    r->add_api_groups("");
    r->add_resources("nodes");
  } else if (resource == "rolebindings") {
    meta(o.mutable_role_binding()->mutable_metadata());
    o.mutable_role_binding()->mutable_role_ref()->set_kind("ClusterRole");
    o.mutable_role_binding()->mutable_role_ref()->set_name("view");
    auto* s = o.mutable_role_binding()->add_subjects();
    s->set_kind("User");
    s->set_name("someone");
  } else if (resource == "clusterrolebindings") {
    meta(o.mutable_cluster_role_binding()->mutable_metadata());
    o.mutable_cluster_role_binding()->mutable_role_ref()->set_kind("ClusterRole");
    o.mutable_cluster_role_binding()->mutable_role_ref()->set_name("view");
    auto* s = o.mutable_cluster_role_binding()->add_subjects();
    s->set_kind("User");
    s->set_name("someone");
  }
  return o;
}

}  // namespace skiff::apitest
