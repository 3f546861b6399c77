// Unit tests: Kubernetes-shaped input parsing, the desired-state rules
// (headless, terminating fallback, traffic policies, NodePort, affinity),
// the incremental builder and the Maglev table.
#include <arpa/inet.h>
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <thread>
#include <random>

#include "gtest/gtest.h"
#if defined(__SANITIZE_ADDRESS__)
// libasan's (GCC ships no header for it): bytes its allocator hands out.
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif
#include "raw_objects.h"
#include "proto_model.h"
#include "skiff/proxy/desired.h"
#include "skiff/proxy/service_map.h"
#include "skiff/proxy/source.h"
#include "skiff_bpf/lb.h"

namespace skiff::proxy {
namespace {

uint32_t Ip(const char* s) {
  in_addr a;
  inet_pton(AF_INET, s, &a);
  return a.s_addr;
}

const char* kYaml = R"(
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec:
    type: NodePort
    clusterIP: 10.96.0.10
    externalIPs: [203.0.113.10]
    sessionAffinity: ClientIP
    externalTrafficPolicy: Local
    ports:
    - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
    - {name: bad, port: 0}
    - {name: sctp, port: 90, protocol: SCTP}
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: shop}
  spec: {clusterIP: None, ports: [{port: 5432}]}
- apiVersion: v1
  kind: Service
  metadata: {namespace: shop}
  spec: {clusterIP: 10.96.0.99, ports: [{port: 1}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{name: http, port: 8080}]
  endpoints:
  - {addresses: [10.244.1.5], nodeName: me}
  - {addresses: [10.244.2.5], nodeName: other}
  - {addresses: [10.244.1.6], nodeName: me, conditions: {ready: false, serving: true, terminating: true}}
  - {addresses: [not-an-ip], nodeName: me}
)";

TEST(Parse, ReadsServicesAndSlicesAndSkipsMalformedParts) {
  auto st = ParseClusterStateYaml(kYaml);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->services.size(), 2u);  // the nameless one is skipped
  const Service& web = st->services.at("shop/web");
  ASSERT_EQ(web.ports.size(), 1u);  // port 0 and SCTP skipped
  EXPECT_EQ(web.ports[0].node_port, 30080);
  EXPECT_TRUE(web.affinity_client_ip);
  EXPECT_EQ(web.affinity_timeout_s, 10800u);
  EXPECT_TRUE(web.external_policy_local);
  const EndpointSlice& es = st->endpoint_slices.at("shop/web-1");
  EXPECT_EQ(es.endpoints.size(), 3u);
  EXPECT_FALSE(es.endpoints[2].ready);
  EXPECT_TRUE(es.endpoints[2].terminating);
}

TEST(Parse, AcceptsJson) {
  auto st = ParseClusterStateYaml(
      R"({"kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":53,"protocol":"UDP"}]}})");
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->services.count("default/a"), 1u);
  EXPECT_EQ(st->services.at("default/a").ports[0].protocol, Protocol::kUdp);
}

// The same objects as kYaml, as one JSON List: the streaming JSON path and
// the YAML path must give the same model (one set of validation rules).
const char* kJson = R"({"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},
  "spec":{"type":"NodePort","clusterIP":"10.96.0.10","externalIPs":["203.0.113.10"],"sessionAffinity":"ClientIP",
   "externalTrafficPolicy":"Local","ports":[{"name":"http","port":80,"targetPort":8080,"nodePort":30080},
   {"name":"bad","port":0},{"name":"sctp","port":90,"protocol":"SCTP"}]}},
 {"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"shop"},
  "spec":{"clusterIP":"None","ports":[{"port":5432}]}},
 {"apiVersion":"v1","kind":"Service","metadata":{"namespace":"shop"},"spec":{"clusterIP":"10.96.0.99","ports":[{"port":1}]}},
 {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
  "metadata":{"name":"web-1","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},
  "addressType":"IPv4","ports":[{"name":"http","port":8080}],
  "endpoints":[{"addresses":["10.244.1.5"],"nodeName":"me"},{"addresses":["10.244.2.5"],"nodeName":"other"},
   {"addresses":["10.244.1.6"],"nodeName":"me","conditions":{"ready":false,"serving":true,"terminating":true}},
   {"addresses":["not-an-ip"],"nodeName":"me"}]}]})";

