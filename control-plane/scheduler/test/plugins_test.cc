#include "skiff/scheduler/plugins.h"

#include <gtest/gtest.h>

#include "skiff/fakeclient/builders.h"

namespace skiff::scheduler {
namespace {

using fakeclient::MakeNode;
using fakeclient::MakePod;

TEST(FilterNodeReady, RejectsNotReadyNode) {
  EXPECT_EQ(FilterNodeReady(MakeNodeInfo(MakeNode("a"))), "");
  EXPECT_EQ(FilterNodeReady(MakeNodeInfo(MakeNode("a", "4", "8Gi", "110", false))), "node(s) were not ready");
}

TEST(FilterUnschedulable, RejectsCordonedNodeUnlessTolerated) {
  auto n = MakeNode("a");
  n.mutable_spec()->set_unschedulable(true);
  auto pod = MakePod("d", "p");
  EXPECT_EQ(FilterUnschedulable(pod, MakeNodeInfo(n)), "node(s) were unschedulable");
  auto* t = pod.mutable_spec()->add_tolerations();
  t->set_key("node.kubernetes.io/unschedulable");
  t->set_operator_("Exists");
  EXPECT_EQ(FilterUnschedulable(pod, MakeNodeInfo(n)), "");
}

TEST(FilterResources, CountsCpuMemoryAndPods) {
  auto node = MakeNodeInfo(MakeNode("a", "1", "1Gi", "2"));
  auto big = MakePodInfo(MakePod("d", "p", "1500m", "2Gi"));
  auto r = FilterResources(big, node);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], "Insufficient cpu");
  EXPECT_EQ(r[1], "Insufficient memory");
  auto small = MakePodInfo(MakePod("d", "q", "100m", "10Mi"));
  EXPECT_TRUE(FilterResources(small, node).empty());
  node.AddPod(small);
  node.AddPod(small);
  EXPECT_EQ(FilterResources(small, node), std::vector<std::string>{"Too many pods"});
}

TEST(FilterResources, UsesLimitsWhenRequestsAreMissingAndInitContainerMax) {
  auto pod = MakePod("d", "p");
  (*pod.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_limits())["cpu"] = "2";
  auto* init = pod.mutable_spec()->add_init_containers();
  (*init->mutable_resources()->mutable_requests())["memory"] = "3Gi";
  auto info = MakePodInfo(pod);
  EXPECT_EQ(info.requests.milli_cpu, 2000);
  EXPECT_EQ(info.requests.memory, 3LL << 30);
}

TEST(FilterNodeAffinity, MatchesNodeSelectorAndRequiredTerms) {
  auto n = MakeNode("a");
  (*n.mutable_metadata()->mutable_labels())["disk"] = "ssd";
  (*n.mutable_metadata()->mutable_labels())["gen"] = "5";
  auto node = MakeNodeInfo(n);
  auto pod = MakePod("d", "p");
  (*pod.mutable_spec()->mutable_node_selector())["disk"] = "ssd";
  EXPECT_EQ(FilterNodeAffinity(pod, node), "");
  (*pod.mutable_spec()->mutable_node_selector())["disk"] = "hdd";
  EXPECT_EQ(FilterNodeAffinity(pod, node), "node(s) didn't match Pod's node affinity/selector");
  pod.mutable_spec()->clear_node_selector();
  auto* terms = pod.mutable_spec()->mutable_affinity()->mutable_node_affinity()
                    ->mutable_required_during_scheduling_ignored_during_execution();
  auto* e = terms->add_node_selector_terms()->add_match_expressions();
  e->set_key("gen");
  e->set_operator_("Gt");
  e->add_values("6");
  EXPECT_NE(FilterNodeAffinity(pod, node), "");
  // Terms are ORed.
  auto* e2 = terms->add_node_selector_terms()->add_match_fields();
  e2->set_key("metadata.name");
  e2->set_operator_("In");
  e2->add_values("a");
  EXPECT_EQ(FilterNodeAffinity(pod, node), "");
}

TEST(FilterTaints, RequiresTolerationForNoScheduleAndNoExecute) {
  auto n = MakeNode("a");
  auto* t = n.mutable_spec()->add_taints();
  t->set_key("dedicated");
  t->set_value("gpu");
  t->set_effect("NoSchedule");
  auto* soft = n.mutable_spec()->add_taints();
  soft->set_key("soft");
  soft->set_effect("PreferNoSchedule");
  auto node = MakeNodeInfo(n);
  auto pod = MakePod("d", "p");
  EXPECT_EQ(FilterTaints(pod, node), "node(s) had untolerated taint {dedicated: gpu}");
  auto* tol = pod.mutable_spec()->add_tolerations();
  tol->set_key("dedicated");
  tol->set_value("cpu");
  EXPECT_NE(FilterTaints(pod, node), "");
  tol->set_value("gpu");
  EXPECT_EQ(FilterTaints(pod, node), "");
  api::v1::Toleration all;
  all.set_operator_("Exists");
  EXPECT_TRUE(Tolerates(all, *t));
}

