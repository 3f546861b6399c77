#include "skiff/controllers/manager.h"

#include <thread>
#include <vector>

#include "skiff/common/log.h"
#include "skiff/controllers/controller.h"
#include "skiff/controllers/leader_election.h"

namespace skiff::controllers {

namespace {

void RunControllers(std::shared_ptr<client::Client> api, const Options& opts, const std::atomic<bool>& stop) {
  InformerFactory informers(api);
  EventRecorder events(api, "skiff-controller-manager");
  events.SetInstance(opts.identity);
  Context ctx{api, &informers, &events, opts};
  struct Entry {
    std::unique_ptr<Controller> c;
    int workers;
  };
  std::vector<Entry> all;
  all.push_back({NewReplicaSetController(ctx), 4});
  all.push_back({NewDeploymentController(ctx), 2});
  all.push_back({NewEndpointSliceController(ctx), 2});
  all.push_back({NewNamespaceController(ctx), 1});
  all.push_back({NewGarbageCollector(ctx), 2});
  all.push_back({NewNodeLifecycleController(ctx), 1});
  all.push_back({NewNodeIpamController(ctx), 1});
  all.push_back({NewServiceAccountController(ctx), 1});
  informers.StartAll();
  if (informers.WaitForSync(stop)) {
    for (auto& e : all) e.c->Started();
    std::vector<std::thread> threads;
    for (auto& e : all) threads.emplace_back([&e, &stop] { e.c->Run(e.workers, stop); });
    for (auto& t : threads) t.join();
  }
  informers.StopAll();
}

}  // namespace

absl::Status Run(std::shared_ptr<skiff::client::Client> api, const Options& opts, const std::atomic<bool>& stop) {
  if (!opts.leader_elect) {
    RunControllers(api, opts, stop);
    return absl::OkStatus();
  }
  LeaderElectionConfig cfg;
  cfg.lease_name = "skiff-controller-manager";
  cfg.identity = opts.identity.empty() ? DefaultIdentity() : opts.identity;
  cfg.lease_duration_seconds = opts.lease_duration_seconds;
  Options with_id = opts;
  with_id.identity = cfg.identity;
  return RunWithLeaderElection(api, cfg, stop,
                               [&](const std::atomic<bool>& lost) { RunControllers(api, with_id, lost); });
}

}  // namespace skiff::controllers