TEST(Parse, JsonListGivesTheSameModelAsYaml) {
  auto y = ParseClusterStateYaml(kYaml);
  auto j = ParseClusterStateYaml(kJson);
  ASSERT_TRUE(y.ok() && j.ok());
  EXPECT_EQ(j->services, y->services);
  EXPECT_EQ(j->endpoint_slices, y->endpoint_slices);
  EXPECT_EQ(j->services.size(), 2u);
}

TEST(Parse, ApiObjectsGiveTheSameModelAsYaml) {
  std::vector<api::v1::Object> objs(3);
  auto* web = objs[0].mutable_service();
  web->mutable_metadata()->set_name("web");
  web->mutable_metadata()->set_namespace_("shop");
  auto* spec = web->mutable_spec();
  spec->set_type("NodePort");
  spec->set_cluster_ip("10.96.0.10");
  spec->add_external_ips("203.0.113.10");
  spec->set_session_affinity("ClientIP");
  spec->set_external_traffic_policy("Local");
  auto* p = spec->add_ports();
  p->set_name("http");
  p->set_port(80);
  p->set_target_port("8080");
  p->set_node_port(30080);
  spec->add_ports()->set_name("bad");  // port 0
  p = spec->add_ports();
  p->set_name("sctp");
  p->set_port(90);
  p->set_protocol("SCTP");
  auto* db = objs[1].mutable_service();
  db->mutable_metadata()->set_name("db");
  db->mutable_metadata()->set_namespace_("shop");
  db->mutable_spec()->set_cluster_ip("None");
  db->mutable_spec()->add_ports()->set_port(5432);
  auto* es = objs[2].mutable_endpoint_slice();
  es->mutable_metadata()->set_name("web-1");
  es->mutable_metadata()->set_namespace_("shop");
  (*es->mutable_metadata()->mutable_labels())["kubernetes.io/service-name"] = "web";
  es->set_address_type("IPv4");
  auto* ep = es->add_ports();
  ep->set_name("http");
  ep->set_port(8080);
  auto add = [&](const char* ip, const char* node) {
    auto* e = es->add_endpoints();
    e->add_addresses(ip);
    e->set_node_name(node);
    return e;
  };
  add("10.244.1.5", "me");
  add("10.244.2.5", "other");
  auto* t = add("10.244.1.6", "me");
  t->mutable_conditions()->set_ready(false);
  t->mutable_conditions()->set_serving(true);
  t->mutable_conditions()->set_terminating(true);
  add("not-an-ip", "me");
  auto api = ModelFromObjects(objs);
  auto y = ParseClusterStateYaml(kYaml);
  ASSERT_TRUE(api.ok() && y.ok());
  EXPECT_EQ(api->services, y->services);
  EXPECT_EQ(api->endpoint_slices, y->endpoint_slices);
}

// Dual-stack as Kubernetes writes it: clusterIPs of both families (with
// ipFamilies), one EndpointSlice per address type.
const char* kDualStackYaml = R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ds}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: ds, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.5], nodeName: me}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: ds, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00:244::5"], nodeName: me}
- {addresses: ["fd00:244::6"], nodeName: other, conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.244.1.9], nodeName: me}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-fqdn, namespace: ds, labels: {kubernetes.io/service-name: web}}
addressType: FQDN
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [web.example.com]}
)";

