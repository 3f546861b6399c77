#include "skiff/proxy/service_map.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cerrno>
#include <deque>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff_bpf/lb.h"
#include "netns.h"

namespace skiff::proxy {

namespace {

skiff_lb4_key MakeKey(const FrontendKey& k, uint16_t slot) {
  skiff_lb4_key key{};
  key.address = k.address;
  key.dport = htons(k.port);
  key.backend_slot = slot;
  key.proto = k.proto;
  key.scope = k.scope;
  return key;
}

skiff_lb6_key MakeKey6(const FrontendKey& k, uint16_t slot) {
  skiff_lb6_key key{};
  static_assert(sizeof(key.address) == sizeof(k.address6));
  memcpy(key.address, k.address6.data(), sizeof(key.address));
  key.dport = htons(k.port);
  key.backend_slot = slot;
  key.proto = k.proto;
  key.scope = k.scope;
  return key;
}

absl::Status Delete(int fd, const void* key, const char* what) {
  if (bpf_map_delete_elem(fd, key) != 0 && errno != ENOENT) return LastErrnoError(std::string("delete ") + what);
  return absl::OkStatus();
}

uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

}  // namespace

std::vector<uint32_t> BuildMaglevTable(const std::vector<std::pair<uint64_t, uint32_t>>& backends, uint32_t m) {
  std::vector<uint32_t> table(m, 0);
  if (backends.empty()) return table;
  auto sorted = backends;
  std::sort(sorted.begin(), sorted.end());
  size_t n = sorted.size();
  std::vector<uint64_t> offset(n), skip(n), next(n, 0);
  for (size_t i = 0; i < n; ++i) {
    offset[i] = Mix64(sorted[i].first) % m;
    skip[i] = Mix64(sorted[i].first ^ 0x9e3779b97f4a7c15ULL) % (m - 1) + 1;
  }
  std::vector<bool> filled(m, false);
  uint32_t done = 0;
  while (true) {
    for (size_t i = 0; i < n; ++i) {
      uint64_t c = (offset[i] + next[i] * skip[i]) % m;
      while (filled[c]) {
        ++next[i];
        c = (offset[i] + next[i] * skip[i]) % m;
      }
      table[c] = sorted[i].second;
      filled[c] = true;
      ++next[i];
      if (++done == m) return table;
    }
  }
}

ServiceMap::ServiceMap(LbMapFds fds) : fds_(fds) {
  int n = libbpf_num_possible_cpus();
  ncpus_ = n > 0 ? n : 1;
}

uint32_t ServiceMap::AllocServiceId() {
  if (!free_service_ids_.empty()) {
    uint32_t id = free_service_ids_.back();
    free_service_ids_.pop_back();
    return id;
  }
  while (live_service_ids_.count(next_service_id_)) ++next_service_id_;
  return next_service_id_++;
}

uint32_t ServiceMap::AllocBackendId() {
  if (!free_backend_ids_.empty()) {
    uint32_t id = free_backend_ids_.back();
    free_backend_ids_.pop_back();
    return id;
  }
  while (backends_.count(next_backend_id_)) ++next_backend_id_;
  return next_backend_id_++;
}

absl::Status ServiceMap::PutEntry(int phase, const FrontendKey& fk, uint16_t slot, const skiff_lb4_service& v) {
  if (fk.v6) return Put(phase, fds_.services6, MakeKey6(fk, slot), v);
  return Put(phase, fds_.services, MakeKey(fk, slot), v);
}

absl::Status ServiceMap::DelEntry(int phase, const FrontendKey& fk, uint16_t slot) {
  if (fk.v6) return Del(phase, fds_.services6, MakeKey6(fk, slot));
  return Del(phase, fds_.services, MakeKey(fk, slot));
}

uint32_t ServiceMap::ServiceId(const std::string& service_port) const {
  auto it = service_ports_.find(service_port);
  return it == service_ports_.end() ? 0 : it->second.id;
}

ServiceMap::OpBatch& ServiceMap::BatchFor(int phase, int fd, bool del, size_t key_size, size_t value_size) {
  for (OpBatch& b : ops_[phase])
    if (b.fd == fd && b.del == del) return b;
  OpBatch& b = ops_[phase].emplace_back();
  b.fd = fd;
  b.del = del;
  b.key_size = key_size;
  b.value_size = value_size;
  return b;
}

absl::Status ServiceMap::PutRaw(int phase, int fd, const void* key, size_t key_size, const void* value,
                                size_t value_size) {
  OpBatch& b = BatchFor(phase, fd, false, key_size, value_size);
  if (b.key_size != key_size || b.value_size != value_size) return absl::InternalError("map entry size mismatch");
  b.keys.insert(b.keys.end(), static_cast<const uint8_t*>(key), static_cast<const uint8_t*>(key) + key_size);
  b.values.insert(b.values.end(), static_cast<const uint8_t*>(value), static_cast<const uint8_t*>(value) + value_size);
  ++b.count;
  return absl::OkStatus();
}

absl::Status ServiceMap::DelRaw(int phase, int fd, const void* key, size_t key_size) {
  OpBatch& b = BatchFor(phase, fd, true, key_size, 0);
  if (b.key_size != key_size) return absl::InternalError("map key size mismatch");
  b.keys.insert(b.keys.end(), static_cast<const uint8_t*>(key), static_cast<const uint8_t*>(key) + key_size);
  ++b.count;
  return absl::OkStatus();
}

// Writes the recorded operations phase by phase (the order that keeps every
// visible slot valid, see service_map.h). The operations on one map within a
// phase go to the kernel as one BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH
// (keys and values already lie in contiguous arrays); a kernel without batch
// support gets them one by one.
absl::Status ServiceMap::Flush() {
  for (auto& phase : ops_) {
    for (OpBatch& b : phase) {
      size_t done = 0;
      if (b.count > 1 && batch_supported_) {
        while (done < b.count) {
          __u32 count = static_cast<__u32>(b.count - done);
          LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = b.del ? 0 : BPF_ANY);
          const uint8_t* keys = b.keys.data() + done * b.key_size;
          int rc = b.del ? bpf_map_delete_batch(b.fd, keys, &count, &opts)
                         : bpf_map_update_batch(b.fd, keys, b.values.data() + done * b.value_size, &count, &opts);
          if (rc == 0) {
            done += count;
            continue;
          }
          if ((errno == EINVAL || errno == 524 /* kernel ENOTSUPP */ || errno == EOPNOTSUPP) && done == 0 &&
              count == 0) {
            batch_supported_ = false;
            break;
          }
          // A delete batch stops at a key that is not there (already gone):
          // step over it.
          if (b.del && errno == ENOENT) {
            done += count + 1;
            continue;
          }
          return LastErrnoError(b.del ? "batch delete map entries" : "batch update map");
        }
      }
      for (; done < b.count; ++done) {
        const uint8_t* key = b.keys.data() + done * b.key_size;
        if (b.del) {
          if (bpf_map_delete_elem(b.fd, key) != 0 && errno != ENOENT) return LastErrnoError("delete map entry");
        } else if (bpf_map_update_elem(b.fd, key, b.values.data() + done * b.value_size, BPF_ANY) != 0) {
          return LastErrnoError("update map entry");
        }
      }
    }
    phase.clear();
  }
  return absl::OkStatus();
}

