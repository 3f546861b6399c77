// ServiceMap: keeps the pinned LB maps equal to a DesiredState by writing
// only the differences.
//
// Invariants a concurrent reader (the BPF programs) can rely on:
//  - every slot 1..count of a service entry names a backend present in the
//    backends map: new slots are written before count grows, count shrinks
//    before slots are deleted, and a backend entry is deleted only after no
//    slot names it;
//  - a slot is replaced in place by one write, so it always holds either the
//    old or the new backend.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/proxy/datapath.h"
#include "skiff/proxy/desired.h"

namespace skiff::proxy {

struct ApplyStats {
  uint64_t map_writes = 0;
  uint64_t map_deletes = 0;
  uint64_t frontends = 0;
  uint64_t backends = 0;
};

struct ServiceCounters {
  uint64_t connections = 0, packets = 0, bytes = 0, refused = 0;
};

class ServiceMap {
 public:
  explicit ServiceMap(LbMapFds fds);

  // Reads what a previous agent left in the pinned maps, so the next Apply()
  // only writes what differs.
  absl::Status Recover();
  absl::StatusOr<ApplyStats> Apply(const DesiredState& desired);

  // Service id of a service port ("ns/name:port/TCP"), 0 if unknown.
  uint32_t ServiceId(const std::string& service_port) const;
  // Per-service counters summed over CPUs, by service port name.
  std::map<std::string, ServiceCounters> ReadCounters() const;
  size_t frontend_count() const { return frontends_.size(); }

 private:
  struct Programmed {
    uint32_t service_id = 0;
    uint16_t flags = 0;
    uint32_t affinity_timeout_s = 0;
    std::vector<uint32_t> slots;  // backend id of slot i + 1
    uint32_t stored_slots = 0;    // slot entries present in the map (>= slots.size())
  };
  struct BackendRef {
    Backend backend;
    uint32_t service_id = 0;
  };

  uint32_t AllocServiceId();
  uint32_t AllocBackendId();
  absl::Status SyncFrontend(const FrontendKey& key, const Frontend& want, uint32_t service_id,
                            const std::map<Backend, uint32_t>& ids, Programmed* p, ApplyStats* stats);
  absl::Status DeleteFrontend(const FrontendKey& key, const Programmed& p, ApplyStats* stats);
  absl::Status WriteMaglev(uint32_t service_id, const std::vector<uint32_t>& backend_ids, ApplyStats* stats);
  static Backend Identity(Backend b) {
    b.flags = 0;
    return b;
  }

  LbMapFds fds_;
  std::map<FrontendKey, Programmed> frontends_;
  std::unordered_map<uint32_t, BackendRef> backends_;  // by backend id
  // (service id, backend without flags) -> backend id
  std::map<std::pair<uint32_t, Backend>, uint32_t> backend_ids_;
  std::map<std::string, uint32_t> service_ids_;
  std::set<uint32_t> live_service_ids_;
  std::map<uint32_t, std::vector<uint32_t>> maglev_sets_;  // service id -> backend ids in its table
  uint32_t next_service_id_ = 1;
  uint32_t next_backend_id_ = 1;
  std::vector<uint32_t> free_service_ids_;
  std::vector<uint32_t> free_backend_ids_;
  int ncpus_ = 1;
};

// Maglev lookup table (Eisenbud et al., NSDI'16) of size `m` (a prime).
// Each backend is (stable identity, value to store); the permutation of a
// backend comes from hashing its identity (address and port), so every node
// and every agent generation builds the same table for the same set.
std::vector<uint32_t> BuildMaglevTable(const std::vector<std::pair<uint64_t, uint32_t>>& backends, uint32_t m);

}  // namespace skiff::proxy