TEST(Parse, Ipv6EndpointSlicesFromFileAndApiBecomeIpv6Frontends) {
  auto y = ParseClusterStateYaml(kDualStackYaml);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->endpoint_slices.count("ds/web-v6"), 1u);
  EXPECT_EQ(y->endpoint_slices.count("ds/web-fqdn"), 0u);
  const EndpointSlice& v6 = y->endpoint_slices.at("ds/web-v6");
  ASSERT_EQ(v6.endpoints.size(), 2u);  // the IPv4 address in an IPv6 slice is skipped
  EXPECT_EQ(v6.endpoints[0].addresses, OneOrMore<std::string>{"fd00:244::5"});
  EXPECT_FALSE(v6.endpoints[1].ready);
  EXPECT_EQ(y->services.at("ds/web").cluster_ips, (OneOrMore<std::string>{"10.96.0.10", "fd00:96::10"}));

  // The same objects as API protos give the same model.
  std::vector<api::v1::Object> objs(3);
  auto* svc = objs[0].mutable_service();
  svc->mutable_metadata()->set_name("web");
  svc->mutable_metadata()->set_namespace_("ds");
  svc->mutable_spec()->set_cluster_ip("10.96.0.10");
  svc->mutable_spec()->add_cluster_ips("10.96.0.10");
  svc->mutable_spec()->add_cluster_ips("fd00:96::10");
  auto* sp = svc->mutable_spec()->add_ports();
  sp->set_name("http");
  sp->set_port(80);
  auto slice = [&](api::v1::Object& o, const char* name, const char* type) {
    auto* es = o.mutable_endpoint_slice();
    es->mutable_metadata()->set_name(name);
    es->mutable_metadata()->set_namespace_("ds");
    (*es->mutable_metadata()->mutable_labels())["kubernetes.io/service-name"] = "web";
    es->set_address_type(type);
    auto* p = es->add_ports();
    p->set_name("http");
    p->set_port(8080);
    return es;
  };
  auto* e4 = slice(objs[1], "web-v4", "IPv4")->add_endpoints();
  e4->add_addresses("10.244.1.5");
  e4->set_node_name("me");
  auto* es6 = slice(objs[2], "web-v6", "IPv6");
  auto* a = es6->add_endpoints();
  a->add_addresses("fd00:244::5");
  a->set_node_name("me");
  auto* b = es6->add_endpoints();
  b->add_addresses("fd00:244::6");
  b->set_node_name("other");
  b->mutable_conditions()->set_ready(false);
  b->mutable_conditions()->set_serving(true);
  b->mutable_conditions()->set_terminating(true);
  auto* c = es6->add_endpoints();
  c->add_addresses("10.244.1.9");
  c->set_node_name("me");
  auto api = ModelFromObjects(objs);
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(api->services, y->services);
  EXPECT_EQ(api->endpoint_slices, y->endpoint_slices);

  // Desired: one IPv4 and one IPv6 socket-LB frontend, each with the
  // backends of its own family (ready ones only).
  auto d = ComputeDesired(*y, {"me", {}});
  ASSERT_EQ(d.frontends.size(), 2u);
  int v6_frontends = 0;
  for (const auto& [fk, f] : d.frontends) {
    EXPECT_EQ(fk.scope, SKIFF_LB_SCOPE_SOCK);
    EXPECT_EQ(fk.port, 80);
    ASSERT_EQ(f.backends.size(), 1u);
    EXPECT_EQ(f.backends[0].v6, fk.v6);
    EXPECT_EQ(f.backends[0].port, 8080);
    if (fk.v6) {
      ++v6_frontends;
      EXPECT_EQ(Ipv6ToString(fk.address6), "fd00:96::10");
      EXPECT_EQ(Ipv6ToString(f.backends[0].address6), "fd00:244::5");
      EXPECT_EQ(fk.address, 0u);
    } else {
      EXPECT_EQ(fk.address, Ip("10.96.0.10"));
      EXPECT_EQ(f.backends[0].address, Ip("10.244.1.5"));
    }
  }
  EXPECT_EQ(v6_frontends, 1);

  // IPv6 external IPs and NodePorts on IPv6 node addresses: socket-LB
  // frontends (from the node), and tc frontends (from outside: the external
  // IP, and the NodePort on any node address ::), all with the IPv6
  // endpoints.
  y->services.at("ds/web").type = ServiceType::kNodePort;
  y->services.at("ds/web").ports[0].node_port = 30080;
  y->services.at("ds/web").external_ips = {"2001:db8::10"};
  auto d2 = ComputeDesired(*y, {"me", {"192.168.1.10", "fd00:1::10"}});
  std::set<std::pair<std::string, uint16_t>> v6keys, v6ext;
  for (const auto& [fk, f] : d2.frontends) {
    if (!fk.v6) continue;
    ASSERT_FALSE(f.backends.empty());
    EXPECT_TRUE(f.backends[0].v6);
    if (fk.scope == SKIFF_LB_SCOPE_EXT) {
      v6ext.insert({Ipv6ToString(fk.address6), fk.port});
      EXPECT_EQ((f.flags & SKIFF_SVC_F_NODEPORT) != 0, fk.port == 30080);
    } else {
      v6keys.insert({Ipv6ToString(fk.address6), fk.port});
    }
  }
  EXPECT_EQ(v6keys, (std::set<std::pair<std::string, uint16_t>>{
                        {"fd00:96::10", 80}, {"2001:db8::10", 80}, {"fd00:1::10", 30080}}));
  EXPECT_EQ(v6ext, (std::set<std::pair<std::string, uint16_t>>{{"2001:db8::10", 80}, {"::", 30080}}));
}

