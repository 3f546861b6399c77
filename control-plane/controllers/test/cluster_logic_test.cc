// EndpointSlice, Namespace, garbage collector, node lifecycle, node IPAM,
// ServiceAccount controllers and leader election against the fake client.
#include <gtest/gtest.h>

#include "harness.h"
#include "skiff/controllers/leader_election.h"

namespace skiff::controllers::testing {
namespace {

using api::v1::Object;

// A pod as a kubelet would report it: bound, with an IP, ready or not.
void RunningPod(Harness& h, const std::string& ns, const std::string& name, const std::string& ip, bool ready,
                const std::map<std::string, std::string>& labels, int32_t http_port = 8080) {
  auto pod = fakeclient::MakePod(ns, name);
  for (const auto& [k, v] : labels) (*pod.mutable_metadata()->mutable_labels())[k] = v;
  pod.mutable_spec()->set_node_name("n1");
  auto* port = pod.mutable_spec()->mutable_containers(0)->add_ports();
  port->set_name("http");
  port->set_container_port(http_port);
  auto created = h.api->Create("pods", ns, Wrap(pod));
  ASSERT_TRUE(created.ok());
  auto upd = *created;
  upd.mutable_pod()->mutable_status()->set_phase("Running");
  upd.mutable_pod()->mutable_status()->set_pod_ip(ip);
  objects::SetCondition(upd.mutable_pod()->mutable_status()->mutable_conditions(), "Ready", ready ? "True" : "False",
                        "", "");
  ASSERT_TRUE(h.api->UpdateStatus("pods", ns, upd).ok());
}

void SetReady(Harness& h, const std::string& ns, const std::string& name, bool ready) {
  auto p = *h.api->Get("pods", ns, name);
  objects::SetCondition(p.mutable_pod()->mutable_status()->mutable_conditions(), "Ready", ready ? "True" : "False",
                        "", "");
  ASSERT_TRUE(h.api->UpdateStatus("pods", ns, p).ok());
}

std::map<std::string, api::v1::Endpoint> EndpointsOf(Harness& h, const std::string& ns, const std::string& svc,
                                                    std::vector<api::v1::EndpointPort>* ports = nullptr) {
  std::map<std::string, api::v1::Endpoint> out;
  for (const auto& s : h.ListItems("endpointslices", ns, std::string(kServiceNameLabel) + "=" + svc)) {
    for (const auto& e : s.endpoint_slice().endpoints()) out[e.addresses(0)] = e;
    if (ports) ports->assign(s.endpoint_slice().ports().begin(), s.endpoint_slice().ports().end());
  }
  return out;
}

TEST(EndpointSliceController, TracksSelectedPodsReadinessAndNamedPorts) {
  Harness h;
  h.Add(NewEndpointSliceController(h.ctx()));
  h.Start();
  h.Namespace("d");
  api::v1::Service svc;
  svc.mutable_metadata()->set_name("web");
  (*svc.mutable_spec()->mutable_selector())["app"] = "web";
  auto* sp = svc.mutable_spec()->add_ports();
  sp->set_name("http");
  sp->set_port(80);
  sp->set_target_port("http");
  ASSERT_TRUE(h.api->Create("services", "d", Wrap(svc)).ok());
  RunningPod(h, "d", "a", "10.0.0.1", true, {{"app", "web"}});
  RunningPod(h, "d", "b", "10.0.0.2", false, {{"app", "web"}});
  RunningPod(h, "d", "other", "10.0.0.9", true, {{"app", "db"}});
  std::vector<api::v1::EndpointPort> ports;
  ASSERT_TRUE(WaitFor([&] { return EndpointsOf(h, "d", "web").size() == 2; }));
  auto eps = EndpointsOf(h, "d", "web", &ports);
  EXPECT_TRUE(eps["10.0.0.1"].conditions().ready());
  EXPECT_FALSE(eps["10.0.0.2"].conditions().ready());
  EXPECT_EQ(eps["10.0.0.1"].target_ref().name(), "a");
  EXPECT_EQ(eps["10.0.0.1"].node_name(), "n1");
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports[0].port(), 8080);
  EXPECT_EQ(ports[0].name(), "http");
  // A slice made while a pod's named port was still unresolved is removed by
  // a later pass: converge to one.
  ASSERT_TRUE(WaitFor([&] { return h.ListItems("endpointslices", "d").size() == 1; }));
  auto slices = h.ListItems("endpointslices", "d");
  ASSERT_EQ(slices.size(), 1u);
  EXPECT_EQ(slices[0].endpoint_slice().address_type(), "IPv4");
  EXPECT_EQ(objects::ControllerOf(slices[0].endpoint_slice().metadata())->kind(), "Service");
  // Readiness flips.
  SetReady(h, "d", "b", true);
  SetReady(h, "d", "a", false);
  ASSERT_TRUE(WaitFor([&] {
    auto e = EndpointsOf(h, "d", "web");
    return e.size() == 2 && !e["10.0.0.1"].conditions().ready() && e["10.0.0.2"].conditions().ready();
  }));
  // Terminating: serving stays true, ready goes false.
  ASSERT_TRUE(h.api->Delete("pods", "d", "b").ok());
  ASSERT_TRUE(WaitFor([&] {
    auto e = EndpointsOf(h, "d", "web");
    return e.count("10.0.0.2") && e["10.0.0.2"].conditions().terminating() && e["10.0.0.2"].conditions().serving() &&
           !e["10.0.0.2"].conditions().ready();
  }));
  client::DeleteOptions now;
  now.grace_period_seconds = 0;
  ASSERT_TRUE(h.api->Delete("pods", "d", "b", now).ok());
  ASSERT_TRUE(WaitFor([&] { return EndpointsOf(h, "d", "web").size() == 1; }));
  // Deleting the service removes its slices.
  ASSERT_TRUE(h.api->Delete("services", "d", "web").ok());
  ASSERT_TRUE(WaitFor([&] { return h.ListItems("endpointslices", "d").empty(); }));
}

TEST(EndpointSliceController, SplitsPodsWhoseNamedPortDiffers) {
  Harness h;
  h.Add(NewEndpointSliceController(h.ctx()));
  h.Start();
  h.Namespace("d");
  api::v1::Service svc;
  svc.mutable_metadata()->set_name("web");
  (*svc.mutable_spec()->mutable_selector())["app"] = "web";
  auto* sp = svc.mutable_spec()->add_ports();
  sp->set_port(80);
  sp->set_target_port("http");
  ASSERT_TRUE(h.api->Create("services", "d", Wrap(svc)).ok());
  RunningPod(h, "d", "a", "10.0.0.1", true, {{"app", "web"}}, 8080);
  RunningPod(h, "d", "b", "10.0.0.2", true, {{"app", "web"}}, 9090);
  ASSERT_TRUE(WaitFor([&] { return h.ListItems("endpointslices", "d").size() == 2; }));
}

TEST(NamespaceController, DeletesContentsThenTheNamespace) {
  Harness h;
  h.Add(NewNamespaceController(h.ctx()));
  h.Start();
  h.Namespace("gone");
  api::v1::ConfigMap cm;
  cm.mutable_metadata()->set_name("c");
  ASSERT_TRUE(h.api->Create("configmaps", "gone", Wrap(cm)).ok());
  auto pod = fakeclient::MakePod("gone", "p");
  ASSERT_TRUE(h.api->Create("pods", "gone", Wrap(pod)).ok());
  ASSERT_TRUE(h.api->Delete("namespaces", "", "gone").ok());
  auto ns = h.api->Get("namespaces", "", "gone");
  ASSERT_TRUE(ns.ok());
  EXPECT_EQ(ns->namespace_().status().phase(), "Terminating");
  ASSERT_TRUE(WaitFor([&] { return h.api->Get("namespaces", "", "gone").status().code() == absl::StatusCode::kNotFound; }));
  EXPECT_TRUE(h.ListItems("configmaps", "gone").empty());
  EXPECT_TRUE(h.ListItems("pods", "gone").empty());
}

class GcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.Add(NewReplicaSetController(h_.ctx()));
    h_.Add(NewGarbageCollector(h_.ctx()));
    h_.WithScheduler();
    h_.WithHollowNodes(1);
    h_.Start();
    h_.Namespace("d");
    api::v1::ReplicaSet rs;
    rs.mutable_metadata()->set_name("web");
    rs.mutable_spec()->set_replicas(3);
    (*rs.mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = "web";
    auto* t = rs.mutable_spec()->mutable_template_();
    (*t->mutable_metadata()->mutable_labels())["app"] = "web";
    t->mutable_spec()->add_containers()->set_name("c");
    ASSERT_TRUE(h_.api->Create("replicasets", "d", Wrap(rs)).ok());
    ASSERT_TRUE(WaitFor([&] {
      auto pods = h_.ListItems("pods", "d", "app=web");
      if (pods.size() != 3) return false;
      for (const auto& p : pods)
        if (p.pod().status().phase() != "Running") return false;
      return true;
    }));
  }
  Harness h_;
};

