// Syscall-level tests of bpf/sock_lb.bpf.c: the programs are attached at a
// cgroup the test creates, this process joins it and the lab's node netns,
// and real connect()/sendmsg() calls go to service addresses that exist only
// in the maps, while backends answer from the lab's backend netns.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "lab.h"
#include "skiff/proxy/datapath.h"
#include "skiff/proxy/desired.h"
#include "skiff/proxy/service_map.h"
#include "skiff/proxy/source.h"

namespace skiff::proxy {
namespace {

using testing::Lab;
using testing::TcpRequest;
using testing::UdpRequest;

Service MakeService(const std::string& name, const std::string& vip, std::vector<ServicePort> ports) {
  Service s;
  s.ns = "default";
  s.name = name;
  s.cluster_ips = {vip};
  s.ports = std::move(ports);
  return s;
}

EndpointSlice MakeSlice(const std::string& svc, const std::vector<std::string>& ips, std::vector<EndpointPort> ports,
                        const std::string& suffix = "a") {
  EndpointSlice es;
  es.ns = "default";
  es.name = svc + "-" + suffix;
  es.service_name = svc;
  for (const auto& ip : ips) {
    Endpoint e;
    e.addresses = {ip};
    e.node_name = "node-a";
    es.endpoints.push_back(e);
  }
  es.ports = std::move(ports);
  return es;
}

class SockLbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: netns, cgroups, BPF";
    lab_ = std::make_unique<Lab>("sl");
    ASSERT_TRUE(lab_->ok()) << lab_->error();
    for (int o : {11, 12, 13}) ASSERT_TRUE(lab_->AddBackendAddress(o)) << lab_->error();
    ASSERT_TRUE(lab_->StartServers({8080, 5353, 9090})) << lab_->error();
    DatapathOptions opts;
    opts.bpffs_dir = lab_->bpffs();
    auto dp = Datapath::Open(opts);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = *std::move(dp);
    ASSERT_TRUE(dp_->AttachSocketLb(lab_->cgroup()).ok());
    map_ = std::make_unique<ServiceMap>(dp_->maps());
    ASSERT_TRUE(lab_->Enter()) << lab_->error();
  }
  void TearDown() override {
    if (lab_) lab_->Leave();
    map_.reset();
    dp_.reset();
    if (lab_) Datapath::RemovePins(lab_->bpffs()).IgnoreError();
    lab_.reset();
  }
  void Program() {
    auto st = map_->Apply(ComputeDesired(state_, node_));
    ASSERT_TRUE(st.ok()) << st.status();
  }

  std::unique_ptr<Lab> lab_;
  std::unique_ptr<Datapath> dp_;
  std::unique_ptr<ServiceMap> map_;
  ClusterState state_;
  NodeConfig node_{"node-a", {}};
};

TEST_F(SockLbTest, TcpConnectToClusterIpReachesEveryBackendAndPeerIsTheVip) {
  state_.services["default/web"] = MakeService("web", "10.96.0.10", {{"http", Protocol::kTcp, 80, 0}});
  state_.endpoint_slices["default/web-a"] =
      MakeSlice("web", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 40; ++i) {
    std::string peer;
    std::string got = TcpRequest("10.96.0.10", 80, &peer);
    ASSERT_TRUE(got == "10.0.0.11:8080" || got == "10.0.0.12:8080") << got;
    EXPECT_EQ(peer, "10.96.0.10:80");
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 2u) << "random selection should reach both backends in 40 connects";
  auto counters = map_->ReadCounters();
  EXPECT_EQ(counters["default/web:http/TCP"].connections, 40u);
}

TEST_F(SockLbTest, UdpSendmsgIsTranslatedPerDatagramAndRepliesComeFromTheVip) {
  state_.services["default/dns"] = MakeService("dns", "10.96.0.53", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/dns-a"] =
      MakeSlice("dns", {"10.0.0.11", "10.0.0.12"}, {{"dns", Protocol::kUdp, 5353}});
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) {
    std::string from;
    std::string got = UdpRequest("10.96.0.53", 53, /*connected=*/false, &from);
    ASSERT_TRUE(got == "10.0.0.11:5353" || got == "10.0.0.12:5353") << got;
    EXPECT_EQ(from, "10.96.0.53:53");
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 2u);
  std::string from;
  std::string got = UdpRequest("10.96.0.53", 53, /*connected=*/true, &from);
  EXPECT_TRUE(got == "10.0.0.11:5353" || got == "10.0.0.12:5353") << got;
  EXPECT_EQ(from, "10.96.0.53:53");
}