// spec.ipFamilies / ipFamilyPolicy / clusterIPs, from YAML and from API
// protos: clusterIPs[i] counts for family ipFamilies[i]; a dual-stack
// service (either family first) gets a VIP of each family.
const char* kFamiliesYaml = R"(
apiVersion: v1
kind: Service
metadata: {name: v6-first, namespace: f}
spec:
  clusterIP: "fd00:96::30"
  clusterIPs: ["fd00:96::30", 10.96.0.30]
  ipFamilies: [IPv6, IPv4]
  ipFamilyPolicy: RequireDualStack
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: v4-only, namespace: f}
spec:
  clusterIPs: [10.96.0.31, "fd00:96::31"]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: single-two, namespace: f}
spec:
  clusterIPs: [10.96.0.32, "fd00:96::32"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: SingleStack
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: mismatch, namespace: f}
spec:
  clusterIP: 10.96.0.33
  clusterIPs: [10.96.0.33]
  ipFamilies: [IPv6]
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: no-families, namespace: f}
spec:
  clusterIPs: [10.96.0.34, "fd00:96::34"]
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: f}
spec:
  clusterIP: None
  clusterIPs: [None]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6-first-a, namespace: f, labels: {kubernetes.io/service-name: v6-first}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["fd00:244::7"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6-first-b, namespace: f, labels: {kubernetes.io/service-name: v6-first}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.7]}]
)";

TEST(Parse, IpFamiliesAndPolicyDecideWhichClusterIpsAreProgrammed) {
  auto y = ParseClusterStateYaml(kFamiliesYaml);
  ASSERT_TRUE(y.ok()) << y.status();
  using V = OneOrMore<std::string>;
  EXPECT_EQ(y->services.at("f/v6-first").cluster_ips, (V{"fd00:96::30", "10.96.0.30"}));
  EXPECT_EQ(y->services.at("f/v4-only").cluster_ips, (V{"10.96.0.31"}));     // no family entry for the 2nd
  EXPECT_EQ(y->services.at("f/single-two").cluster_ips, (V{"10.96.0.32"}));  // SingleStack: the primary
  EXPECT_EQ(y->services.at("f/mismatch").cluster_ips, V{});                  // IPv4 address, IPv6 family
  EXPECT_EQ(y->services.at("f/no-families").cluster_ips, (V{"10.96.0.34", "fd00:96::34"}));
  EXPECT_EQ(y->services.at("f/headless").cluster_ips, V{"None"});

  // The same services as API protos give the same model, and the skipped
  // parts are the problems a Warning event reports.
  auto proto = [](const char* name, std::vector<const char*> ips, std::vector<const char*> fams, const char* policy) {
    api::v1::Object o;
    auto* svc = o.mutable_service();
    svc->mutable_metadata()->set_name(name);
    svc->mutable_metadata()->set_namespace_("f");
    if (!ips.empty()) svc->mutable_spec()->set_cluster_ip(ips[0]);
    for (const char* ip : ips) svc->mutable_spec()->add_cluster_ips(ip);
    for (const char* f : fams) svc->mutable_spec()->add_ip_families(f);
    svc->mutable_spec()->set_ip_family_policy(policy);
    auto* p = svc->mutable_spec()->add_ports();
    p->set_name("http");
    p->set_port(80);
    return o;
  };
  std::vector<api::v1::Object> objs = {
      proto("v6-first", {"fd00:96::30", "10.96.0.30"}, {"IPv6", "IPv4"}, "RequireDualStack"),
      proto("v4-only", {"10.96.0.31", "fd00:96::31"}, {"IPv4"}, "SingleStack"),
      proto("single-two", {"10.96.0.32", "fd00:96::32"}, {"IPv4", "IPv6"}, "SingleStack"),
      proto("mismatch", {"10.96.0.33"}, {"IPv6"}, ""),
      proto("no-families", {"10.96.0.34", "fd00:96::34"}, {}, ""),
      proto("headless", {"None"}, {"IPv4", "IPv6"}, "PreferDualStack"),
  };
  auto api = ModelFromObjects(objs);
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(api->services, y->services);

  // Both VIPs of the dual-stack service become frontends, each with the
  // endpoints of its family; the others get only what their families allow.
  auto d = ComputeDesired(*y, {"me", {}});
  std::map<std::string, std::string> vip_to_backend;
  std::set<std::string> vips;
  for (const auto& [fk, f] : d.frontends) {
    std::string vip = fk.v6 ? Ipv6ToString(fk.address6) : Ipv4ToString(fk.address);
    vips.insert(vip);
    if (f.backends.size() == 1)
      vip_to_backend[vip] = f.backends[0].v6 ? Ipv6ToString(f.backends[0].address6) : Ipv4ToString(f.backends[0].address);
  }
  EXPECT_EQ(vips, (std::set<std::string>{"fd00:96::30", "10.96.0.30", "10.96.0.31", "10.96.0.32", "10.96.0.34",
                                         "fd00:96::34"}));
  EXPECT_EQ(vip_to_backend["fd00:96::30"], "fd00:244::7");
  EXPECT_EQ(vip_to_backend["10.96.0.30"], "10.244.0.7");
}

