// Scheduler throughput: 100 hollow nodes, 3000 pending pods, a real
// skiff-control-plane (API server only) on Debian's etcd; our scheduler runs
// in this process through the gRPC client, exactly as it runs inside
// skiff-control-plane. Then the controllers too: time from a 100-replica
// Deployment created to all its pods bound.
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "processes.h"
#include "skiff/client/dial.h"
#include "skiff/common/log.h"
#include "skiff/controllers/informer.h"
#include "skiff/controllers/manager.h"
#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/builders.h"
#include "skiff/fakeclient/hollow_nodes.h"
#include "skiff/scheduler/scheduler.h"

using namespace skiff;
using Clock = std::chrono::steady_clock;

namespace {

int Env(const char* name, int dflt) {
  const char* v = getenv(name);
  return v ? atoi(v) : dflt;
}

int CountBound(client::Client& api, const std::string& ns, const std::string& sel) {
  auto l = api.List("pods", ns, fakeclient::WithLabels(sel));
  if (!l.ok()) return -1;
  int n = 0;
  for (const auto& p : l->items()) n += !p.pod().spec().node_name().empty();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string binary = argc > 1 ? argv[1] : "build/bin/skiff-control-plane";
  const int nodes = Env("NODES", 100), pods = Env("PODS", 3000), replicas = Env("REPLICAS", 100);
  skiff::log::Init("bench", skiff::log::Level::kWarning);
  std::string dir = controllers::it::ScratchDir("bench");
  auto etcd = controllers::it::StartEtcd(dir);
  if (!etcd.ok()) {
    fprintf(stderr, "etcd: %s\n", etcd.status().ToString().c_str());
    return 1;
  }
  auto cp = controllers::it::StartControlPlane(binary, dir + "/cp", etcd->url, "apiserver");
  if (!cp.ok()) {
    fprintf(stderr, "control plane: %s\n", cp.status().ToString().c_str());
    return 1;
  }
  client::Credentials creds;
  creds.server = cp->address;
  creds.insecure = true;
  auto dialed = client::Dial(creds);
  if (!dialed.ok()) return 1;
  std::shared_ptr<client::Client> api(std::move(*dialed));
  if (!fakeclient::WaitFor([&] { return api->List("namespaces", "").ok(); }, std::chrono::seconds(30))) {
    fprintf(stderr, "API server not answering\n");
    return 1;
  }
  (void)api->Create("namespaces", "", objects::Wrap(fakeclient::MakeNamespace("bench")));

  fakeclient::HollowOptions ho;
  ho.lease_renew_ms = 10000;
  ho.run_pods = false;
  ho.cpu = "64";
  ho.memory = "256Gi";
  ho.pods = "110";
  fakeclient::HollowNodes hollow(api, ho);
  if (!hollow.Start().ok()) return 1;
  for (int i = 0; i < nodes; i++)
    if (!hollow.AddNode(absl::StrCat("hollow-", i)).ok()) return 1;

  // Pending pods first, created in parallel.
  auto t_create = Clock::now();
  std::atomic<int> next{0}, failed{0};
  std::vector<std::thread> creators;
  for (int w = 0; w < 8; w++)
    creators.emplace_back([&] {
      for (int i = next++; i < pods; i = next++) {
        auto p = fakeclient::MakePod("bench", absl::StrCat("p-", i), "100m", "128Mi");
        (*p.mutable_metadata()->mutable_labels())["bench"] = "throughput";
        if (!api->Create("pods", "bench", objects::Wrap(p)).ok()) failed++;
      }
    });
  for (auto& t : creators) t.join();
  double create_s = std::chrono::duration<double>(Clock::now() - t_create).count();
  fprintf(stderr, "created %d pods in %.2fs (%d failed)\n", pods, create_s, failed.load());

  // Bindings observed through a watch (polling Lists of 3000 pods would load
  // the API server more than the scheduler does).
  // Counters per name prefix, so waiting costs nothing (scanning the set of
  // bound names every 10 ms took a sixth of this 2-core machine's CPU away
  // from the API server and etcd under measurement).
  std::mutex mu;
  std::set<std::string> bound_keys;
  std::atomic<int> bound_p{0}, bound_web{0};
  Clock::time_point first_bind{}, last_bind{};
  controllers::Informer watch(api, "pods", "bench");
  auto on_pod = [&](const controllers::ObjectPtr& o) {
    if (o->pod().spec().node_name().empty()) return;
    const std::string& name = o->pod().metadata().name();
    std::lock_guard<std::mutex> lock(mu);
    if (!bound_keys.insert(name).second) return;
    auto now = Clock::now();
    if (bound_keys.size() == 1) first_bind = now;
    last_bind = now;
    if (name.rfind("p-", 0) == 0) bound_p++;
    if (name.rfind("web-", 0) == 0) bound_web++;
  };
  watch.AddHandler({on_pod, [&](const controllers::ObjectPtr&, const controllers::ObjectPtr& o) { on_pod(o); }, nullptr});
  watch.Start();
  std::atomic<bool> never{false};
  watch.WaitForSync(never);

  std::atomic<bool> stop{false};
  scheduler::Options so;
  so.leader_elect = false;
  so.binder_threads = Env("BINDERS", 0);
  auto t0 = Clock::now();
  std::thread sched([&] { (void)scheduler::Run(api, so, stop); });
  int want = pods - failed.load();
  // The watch is the clock; should it miss an event, a List (at most every
  // 2 s, and only once the count stopped moving) decides instead.
  int last_seen = -1;
  auto last_change = Clock::now();
  bool all = fakeclient::WaitFor([&] {
    int n = bound_p.load();
    if (n >= want) return true;
    if (n != last_seen) {
      last_seen = n;
      last_change = Clock::now();
      return false;
    }
    if (Clock::now() - last_change < std::chrono::seconds(2)) return false;
    last_change = Clock::now();
    if (CountBound(*api, "bench", "bench=throughput") < want) return false;
    fprintf(stderr, "the watch saw %d of %d bindings; a List saw all\n", n, want);
    return true;
  }, std::chrono::seconds(120));
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  int bound = CountBound(*api, "bench", "bench=throughput");
  double bind_secs;
  {
    std::lock_guard<std::mutex> lock(mu);
    bind_secs = std::chrono::duration<double>(last_bind - first_bind).count();
  }
  double rate = bound / std::max(bind_secs, 1e-3);
  fprintf(stderr,
          "scheduled %d/%d pods on %d nodes: %.2fs from scheduler start (incl. its initial list), %.2fs from first to "
          "last binding; overall %.0f pods/s%s\n",
          bound, want, nodes, secs, bind_secs, bound / secs, all ? "" : " (TIMEOUT)");

  // Deployment: controllers on, pods to Running by the hollow nodes is not
  // needed for "bound".
  std::thread ctrl([&] {
    controllers::Options co;
    co.leader_elect = false;
    (void)controllers::Run(api, co, stop);
  });
  std::this_thread::sleep_for(std::chrono::seconds(1));  // informers synced
  auto t1 = Clock::now();
  if (!api->Create("deployments", "bench", objects::Wrap(fakeclient::MakeDeployment("bench", "web", replicas))).ok())
    return 1;
  bool dep_all = fakeclient::WaitFor([&] { return bound_web.load() >= replicas; }, std::chrono::seconds(120));
  double dep_s = std::chrono::duration<double>(Clock::now() - t1).count();
  fprintf(stderr, "deployment of %d replicas: all bound in %.3fs%s\n", replicas, dep_s, dep_all ? "" : " (TIMEOUT)");

  stop = true;
  watch.Stop();
  sched.join();
  ctrl.join();
  hollow.Stop();
  controllers::it::RemoveTree(dir);

  // Anchor: kube-scheduler cannot run here; Kubernetes' published scheduling
  // SLO/throughput bar (scheduler_perf) is 400 pods/s.
  const double kAnchorPodsPerSec = 400.0;
  printf("RESULT name=scheduler-throughput ours=%.0f anchor=kube-scheduler-published-bar:%.0f ratio=%.2f unit=pods/s\n",
         rate, kAnchorPodsPerSec, rate / kAnchorPodsPerSec);
  double anchor_dep = replicas / kAnchorPodsPerSec;
  printf("RESULT name=deployment-%d-bound ours=%.3f anchor=kube-scheduler-published-bar-derived:%.3f ratio=%.2f "
         "unit=s\n",
         replicas, dep_s, anchor_dep, dep_s / anchor_dep);
  return all && dep_all ? 0 : 1;
}