absl::Status ServiceMap::Recover() {
  frontends_.clear();
  backends_.clear();
  backend_ids_.clear();
  service_ports_.clear();
  sid_owner_.clear();
  live_service_ids_.clear();
  ext_frontends_.clear();
  maglev_sets_.clear();
  uint32_t bkey, bnext;
  uint32_t* bprev = nullptr;
  while (bpf_map_get_next_key(fds_.backends, bprev, &bnext) == 0) {
    skiff_lb4_backend v;
    if (bpf_map_lookup_elem(fds_.backends, &bnext, &v) == 0) {
      BackendEntry e;
      e.backend = {v.address, ntohs(v.port), v.proto, v.flags};
      backends_[bnext] = e;
    }
    bkey = bnext;
    bprev = &bkey;
  }
  if (fds_.backends6 >= 0) {
    bprev = nullptr;
    while (bpf_map_get_next_key(fds_.backends6, bprev, &bnext) == 0) {
      skiff_lb6_backend v;
      if (bpf_map_lookup_elem(fds_.backends6, &bnext, &v) == 0) {
        BackendEntry e;
        e.backend = {0, ntohs(v.port), v.proto, v.flags};
        e.backend.v6 = true;
        memcpy(e.backend.address6.data(), v.address, sizeof(v.address));
        backends_[bnext] = e;
      }
      bkey = bnext;
      bprev = &bkey;
    }
  }
  struct Entry {
    FrontendKey fk;
    uint16_t slot;
    skiff_lb4_service v;
  };
  std::vector<Entry> entries;
  skiff_lb4_key skey, snext;
  skiff_lb4_key* sprev = nullptr;
  while (bpf_map_get_next_key(fds_.services, sprev, &snext) == 0) {
    skiff_lb4_service v;
    if (bpf_map_lookup_elem(fds_.services, &snext, &v) == 0)
      entries.push_back({FrontendKey{snext.address, ntohs(snext.dport), snext.proto, snext.scope}, snext.backend_slot, v});
    skey = snext;
    sprev = &skey;
  }
  if (fds_.services6 >= 0) {
    skiff_lb6_key skey6, snext6;
    skiff_lb6_key* sprev6 = nullptr;
    while (bpf_map_get_next_key(fds_.services6, sprev6, &snext6) == 0) {
      skiff_lb4_service v;
      if (bpf_map_lookup_elem(fds_.services6, &snext6, &v) == 0) {
        FrontendKey fk{0, ntohs(snext6.dport), snext6.proto, snext6.scope};
        fk.v6 = true;
        memcpy(fk.address6.data(), snext6.address, sizeof(snext6.address));
        entries.push_back({fk, snext6.backend_slot, v});
      }
      skey6 = snext6;
      sprev6 = &skey6;
    }
  }
  // Counters of service ids nothing uses any more are released by Apply().
  uint32_t ckey, cnext;
  uint32_t* cprev = nullptr;
  while (bpf_map_get_next_key(fds_.counters, cprev, &cnext) == 0) {
    live_service_ids_.insert(cnext);
    ckey = cnext;
    cprev = &ckey;
  }
  std::map<FrontendKey, std::map<uint16_t, uint32_t>> slots;
  for (const auto& [fk, backend_slot, v] : entries) {
    if (backend_slot == 0) {
      Programmed& p = frontends_[fk];
      p.service_id = v.service_id;
      p.flags = v.flags;
      p.affinity_timeout_s = v.affinity_timeout;
      p.slots.assign(v.count, 0);
      live_service_ids_.insert(v.service_id);
    } else {
      slots[fk][backend_slot] = v.backend_id;
    }
  }
  for (auto& [fk, p] : frontends_) {
    auto& s = slots[fk];
    uint32_t max_slot = s.empty() ? 0 : s.rbegin()->first;
    p.stored_slots = std::max<uint32_t>(max_slot, p.slots.size());
    for (size_t i = 0; i < p.slots.size(); ++i) {
      auto it = s.find(static_cast<uint16_t>(i + 1));
      // A hole (never left by a finished update) is rewritten by Apply().
      p.slots[i] = it == s.end() ? 0 : it->second;
      auto be = backends_.find(p.slots[i]);
      if (be != backends_.end()) be->second.service_id = p.service_id;
    }
  }
  for (const auto& [fk, s] : slots) {
    if (frontends_.count(fk)) continue;
    for (const auto& [slot, id] : s) {
      if (fk.v6) {
        skiff_lb6_key key = MakeKey6(fk, slot);
        RETURN_IF_ERROR(Delete(fds_.services6, &key, "orphan service slot"));
      } else {
        skiff_lb4_key key = MakeKey(fk, slot);
        RETURN_IF_ERROR(Delete(fds_.services, &key, "orphan service slot"));
      }
    }
  }
  for (const auto& [id, e] : backends_) backend_ids_.insert(id);
  log::Info("recovered pinned service maps ", log::Field("frontends", static_cast<long long>(frontends_.size())), " ",
            log::Field("backends", static_cast<long long>(backends_.size())));
  return absl::OkStatus();
}