TEST(Parse, InconsistentClusterIpAndFamiliesAreReportedAsProblems) {
  ClusterState out;
  RawService r;
  r.ns = "f";
  r.name = "odd";
  r.cluster_ip = "10.96.0.40";
  r.cluster_ips = {"10.96.0.41", "fd00:96::41", "fd00:96::42"};
  r.ip_families = {"IPv4", "IPv6"};
  r.ip_family_policy = "Whatever";
  RawServicePort p;
  p.port.value = 80;
  p.port.present = true;
  r.ports.push_back(p);
  std::vector<std::string> problems;
  ASSERT_TRUE(AddService(r, &out, &problems));
  EXPECT_EQ(out.services.at("f/odd").cluster_ips, (OneOrMore<std::string>{"10.96.0.41", "fd00:96::41"}));
  std::string all;
  for (const auto& x : problems) all += x + "\n";
  EXPECT_NE(all.find("clusterIP 10.96.0.40 differs from clusterIPs[0] 10.96.0.41"), std::string::npos) << all;
  EXPECT_NE(all.find("unknown ipFamilyPolicy Whatever"), std::string::npos) << all;
  EXPECT_NE(all.find("clusterIPs[2] fd00:96::42 skipped: no ipFamilies entry"), std::string::npos) << all;
}

TEST(Parse, RejectsBrokenYamlAsAWhole) { EXPECT_FALSE(ParseClusterStateYaml("a: [b").ok()); }

TEST(Desired, BuildsClusterIpExternalIpAndNodePortFrontendsWithPolicies) {
  auto st = ParseClusterStateYaml(kYaml);
  ASSERT_TRUE(st.ok());
  DesiredState d = ComputeDesired(*st, {"me", {"192.168.50.1"}});
  // headless db: nothing; web: cluster IP, external IP (sock + ext), NodePort (ext any + sock on node IP)
  ASSERT_EQ(d.frontends.size(), 5u);
  const Frontend& cip = d.frontends.at({Ip("10.96.0.10"), 80, 6, SKIFF_LB_SCOPE_SOCK});
  EXPECT_EQ(cip.flags, SKIFF_SVC_F_AFFINITY);
  EXPECT_EQ(cip.affinity_timeout_s, 10800u);
  ASSERT_EQ(cip.backends.size(), 2u);  // both ready ones, any node; not the terminating one
  const Frontend& np = d.frontends.at({0, 30080, 6, SKIFF_LB_SCOPE_EXT});
  EXPECT_EQ(np.flags, SKIFF_SVC_F_AFFINITY | SKIFF_SVC_F_LOCAL | SKIFF_SVC_F_NODEPORT);
  ASSERT_EQ(np.backends.size(), 1u);  // externalTrafficPolicy Local
  EXPECT_EQ(np.backends[0].address, Ip("10.244.1.5"));
  EXPECT_EQ(np.backends[0].flags, SKIFF_BE_F_LOCAL);
  EXPECT_EQ(d.frontends.at({Ip("203.0.113.10"), 80, 6, SKIFF_LB_SCOPE_EXT}).backends.size(), 1u);
  EXPECT_EQ(d.frontends.at({Ip("203.0.113.10"), 80, 6, SKIFF_LB_SCOPE_SOCK}).backends.size(), 2u);
  EXPECT_EQ(d.frontends.at({Ip("192.168.50.1"), 30080, 6, SKIFF_LB_SCOPE_SOCK}).backends.size(), 2u);
}