TEST_F(SockLbTest, ServiceWithoutEndpointsRefusesAtOnce) {
  state_.services["default/empty"] = MakeService("empty", "10.96.0.20", {{"http", Protocol::kTcp, 80, 0},
                                                                          {"dns", Protocol::kUdp, 53, 0}});
  Program();
  auto t0 = std::chrono::steady_clock::now();
  int err = 0;
  std::string got = TcpRequest("10.96.0.20", 80, nullptr, &err);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(err, ECONNREFUSED) << got;
  EXPECT_LT(took, std::chrono::milliseconds(100));
  err = 0;
  got = UdpRequest("10.96.0.20", 53, false, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  err = 0;
  got = UdpRequest("10.96.0.20", 53, true, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  EXPECT_GE(map_->ReadCounters()["default/empty:http/TCP"].refused, 1u);

  // Endpoints arrive: the same address now connects.
  state_.endpoint_slices["default/empty-a"] = MakeSlice("empty", {"10.0.0.13"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  EXPECT_EQ(TcpRequest("10.96.0.20", 80), "10.0.0.13:8080");
}

TEST_F(SockLbTest, SessionAffinityPinsTheClientToOneBackend) {
  Service s = MakeService("sticky", "10.96.0.30", {{"http", Protocol::kTcp, 80, 0}});
  s.affinity_client_ip = true;
  s.affinity_timeout_s = 60;
  state_.services["default/sticky"] = s;
  state_.endpoint_slices["default/sticky-a"] =
      MakeSlice("sticky", {"10.0.0.11", "10.0.0.12", "10.0.0.13"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) seen.insert(TcpRequest("10.96.0.30", 80));
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_TRUE(seen.begin()->rfind("10.0.0.1", 0) == 0) << *seen.begin();

  // The pinned backend leaves: the client moves to a remaining one.
  std::string pinned = seen.begin()->substr(0, seen.begin()->find(':'));
  std::vector<std::string> rest;
  for (std::string ip : {"10.0.0.11", "10.0.0.12", "10.0.0.13"})
    if (ip != pinned) rest.push_back(ip);
  state_.endpoint_slices["default/sticky-a"] = MakeSlice("sticky", rest, {{"http", Protocol::kTcp, 8080}});
  Program();
  seen.clear();
  for (int i = 0; i < 10; ++i) seen.insert(TcpRequest("10.96.0.30", 80));
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_NE(seen.begin()->substr(0, seen.begin()->find(':')), pinned);
}

TEST_F(SockLbTest, OneServiceWithSeveralPortsAndProtocols) {
  state_.services["default/multi"] = MakeService(
      "multi", "10.96.0.40",
      {{"http", Protocol::kTcp, 80, 0}, {"admin", Protocol::kTcp, 81, 0}, {"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/multi-a"] = MakeSlice(
      "multi", {"10.0.0.12"},
      {{"http", Protocol::kTcp, 8080}, {"admin", Protocol::kTcp, 9090}, {"dns", Protocol::kUdp, 5353}});
  Program();
  EXPECT_EQ(TcpRequest("10.96.0.40", 80), "10.0.0.12:8080");
  EXPECT_EQ(TcpRequest("10.96.0.40", 81), "10.0.0.12:9090");
  EXPECT_EQ(UdpRequest("10.96.0.40", 53, false), "10.0.0.12:5353");
}

TEST_F(SockLbTest, TerminatingEndpointsServeOnlyWhenNoneIsReady) {
  state_.services["default/drain"] = MakeService("drain", "10.96.0.50", {{"http", Protocol::kTcp, 80, 0}});
  EndpointSlice es = MakeSlice("drain", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  es.endpoints[1].ready = false;
  es.endpoints[1].serving = true;
  es.endpoints[1].terminating = true;
  state_.endpoint_slices["default/drain-a"] = es;
  Program();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(TcpRequest("10.96.0.50", 80), "10.0.0.11:8080");
  es.endpoints[0].ready = false;
  es.endpoints[0].serving = false;
  es.endpoints[0].terminating = true;
  state_.endpoint_slices["default/drain-a"] = es;
  Program();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(TcpRequest("10.96.0.50", 80), "10.0.0.12:8080");
}

TEST_F(SockLbTest, InternalTrafficPolicyLocalUsesOnlyThisNodesEndpoints) {
  Service s = MakeService("local", "10.96.0.60", {{"http", Protocol::kTcp, 80, 0}});
  s.internal_policy_local = true;
  state_.services["default/local"] = s;
  EndpointSlice es = MakeSlice("local", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  es.endpoints[0].node_name = "node-b";
  state_.endpoint_slices["default/local-a"] = es;
  Program();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(TcpRequest("10.96.0.60", 80), "10.0.0.12:8080");
}

TEST_F(SockLbTest, NonServiceTrafficIsLeftAlone) {
  Program();
  EXPECT_EQ(TcpRequest("10.0.0.11", 8080), "10.0.0.11:8080");
}

}  // namespace
}  // namespace skiff::proxy
