#include "skiff/scheduler/core.h"

#include <gtest/gtest.h>

#include <thread>

#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/builders.h"
#include "skiff/fakeclient/fake_client.h"

namespace skiff::scheduler {
namespace {

using fakeclient::FakeClient;
using fakeclient::MakeNode;
using fakeclient::MakePod;
using fakeclient::WaitFor;
using objects::Wrap;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api_ = std::make_shared<FakeClient>();
    ASSERT_TRUE(api_->Create("namespaces", "", Wrap(fakeclient::MakeNamespace("d"))).ok());
  }
  void Start() {
    sched_ = std::make_unique<Scheduler>(api_);
    thread_ = std::thread([this] { sched_->Run(stop_); });
  }
  void TearDown() override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::string NodeOf(const std::string& pod) {
    auto p = api_->Get("pods", "d", pod);
    return p.ok() ? p->pod().spec().node_name() : "";
  }

  std::shared_ptr<FakeClient> api_;
  std::unique_ptr<Scheduler> sched_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(SchedulerTest, BindsPodsAndSpreadsThemAcrossNodes) {
  ASSERT_TRUE(api_->Create("nodes", "", Wrap(MakeNode("n1"))).ok());
  ASSERT_TRUE(api_->Create("nodes", "", Wrap(MakeNode("n2"))).ok());
  Start();
  for (int i = 0; i < 10; i++) ASSERT_TRUE(api_->Create("pods", "d", Wrap(MakePod("d", "p" + std::to_string(i), "100m"))).ok());
  ASSERT_TRUE(WaitFor([&] {
    for (int i = 0; i < 10; i++)
      if (NodeOf("p" + std::to_string(i)).empty()) return false;
    return true;
  }));
  int on_n1 = 0;
  for (int i = 0; i < 10; i++) on_n1 += NodeOf("p" + std::to_string(i)) == "n1";
  EXPECT_EQ(on_n1, 5);
}

TEST_F(SchedulerTest, ReportsUnschedulableAndRetriesWhenANodeAppears) {
  ASSERT_TRUE(api_->Create("nodes", "", Wrap(MakeNode("small", "1"))).ok());
  ASSERT_TRUE(api_->Create("nodes", "", Wrap(MakeNode("down", "8", "8Gi", "110", false))).ok());
  Start();
  ASSERT_TRUE(api_->Create("pods", "d", Wrap(MakePod("d", "big", "4"))).ok());
  std::string msg;
  ASSERT_TRUE(WaitFor([&] {
    auto p = api_->Get("pods", "d", "big");
    const auto* c = objects::FindCondition(p->pod().status().conditions(), "PodScheduled");
    if (c == nullptr || c->status() != "False") return false;
    msg = c->message();
    return c->reason() == "Unschedulable";
  }));
  EXPECT_EQ(msg, "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready.");
  ASSERT_TRUE(WaitFor([&] {
    auto evs = api_->List("events", "d");
    for (const auto& e : evs->items())
      if (e.event().reason() == "FailedScheduling" && e.event().message() == msg) return true;
    return false;
  }));
  ASSERT_TRUE(api_->Create("nodes", "", Wrap(MakeNode("large", "8"))).ok());
  ASSERT_TRUE(WaitFor([&] { return NodeOf("big") == "large"; }));
}

TEST_F(SchedulerTest, AccountsAssumedPodsSoCapacityIsNeverOvercommitted) {
  ASSERT_TRUE(api_->Create("nodes", "", Wrap(MakeNode("n1", "1"))).ok());
  Start();
  for (int i = 0; i < 4; i++) ASSERT_TRUE(api_->Create("pods", "d", Wrap(MakePod("d", "p" + std::to_string(i), "400m"))).ok());
  ASSERT_TRUE(WaitFor([&] {
    int bound = 0;
    for (int i = 0; i < 4; i++) bound += !NodeOf("p" + std::to_string(i)).empty();
    return bound == 2;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  int bound = 0;
  for (int i = 0; i < 4; i++) bound += !NodeOf("p" + std::to_string(i)).empty();
  EXPECT_EQ(bound, 2);
  // Deleting a bound pod frees room for one more.
  for (int i = 0; i < 4; i++)
    if (!NodeOf("p" + std::to_string(i)).empty()) {
      client::DeleteOptions o;
      o.grace_period_seconds = 0;
      ASSERT_TRUE(api_->Delete("pods", "d", "p" + std::to_string(i), o).ok());
      break;
    }
  ASSERT_TRUE(WaitFor([&] {
    int n = 0;
    for (int i = 0; i < 4; i++) n += !NodeOf("p" + std::to_string(i)).empty();
    return n == 2 && api_->List("pods", "d")->items_size() == 3;
  }));
}

}  // namespace
}  // namespace skiff::scheduler
