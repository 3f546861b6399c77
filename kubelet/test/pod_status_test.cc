// Pod phase, container states and conditions from container records.
#include "gtest/gtest.h"
#include "skiff/kubelet/pod_status.h"

namespace skiff::kubelet {
namespace {

ContainerRecord Running(const std::string& id) {
  ContainerRecord r;
  r.id = id;
  r.pid = 100;
  r.started_at = "2026-11-22T06:00:00Z";
  return r;
}
ContainerRecord Exited(const std::string& id, int code, bool oom = false) {
  ContainerRecord r = Running(id);
  r.exited = true;
  r.exit_code = code;
  r.oom_killed = oom;
  r.finished_at = "2026-11-22T06:00:05Z";
  return r;
}
ContainerView View(const std::string& name, std::optional<ContainerRecord> cur, bool ready = true) {
  ContainerView v;
  v.name = name;
  v.current = cur;
  v.ready = ready;
  v.started = true;
  return v;
}
const api::v1::Condition* Cond(const api::v1::Pod::Status& s, const std::string& t) {
  for (const auto& c : s.conditions()) {
    if (c.type() == t) return &c;
  }
  return nullptr;
}

TEST(PodStatus, RunningAndReadyWhenAllContainersRunReady) {
  PodFacts f;
  f.pod_ip = "10.244.1.5";
  f.containers = {View("a", Running("a0")), View("b", Running("b0"))};
  auto s = ComputePodStatus(f, {});
  EXPECT_EQ(s.phase(), "Running");
  EXPECT_EQ(s.pod_ip(), "10.244.1.5");
  ASSERT_EQ(s.pod_ips_size(), 1);
  ASSERT_TRUE(Cond(s, "Ready"));
  EXPECT_EQ(Cond(s, "Ready")->status(), "True");
  EXPECT_TRUE(s.container_statuses(0).state().has_running());
  EXPECT_EQ(s.container_statuses(0).container_id(), "skiff://a0");
}

TEST(PodStatus, NotReadyWhileAReadinessProbeFails) {
  PodFacts f;
  f.containers = {View("a", Running("a0")), View("b", Running("b0"), /*ready=*/false)};
  auto s = ComputePodStatus(f, {});
  EXPECT_EQ(s.phase(), "Running");
  EXPECT_EQ(Cond(s, "Ready")->status(), "False");
  EXPECT_EQ(Cond(s, "Ready")->reason(), "ContainersNotReady");
  EXPECT_EQ(Cond(s, "ContainersReady")->status(), "False");
}

TEST(PodStatus, PhaseFollowsRestartPolicy) {
  PodFacts f;
  f.restart_policy = "Never";
  f.containers = {View("a", Exited("a0", 0)), View("b", Exited("b0", 1))};
  EXPECT_EQ(ComputePhase(f), "Failed");
  f.containers = {View("a", Exited("a0", 0))};
  EXPECT_EQ(ComputePhase(f), "Succeeded");
  f.restart_policy = "OnFailure";
  f.containers = {View("a", Exited("a0", 3))};
  EXPECT_EQ(ComputePhase(f), "Running");
  f.restart_policy = "Always";
  EXPECT_EQ(ComputePhase(f), "Running");
}

TEST(PodStatus, PendingUntilInitContainersSucceed) {
  PodFacts f;
  f.init_containers = {View("init1", Exited("i0", 0)), View("init2", Running("i1"))};
  f.containers = {View("a", std::nullopt)};
  f.containers[0].waiting_reason = "PodInitializing";
  auto s = ComputePodStatus(f, {});
  EXPECT_EQ(s.phase(), "Pending");
  EXPECT_EQ(Cond(s, "Initialized")->status(), "False");
  EXPECT_EQ(s.container_statuses(0).state().waiting().reason(), "PodInitializing");
  f.restart_policy = "Never";
  f.init_containers[1].current = Exited("i1", 2);
  EXPECT_EQ(ComputePhase(f), "Failed");
}

TEST(PodStatus, TerminatedReasonsAreKubernetes) {
  EXPECT_EQ(TerminatedReason(Exited("x", 0)), "Completed");
  EXPECT_EQ(TerminatedReason(Exited("x", 1)), "Error");
  EXPECT_EQ(TerminatedReason(Exited("x", 137, true)), "OOMKilled");
  ContainerRecord never;
  never.exited = true;
  never.error = "create container: no such file";
  EXPECT_EQ(TerminatedReason(never), "StartError");
}

TEST(PodStatus, CrashLoopBackOffKeepsTheLastTermination) {
  ContainerView v = View("a", Exited("a3", 1));
  v.restart_count = 3;
  v.waiting_reason = "CrashLoopBackOff";
  v.waiting_message = "back-off 40s restarting failed container=a";
  auto cs = BuildContainerStatus(v);
  EXPECT_EQ(cs.state().waiting().reason(), "CrashLoopBackOff");
  EXPECT_EQ(cs.last_state().terminated().exit_code(), 1);
  EXPECT_EQ(cs.last_state().terminated().reason(), "Error");
  EXPECT_EQ(cs.restart_count(), 3);
  EXPECT_FALSE(cs.ready());
  PodFacts f;
  f.containers = {v};
  // A crash-looping container counts as stopped: the pod stays Running under Always.
  EXPECT_EQ(ComputePhase(f), "Running");
}

TEST(PodStatus, ConditionTransitionTimesStickWhileStatusHolds) {
  PodFacts f;
  f.containers = {View("a", Running("a0"))};
  auto first = ComputePodStatus(f, {});
  auto* ready = Cond(first, "Ready");
  ASSERT_TRUE(ready);
  api::v1::Pod::Status prev = first;
  for (auto& c : *prev.mutable_conditions()) c.set_last_transition_time("2000-01-01T00:00:00Z");
  auto second = ComputePodStatus(f, prev);
  EXPECT_EQ(Cond(second, "Ready")->last_transition_time(), "2000-01-01T00:00:00Z");
}

}  // namespace
}  // namespace skiff::kubelet