TEST(Desired, TerminatingEndpointsOnlyWhenNoneIsReady) {
  auto st = ParseClusterStateYaml(kYaml);
  ASSERT_TRUE(st.ok());
  auto& eps = st->endpoint_slices.at("shop/web-1").endpoints;
  eps[0].ready = eps[1].ready = false;
  eps[0].serving = false;  // not serving: never used
  DesiredState d = ComputeDesired(*st, {"me", {}});
  const Frontend& cip = d.frontends.at({Ip("10.96.0.10"), 80, 6, SKIFF_LB_SCOPE_SOCK});
  ASSERT_EQ(cip.backends.size(), 1u);
  EXPECT_EQ(cip.backends[0].address, Ip("10.244.1.6"));
  EXPECT_TRUE(cip.backends[0].flags & SKIFF_BE_F_TERMINATING);
}

// Service default/<prefix><i>, ClusterIP 10.96.<octet>.<i+1>, one TCP port 80.
Service NumberedService(const std::string& prefix, int octet, int i) {
  Service v;
  v.ns = "default";
  v.name = prefix + std::to_string(i);
  v.cluster_ips = {"10.96." + std::to_string(octet) + "." + std::to_string(i + 1)};
  v.ports = {{"p", Protocol::kTcp, 80, 0}};
  return v;
}

TEST(Desired, IncrementalBuilderMatchesAFullComputeAfterRandomChanges) {
  ClusterState s;
  std::mt19937 rng(7);
  auto svc = [](int i) { return NumberedService("s", 0, i); };
  for (int i = 0; i < 50; ++i) s.services[svc(i).Key()] = svc(i);
  DesiredBuilder b({"me", {}});
  // Applying the deltas in order must give the full computation.
  std::map<FrontendKey, Frontend> applied;
  auto apply = [&](std::map<FrontendKey, std::optional<Frontend>> delta) {
    for (auto& [fk, f] : delta) {
      if (f) applied[fk] = std::move(*f);
      else
        applied.erase(fk);
    }
  };
  apply(b.Update(s));
  for (int round = 0; round < 300; ++round) {
    ChangeSet c;
    int i = rng() % 60;
    std::string key = "default/s" + std::to_string(i);
    switch (rng() % 3) {
      case 0: {  // set a slice
        EndpointSlice es;
        es.ns = "default";
        es.name = "s" + std::to_string(i) + "-x";
        es.service_name = "s" + std::to_string(i);
        es.ports = {{"p", Protocol::kTcp, 8080}};
        for (int k = 0; k < static_cast<int>(rng() % 4); ++k)
          es.endpoints.push_back({{"10.244.0." + std::to_string(rng() % 200 + 1)}, true, true, false, "me"});
        c.slices.insert(es.Key());
        s.endpoint_slices[es.Key()] = es;
        break;
      }
      case 1:  // remove the service
        s.services.erase(key);
        c.services.insert(key);
        break;
      default:
        if (i < 55) s.services[key] = svc(i);
        c.services.insert(key);
    }
    apply(b.Update(s, c));
  }
  EXPECT_EQ(applied, ComputeDesired(s, {"me", {}}).frontends);
}

// The builder keeps no slice -> service index: a slice that moves to another
// Service, or is deleted, leaves its old Service through the ChangeSet the
// store records (which names that Service). Random upserts, moves and
// deletes of slices and services through a StateStore; the applied deltas
// must equal a full computation after every pass.
TEST(Desired, SlicesMovingBetweenServicesAndDeletedThroughTheStoreLeaveTheirOldService) {
  std::mt19937 rng(11);
  StateStore store;
  auto svc = [](int i) { return NumberedService("m", 1, i); };
  ClusterState initial;
  for (int i = 0; i < 8; ++i) initial.services[svc(i).Key()] = svc(i);
  store.Replace(initial);
  DesiredBuilder b({"me", {}});
  std::map<FrontendKey, Frontend> applied;
  uint64_t seen = 0;
  int moved = 0, deleted = 0;
  auto pass = [&] {
    seen = store.Consume(seen, 0, [&](const CompactState& st, const ChangeSet& c) {
      for (auto& [fk, f] : b.Update(st, c)) {
        if (f) applied[fk] = std::move(*f);
        else
          applied.erase(fk);
      }
      ASSERT_EQ(applied, ComputeDesired(st.ToClusterState(), {"me", {}}).frontends);
    });
  };
  pass();
  std::map<std::string, std::string> owner;  // slice name -> service name
  for (int round = 0; round < 400; ++round) {
    std::string slice = "sl" + std::to_string(rng() % 12);
    switch (rng() % 4) {
      case 0:
      case 1: {  // create or move a slice (to any of 10 services, 2 of them absent)
        EndpointSlice es;
        es.ns = "default";
        es.name = slice;
        es.service_name = "m" + std::to_string(rng() % 10);
        es.ports = {{"p", Protocol::kTcp, 8080}};
        es.endpoints.push_back({{"10.244.1." + std::to_string(rng() % 200 + 1)}, true, true, false, "me"});
        if (owner.count(slice) && owner[slice] != es.service_name) ++moved;
        owner[slice] = es.service_name;
        store.UpsertEndpointSlice(es);
        break;
      }
      case 2:
        if (owner.erase(slice)) ++deleted;
        store.DeleteEndpointSlice("default", slice);
        break;
      default: {
        int i = rng() % 10;
        if (rng() % 2) store.DeleteService("default", "m" + std::to_string(i));
        else
          store.UpsertService(svc(i));
      }
    }
    if (rng() % 3 == 0) pass();
    if (::testing::Test::HasFatalFailure()) return;
  }
  pass();
  EXPECT_GT(moved, 20);
  EXPECT_GT(deleted, 20);
  // A full Replace (a re-list) that moves every slice to service m0.
  ClusterState last;
  for (int i = 0; i < 8; ++i) last.services[svc(i).Key()] = svc(i);
  for (const auto& [name, service] : owner) {
    EndpointSlice es;
    es.ns = "default";
    es.name = name;
    es.service_name = "m0";
    es.ports = {{"p", Protocol::kTcp, 8080}};
    es.endpoints.push_back({{"10.244.2.1"}, true, true, false, "me"});
    last.endpoint_slices[es.Key()] = es;
  }
  store.Replace(last);
  pass();
}

