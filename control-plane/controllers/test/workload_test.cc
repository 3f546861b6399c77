// ReplicaSet and Deployment controllers against the fake client, with the
// scheduler and hollow nodes making pods Running and Ready.
#include <gtest/gtest.h>

#include <optional>

#include "harness.h"

namespace skiff::controllers::testing {
namespace {

using api::v1::Object;

api::v1::ReplicaSet MakeRS(const std::string& ns, const std::string& name, int replicas) {
  api::v1::ReplicaSet rs;
  rs.mutable_metadata()->set_namespace_(ns);
  rs.mutable_metadata()->set_name(name);
  rs.mutable_spec()->set_replicas(replicas);
  (*rs.mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = name;
  auto* t = rs.mutable_spec()->mutable_template_();
  (*t->mutable_metadata()->mutable_labels())["app"] = name;
  auto* c = t->mutable_spec()->add_containers();
  c->set_name("main");
  c->set_image("busybox");
  return rs;
}

int ActivePods(Harness& h, const std::string& ns, const std::string& sel) {
  int n = 0;
  for (const auto& p : h.ListItems("pods", ns, sel)) n += objects::IsPodActive(p.pod());
  return n;
}

TEST(ReplicaSetController, CreatesAndDeletesPodsToMatchReplicas) {
  Harness h;
  h.Add(NewReplicaSetController(h.ctx()));
  h.Start();
  h.Namespace("d");
  ASSERT_TRUE(h.api->Create("replicasets", "d", Wrap(MakeRS("d", "web", 3))).ok());
  ASSERT_TRUE(WaitFor([&] { return ActivePods(h, "d", "app=web") == 3; }));
  auto rs = h.api->Get("replicasets", "d", "web");
  for (const auto& p : h.ListItems("pods", "d", "app=web")) {
    const auto* ref = objects::ControllerOf(p.pod().metadata());
    ASSERT_NE(ref, nullptr);
    EXPECT_EQ(ref->uid(), rs->replica_set().metadata().uid());
    EXPECT_EQ(p.pod().metadata().name().rfind("web-", 0), 0u);
  }
  ASSERT_TRUE(WaitFor([&] {
    auto r = h.api->Get("replicasets", "d", "web");
    return r->replica_set().status().replicas() == 3 && r->replica_set().status().observed_generation() == 1;
  }));
  // Scale down.
  auto upd = *h.api->Get("replicasets", "d", "web");
  upd.mutable_replica_set()->mutable_spec()->set_replicas(1);
  ASSERT_TRUE(h.api->Update("replicasets", "d", upd).ok());
  ASSERT_TRUE(WaitFor([&] { return ActivePods(h, "d", "app=web") == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(ActivePods(h, "d", "app=web"), 1);
  // A deleted pod is replaced.
  auto pods = h.ListItems("pods", "d", "app=web");
  ASSERT_TRUE(h.api->Delete("pods", "d", pods[0].pod().metadata().name()).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto p = h.ListItems("pods", "d", "app=web");
    return p.size() == 1 && p[0].pod().metadata().name() != pods[0].pod().metadata().name();
  }));
}

TEST(ReplicaSetController, AdoptsMatchingOrphans) {
  Harness h;
  h.Add(NewReplicaSetController(h.ctx()));
  h.Start();
  h.Namespace("d");
  auto orphan = fakeclient::MakePod("d", "stray");
  (*orphan.mutable_metadata()->mutable_labels())["app"] = "web";
  ASSERT_TRUE(h.api->Create("pods", "d", Wrap(orphan)).ok());
  // Let the pod reach the controller's cache first; otherwise the controller
  // may create two pods, adopt the orphan and then scale one of the three away.
  ASSERT_TRUE(WaitFor([&] { return h.informers->For("pods")->Get("d/stray") != nullptr; }));
  ASSERT_TRUE(h.api->Create("replicasets", "d", Wrap(MakeRS("d", "web", 2))).ok());
  ASSERT_TRUE(WaitFor([&] { return ActivePods(h, "d", "app=web") == 2; }));
  auto p = h.api->Get("pods", "d", "stray");
  ASSERT_TRUE(p.ok());
  EXPECT_NE(objects::ControllerOf(p->pod().metadata()), nullptr);
}

class DeploymentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.Add(NewReplicaSetController(h_.ctx()));
    h_.Add(NewDeploymentController(h_.ctx()));
    h_.WithScheduler();
    h_.WithHollowNodes(3);
    h_.Start();
    h_.Namespace("d");
  }
  bool Complete(const std::string& name, int replicas) {
    auto d = h_.api->Get("deployments", "d", name);
    if (!d.ok()) return false;
    const auto& dep = d->deployment();
    const auto* prog = objects::FindCondition(dep.status().conditions(), "Progressing");
    const auto* avail = objects::FindCondition(dep.status().conditions(), "Available");
    return dep.status().observed_generation() == dep.metadata().generation() &&
           dep.status().updated_replicas() == replicas && dep.status().available_replicas() == replicas &&
           dep.status().replicas() == replicas && prog != nullptr && prog->reason() == "NewReplicaSetAvailable" &&
           avail != nullptr && avail->status() == "True";
  }
  void SetImage(const std::string& name, const std::string& image) {
    for (int i = 0; i < 5; i++) {
      auto d = *h_.api->Get("deployments", "d", name);
      d.mutable_deployment()->mutable_spec()->mutable_template_()->mutable_spec()->mutable_containers(0)->set_image(image);
      if (h_.api->Update("deployments", "d", d).ok()) return;
    }
    FAIL() << "could not update deployment";
  }
  std::map<std::string, std::string> ImagesByRevision(const std::string& name) {
    std::map<std::string, std::string> out;
    for (const auto& rs : h_.ListItems("replicasets", "d", "app=" + name))
      out[rs.replica_set().metadata().annotations().at(kRevisionAnnotation)] =
          rs.replica_set().spec().template_().spec().containers(0).image();
    return out;
  }
  Harness h_;
};

TEST_F(DeploymentTest, RollingUpdateStaysWithinSurgeAndUnavailability) {
  ASSERT_TRUE(h_.api->Create("deployments", "d", Wrap(fakeclient::MakeDeployment("d", "web", 4, "img:1"))).ok());
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 4); }));
  auto rs1 = h_.ListItems("replicasets", "d", "app=web");
  ASSERT_EQ(rs1.size(), 1u);
  EXPECT_TRUE(rs1[0].replica_set().metadata().labels().count(kPodTemplateHashLabel));
  EXPECT_EQ(rs1[0].replica_set().metadata().annotations().at(kRevisionAnnotation), "1");

  std::atomic<bool> done{false};
  std::atomic<int> max_pods{0}, min_ready{100};
  std::thread watcher([&] {
    while (!done) {
      int active = 0, ready = 0;
      for (const auto& p : h_.ListItems("pods", "d", "app=web")) {
        if (!objects::IsPodActive(p.pod())) continue;
        active++;
        ready += objects::IsPodReady(p.pod());
      }
      max_pods = std::max(max_pods.load(), active);
      min_ready = std::min(min_ready.load(), ready);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  SetImage("web", "img:2");
  bool ok = WaitFor([&] { return Complete("web", 4); });
  done = true;
  watcher.join();
  ASSERT_TRUE(ok);
  EXPECT_LE(max_pods.load(), 5);   // 4 + 25% surge
  EXPECT_GE(min_ready.load(), 3);  // 4 - 25% unavailable
  auto revs = ImagesByRevision("web");
  EXPECT_EQ(revs["1"], "img:1");
  EXPECT_EQ(revs["2"], "img:2");
  for (const auto& p : h_.ListItems("pods", "d", "app=web"))
    if (objects::IsPodActive(p.pod())) {
      EXPECT_EQ(p.pod().spec().containers(0).image(), "img:2");
    }
  auto d = h_.api->Get("deployments", "d", "web");
  EXPECT_EQ(d->deployment().metadata().annotations().at(kRevisionAnnotation), "2");
}

TEST_F(DeploymentTest, RollbackAnnotationRestoresPreviousTemplateAsNewRevision) {
  ASSERT_TRUE(h_.api->Create("deployments", "d", Wrap(fakeclient::MakeDeployment("d", "web", 2, "img:1"))).ok());
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 2); }));
  SetImage("web", "img:2");
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 2) && ImagesByRevision("web").count("2"); }));
  auto d = *h_.api->Get("deployments", "d", "web");
  (*d.mutable_deployment()->mutable_metadata()->mutable_annotations())[kRollbackAnnotation] = "0";
  ASSERT_TRUE(h_.api->Update("deployments", "d", d).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto cur = h_.api->Get("deployments", "d", "web");
    return cur->deployment().spec().template_().spec().containers(0).image() == "img:1" && Complete("web", 2) &&
           ImagesByRevision("web")["3"] == "img:1";
  }));
  EXPECT_EQ(h_.ListItems("replicasets", "d", "app=web").size(), 2u);
}

