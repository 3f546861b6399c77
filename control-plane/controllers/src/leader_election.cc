#include "skiff/controllers/leader_election.h"

#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/time/clock.h"
#include "skiff/common/log.h"
#include "skiff/controllers/objects.h"

namespace skiff::controllers {

std::string DefaultIdentity() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return std::string(host) + "_" + std::to_string(getpid());
}

namespace {

absl::Status EnsureNamespace(client::Client& api, const std::string& ns) {
  api::v1::Namespace n;
  n.set_api_version("v1");
  n.set_kind("Namespace");
  n.mutable_metadata()->set_name(ns);
  auto r = api.Create("namespaces", "", objects::Wrap(n));
  if (!r.ok() && r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<bool> TryAcquireOrRenew(client::Client& api, const LeaderElectionConfig& cfg) {
  absl::Time now = absl::Now();
  auto got = api.Get("leases", cfg.lease_namespace, cfg.lease_name);
  if (!got.ok() && got.status().code() == absl::StatusCode::kNotFound) {
    api::v1::Lease lease;
    lease.set_api_version("coordination.k8s.io/v1");
    lease.set_kind("Lease");
    lease.mutable_metadata()->set_name(cfg.lease_name);
    lease.mutable_metadata()->set_namespace_(cfg.lease_namespace);
    lease.mutable_spec()->set_holder_identity(cfg.identity);
    lease.mutable_spec()->set_lease_duration_seconds(cfg.lease_duration_seconds);
    lease.mutable_spec()->set_acquire_time(objects::FormatMicroTime(now));
    lease.mutable_spec()->set_renew_time(objects::FormatMicroTime(now));
    lease.mutable_spec()->set_lease_transitions(0);
    auto created = api.Create("leases", cfg.lease_namespace, objects::Wrap(lease));
    if (!created.ok() && created.status().code() == absl::StatusCode::kNotFound) {
      auto st = EnsureNamespace(api, cfg.lease_namespace);
      if (!st.ok()) return st;
      created = api.Create("leases", cfg.lease_namespace, objects::Wrap(lease));
    }
    if (created.ok()) return true;
    if (created.status().code() == absl::StatusCode::kAlreadyExists) return false;
    return created.status();
  }
  if (!got.ok()) return got.status();
  api::v1::Lease lease = got->lease();
  auto* spec = lease.mutable_spec();
  if (spec->holder_identity() != cfg.identity) {
    int dur = spec->has_lease_duration_seconds() ? spec->lease_duration_seconds() : cfg.lease_duration_seconds;
    absl::Time renewed = objects::ParseTime(spec->renew_time());
    if (!spec->holder_identity().empty() && renewed + absl::Seconds(dur) > now) return false;
    spec->set_holder_identity(cfg.identity);
    spec->set_acquire_time(objects::FormatMicroTime(now));
    spec->set_lease_transitions(spec->lease_transitions() + 1);
  }
  spec->set_lease_duration_seconds(cfg.lease_duration_seconds);
  spec->set_renew_time(objects::FormatMicroTime(now));
  auto updated = api.Update("leases", cfg.lease_namespace, objects::Wrap(lease));
  if (updated.ok()) return true;
  if (updated.status().code() == absl::StatusCode::kAborted) return false;  // someone else wrote first
  return updated.status();
}

namespace {

void Release(client::Client& api, const LeaderElectionConfig& cfg) {
  auto got = api.Get("leases", cfg.lease_namespace, cfg.lease_name);
  if (!got.ok() || got->lease().spec().holder_identity() != cfg.identity) return;
  api::v1::Lease lease = got->lease();
  lease.mutable_spec()->set_holder_identity("");
  lease.mutable_spec()->set_renew_time(objects::NowMicro());
  (void)api.Update("leases", cfg.lease_namespace, objects::Wrap(lease));
}

void SleepUnless(const std::atomic<bool>& stop, std::chrono::milliseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (!stop && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(d, std::chrono::milliseconds(20)));
}

}  // namespace

absl::Status RunWithLeaderElection(std::shared_ptr<client::Client> api, const LeaderElectionConfig& cfg,
                                   const std::atomic<bool>& stop,
                                   const std::function<void(const std::atomic<bool>& lost)>& lead) {
  using std::chrono::milliseconds;
  const auto duration = milliseconds(cfg.lease_duration_seconds * 1000L);
  const auto renew_every = std::max(milliseconds(100), duration / 5);
  const auto retry_every = std::max(milliseconds(100), duration / 20);
  const auto renew_deadline = duration * 2 / 3;
  while (!stop) {
    auto ok = TryAcquireOrRenew(*api, cfg);
    if (!ok.ok() || !*ok) {
      if (!ok.ok()) log::Debug("leader election ", log::Field("lease", cfg.lease_name), " ", ok.status());
      SleepUnless(stop, retry_every);
      continue;
    }
    log::Info("became leader ", log::Field("lease", cfg.lease_namespace + "/" + cfg.lease_name), " ",
              log::Field("identity", cfg.identity));
    std::atomic<bool> lost{false};
    std::thread leader([&] { lead(lost); });
    auto last_renew = std::chrono::steady_clock::now();
    while (!stop) {
      SleepUnless(stop, renew_every);
      if (stop) break;
      auto r = TryAcquireOrRenew(*api, cfg);
      if (r.ok() && *r) {
        last_renew = std::chrono::steady_clock::now();
        continue;
      }
      if (r.ok() && !*r) break;  // someone else holds it now
      if (std::chrono::steady_clock::now() - last_renew > renew_deadline) break;
    }
    lost = true;
    leader.join();
    log::Info("stopped leading ", log::Field("lease", cfg.lease_namespace + "/" + cfg.lease_name));
    if (stop) Release(*api, cfg);
  }
  return absl::OkStatus();
}

}  // namespace skiff::controllers