// The store's records give back exactly the model objects they were given
// (IPv4, IPv6, text that is no address, every name and flag), and a
// replacement records only the keys that differ, with a slice's Services
// before and after.
TEST(CompactState, GivesBackWhatItWasGivenAndRecordsOnlyWhatDiffers) {
  ClusterState s;
  Service web;
  web.ns = "shop";
  web.name = "web";
  web.cluster_ips = {"10.96.0.10", "fd00:96::10"};
  web.external_ips = {"203.0.113.10", "not an ip"};
  web.ports = {{"http", Protocol::kTcp, 80, 30080}, {"dns", Protocol::kUdp, 53, 0}};
  web.type = ServiceType::kNodePort;
  web.affinity_client_ip = true;
  web.affinity_timeout_s = 77;
  web.external_policy_local = true;
  web.internal_policy_local = true;
  web.health_check_node_port = 31000;
  Service db;
  db.ns = "shop";
  db.name = "db";
  db.cluster_ips = {"None"};
  db.ports = {{"", Protocol::kTcp, 5432, 0}};
  EndpointSlice w1;
  w1.ns = "shop";
  w1.name = "web-1";
  w1.service_name = "web";
  w1.ports = {{"http", Protocol::kTcp, 8080}, {"dns", Protocol::kUdp, 5353}};
  w1.endpoints = {{{"10.244.1.5"}, true, true, false, "me"},
                  {{"fd00::5", "10.244.1.6"}, false, true, true, "other"},
                  {{}, false, false, false, ""}};
  EndpointSlice orphan;  // names a Service that does not exist
  orphan.ns = "shop";
  orphan.name = "x-1";
  orphan.service_name = "x";
  orphan.ports = {{"http", Protocol::kTcp, 1}};
  s.services = {{web.Key(), web}, {db.Key(), db}};
  s.endpoint_slices = {{w1.Key(), w1}, {orphan.Key(), orphan}};

  CompactState cs;
  cs.Assign(s);
  ClusterState back = cs.ToClusterState();
  EXPECT_EQ(back.services, s.services);
  EXPECT_EQ(back.endpoint_slices, s.endpoint_slices);
  EXPECT_EQ(cs.service_count(), 2u);
  EXPECT_EQ(cs.slice_count(), 2u);
  ASSERT_NE(cs.Find("shop/web"), nullptr);
  EXPECT_EQ(cs.Find("shop/web")->slices.size(), 1u);
  ASSERT_NE(cs.Find("shop/x"), nullptr);
  EXPECT_EQ(cs.Find("shop/x")->service, nullptr);
  EXPECT_EQ(cs.Find("nowhere/web"), nullptr);

  // One endpoint of web-1 changes, the orphan moves to db, db's port
  // changes; web itself does not.
  ClusterState s2 = s;
  s2.endpoint_slices["shop/web-1"].endpoints[0].ready = false;
  s2.endpoint_slices["shop/x-1"].service_name = "db";
  s2.services["shop/db"].ports[0].port = 5433;
  ChangeSet c;
  cs.Assign(s2, &c);
  EXPECT_EQ(c.slices, (std::set<std::string>{"shop/web-1", "shop/x-1"}));
  EXPECT_EQ(c.services, (std::set<std::string>{"shop/web", "shop/db", "shop/x"}));
  EXPECT_EQ(cs.Find("shop/x"), nullptr);  // nothing is stored under it any more
  EXPECT_EQ(cs.Find("shop/db")->slices.size(), 1u);
  back = cs.ToClusterState();
  EXPECT_EQ(back.services, s2.services);
  EXPECT_EQ(back.endpoint_slices, s2.endpoint_slices);

  // The same state again changes nothing; a removal names what went.
  ChangeSet none;
  cs.Assign(s2, &none);
  EXPECT_TRUE(none.empty());
  s2.services.erase("shop/web");
  s2.endpoint_slices.erase("shop/x-1");
  ChangeSet gone;
  cs.Assign(s2, &gone);
  EXPECT_EQ(gone.services, (std::set<std::string>{"shop/web", "shop/db"}));
  EXPECT_EQ(gone.slices, (std::set<std::string>{"shop/x-1"}));
  EXPECT_EQ(cs.service_count(), 1u);
  ASSERT_NE(cs.Find("shop/web"), nullptr);  // its slice still names it
  EXPECT_EQ(cs.Find("shop/web")->service, nullptr);
}

