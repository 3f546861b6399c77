// QoS classes, cgroup layout and CPU weight: the kubelet's computations.
#include "gtest/gtest.h"
#include "skiff/kubelet/resources.h"

namespace skiff::kubelet {
namespace {

api::v1::PodSpec Spec(std::map<std::string, std::string> req, std::map<std::string, std::string> lim) {
  api::v1::PodSpec s;
  auto* c = s.add_containers();
  c->set_name("c");
  for (auto& [k, v] : req) (*c->mutable_resources()->mutable_requests())[k] = v;
  for (auto& [k, v] : lim) (*c->mutable_resources()->mutable_limits())[k] = v;
  return s;
}

TEST(Qos, ClassesFollowRequestsAndLimits) {
  EXPECT_EQ(ComputeQos(Spec({}, {})), QosClass::kBestEffort);
  EXPECT_EQ(ComputeQos(Spec({{"cpu", "100m"}}, {})), QosClass::kBurstable);
  EXPECT_EQ(ComputeQos(Spec({{"cpu", "1"}, {"memory", "1Gi"}}, {{"cpu", "1"}, {"memory", "1Gi"}})),
            QosClass::kGuaranteed);
  // Limits only: requests default to limits -> Guaranteed.
  EXPECT_EQ(ComputeQos(Spec({}, {{"cpu", "500m"}, {"memory", "64Mi"}})), QosClass::kGuaranteed);
  // Same quantity, different spelling.
  EXPECT_EQ(ComputeQos(Spec({{"cpu", "1000m"}, {"memory", "1024Mi"}}, {{"cpu", "1"}, {"memory", "1Gi"}})),
            QosClass::kGuaranteed);
  EXPECT_EQ(ComputeQos(Spec({{"cpu", "500m"}}, {{"cpu", "1"}, {"memory", "1Gi"}})), QosClass::kBurstable);
}

TEST(Qos, CgroupPathsMatchTheKubeletLayout) {
  EXPECT_EQ(PodCgroupPath("/kubepods", QosClass::kGuaranteed, "u1"), "kubepods/podu1");
  EXPECT_EQ(PodCgroupPath("/kubepods", QosClass::kBurstable, "u1"), "kubepods/burstable/podu1");
  EXPECT_EQ(PodCgroupPath("skiff-lab/x/h1/kubepods/", QosClass::kBestEffort, "u1"),
            "skiff-lab/x/h1/kubepods/besteffort/podu1");
  EXPECT_EQ(ContainerCgroupPath("kubepods/podu1", "cid"), "kubepods/podu1/cid");
}

TEST(PodLimits, SumContainerLimitsOnlyWhenEveryContainerDeclaresThem) {
  api::v1::PodSpec s = Spec({{"cpu", "250m"}}, {{"cpu", "500m"}, {"memory", "64Mi"}});
  auto* c2 = s.add_containers();
  c2->set_name("c2");
  (*c2->mutable_resources()->mutable_requests())["cpu"] = "100m";
  (*c2->mutable_resources()->mutable_limits())["memory"] = "32Mi";
  PodLimits l = PodLimitsFor(s, 4096);
  EXPECT_EQ(l.cpu_shares, MilliCpuToShares(350));
  EXPECT_FALSE(l.cpu_quota_us.has_value());  // c2 has no cpu limit
  ASSERT_TRUE(l.memory_bytes.has_value());
  EXPECT_EQ(*l.memory_bytes, 96 * 1024 * 1024);
  EXPECT_EQ(l.pids, 4096);
  (*c2->mutable_resources()->mutable_limits())["cpu"] = "1";
  // An init container with a bigger limit than the sum raises it; one without limits removes it.
  auto* init = s.add_init_containers();
  init->set_name("init");
  (*init->mutable_resources()->mutable_limits())["cpu"] = "2";
  l = PodLimitsFor(s, std::nullopt);
  ASSERT_TRUE(l.cpu_quota_us.has_value());
  EXPECT_EQ(*l.cpu_quota_us, 200000);
  EXPECT_FALSE(l.memory_bytes.has_value());
  EXPECT_FALSE(l.pids.has_value());
  // BestEffort: the minimum shares and nothing else.
  PodLimits none = PodLimitsFor(Spec({}, {}), std::nullopt);
  EXPECT_EQ(none.cpu_shares, 2u);
  EXPECT_FALSE(none.cpu_quota_us || none.memory_bytes || none.pids);
}

TEST(Cpu, SharesAndWeightUseTheKubeletConversion) {
  EXPECT_EQ(MilliCpuToShares(0), 2u);
  EXPECT_EQ(MilliCpuToShares(1), 2u);
  EXPECT_EQ(MilliCpuToShares(100), 102u);
  EXPECT_EQ(MilliCpuToShares(1000), 1024u);
  EXPECT_EQ(SharesToWeight(2), 1u);
  EXPECT_EQ(SharesToWeight(1024), 39u);
  EXPECT_EQ(SharesToWeight(262144), 10000u);
  EXPECT_EQ(MilliCpuToQuota(500), 50000);
  EXPECT_EQ(MilliCpuToQuota(1), 1000);  // minimum quota
}

TEST(Cpu, LimitsComeFromTheContainerSpec) {
  auto s = Spec({{"cpu", "250m"}}, {{"cpu", "500m"}, {"memory", "64Mi"}});
  ContainerLimits l = LimitsFor(s.containers(0));
  EXPECT_EQ(l.cpu_shares, 256u);
  ASSERT_TRUE(l.cpu_quota_us.has_value());
  EXPECT_EQ(*l.cpu_quota_us, 50000);
  ASSERT_TRUE(l.memory_bytes.has_value());
  EXPECT_EQ(*l.memory_bytes, 64 * 1024 * 1024);
  ContainerLimits none = LimitsFor(Spec({}, {}).containers(0));
  EXPECT_EQ(none.cpu_shares, 2u);
  EXPECT_FALSE(none.memory_bytes.has_value());
}

TEST(Requests, InitContainersCountAsTheirMaximum) {
  auto s = Spec({{"cpu", "100m"}, {"memory", "10Mi"}}, {});
  auto* c2 = s.add_containers();
  (*c2->mutable_resources()->mutable_requests())["cpu"] = "200m";
  auto* init = s.add_init_containers();
  (*init->mutable_resources()->mutable_requests())["cpu"] = "2";
  EXPECT_EQ(PodRequestMilliCpu(s), 2000);
  EXPECT_EQ(PodRequestMemory(s), 10 * 1024 * 1024);
}

}  // namespace
}  // namespace skiff::kubelet

