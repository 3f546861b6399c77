#include "skiff/scheduler/scheduler.h"

#include "skiff/common/log.h"
#include "skiff/controllers/leader_election.h"
#include "skiff/scheduler/core.h"

namespace skiff::scheduler {

absl::Status Run(std::shared_ptr<skiff::client::Client> api, const Options& opts, const std::atomic<bool>& stop) {
  std::string identity = opts.identity.empty() ? controllers::DefaultIdentity() : opts.identity;
  auto run = [&](const std::atomic<bool>& lost) {
    CoreOptions co;
    co.instance = identity;
    if (opts.binder_threads > 0) co.binder_threads = opts.binder_threads;
    Scheduler s(api, co);
    s.Run(lost);
  };
  if (!opts.leader_elect) {
    run(stop);
    return absl::OkStatus();
  }
  controllers::LeaderElectionConfig cfg;
  cfg.lease_name = "skiff-scheduler";
  cfg.identity = identity;
  cfg.lease_duration_seconds = opts.lease_duration_seconds;
  return controllers::RunWithLeaderElection(api, cfg, stop, run);
}

}  // namespace skiff::scheduler
