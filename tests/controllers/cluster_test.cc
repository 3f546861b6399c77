// Cluster-level tests of the scheduler and controllers against a real
// skiff-control-plane (API server) on Debian's etcd, with hollow nodes.
// The scheduler and controller manager run in this process through the gRPC
// client with short timings (node grace 2 s, tolerations 2 s); the leader
// election test runs two complete skiff-control-plane replicas instead.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <set>
#include <unistd.h>

#include <thread>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "processes.h"
#include "skiff/client/dial.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/manager.h"
#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/builders.h"
#include "skiff/fakeclient/fake_client.h"
#include "skiff/fakeclient/hollow_nodes.h"
#include "skiff/scheduler/scheduler.h"

namespace skiff::controllers::it {
namespace {

using api::v1::Object;
using fakeclient::WaitFor;
using objects::Wrap;

std::string Binary() {
  const char* b = getenv("SKIFF_BUILD_DIR");
  return std::string(b ? b : "build") + "/bin/skiff-control-plane";
}

absl::StatusOr<std::shared_ptr<client::Client>> Connect(const std::string& address) {
  client::Credentials creds;
  creds.server = address;
  creds.insecure = true;
  auto c = client::Dial(creds);
  if (!c.ok()) return c.status();
  std::shared_ptr<client::Client> api(std::move(*c));
  bool up = WaitFor([&] { return api->List("namespaces", "").ok(); }, std::chrono::seconds(20));
  if (!up) return absl::UnavailableError("API server not answering");
  return api;
}

// The same scenarios run against the real API server (Real) and against the
// in-memory fake (Fake), which shows the controllers' logic even when the
// API server misbehaves.
struct Real {};
struct Fake {};

template <typename Backend>
class Cluster : public ::testing::Test {
 protected:
  static constexpr bool kReal = std::is_same_v<Backend, Real>;
  static void SetUpTestSuite() {
    dir_ = new std::string(ScratchDir(kReal ? "suite" : "suite-fake"));
    if (kReal) {
      ASSERT_EQ(access(Binary().c_str(), X_OK), 0) << Binary() << " not built";
      auto etcd = StartEtcd(*dir_);
      ASSERT_TRUE(etcd.ok()) << etcd.status();
      etcd_ = new Etcd(std::move(*etcd));
      auto cp = StartControlPlane(Binary(), *dir_ + "/cp", etcd_->url, "apiserver");
      ASSERT_TRUE(cp.ok()) << cp.status();
      cp_ = new ControlPlane(std::move(*cp));
      auto api = Connect(cp_->address);
      ASSERT_TRUE(api.ok()) << api.status();
      api_ = new std::shared_ptr<client::Client>(*api);
    } else {
      auto fake = std::make_shared<fakeclient::FakeClient>();
      for (const char* ns : {"default", "kube-system"})
        ASSERT_TRUE(fake->Create("namespaces", "", Wrap(fakeclient::MakeNamespace(ns))).ok());
      api_ = new std::shared_ptr<client::Client>(fake);
    }
    stop_ = new std::atomic<bool>(false);
    Options co;
    co.leader_elect = false;
    co.node_monitor_grace_period_seconds = 2;
    co.default_not_ready_toleration_seconds = 2;
    co.default_unreachable_toleration_seconds = 2;
    scheduler::Options so;
    so.leader_elect = false;
    threads_ = new std::vector<std::thread>();
    threads_->emplace_back([co] { (void)controllers::Run(*api_, co, *stop_); });
    threads_->emplace_back([so] { (void)scheduler::Run(*api_, so, *stop_); });
    fakeclient::HollowOptions ho;
    ho.lease_renew_ms = 500;
    ho.cpu = "4";
    hollow_ = new fakeclient::HollowNodes(*api_, ho);
    auto hs = hollow_->Start();
    ASSERT_TRUE(hs.ok()) << hs;
    for (int i = 0; i < 3; i++) ASSERT_TRUE(hollow_->AddNode("hollow-" + std::to_string(i)).ok());
  }
  static void TearDownTestSuite() {
    if (getenv("SKIFF_IT_KEEP")) return;
    if (cp_ != nullptr && !cp_->proc.Alive()) {
      ADD_FAILURE() << "skiff-control-plane died during the suite; its log:";
      (void)system(("tail -40 " + cp_->data_dir + ".log").c_str());
    }
    if (hollow_) hollow_->Stop();
    if (stop_) *stop_ = true;
    if (threads_)
      for (auto& t : *threads_) t.join();
    delete hollow_;
    delete threads_;
    delete api_;
    delete cp_;
    delete etcd_;
    if (dir_) RemoveTree(*dir_);
    delete dir_;
    delete stop_;
  }
  void SetUp() override {
    ns_ = absl::StrCat("t", getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->line());
    ASSERT_TRUE(api()->Create("namespaces", "", Wrap(fakeclient::MakeNamespace(ns_))).ok());
  }
  static client::Client* api() { return api_->get(); }
  std::vector<Object> Items(const std::string& res, const std::string& sel = "") {
    auto l = api()->List(res, ns_, fakeclient::WithLabels(sel));
    if (!l.ok()) return {};
    return {l->items().begin(), l->items().end()};
  }
  bool Complete(const std::string& name, int replicas, const std::string& image = "") {
    auto d = api()->Get("deployments", ns_, name);
    if (!d.ok()) return false;
    const auto& dep = d->deployment();
    const auto* prog = objects::FindCondition(dep.status().conditions(), "Progressing");
    if (!image.empty() && dep.spec().template_().spec().containers(0).image() != image) return false;
    return dep.status().observed_generation() == dep.metadata().generation() &&
           dep.status().updated_replicas() == replicas && dep.status().available_replicas() == replicas &&
           dep.status().replicas() == replicas && prog != nullptr && prog->reason() == "NewReplicaSetAvailable";
  }
  void Mutate(const std::string& res, const std::string& name, const std::function<void(Object*)>& f) {
    for (int i = 0; i < 10; i++) {
      auto o = api()->Get(res, ns_, name);
      ASSERT_TRUE(o.ok()) << o.status();
      Object upd = *o;
      f(&upd);
      auto r = api()->Update(res, ns_, upd);
      if (r.ok()) return;
      ASSERT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
    }
    FAIL() << "update kept conflicting";
  }
  int RunningPods(const std::string& sel) {
    int n = 0;
    for (const auto& p : Items("pods", sel))
      n += objects::IsPodActive(p.pod()) && p.pod().status().phase() == "Running";
    return n;
  }