absl::Status ServiceMap::SyncFrontend(const FrontendKey& fk, const Frontend& want, uint32_t service_id,
                                      const std::vector<uint32_t>& want_ids, Programmed* p, ApplyStats* st) {
  std::set<uint32_t> want_set(want_ids.begin(), want_ids.end());
  std::set<uint32_t> old_set(p->slots.begin(), p->slots.end());
  std::deque<uint32_t> added;
  for (uint32_t id : want_ids)
    if (!old_set.count(id)) added.push_back(id);

  auto slots = p->slots;
  std::vector<size_t> holes;
  auto write_slot = [&](size_t index) -> absl::Status {
    skiff_lb4_service v{};
    v.backend_id = slots[index];
    v.service_id = service_id;
    ++st->map_writes;
    return PutEntry(kSlots, fk, static_cast<uint16_t>(index + 1), v);
  };
  // 1. Replace departing backends in place with arriving ones.
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] != 0 && want_set.count(slots[i])) continue;
    if (!added.empty()) {
      slots[i] = added.front();
      added.pop_front();
      RETURN_IF_ERROR(write_slot(i));
    } else {
      holes.push_back(i);
    }
  }
  // 2. Append the rest beyond the current count (not yet visible).
  while (!added.empty()) {
    slots.push_back(added.front());
    added.pop_front();
    RETURN_IF_ERROR(write_slot(slots.size() - 1));
  }
  // 3. Fill remaining holes from the tail; departing backends stay valid
  //    until the count shrinks below them.
  size_t hi = 0;
  while (hi < holes.size()) {
    if (slots.size() - 1 == holes.back()) {
      slots.pop_back();
      holes.pop_back();
      continue;
    }
    size_t h = holes[hi++];
    slots[h] = slots.back();
    slots.pop_back();
    RETURN_IF_ERROR(write_slot(h));
  }
  // 4. Publish the new count (always for a new frontend: service id 0).
  if (slots.size() != p->slots.size() || p->service_id != service_id || p->flags != want.flags ||
      p->affinity_timeout_s != want.affinity_timeout_s) {
    skiff_lb4_service v{};
    v.count = static_cast<uint16_t>(slots.size());
    v.flags = want.flags;
    v.service_id = service_id;
    v.affinity_timeout = want.affinity_timeout_s;
    ++st->map_writes;
    RETURN_IF_ERROR(PutEntry(kServiceEntries, fk, 0, v));
  }
  // 5. Drop slots beyond it.
  for (uint32_t s = slots.size() + 1; s <= p->stored_slots; ++s) {
    ++st->map_deletes;
    RETURN_IF_ERROR(DelEntry(kSlotDeletes, fk, static_cast<uint16_t>(s)));
  }
  p->service_id = service_id;
  p->flags = want.flags;
  p->affinity_timeout_s = want.affinity_timeout_s;
  p->slots = std::move(slots);
  p->stored_slots = p->slots.size();
  return absl::OkStatus();
}