TEST(FilterHostPorts, ConflictsOnSamePortAndProtocol) {
  auto pod = MakePod("d", "p");
  auto* port = pod.mutable_spec()->mutable_containers(0)->add_ports();
  port->set_container_port(80);
  port->set_host_port(8080);
  auto info = MakePodInfo(pod);
  auto node = MakeNodeInfo(MakeNode("a"));
  EXPECT_EQ(FilterHostPorts(info, node), "");
  node.AddPod(info);
  EXPECT_EQ(FilterHostPorts(info, node), "node(s) didn't have free ports for the requested pod ports");
  port->set_protocol("UDP");
  EXPECT_EQ(FilterHostPorts(MakePodInfo(pod), node), "");
}

TEST(ScoreLeastAllocated, PrefersEmptierNode) {
  auto pod = MakePodInfo(MakePod("d", "p", "1", "1Gi"));
  auto empty = MakeNodeInfo(MakeNode("a", "4", "4Gi"));
  auto busy = MakeNodeInfo(MakeNode("b", "4", "4Gi"));
  busy.AddPod(MakePodInfo(MakePod("d", "q", "2", "2Gi")));
  EXPECT_EQ(ScoreLeastAllocated(pod, empty), 75);
  EXPECT_EQ(ScoreLeastAllocated(pod, busy), 25);
}

TEST(ScoreBalancedAllocation, PrefersEvenCpuAndMemoryUse) {
  auto pod = MakePodInfo(MakePod("d", "p", "1", "1Gi"));
  auto balanced = MakeNodeInfo(MakeNode("a", "4", "4Gi"));
  auto skewed = MakeNodeInfo(MakeNode("b", "4", "4Gi"));
  skewed.AddPod(MakePodInfo(MakePod("d", "q", "2", "1Mi")));
  EXPECT_EQ(ScoreBalancedAllocation(pod, balanced), 100);
  EXPECT_LT(ScoreBalancedAllocation(pod, skewed), 100);
}

TEST(SelectorSpread, PrefersNodesWithFewerPodsOfTheSameOwner) {
  auto pod = MakePod("d", "p");
  auto* ref = pod.mutable_metadata()->add_owner_references();
  ref->set_uid("rs-1");
  ref->set_controller(true);
  auto info = MakePodInfo(pod);
  auto a = MakeNodeInfo(MakeNode("a"));
  auto b = MakeNodeInfo(MakeNode("b"));
  a.AddPod(info);
  a.AddPod(info);
  std::vector<int64_t> raw = {RawSpread(info, a), RawSpread(info, b)};
  NormalizeSpread(&raw);
  EXPECT_EQ(raw[0], 0);
  EXPECT_EQ(raw[1], 100);
}

TEST(PreferredNodeAffinity, SumsWeightsOfMatchingTerms) {
  auto pod = MakePod("d", "p");
  auto* na = pod.mutable_spec()->mutable_affinity()->mutable_node_affinity();
  auto* p1 = na->add_preferred_during_scheduling_ignored_during_execution();
  p1->set_weight(30);
  auto* e = p1->mutable_preference()->add_match_expressions();
  e->set_key("zone");
  e->set_operator_("In");
  e->add_values("z1");
  auto n1 = MakeNode("a");
  (*n1.mutable_metadata()->mutable_labels())["zone"] = "z1";
  std::vector<int64_t> raw = {RawPreferredAffinity(pod, MakeNodeInfo(n1)),
                              RawPreferredAffinity(pod, MakeNodeInfo(MakeNode("b")))};
  EXPECT_EQ(raw[0], 30);
  NormalizeMax(&raw);
  EXPECT_EQ(raw[0], 100);
  EXPECT_EQ(raw[1], 0);
}

TEST(UnschedulableMessage, ReadsLikeKubernetes) {
  EXPECT_EQ(UnschedulableMessage(3, {{"Insufficient cpu", 1}, {"node(s) were not ready", 2}}),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready.");
}

}  // namespace
}  // namespace skiff::scheduler