// 10k Services with one 2-endpoint slice each, shaped like
// bench/service-programming's input: what the store holds (malloc's bytes in
// use, heap and mmapped) stays within 3 MB, against ~7 MB as model objects.
TEST(CompactState, HoldsTenThousandServicesAndSlicesInThreeMegabytes) {
  auto in_use = []() -> size_t {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();  // ASan's allocator replaces malloc's arenas
#else
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
#endif
  };
  size_t before = in_use(), model = 0;
  CompactState cs;
  {
    ClusterState s;
    for (int i = 0; i < 10000; ++i) {
      Service v;
      v.ns = "bench";
      v.name = "svc-" + std::to_string(i);
      v.cluster_ips = {"10.96." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1)};
      v.ports = {{"http", Protocol::kTcp, 80, 0}};
      EndpointSlice es;
      es.ns = "bench";
      es.name = v.name + "-1";
      es.service_name = v.name;
      es.ports = {{"http", Protocol::kTcp, 8080}};
      for (int k = 0; k < 2; ++k)
        es.endpoints.push_back(
            {{"10.128." + std::to_string(i / 125) + "." + std::to_string(2 * (i % 125) + k + 1)}, true, true, false, "bench"});
      s.services[v.Key()] = std::move(v);
      s.endpoint_slices[es.Key()] = std::move(es);
    }
    model = in_use() - before;
    cs.Assign(std::move(s));
  }
  size_t store = in_use() - before;
  std::printf("10k Services + slices: %zu bytes as model objects, %zu bytes in the store\n", model, store);
  EXPECT_EQ(cs.service_count(), 10000u);
  EXPECT_LE(store, size_t{3} << 20);
  EXPECT_LT(store * 2, model);
}

TEST(Maglev, FillsEveryEntryEvenlyAndMovesLittleWhenABackendLeaves) {
  const uint32_t m = SKIFF_MAGLEV_TABLE_SIZE;
  std::vector<std::pair<uint64_t, uint32_t>> backends;
  for (uint32_t i = 1; i <= 10; ++i) backends.emplace_back(0x0af40000ull + i * 7919, i);
  auto t1 = BuildMaglevTable(backends, m);
  std::map<uint32_t, int> share;
  for (uint32_t id : t1) share[id]++;
  ASSERT_EQ(share.size(), 10u);
  EXPECT_EQ(share.count(0), 0u);
  for (auto& [id, n] : share) {
    EXPECT_GT(n, static_cast<int>(m / 10 * 0.9)) << id;
    EXPECT_LT(n, static_cast<int>(m / 10 * 1.1)) << id;
  }
  backends.erase(backends.begin() + 3);
  auto t2 = BuildMaglevTable(backends, m);
  int moved = 0;
  for (uint32_t i = 0; i < m; ++i)
    if (t1[i] != t2[i] && t1[i] != 4) ++moved;
  // Only entries of the departed backend must move; Maglev moves a few more.
  EXPECT_LT(moved, static_cast<int>(m * 0.05)) << moved;
}

}  // namespace
}  // namespace skiff::proxy
