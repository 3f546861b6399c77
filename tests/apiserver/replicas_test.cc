// Two API server replicas on one storage hand out ClusterIPs and NodePorts
// concurrently: never the same one twice (the allocation keys go into the
// same etcd Txn as the Service). The ranges are tiny so collisions are
// certain to be attempted. Dynamic values come from the upper band of each
// range while it has room (Kubernetes' static subranges), so an address
// picked from the lower band is never taken by a dynamic allocation first.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "fixture.h"
#include "objects.h"

namespace skiff::apitest {
namespace {

using skiff::apiserver::Meta;

class ReplicasTest : public ::testing::TestWithParam<Backend::Kind> {};

TEST_P(ReplicasTest, ClusterIPsAndNodePortsAreUniqueAcrossTwoApiServers) {
  auto backend = Backend::Make(GetParam(), GetParam() == Backend::Kind::kEtcd ? "replicas-etcd" : "replicas-embedded");
  ASSERT_NE(backend, nullptr);
  std::vector<std::unique_ptr<skiff::apiserver::ApiServer>> servers;
  std::vector<std::unique_ptr<skiff::client::GrpcClient>> clients;
  for (int i = 0; i < 2; ++i) {
    auto opts = ServerOpts(*backend, absl::StrCat(backend->dir(), "/cp", i));
    opts.service_cluster_ip_range = "10.96.0.0/27";  // 30 usable addresses, .1 is `kubernetes`
    opts.node_port_min = 30000;
    opts.node_port_max = 30029;  // 30 ports
    auto s = skiff::apiserver::ApiServer::Start(opts);
    ASSERT_TRUE(s.ok()) << s.status();
    auto c = skiff::client::Dial((*s)->AdminCredentials());
    ASSERT_TRUE(c.ok());
    servers.push_back(std::move(*s));
    clients.push_back(std::move(*c));
  }
  // /27: usable .1-.30; the lower band is .1-.16 (min(max(16, 32/16), 256)),
  // so the upper band .17-.30 has room for 14 dynamic addresses. Ports
  // 30000-30029: the lower band is 30000-30015 (min(max(16, 30/32), 128)),
  // the upper 30016-30029, 14 ports.
  constexpr int kPerReplica = 7;  // fills both upper bands exactly
  std::vector<std::vector<Object>> made(2);
  std::vector<std::string> errors[2];
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < kPerReplica; ++i) {
        Object svc = MakeObject("services", "default", absl::StrCat("r", r, "-", i));
        svc.mutable_service()->mutable_spec()->set_type("NodePort");
        auto c = clients[r]->Create("services", "default", svc);
        if (c.ok()) made[r].push_back(*c);
        else errors[r].push_back(c.status().ToString());
      }
    });
  // Both replicas also race for the same explicit address, from the lower
  // band: exactly one wins, the other gets Kubernetes' error.
  std::atomic<int> explicit_ok{0};
  std::string explicit_err[2];
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      while (!go) std::this_thread::yield();
      Object svc = MakeObject("services", "default", absl::StrCat("explicit-", r));
      svc.mutable_service()->mutable_spec()->set_cluster_ip("10.96.0.10");
      auto c = clients[r]->Create("services", "default", svc);
      if (c.ok()) ++explicit_ok;
      else explicit_err[r] = std::string(c.status().message());
    });
  go = true;
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r)
    for (const auto& e : errors[r]) ADD_FAILURE() << "replica " << r << ": " << e;
  EXPECT_EQ(explicit_ok.load(), 1);
  for (int r = 0; r < 2; ++r) {
    if (explicit_err[r].empty()) continue;
    EXPECT_NE(explicit_err[r].find("failed to allocate IP 10.96.0.10: provided IP is already allocated"),
              std::string::npos)
        << explicit_err[r];
  }
  auto last_octet = [](const std::string& ip) { return std::stoi(ip.substr(ip.rfind('.') + 1)); };
  std::set<std::string> ips = {"10.96.0.1", "10.96.0.10"};
  std::set<int> ports;
  for (const auto& list : made)
    for (const auto& o : list) {
      const std::string& ip = o.service().spec().cluster_ip();
      const int port = o.service().spec().ports(0).node_port();
      EXPECT_TRUE(ips.insert(ip).second) << "duplicate " << ip;
      EXPECT_TRUE(ports.insert(port).second) << "duplicate " << port;
      EXPECT_GE(last_octet(ip), 17) << ip << " is in the lower band while the upper one has room";
      EXPECT_GE(port, 30016) << port << " is in the lower band while the upper one has room";
    }
  EXPECT_EQ(ips.size(), 2u + 2 * kPerReplica);
  EXPECT_EQ(ports.size(), 2u * kPerReplica);
  // Both upper bands are full now: the next dynamic values come from the
  // lower bands, still never one that is taken.
  for (int i = 0; i < 3; ++i) {
    Object svc = MakeObject("services", "default", absl::StrCat("spill-", i));
    svc.mutable_service()->mutable_spec()->set_type("NodePort");
    auto c = clients[i % 2]->Create("services", "default", svc);
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string& ip = c->service().spec().cluster_ip();
    const int port = c->service().spec().ports(0).node_port();
    EXPECT_TRUE(ips.insert(ip).second) << "duplicate " << ip;
    EXPECT_TRUE(ports.insert(port).second) << "duplicate " << port;
    EXPECT_LE(last_octet(ip), 16) << ip;
    EXPECT_LT(port, 30016) << port;
  }
  // Both replicas agree on what exists.
  auto l0 = clients[0]->List("services", "default");
  auto l1 = clients[1]->List("services", "default");
  ASSERT_TRUE(l0.ok() && l1.ok());
  EXPECT_EQ(l0->items_size(), l1->items_size());
  clients.clear();
  for (auto& s : servers) s->Shutdown();
}

INSTANTIATE_TEST_SUITE_P(Storage, ReplicasTest, ::testing::Values(Backend::Kind::kEtcd, Backend::Kind::kEmbedded),
                         [](const auto& info) {
                           return std::string(info.param == Backend::Kind::kEtcd ? "DebianEtcd" : "EmbeddedStore");
                         });

}  // namespace
}  // namespace skiff::apitest