  std::string ns_;
  static inline std::string* dir_ = nullptr;
  static inline Etcd* etcd_ = nullptr;
  static inline ControlPlane* cp_ = nullptr;
  static inline std::shared_ptr<client::Client>* api_ = nullptr;
  static inline std::atomic<bool>* stop_ = nullptr;
  static inline std::vector<std::thread>* threads_ = nullptr;
  static inline fakeclient::HollowNodes* hollow_ = nullptr;
};

class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, Real> ? "RealApiServer" : "FakeClient";
  }
};
using Backends = ::testing::Types<Real, Fake>;
TYPED_TEST_SUITE(Cluster, Backends, BackendNames);

constexpr auto kWait = std::chrono::seconds(30);

TYPED_TEST(Cluster, DeploymentRollsOutRollsBackAndScales) {
  ASSERT_TRUE(this->api()->Create("deployments", this->ns_, Wrap(fakeclient::MakeDeployment(this->ns_, "web", 4, "img:1"))).ok());
  ASSERT_TRUE(WaitFor([&] { return this->Complete("web", 4); }, kWait));
  EXPECT_EQ(this->RunningPods("app=web"), 4);
  this->Mutate("deployments", "web", [](Object* o) {
    o->mutable_deployment()->mutable_spec()->mutable_template_()->mutable_spec()->mutable_containers(0)->set_image("img:2");
  });
  ASSERT_TRUE(WaitFor([&] { return this->Complete("web", 4, "img:2"); }, kWait));
  for (const auto& p : this->Items("pods", "app=web"))
    if (objects::IsPodActive(p.pod())) {
      EXPECT_EQ(p.pod().spec().containers(0).image(), "img:2");
    }
  // Rollback to the previous revision through the annotation.
  this->Mutate("deployments", "web", [](Object* o) {
    (*o->mutable_deployment()->mutable_metadata()->mutable_annotations())[kRollbackAnnotation] = "0";
  });
  ASSERT_TRUE(WaitFor([&] { return this->Complete("web", 4, "img:1"); }, kWait));
  auto d = this->api()->Get("deployments", this->ns_, "web");
  EXPECT_EQ(d->deployment().metadata().annotations().at(kRevisionAnnotation), "3");
  // Scale.
  this->Mutate("deployments", "web", [](Object* o) { o->mutable_deployment()->mutable_spec()->set_replicas(7); });
  ASSERT_TRUE(WaitFor([&] { return this->Complete("web", 7, "img:1"); }, kWait));
  this->Mutate("deployments", "web", [](Object* o) { o->mutable_deployment()->mutable_spec()->set_replicas(2); });
  ASSERT_TRUE(WaitFor([&] { return this->Complete("web", 2, "img:1") && this->RunningPods("app=web") == 2; }, kWait));
}