TEST_F(DeploymentTest, ScaleChangesTheCurrentReplicaSet) {
  ASSERT_TRUE(h_.api->Create("deployments", "d", Wrap(fakeclient::MakeDeployment("d", "web", 2))).ok());
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 2); }));
  auto d = *h_.api->Get("deployments", "d", "web");
  d.mutable_deployment()->mutable_spec()->set_replicas(5);
  ASSERT_TRUE(h_.api->Update("deployments", "d", d).ok());
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 5); }));
  EXPECT_EQ(ActivePods(h_, "d", "app=web"), 5);
}

TEST_F(DeploymentTest, RecreateStopsOldPodsBeforeStartingNewOnes) {
  auto dep = fakeclient::MakeDeployment("d", "web", 3, "img:1");
  dep.mutable_spec()->mutable_strategy()->set_type("Recreate");
  ASSERT_TRUE(h_.api->Create("deployments", "d", Wrap(dep)).ok());
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 3); }));
  std::atomic<bool> done{false}, mixed{false};
  std::thread watcher([&] {
    while (!done) {
      std::set<std::string> images;
      for (const auto& p : h_.ListItems("pods", "d", "app=web")) images.insert(p.pod().spec().containers(0).image());
      if (images.size() > 1) mixed = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  SetImage("web", "img:2");
  bool ok = WaitFor([&] { return Complete("web", 3) && ImagesByRevision("web").count("2"); });
  done = true;
  watcher.join();
  ASSERT_TRUE(ok);
  EXPECT_FALSE(mixed.load()) << "old and new pods existed at the same time";
}

TEST_F(DeploymentTest, RevisionHistoryLimitPrunesOldReplicaSets) {
  auto dep = fakeclient::MakeDeployment("d", "web", 1, "img:1");
  dep.mutable_spec()->set_revision_history_limit(1);
  ASSERT_TRUE(h_.api->Create("deployments", "d", Wrap(dep)).ok());
  ASSERT_TRUE(WaitFor([&] { return Complete("web", 1); }));
  for (int i = 2; i <= 4; i++) {
    SetImage("web", "img:" + std::to_string(i));
    ASSERT_TRUE(WaitFor([&] { return Complete("web", 1) && ImagesByRevision("web").count(std::to_string(i)); }));
  }
  ASSERT_TRUE(WaitFor([&] { return h_.ListItems("replicasets", "d", "app=web").size() == 2; }));
}

// Scaling a Deployment in the middle of a rollout spreads the change over
// its ReplicaSets in proportion to their sizes (Kubernetes' example: 10
// replicas, maxSurge 3, maxUnavailable 2, the new template stuck at 5 pods
// next to 8 old ones; scaled to 15, the 5 extra pods go 3 to the old and 2
// to the new ReplicaSet). Only the Deployment controller runs; the test plays
// the ReplicaSet controller by writing ReplicaSet status.
TEST(DeploymentProportionalScaling, ScaleMidRolloutSpreadsOverReplicaSets) {
  Harness h;
  h.Add(NewDeploymentController(h.ctx()));
  h.Start();
  h.Namespace("d");
  auto dep = fakeclient::MakeDeployment("d", "web", 10, "img:1");
  dep.mutable_spec()->mutable_strategy()->mutable_rolling_update()->set_max_surge("3");
  dep.mutable_spec()->mutable_strategy()->mutable_rolling_update()->set_max_unavailable("2");
  ASSERT_TRUE(h.api->Create("deployments", "d", Wrap(dep)).ok());

  auto rs_of = [&](const std::string& image) -> std::optional<api::v1::ReplicaSet> {
    for (const auto& o : h.ListItems("replicasets", "d"))
      if (o.replica_set().spec().template_().spec().containers(0).image() == image) return o.replica_set();
    return std::nullopt;
  };
  auto spec_of = [&](const std::string& image) {
    auto rs = rs_of(image);
    return rs ? rs->spec().replicas() : -1;
  };
  auto set_status = [&](const std::string& image, int replicas) {
    for (int i = 0; i < 20; i++) {
      auto rs = rs_of(image);
      if (!rs) continue;
      auto* st = rs->mutable_status();
      st->set_replicas(replicas);
      st->set_ready_replicas(replicas);
      st->set_available_replicas(replicas);
      st->set_observed_generation(rs->metadata().generation());
      if (h.api->UpdateStatus("replicasets", "d", Wrap(*rs)).ok()) return true;
    }
    return false;
  };
  auto update_deployment = [&](const std::function<void(api::v1::Deployment*)>& f) {
    for (int i = 0; i < 20; i++) {
      auto d = h.api->Get("deployments", "d", "web");
      if (!d.ok()) continue;
      f(d->mutable_deployment());
      if (h.api->Update("deployments", "d", *d).ok()) return true;
    }
    return false;
  };

  ASSERT_TRUE(WaitFor([&] { return spec_of("img:1") == 10; }));
  ASSERT_TRUE(set_status("img:1", 10));
  ASSERT_TRUE(update_deployment([](api::v1::Deployment* d) {
    d->mutable_spec()->mutable_template_()->mutable_spec()->mutable_containers(0)->set_image("img:2");
  }));
  // 3 new pods (surge), 2 old ones go (unavailability); once the old
  // ReplicaSet reports its 8 pods, the new one grows to 5 and the rollout
  // stalls there (none of the new pods becomes available).
  ASSERT_TRUE(WaitFor([&] { return spec_of("img:1") == 8 && spec_of("img:2") == 3; }));
  ASSERT_TRUE(set_status("img:1", 8));
  ASSERT_TRUE(WaitFor([&] { return spec_of("img:1") == 8 && spec_of("img:2") == 5; }));

  ASSERT_TRUE(update_deployment([](api::v1::Deployment* d) { d->mutable_spec()->set_replicas(15); }));
  ASSERT_TRUE(WaitFor([&] { return spec_of("img:1") == 11 && spec_of("img:2") == 7; }))
      << "old " << spec_of("img:1") << " new " << spec_of("img:2");
  for (const auto* image : {"img:1", "img:2"})
    EXPECT_EQ(rs_of(image)->metadata().annotations().at(kDesiredReplicasAnnotation), "15") << image;
  EXPECT_TRUE(WaitFor([&] {
    for (const auto& e : h.ListItems("events", "d"))
      if (e.event().reason() == "ScalingReplicaSet" && e.event().message().find("from 8 to 11") != std::string::npos)
        return true;
    return false;
  }));
}

}  // namespace
}  // namespace skiff::controllers::testing