absl::Status ServiceMap::DeleteFrontend(const FrontendKey& fk, const Programmed& p, ApplyStats* st) {
  ++st->map_deletes;
  RETURN_IF_ERROR(DelEntry(kEntryDeletes, fk, 0));
  for (uint32_t s = 1; s <= p.stored_slots; ++s) {
    ++st->map_deletes;
    RETURN_IF_ERROR(DelEntry(kSlotDeletes, fk, static_cast<uint16_t>(s)));
  }
  return absl::OkStatus();
}

// One table per family: a dual-stack service port has one service id, and
// its IPv6 table sits under the id with SKIFF_MAGLEV_KEY_V6 set.
absl::Status ServiceMap::WriteMaglev(uint32_t sid, ApplyStats* st) {
  if (fds_.maglev < 0) return absl::OkStatus();
  for (bool v6 : {false, true}) {
    const uint32_t key = v6 ? (sid | SKIFF_MAGLEV_KEY_V6) : sid;
    std::vector<uint32_t> set;
    auto ext = ext_frontends_.find(sid);
    if (ext != ext_frontends_.end()) {
      // Every EXT frontend of a service port and family has the same
      // (external) backends.
      for (const FrontendKey& fk : ext->second) {
        if (fk.v6 != v6) continue;
        const auto& slots = frontends_.at(fk).slots;
        set.assign(slots.begin(), slots.end());
        std::sort(set.begin(), set.end());
        break;
      }
    }
    auto cur = maglev_sets_.find(key);
    if (set.empty()) {
      if (cur == maglev_sets_.end()) continue;
      maglev_sets_.erase(cur);
      ++st->map_deletes;
      RETURN_IF_ERROR(Del(kSlotDeletes, fds_.maglev, key));
      continue;
    }
    if (cur != maglev_sets_.end() && cur->second == set) continue;
    std::vector<std::pair<uint64_t, uint32_t>> in;
    for (uint32_t id : set) {
      const Backend& b = backends_.at(id).backend;
      uint64_t addr = b.v6 ? (b.address6[0] ^ b.address6[1] ^ b.address6[2] ^ b.address6[3]) : b.address;
      in.emplace_back((addr << 24) | (static_cast<uint64_t>(b.port) << 8) | b.proto, id);
    }
    std::vector<uint32_t> table = BuildMaglevTable(in, SKIFF_MAGLEV_TABLE_SIZE);
    ++st->map_writes;
    RETURN_IF_ERROR(PutRaw(kServiceEntries, fds_.maglev, &key, sizeof(key), table.data(), table.size() * 4));
    maglev_sets_[key] = std::move(set);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ServiceMap::ServiceIdFor(const FrontendKey& fk, const std::string& sp, ApplyStats* st) {
  auto it = service_ports_.find(sp);
  if (it != service_ports_.end()) return it->second.id;
  uint32_t id = 0;
  // A frontend recovered from the maps keeps its id (and its counters).
  auto cur = frontends_.find(fk);
  if (cur != frontends_.end() && cur->second.service_id && !sid_owner_.count(cur->second.service_id))
    id = cur->second.service_id;
  bool reused = false;
  if (!id) {
    reused = !free_service_ids_.empty();
    id = AllocServiceId();
  }
  auto [entry, inserted] = service_ports_.emplace(sp, ServicePortEntry{id, 0});
  sid_owner_[id] = &entry->first;  // map nodes do not move
  // The datapath creates the counters entry on the first event of a
  // service. A reused id may still have one (or a datapath program may have
  // recreated it after the release): start it from zero.
  if (reused) {
    ++st->map_deletes;
    RETURN_IF_ERROR(Del(kBackends, fds_.counters, id));
  }
  live_service_ids_.insert(id);
  return id;
}

absl::Status ServiceMap::ReleaseServiceId(uint32_t sid, ApplyStats* st) {
  ++st->map_deletes;
  RETURN_IF_ERROR(Del(kBackendDeletes, fds_.counters, sid));
  for (uint32_t key : {sid, sid | SKIFF_MAGLEV_KEY_V6}) {
    if (!maglev_sets_.count(key)) continue;
    ++st->map_deletes;
    if (fds_.maglev >= 0) RETURN_IF_ERROR(Del(kSlotDeletes, fds_.maglev, key));
    maglev_sets_.erase(key);
  }
  live_service_ids_.erase(sid);
  sid_owner_.erase(sid);
  ext_frontends_.erase(sid);
  free_service_ids_.push_back(sid);
  return absl::OkStatus();
}

std::optional<Frontend> ServiceMap::AppliedFrontend(const FrontendKey& fk) const {
  auto it = frontends_.find(fk);
  if (it == frontends_.end() || !it->second.applied) return std::nullopt;
  const Programmed& p = it->second;
  auto owner = sid_owner_.find(p.service_id);
  if (owner == sid_owner_.end()) return std::nullopt;
  Frontend f;
  f.service_port = *owner->second;
  f.flags = p.flags;
  f.affinity_timeout_s = p.affinity_timeout_s;
  f.backends.reserve(p.slots.size());
  for (uint32_t id : p.slots) {
    auto be = backends_.find(id);
    if (be != backends_.end()) f.backends.push_back(be->second.backend);
  }
  std::sort(f.backends.begin(), f.backends.end());
  return f;
}

// Whether an applied frontend already is `f` (without building a Frontend).
bool ServiceMap::Matches(const Programmed& p, const Frontend& f) const {
  if (p.flags != f.flags || p.affinity_timeout_s != f.affinity_timeout_s || p.slots.size() != f.backends.size())
    return false;
  auto owner = sid_owner_.find(p.service_id);
  if (owner == sid_owner_.end() || *owner->second != f.service_port) return false;
  for (uint32_t id : p.slots) {
    auto be = backends_.find(id);
    // f.backends is sorted and unique, and so are the slots' backends.
    if (be == backends_.end() || !std::binary_search(f.backends.begin(), f.backends.end(), be->second.backend))
      return false;
  }
  return true;
}

void ServiceMap::Unref(const FrontendKey& fk, const Frontend& f, std::set<BackendKey>* maybe_dead,
                       std::set<std::string>* maybe_dead_sp) {
  auto spit = service_ports_.find(f.service_port);
  if (spit == service_ports_.end()) return;
  uint32_t sid = spit->second.id;
  for (const Backend& b : f.backends) {
    BackendKey k{sid, Identity(b)};
    auto it = backend_ids_.find(k);
    if (it == backend_ids_.end()) continue;
    BackendEntry& e = backends_[*it];
    if (e.refs > 0) --e.refs;
    if (e.refs == 0) maybe_dead->insert(k);
  }
  if (spit->second.refs > 0) --spit->second.refs;
  if (spit->second.refs == 0) maybe_dead_sp->insert(f.service_port);
  if (fk.scope == SKIFF_LB_SCOPE_EXT) ext_frontends_[sid].erase(fk);
}

absl::StatusOr<ApplyStats> ServiceMap::ApplyDelta(const FrontendDelta& delta) {
  for (auto& phase : ops_) phase.clear();
  ApplyStats st;
  std::set<BackendKey> maybe_dead;
  std::set<std::string> maybe_dead_sp;
  std::set<uint32_t> maglev_dirty;
  for (const auto& [fk, want] : delta) {
    // What this frontend was asked to be last time, rebuilt before anything
    // below changes the slots or backends it is made from.
    std::optional<Frontend> old = AppliedFrontend(fk);
    if (!want) {
      auto p = frontends_.find(fk);
      if (p != frontends_.end()) {
        RETURN_IF_ERROR(DeleteFrontend(fk, p->second, &st));
        if (fk.scope == SKIFF_LB_SCOPE_EXT) maglev_dirty.insert(p->second.service_id);
        frontends_.erase(p);
      }
      if (old) Unref(fk, *old, &maybe_dead, &maybe_dead_sp);
      continue;
    }
    ASSIGN_OR_RETURN(uint32_t sid, ServiceIdFor(fk, want->service_port, &st));
    // Backend entries first: a slot never names a missing backend.
    std::vector<uint32_t> ids;
    ids.reserve(want->backends.size());
    for (const Backend& b : want->backends) {
      BackendKey k{sid, Identity(b)};
      auto it = backend_ids_.find(k);
      uint32_t id;
      bool write;
      if (it != backend_ids_.end()) {
        id = *it;
        write = backends_[id].backend.flags != b.flags;
      } else {
        id = AllocBackendId();
        write = true;
      }
      BackendEntry& e = backends_[id];
      e.backend = b;  // the same identity when it was found: only the flags change
      e.service_id = sid;
      backend_ids_.insert(id);
      ++e.refs;
      if (write && b.v6) {
        skiff_lb6_backend v{};
        memcpy(v.address, b.address6.data(), sizeof(v.address));
        v.port = htons(b.port);
        v.proto = b.proto;
        v.flags = b.flags;
        ++st.map_writes;
        RETURN_IF_ERROR(Put(kBackends, fds_.backends6, id, v));
      } else if (write) {
        skiff_lb4_backend v{};
        v.address = b.address;
        v.port = htons(b.port);
        v.proto = b.proto;
        v.flags = b.flags;
        ++st.map_writes;
        RETURN_IF_ERROR(Put(kBackends, fds_.backends, id, v));
      }
      ids.push_back(id);
    }
    ++service_ports_[want->service_port].refs;
    Programmed& p = frontends_[fk];
    bool changed = p.service_id != sid || p.flags != want->flags || p.affinity_timeout_s != want->affinity_timeout_s ||
                   p.slots.size() != ids.size();
    if (!changed) {
      std::set<uint32_t> cur(p.slots.begin(), p.slots.end());
      for (uint32_t id : ids) changed = changed || !cur.count(id);
    }
    if (changed) RETURN_IF_ERROR(SyncFrontend(fk, *want, sid, ids, &p, &st));
    if (fk.scope == SKIFF_LB_SCOPE_EXT) {
      ext_frontends_[sid].insert(fk);
      maglev_dirty.insert(sid);
    }
    p.applied = true;
    if (old) {
      Unref(fk, *old, &maybe_dead, &maybe_dead_sp);
      if (fk.scope == SKIFF_LB_SCOPE_EXT) ext_frontends_[sid].insert(fk);
    }
  }
  for (uint32_t sid : maglev_dirty)
    if (sid_owner_.count(sid)) RETURN_IF_ERROR(WriteMaglev(sid, &st));
  // Backends no applied frontend names any more (their slots are gone).
  for (const BackendKey& k : maybe_dead) {
    auto it = backend_ids_.find(k);
    if (it == backend_ids_.end()) continue;
    uint32_t id = *it;
    if (backends_[id].refs) continue;
    removed_backends_.push_back(id);
    if (k.second.proto == IPPROTO_UDP) removed_udp_.push_back(k.second);
    ++st.map_deletes;
    RETURN_IF_ERROR(Del(kBackendDeletes, BackendsFd(k.second.v6), id));
    backend_ids_.erase(it);
    backends_.erase(id);
    free_backend_ids_.push_back(id);
  }
  for (const std::string& sp : maybe_dead_sp) {
    auto it = service_ports_.find(sp);
    if (it == service_ports_.end() || it->second.refs) continue;
    RETURN_IF_ERROR(ReleaseServiceId(it->second.id, &st));
    service_ports_.erase(it);
  }
  RETURN_IF_ERROR(Flush());
  RETURN_IF_ERROR(ForgetConntrack(&st));
  RETURN_IF_ERROR(DestroyUdpSockets(&st));
  st.frontends = frontends_.size();
  st.backends = backends_.size();
  return st;
}

namespace {

// Deletes the entries of conntrack map `fd` (ct4 or ct6) that name a backend in `gone`.
template <typename Key, typename Value>
absl::Status ForgetFlows(int fd, const std::set<uint32_t>& gone, ApplyStats* st) {
  std::vector<Key> doomed;
  Key key, next;
  Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    Value v;
    if (bpf_map_lookup_elem(fd, &next, &v) == 0 && gone.count(v.backend_id)) doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (const Key& k : doomed) {
    ++st->map_deletes;
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return LastErrnoError("delete conntrack entry");
  }
  return absl::OkStatus();
}

}  // namespace

// tc conntrack entries of backends that left: later packets of those flows
// then pick a live backend instead of being sent to a gone one. A walk of
// the LRU map, done only when backends were removed.
absl::Status ServiceMap::ForgetConntrack(ApplyStats* st) {
  if (removed_backends_.empty() || fds_.ct < 0) {
    removed_backends_.clear();
    return absl::OkStatus();
  }
  std::set<uint32_t> gone(removed_backends_.begin(), removed_backends_.end());
  removed_backends_.clear();
  RETURN_IF_ERROR((ForgetFlows<skiff_ct4_key, skiff_ct4_value>(fds_.ct, gone, st)));
  if (fds_.ct6 >= 0) RETURN_IF_ERROR((ForgetFlows<skiff_ct6_key, skiff_ct6_value>(fds_.ct6, gone, st)));
  return absl::OkStatus();
}

// Connected UDP sockets the LB steered to a backend that is gone everywhere
// (no service still uses that address and port): destroyed by the
// sock_destroy iterator, so the application gets ECONNABORTED and
// reconnects to a live backend instead of sending into the void.
absl::Status ServiceMap::DestroyUdpSockets(ApplyStats* st) {
  std::vector<Backend> gone;
  gone.swap(removed_udp_);
  if (gone.empty() || fds_.doomed < 0 || fds_.udp_destroy_link < 0) return absl::OkStatus();
  std::set<Backend> still_used;
  for (uint32_t id : backend_ids_) {
    Backend b = Identity(backends_.at(id).backend);
    if (b.proto == IPPROTO_UDP) still_used.insert(b);
  }
  std::vector<skiff_lb4_backend> keys;
  std::vector<skiff_lb6_backend> keys6;
  for (const Backend& b : gone) {
    if (still_used.count(b)) continue;
    if (b.v6) {
      skiff_lb6_backend k{};
      memcpy(k.address, b.address6.data(), sizeof(k.address));
      k.port = htons(b.port);
      k.proto = b.proto;
      keys6.push_back(k);
      continue;
    }
    skiff_lb4_backend k{};
    k.address = b.address;
    k.port = htons(b.port);
    k.proto = b.proto;
    keys.push_back(k);
  }
  if (fds_.doomed6 < 0) keys6.clear();
  if (keys.empty() && keys6.empty()) return absl::OkStatus();
  uint8_t one = 1;
  for (const auto& k : keys)
    if (bpf_map_update_elem(fds_.doomed, &k, &one, BPF_ANY) != 0) return LastErrnoError("mark removed backend");
  for (const auto& k : keys6)
    if (bpf_map_update_elem(fds_.doomed6, &k, &one, BPF_ANY) != 0) return LastErrnoError("mark removed backend");
  // The kernel ties an iterator to the network namespace of the thread that
  // creates it: run it here (the agent's namespace) and then in every other
  // namespace, where the pods' sockets are.
  const int link = fds_.udp_destroy_link;
  auto run_here = [link]() -> absl::Status {
    UniqueFd it(bpf_iter_create(link));
    if (!it) return LastErrnoError("start UDP socket iterator");
    // The program prints nothing; reading to the end runs it over every socket.
    char buf[256];
    ssize_t n;
    while ((n = read(it.get(), buf, sizeof(buf))) > 0) {
    }
    if (n < 0) return LastErrnoError("run UDP socket iterator");
    return absl::OkStatus();
  };
  absl::Status result = run_here();
  if (result.ok()) {
    std::vector<UniqueFd> others = OtherNetworkNamespaces();
    result = InEachNetworkNamespace(others, run_here);
    st->udp_netns_walked += 1 + others.size();
  }
  for (const auto& k : keys) bpf_map_delete_elem(fds_.doomed, &k);
  for (const auto& k : keys6) bpf_map_delete_elem(fds_.doomed6, &k);
  st->udp_sockets_checked += keys.size() + keys6.size();
  return result;
}

absl::StatusOr<ApplyStats> ServiceMap::Apply(const std::map<FrontendKey, Frontend>& desired) {
  FrontendDelta delta;
  for (const auto& [fk, f] : desired) {
    auto it = frontends_.find(fk);
    if (it == frontends_.end() || !it->second.applied || !Matches(it->second, f)) delta.emplace(fk, f);
  }
  // Applied frontends and those recovered from the maps that nobody wants
  // any more.
  for (const auto& [fk, p] : frontends_)
    if (!desired.count(fk)) delta.emplace(fk, std::nullopt);
  ASSIGN_OR_RETURN(ApplyStats st, ApplyDelta(delta));
  // Recovered leftovers: backends and service ids nothing refers to.
  for (auto it = backend_ids_.begin(); it != backend_ids_.end();) {
    uint32_t id = *it;
    if (backends_[id].refs) {
      ++it;
      continue;
    }
    ++st.map_deletes;
    RETURN_IF_ERROR(Del(kBackendDeletes, BackendsFd(backends_[id].backend.v6), id));
    it = backend_ids_.erase(it);
    backends_.erase(id);
    free_backend_ids_.push_back(id);
  }
  std::vector<uint32_t> orphan_sids;
  for (uint32_t sid : live_service_ids_)
    if (!sid_owner_.count(sid)) orphan_sids.push_back(sid);
  for (uint32_t sid : orphan_sids) RETURN_IF_ERROR(ReleaseServiceId(sid, &st));
  RETURN_IF_ERROR(Flush());
  st.backends = backends_.size();
  return st;
}

std::map<std::string, ServiceCounters> ServiceMap::ReadCounters() const {
  std::map<std::string, ServiceCounters> out;
  std::vector<skiff_lb_counters> v(ncpus_);
  for (const auto& [sp, entry] : service_ports_) {
    uint32_t sid = entry.id;
    if (bpf_map_lookup_elem(fds_.counters, &sid, v.data()) != 0) continue;
    ServiceCounters c;
    for (const auto& x : v) {
      c.connections += x.connections;
      c.packets += x.packets;
      c.bytes += x.bytes;
      c.refused += x.refused;
    }
    out[sp] = c;
  }
  return out;
}

}  // namespace skiff::proxy