TYPED_TEST(Cluster, RecreateReplacesAllPodsAtOnce) {
  auto dep = fakeclient::MakeDeployment(this->ns_, "batch", 3, "img:1");
  dep.mutable_spec()->mutable_strategy()->set_type("Recreate");
  ASSERT_TRUE(this->api()->Create("deployments", this->ns_, Wrap(dep)).ok());
  ASSERT_TRUE(WaitFor([&] { return this->Complete("batch", 3); }, kWait));
  std::atomic<bool> done{false}, mixed{false};
  std::thread watcher([&] {
    while (!done) {
      std::set<std::string> images;
      for (const auto& p : this->Items("pods", "app=batch")) images.insert(p.pod().spec().containers(0).image());
      if (images.size() > 1) mixed = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  this->Mutate("deployments", "batch", [](Object* o) {
    o->mutable_deployment()->mutable_spec()->mutable_template_()->mutable_spec()->mutable_containers(0)->set_image("img:2");
  });
  bool ok = WaitFor([&] { return this->Complete("batch", 3, "img:2"); }, kWait);
  done = true;
  watcher.join();
  ASSERT_TRUE(ok);
  EXPECT_FALSE(mixed.load());
}

TYPED_TEST(Cluster, ServiceEndpointSliceFollowsPodReadiness) {
  ASSERT_TRUE(this->api()->Create("deployments", this->ns_, Wrap(fakeclient::MakeDeployment(this->ns_, "api", 2))).ok());
  api::v1::Service svc;
  svc.mutable_metadata()->set_name("api");
  (*svc.mutable_spec()->mutable_selector())["app"] = "api";
  auto* sp = svc.mutable_spec()->add_ports();
  sp->set_port(80);
  sp->set_target_port("8080");
  ASSERT_TRUE(this->api()->Create("services", this->ns_, Wrap(svc)).ok());
  auto ready_endpoints = [&] {
    int ready = 0, total = 0;
    for (const auto& s : this->Items("endpointslices", std::string(kServiceNameLabel) + "=api"))
      for (const auto& e : s.endpoint_slice().endpoints()) {
        total++;
        ready += e.conditions().ready();
      }
    return std::make_pair(ready, total);
  };
  // The controller creates the "<svc>-<hash>" slice before it deletes the
  // "<svc>-empty" one it made while no pod was ready: wait for both steps.
  std::vector<Object> slices;
  ASSERT_TRUE(WaitFor([&] {
    slices = this->Items("endpointslices", std::string(kServiceNameLabel) + "=api");
    return ready_endpoints() == std::make_pair(2, 2) && slices.size() == 1;
  }, kWait)) << slices.size() << " slices";
  EXPECT_EQ(slices[0].endpoint_slice().ports(0).port(), 8080);
  // One pod turns unready (as a failing readiness probe would report).
  auto pods = this->Items("pods", "app=api");
  ASSERT_EQ(pods.size(), 2u);
  std::string victim = pods[0].pod().metadata().name();
  for (int i = 0; i < 10; i++) {
    auto p = *this->api()->Get("pods", this->ns_, victim);
    objects::SetCondition(p.mutable_pod()->mutable_status()->mutable_conditions(), "Ready", "False", "", "");
    if (this->api()->UpdateStatus("pods", this->ns_, p).ok()) break;
  }
  ASSERT_TRUE(WaitFor([&] { return ready_endpoints() == std::make_pair(1, 2); }, kWait));
  // Scale to 3: the new pod appears.
  this->Mutate("deployments", "api", [](Object* o) { o->mutable_deployment()->mutable_spec()->set_replicas(3); });
  ASSERT_TRUE(WaitFor([&] { return ready_endpoints() == std::make_pair(2, 3); }, kWait));
  // A ready pod is deleted: while it terminates (held here by a finalizer)
  // its endpoint stays, terminating and serving but no longer ready; once it
  // is gone, so is the endpoint.
  std::string leaving, leaving_ip;
  for (const auto& p : this->Items("pods", "app=api"))
    if (p.pod().metadata().name() != victim && objects::IsPodReady(p.pod())) {
      leaving = p.pod().metadata().name();
      leaving_ip = p.pod().status().pod_ip();
    }
  ASSERT_FALSE(leaving.empty());
  const std::string hold = "skiff.io/test-hold";
  this->Mutate("pods", leaving, [&](Object* o) { o->mutable_pod()->mutable_metadata()->add_finalizers(hold); });
  ASSERT_TRUE(this->api()->Delete("pods", this->ns_, leaving).ok());
  auto endpoint_of = [&](const std::string& ip) -> std::optional<api::v1::Endpoint> {
    for (const auto& s : this->Items("endpointslices", std::string(kServiceNameLabel) + "=api"))
      for (const auto& e : s.endpoint_slice().endpoints())
        for (const auto& a : e.addresses())
          if (a == ip) return e;
    return std::nullopt;
  };
  ASSERT_TRUE(WaitFor([&] {
    auto e = endpoint_of(leaving_ip);
    return e && e->conditions().terminating() && e->conditions().serving() && !e->conditions().ready();
  }, kWait));
  this->Mutate("pods", leaving, [&](Object* o) { o->mutable_pod()->mutable_metadata()->clear_finalizers(); });
  ASSERT_TRUE(WaitFor([&] { return !endpoint_of(leaving_ip).has_value(); }, kWait));
}

TYPED_TEST(Cluster, LostNodeIsTaintedAndItsPodsRescheduledElsewhere) {
  ASSERT_TRUE(this->hollow_->AddNode("doomed", {{"doom", this->ns_}}).ok());
  // Pods that prefer the doomed node land there.
  // One replica: with two, spreading across nodes may outweigh the preference
  // and put the second pod elsewhere from the start.
  auto dep = fakeclient::MakeDeployment(this->ns_, "svc", 1);
  auto* pref = dep.mutable_spec()->mutable_template_()->mutable_spec()->mutable_affinity()->mutable_node_affinity()
                   ->add_preferred_during_scheduling_ignored_during_execution();
  pref->set_weight(100);
  auto* e = pref->mutable_preference()->add_match_expressions();
  e->set_key("doom");
  e->set_operator_("In");
  e->add_values(this->ns_);
  ASSERT_TRUE(this->api()->Create("deployments", this->ns_, Wrap(dep)).ok());
  ASSERT_TRUE(WaitFor([&] { return this->Complete("svc", 1); }, kWait));
  for (const auto& p : this->Items("pods", "app=svc")) EXPECT_EQ(p.pod().spec().node_name(), "doomed");
  auto t0 = std::chrono::steady_clock::now();
  this->hollow_->KillNode("doomed");
  ASSERT_TRUE(WaitFor([&] {
    auto n = this->api()->Get("nodes", "", "doomed");
    if (!n.ok()) return false;
    const auto* c = objects::FindCondition(n->node().status().conditions(), "Ready");
    bool tainted = false;
    for (const auto& t : n->node().spec().taints()) tainted |= t.key() == kTaintUnreachable;
    return c != nullptr && c->status() == "Unknown" && tainted;
  }, kWait));
  ASSERT_TRUE(WaitFor([&] {
    auto pods = this->Items("pods", "app=svc");
    int elsewhere = 0;
    for (const auto& p : pods)
      elsewhere += p.pod().spec().node_name() != "doomed" && p.pod().status().phase() == "Running";
    return pods.size() == 1 && elsewhere == 1;
  }, kWait));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  // grace (2 s) + toleration (2 s), plus scheduling; well under the defaults.
  EXPECT_GE(took.count(), 3000);
  EXPECT_LE(took.count(), 15000);
  client::DeleteOptions now;
  now.grace_period_seconds = 0;
  (void)this->api()->Delete("nodes", "", "doomed", now);
}

TYPED_TEST(Cluster, NamespaceDeletionRemovesContentsFirst) {
  ASSERT_TRUE(this->api()->Create("deployments", this->ns_, Wrap(fakeclient::MakeDeployment(this->ns_, "x", 2))).ok());
  ASSERT_TRUE(WaitFor([&] { return this->RunningPods("app=x") == 2; }, kWait));
  ASSERT_TRUE(WaitFor([&] { return this->api()->Get("serviceaccounts", this->ns_, "default").ok(); }, kWait));
  ASSERT_TRUE(this->api()->Delete("namespaces", "", this->ns_).ok());
  ASSERT_TRUE(WaitFor([&] { return this->api()->Get("namespaces", "", this->ns_).status().code() == absl::StatusCode::kNotFound; },
                      kWait));
  auto pods = this->api()->List("pods", this->ns_);
  ASSERT_TRUE(pods.ok());
  EXPECT_EQ(pods->items_size(), 0);
  EXPECT_EQ(this->api()->List("replicasets", this->ns_)->items_size(), 0);
}

TYPED_TEST(Cluster, GarbageCollectionBackgroundForegroundAndOrphan) {
  for (const char* name : {"bg", "fg", "or"})
    ASSERT_TRUE(this->api()->Create("deployments", this->ns_, Wrap(fakeclient::MakeDeployment(this->ns_, name, 2))).ok());
  ASSERT_TRUE(WaitFor([&] { return this->Complete("bg", 2) && this->Complete("fg", 2) && this->Complete("or", 2); }, kWait));
  // Background: the deployment goes at once, its ReplicaSet and pods after.
  ASSERT_TRUE(this->api()->Delete("deployments", this->ns_, "bg").ok());
  EXPECT_FALSE(this->api()->Get("deployments", this->ns_, "bg").ok());
  ASSERT_TRUE(WaitFor([&] { return this->Items("replicasets", "app=bg").empty() && this->Items("pods", "app=bg").empty(); }, kWait));
  // Foreground: the deployment stays (with its finalizer) until its dependents are gone.
  client::DeleteOptions fg;
  fg.propagation_policy = "Foreground";
  ASSERT_TRUE(this->api()->Delete("deployments", this->ns_, "fg", fg).ok());
  bool owner_first = false;
  ASSERT_TRUE(WaitFor([&] {
    bool owner = this->api()->Get("deployments", this->ns_, "fg").ok();
    if (!owner && (!this->Items("replicasets", "app=fg").empty() || !this->Items("pods", "app=fg").empty())) owner_first = true;
    return !owner;
  }, kWait));
  EXPECT_FALSE(owner_first);
  EXPECT_TRUE(this->Items("pods", "app=fg").empty());
  // Orphan: the ReplicaSet stays, without an owner.
  client::DeleteOptions orphan;
  orphan.propagation_policy = "Orphan";
  ASSERT_TRUE(this->api()->Delete("deployments", this->ns_, "or", orphan).ok());
  ASSERT_TRUE(WaitFor([&] { return !this->api()->Get("deployments", this->ns_, "or").ok(); }, kWait));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto rss = this->Items("replicasets", "app=or");
  ASSERT_EQ(rss.size(), 1u);
  EXPECT_TRUE(rss[0].replica_set().metadata().owner_references().empty());
  EXPECT_EQ(this->RunningPods("app=or"), 2);
}

TYPED_TEST(Cluster, UnschedulablePodGetsItsReasonAndSchedulesWhenANodeAppears) {
  auto pod = fakeclient::MakePod(this->ns_, "picky");
  (*pod.mutable_spec()->mutable_node_selector())["pool"] = this->ns_;
  ASSERT_TRUE(this->api()->Create("pods", this->ns_, Wrap(pod)).ok());
  std::string msg;
  ASSERT_TRUE(WaitFor([&] {
    auto p = this->api()->Get("pods", this->ns_, "picky");
    const auto* c = objects::FindCondition(p->pod().status().conditions(), "PodScheduled");
    if (c == nullptr || c->reason() != "Unschedulable") return false;
    msg = c->message();
    return true;
  }, kWait));
  EXPECT_NE(msg.find("node(s) didn't match Pod's node affinity/selector"), std::string::npos) << msg;
  EXPECT_EQ(msg.rfind("0/", 0), 0u) << msg;
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& e : this->Items("events"))
      if (e.event().reason() == "FailedScheduling" && e.event().involved_object().name() == "picky") return true;
    return false;
  }, kWait));
  std::string node = "pool-" + this->ns_;
  ASSERT_TRUE(this->hollow_->AddNode(node, {{"pool", this->ns_}}).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto p = this->api()->Get("pods", this->ns_, "picky");
    return p->pod().spec().node_name() == node && p->pod().status().phase() == "Running";
  }, kWait));
}

