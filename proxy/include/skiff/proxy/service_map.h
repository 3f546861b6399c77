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
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
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
  uint64_t udp_sockets_checked = 0;  // removed UDP backends whose sockets were looked for
  uint64_t udp_netns_walked = 0;      // network namespaces whose UDP sockets were walked
};

struct ServiceCounters {
  uint64_t connections = 0, packets = 0, bytes = 0, refused = 0;
};

class ServiceMap {
 public:
  explicit ServiceMap(LbMapFds fds);
  ServiceMap(const ServiceMap&) = delete;  // backend_ids_ points into backends_
  ServiceMap& operator=(const ServiceMap&) = delete;

  // Reads what a previous agent left in the pinned maps, so the next Apply()
  // only writes what differs.
  absl::Status Recover();
  // Makes the maps hold exactly `desired` (compares against what was applied
  // last, then ApplyDelta).
  absl::StatusOr<ApplyStats> Apply(const DesiredState& desired) { return Apply(desired.frontends); }
  absl::StatusOr<ApplyStats> Apply(const std::map<FrontendKey, Frontend>& desired);
  // Applies only the listed frontends; cost is proportional to the change.
  absl::StatusOr<ApplyStats> ApplyDelta(const FrontendDelta& delta);

  // Service id of a service port ("ns/name:port/TCP"), 0 if unknown.
  uint32_t ServiceId(const std::string& service_port) const;
  // Per-service counters summed over CPUs, by service port name.
  std::map<std::string, ServiceCounters> ReadCounters() const;
  size_t frontend_count() const { return frontends_.size(); }

 private:
  // Fields ordered so that no padding is needed: 40 bytes, not 48.
  struct Programmed {
    uint32_t service_id = 0;
    uint32_t affinity_timeout_s = 0;
    absl::InlinedVector<uint32_t, 4> slots;  // backend id of slot i + 1 (inline up to 4: no larger than a vector)
    uint32_t stored_slots = 0;    // slot entries present in the map (>= slots.size())
    uint16_t flags = 0;
    bool applied = false;         // set by ApplyDelta; false = only recovered from the maps
  };
  struct BackendEntry {
    Backend backend;  // with flags
    uint32_t service_id = 0;
    uint32_t refs = 0;  // applied frontends naming it
  };
  struct ServicePortEntry {
    uint32_t id = 0;
    uint32_t refs = 0;  // applied frontends of this service port
  };
  using BackendKey = std::pair<uint32_t, Backend>;  // (service id, backend without flags)

  uint32_t AllocServiceId();
  uint32_t AllocBackendId();
  absl::StatusOr<uint32_t> ServiceIdFor(const FrontendKey& fk, const std::string& service_port, ApplyStats* st);
  absl::Status SyncFrontend(const FrontendKey& key, const Frontend& want, uint32_t service_id,
                            const std::vector<uint32_t>& want_ids, Programmed* p, ApplyStats* stats);
  absl::Status DeleteFrontend(const FrontendKey& key, const Programmed& p, ApplyStats* stats);
  absl::Status WriteMaglev(uint32_t service_id, ApplyStats* stats);
  absl::Status ReleaseServiceId(uint32_t sid, ApplyStats* st);
  void Unref(const FrontendKey& fk, const Frontend& f, std::set<BackendKey>* maybe_dead,
             std::set<std::string>* maybe_dead_sp);
  std::optional<Frontend> AppliedFrontend(const FrontendKey& fk) const;
  bool Matches(const Programmed& p, const Frontend& f) const;
  static Backend Identity(Backend b) {
    b.flags = 0;
    return b;
  }

  // Map writes are recorded per phase and flushed in phase order.
  enum Phase { kBackends, kSlots, kServiceEntries, kEntryDeletes, kSlotDeletes, kBackendDeletes, kPhases };
  struct OpBatch {
    int fd = -1;
    bool del = false;
    size_t key_size = 0, value_size = 0, count = 0;
    std::vector<uint8_t> keys, values;  // count entries each, back to back
  };
  OpBatch& BatchFor(int phase, int fd, bool del, size_t key_size, size_t value_size);
  absl::Status PutRaw(int phase, int fd, const void* key, size_t key_size, const void* value, size_t value_size);
  absl::Status DelRaw(int phase, int fd, const void* key, size_t key_size);
  template <typename K, typename V>
  absl::Status Put(int phase, int fd, const K& key, const V& value) {
    return PutRaw(phase, fd, &key, sizeof(key), &value, sizeof(value));
  }
  template <typename K>
  absl::Status Del(int phase, int fd, const K& key) {
    return DelRaw(phase, fd, &key, sizeof(key));
  }
  absl::Status Flush();
  // A frontend's (frontend, slot) entry, in the services map of its family.
  absl::Status PutEntry(int phase, const FrontendKey& fk, uint16_t slot, const skiff_lb4_service& v);
  absl::Status DelEntry(int phase, const FrontendKey& fk, uint16_t slot);
  int BackendsFd(bool v6) const { return v6 ? fds_.backends6 : fds_.backends; }
  absl::Status ForgetConntrack(ApplyStats* st);
  absl::Status DestroyUdpSockets(ApplyStats* st);
  std::vector<uint32_t> removed_backends_;
  std::vector<Backend> removed_udp_;  // identities (flags 0) removed by this pass

  LbMapFds fds_;
  std::vector<OpBatch> ops_[kPhases];
  bool batch_supported_ = true;
  // What the services map holds. What was asked for last is not kept as a
  // second copy: a Frontend is rebuilt from it (AppliedFrontend) or compared
  // against it (Matches) when needed.
  absl::btree_map<FrontendKey, Programmed> frontends_;  // a B-tree: no reference is kept across an insertion
  // B-trees keyed by id below: entries in arrays, not a hash node each.
  // Nothing keeps a reference into them across an insertion or erasure.
  absl::btree_map<uint32_t, BackendEntry> backends_;  // by backend id
  // Backend ids ordered by the (service id, identity) of their entry in
  // backends_: found by BackendKey without a second copy of the backend.
  // An entry's service id and identity never change while its id is here.
  struct ByIdentity {
    using is_transparent = void;
    const absl::btree_map<uint32_t, BackendEntry>* backends;
    BackendKey KeyOf(uint32_t id) const {
      const BackendEntry& e = backends->at(id);
      return {e.service_id, Identity(e.backend)};
    }
    const BackendKey& KeyOf(const BackendKey& k) const { return k; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return KeyOf(a) < KeyOf(b);
    }
  };
  // A B-tree of 4-byte ids rather than a 48-byte set node per backend.
  absl::btree_set<uint32_t, ByIdentity> backend_ids_{ByIdentity{&backends_}};
  // Nodes stay put (sid_owner_ points at their keys); ~30 B less per service
  // port than a std::map node.
  absl::node_hash_map<std::string, ServicePortEntry> service_ports_;
  absl::btree_map<uint32_t, const std::string*> sid_owner_;  // into service_ports_' keys
  absl::btree_set<uint32_t> live_service_ids_;  // counters entry exists
  std::map<uint32_t, std::set<FrontendKey>> ext_frontends_;  // service id -> EXT-scope frontends
  std::map<uint32_t, std::vector<uint32_t>> maglev_sets_;   // maglev key -> backend ids in its table
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