TEST_F(GcTest, BackgroundDeletionRemovesDependentsAfterTheOwner) {
  ASSERT_TRUE(h_.api->Delete("replicasets", "d", "web").ok());
  EXPECT_EQ(h_.api->Get("replicasets", "d", "web").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WaitFor([&] { return h_.ListItems("pods", "d").empty(); }));
}

TEST_F(GcTest, ForegroundDeletionKeepsTheOwnerUntilDependentsAreGone) {
  client::DeleteOptions fg;
  fg.propagation_policy = "Foreground";
  ASSERT_TRUE(h_.api->Delete("replicasets", "d", "web", fg).ok());
  bool owner_outlived_pods = true;
  ASSERT_TRUE(WaitFor([&] {
    bool owner = h_.api->Get("replicasets", "d", "web").ok();
    bool pods = !h_.ListItems("pods", "d").empty();
    if (!owner && pods) owner_outlived_pods = false;
    return !owner;
  }));
  EXPECT_TRUE(owner_outlived_pods);
  EXPECT_TRUE(h_.ListItems("pods", "d").empty());
}

TEST_F(GcTest, OrphanDeletionLeavesDependentsWithoutOwnerReference) {
  client::DeleteOptions orphan;
  orphan.propagation_policy = "Orphan";
  ASSERT_TRUE(h_.api->Delete("replicasets", "d", "web", orphan).ok());
  ASSERT_TRUE(WaitFor([&] { return !h_.api->Get("replicasets", "d", "web").ok(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto pods = h_.ListItems("pods", "d");
  ASSERT_EQ(pods.size(), 3u);
  for (const auto& p : pods) EXPECT_TRUE(p.pod().metadata().owner_references().empty());
}

TEST(NodeLifecycleController, UnreachableNodeIsTaintedAndItsPodsEvictedAfterToleration) {
  Harness h;
  h.opts.node_monitor_grace_period_seconds = 1;
  h.opts.default_unreachable_toleration_seconds = 1;
  h.Add(NewNodeLifecycleController(h.ctx()));
  h.WithHollowNodes(2);
  h.Start();
  h.Namespace("d");
  auto pod = fakeclient::MakePod("d", "p");
  pod.mutable_spec()->set_node_name("node-0");
  ASSERT_TRUE(h.api->Create("pods", "d", Wrap(pod)).ok());
  auto keep = fakeclient::MakePod("d", "tolerant");
  keep.mutable_spec()->set_node_name("node-0");
  auto* tol = keep.mutable_spec()->add_tolerations();
  tol->set_key(kTaintUnreachable);
  tol->set_operator_("Exists");
  tol->set_effect("NoExecute");
  ASSERT_TRUE(h.api->Create("pods", "d", Wrap(keep)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto n0 = h.api->Get("nodes", "", "node-0");
  ASSERT_TRUE(n0.ok()) << n0.status();
  EXPECT_EQ(objects::FindCondition(n0->node().status().conditions(), "Ready")->status(), "True");
  auto start = std::chrono::steady_clock::now();
  h.hollow->KillNode("node-0");
  ASSERT_TRUE(WaitFor([&] {
    auto n = h.api->Get("nodes", "", "node-0");
    if (!n.ok()) return false;
    const auto* c = objects::FindCondition(n->node().status().conditions(), "Ready");
    bool tainted = false;
    for (const auto& t : n->node().spec().taints()) tainted |= t.key() == kTaintUnreachable && t.effect() == "NoExecute";
    return c->status() == "Unknown" && tainted;
  }));
  ASSERT_TRUE(WaitFor([&] { return !h.api->Get("pods", "d", "p").ok(); }));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(1700));  // grace 1 s (from the last renewal) + toleration 1 s
  EXPECT_TRUE(h.api->Get("pods", "d", "tolerant").ok());
  // The healthy node is untouched.
  auto n1 = h.api->Get("nodes", "", "node-1");
  ASSERT_TRUE(n1.ok()) << n1.status();
  EXPECT_TRUE(n1->node().spec().taints().empty());
  // Coming back removes the taint.
  h.hollow->ReviveNode("node-0");
  ASSERT_TRUE(WaitFor([&] {
    auto n = h.api->Get("nodes", "", "node-0");
    if (!n.ok()) return false;
    return n->node().spec().taints().empty() &&
           objects::FindCondition(n->node().status().conditions(), "Ready")->status() == "True";
  }));
}

TEST(NodeIpamController, GivesEachNodeADistinctPodCidr) {
  Harness h;
  h.opts.cluster_cidr = "10.200.0.0/22";
  h.Add(NewNodeIpamController(h.ctx()));
  h.Start();
  for (int i = 0; i < 4; i++)
    ASSERT_TRUE(h.api->Create("nodes", "", Wrap(fakeclient::MakeNode("n" + std::to_string(i)))).ok());
  std::set<std::string> cidrs;
  ASSERT_TRUE(WaitFor([&] {
    cidrs.clear();
    for (const auto& n : h.ListItems("nodes", "")) cidrs.insert(n.node().spec().pod_cidr());
    return cidrs.size() == 4 && !cidrs.count("");
  }));
  EXPECT_EQ(cidrs, (std::set<std::string>{"10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24", "10.200.3.0/24"}));
  // The range is full now.
  ASSERT_TRUE(h.api->Create("nodes", "", Wrap(fakeclient::MakeNode("extra"))).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto extra = h.api->Get("nodes", "", "extra");
  ASSERT_TRUE(extra.ok()) << extra.status();
  EXPECT_EQ(extra->node().spec().pod_cidr(), "");
}

TEST(ServiceAccountController, EnsuresDefaultServiceAccount) {
  Harness h;
  h.Add(NewServiceAccountController(h.ctx()));
  h.Start();
  h.Namespace("team");
  ASSERT_TRUE(WaitFor([&] { return h.api->Get("serviceaccounts", "team", "default").ok(); }));
  ASSERT_TRUE(h.api->Delete("serviceaccounts", "team", "default").ok());
  ASSERT_TRUE(WaitFor([&] { return h.api->Get("serviceaccounts", "team", "default").ok(); }));
}

TEST(LeaderElection, OnlyOneLeadsAndTheOtherTakesOverWhenItStops) {
  auto api = std::make_shared<fakeclient::FakeClient>();
  std::atomic<int> leading{0}, max_leading{0};
  std::atomic<bool> a_leads{false}, b_leads{false};
  auto lead = [&](std::atomic<bool>* flag) {
    return [&, flag](const std::atomic<bool>& lost) {
      *flag = true;
      int n = ++leading;
      max_leading = std::max(max_leading.load(), n);
      while (!lost) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      --leading;
      *flag = false;
    };
  };
  LeaderElectionConfig ca{"kube-system", "test-lock", "a", 2}, cb{"kube-system", "test-lock", "b", 2};
  std::atomic<bool> stop_a{false}, stop_b{false};
  std::thread ta([&] { (void)RunWithLeaderElection(api, ca, stop_a, lead(&a_leads)); });
  ASSERT_TRUE(WaitFor([&] { return a_leads.load(); }));
  std::thread tb([&] { (void)RunWithLeaderElection(api, cb, stop_b, lead(&b_leads)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(a_leads.load());
  EXPECT_FALSE(b_leads.load());
  // "Kill" a without releasing: its lease must expire. Simulate by a hard
  // failure of every write from a: stop it and re-grab the lease record as a.
  auto t0 = std::chrono::steady_clock::now();
  stop_a = true;
  ta.join();
  ASSERT_TRUE(WaitFor([&] { return b_leads.load(); }, std::chrono::seconds(3)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(max_leading.load(), 1);
  auto lease = api->Get("leases", "kube-system", "test-lock");
  EXPECT_EQ(lease->lease().spec().holder_identity(), "b");
  stop_b = true;
  tb.join();
}

TEST(LeaderElection, ExpiredLeaseOfACrashedHolderIsTakenOverWithinTheDuration) {
  auto api = std::make_shared<fakeclient::FakeClient>();
  LeaderElectionConfig crashed{"kube-system", "lock", "crashed", 2};
  ASSERT_TRUE(*TryAcquireOrRenew(*api, crashed));  // then never renews
  auto t0 = std::chrono::steady_clock::now();
  std::atomic<bool> leads{false}, stop{false};
  LeaderElectionConfig cb{"kube-system", "lock", "b", 2};
  std::thread tb([&] {
    (void)RunWithLeaderElection(api, cb, stop, [&](const std::atomic<bool>& lost) {
      leads = true;
      while (!lost) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
  });
  ASSERT_TRUE(WaitFor([&] { return leads.load(); }, std::chrono::seconds(5)));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(1800));
  EXPECT_LE(took, std::chrono::milliseconds(2500));
  stop = true;
  tb.join();
}

}  // namespace
}  // namespace skiff::controllers::testing