TEST(LeaderElectionCluster, TwoReplicasOneLeaderFailoverWithinLeaseDuration) {
  ASSERT_EQ(access(Binary().c_str(), X_OK), 0) << Binary() << " not built";
  std::string dir = ScratchDir("ha");
  auto etcd = StartEtcd(dir);
  ASSERT_TRUE(etcd.ok()) << etcd.status();
  std::map<std::string, ControlPlane> cps;
  for (const std::string id : {"replica-a", "replica-b"}) {
    auto cp = StartControlPlane(Binary(), dir + "/" + id, etcd->url, "apiserver,scheduler,controllers",
                                {"--leader-identity", id});
    ASSERT_TRUE(cp.ok()) << cp.status();
    cps.emplace(id, std::move(*cp));
  }
  auto api = Connect(cps.at("replica-a").address);
  ASSERT_TRUE(api.ok());
  auto holder = [&](const std::string& lease) -> std::string {
    auto l = (*api)->Get("leases", "kube-system", lease);
    return l.ok() ? l->lease().spec().holder_identity() : "";
  };
  ASSERT_TRUE(WaitFor([&] { return !holder("skiff-controller-manager").empty() && !holder("skiff-scheduler").empty(); },
                      std::chrono::seconds(30)));
  std::string leader = holder("skiff-controller-manager");
  std::string other = leader == "replica-a" ? "replica-b" : "replica-a";
  std::string sched_leader = holder("skiff-scheduler");
  // Hollow nodes talk to the replica that survives.
  auto sapi = Connect(cps.at(other).address);
  ASSERT_TRUE(sapi.ok());
  fakeclient::HollowNodes hollow(*sapi);
  ASSERT_TRUE(hollow.Start().ok());
  ASSERT_TRUE(hollow.AddNode("ha-node").ok());
  auto running = [&](const std::string& app) {
    auto pods = (*sapi)->List("pods", "default", fakeclient::WithLabels("app=" + app));
    if (!pods.ok() || pods->items_size() != 2) return false;
    for (const auto& p : pods->items())
      if (p.pod().status().phase() != "Running") return false;
    return true;
  };
  // Which replica acted: every Event names its reporting instance (the
  // leader-election identity). Only the lease holders may appear.
  auto actors = [&](const std::string& component) {
    std::set<std::string> out;
    auto evs = (*sapi)->List("events", "default");
    if (evs.ok())
      for (const auto& e : evs->items())
        if (e.event().reporting_component() == component) out.insert(e.event().reporting_instance());
    return out;
  };
  ASSERT_TRUE((*sapi)->Create("deployments", "default", Wrap(fakeclient::MakeDeployment("default", "before", 2))).ok());
  ASSERT_TRUE(WaitFor([&] { return running("before"); }, std::chrono::seconds(30)));
  ASSERT_TRUE(WaitFor([&] {
    return !actors("skiff-controller-manager").empty() && !actors("default-scheduler").empty();
  }, std::chrono::seconds(30)));
  EXPECT_EQ(actors("skiff-controller-manager"), std::set<std::string>{leader});
  EXPECT_EQ(actors("default-scheduler"), std::set<std::string>{sched_leader});
  auto transitions = [&] {
    auto l = (*api)->Get("leases", "kube-system", "skiff-controller-manager");
    return l.ok() ? l->lease().spec().lease_transitions() : -1;
  };
  // The standby never takes the lease while the leader lives.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(holder("skiff-controller-manager"), leader);
  int before = transitions();
  // Talk to the survivor from now on.
  api = sapi;
  auto t0 = std::chrono::steady_clock::now();
  cps.at(leader).proc.Kill(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return holder("skiff-controller-manager") == other && holder("skiff-scheduler") == other; },
                      std::chrono::seconds(30)));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  // Takeover happens once renewTime + leaseDuration (15 s) has passed, seen
  // by a candidate polling every duration/20 (0.75 s): at most 15.75 s after
  // the kill, usually less (the leader renewed up to 3 s before dying).
  EXPECT_LE(took.count(), 16500) << "lease duration is 15 s";
  EXPECT_EQ(transitions(), before + 1);
  // The survivor's controllers and scheduler act.
  ASSERT_TRUE((*api)->Create("deployments", "default", Wrap(fakeclient::MakeDeployment("default", "after", 2))).ok());
  ASSERT_TRUE(WaitFor([&] { return running("after"); }, std::chrono::seconds(30)));
  ASSERT_TRUE(WaitFor([&] {
    return actors("skiff-controller-manager").count(other) && actors("default-scheduler").count(other);
  }, std::chrono::seconds(30)));
  hollow.Stop();
  cps.clear();
  RemoveTree(dir);
  std::cout << "failover took " << took.count() << " ms\n";
}

// The start helpers: a child that exits before it listens fails the start
// at once (not after the 30 s wait), with the end of its log in the error.
TEST(Processes, AChildThatExitsFailsTheStartAtOnceWithItsLog) {
  std::string dir = ScratchDir("exits");
  auto t0 = std::chrono::steady_clock::now();
  // /bin/sh refuses skiff-control-plane's flags ("Illegal option --").
  auto cp = StartControlPlane("/bin/sh", dir + "/cp", "http://127.0.0.1:1", "apiserver");
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(cp.ok());
  EXPECT_NE(cp.status().message().find("skiff-control-plane exited"), std::string::npos) << cp.status();
  EXPECT_NE(cp.status().message().find("Illegal option"), std::string::npos) << cp.status();
  EXPECT_LT(took, std::chrono::seconds(10));
  RemoveTree(dir);
}

}  // namespace
}  // namespace skiff::controllers::it