namespace skiff::kubelet {
namespace {

TEST(OomScoreAdj, FollowsQosClassAndMemoryRequest) {
  const int64_t gi = int64_t{1} << 30;
  api::v1::Container none;
  EXPECT_EQ(OomScoreAdj(QosClass::kGuaranteed, none, 4 * gi), -997);
  EXPECT_EQ(OomScoreAdj(QosClass::kBestEffort, none, 4 * gi), 1000);
  api::v1::Container c;
  (*c.mutable_resources()->mutable_requests())["memory"] = "1Gi";
  EXPECT_EQ(OomScoreAdj(QosClass::kBurstable, c, 4 * gi), 750);  // 1000 - 1000*1/4
  // No memory request: 1000 would tie with BestEffort, so 999.
  EXPECT_EQ(OomScoreAdj(QosClass::kBurstable, none, 4 * gi), 999);
  // A request as large as the node: never below 2.
  (*c.mutable_resources()->mutable_requests())["memory"] = "8Gi";
  EXPECT_EQ(OomScoreAdj(QosClass::kBurstable, c, 4 * gi), 2);
  (*c.mutable_resources()->mutable_requests())["memory"] = "4Gi";
  EXPECT_EQ(OomScoreAdj(QosClass::kBurstable, c, 4 * gi), 2);
}

}  // namespace
}  // namespace skiff::kubelet
