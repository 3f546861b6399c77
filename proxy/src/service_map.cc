#include "skiff/proxy/service_map.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <deque>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff_bpf/lb.h"

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

absl::Status Update(int fd, const void* key, const void* value, const char* what) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) return LastErrnoError(std::string("update ") + what);
  return absl::OkStatus();
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

uint32_t ServiceMap::ServiceId(const std::string& service_port) const {
  auto it = service_ids_.find(service_port);
  return it == service_ids_.end() ? 0 : it->second;
}

absl::Status ServiceMap::Recover() {
  frontends_.clear();
  backends_.clear();
  backend_ids_.clear();
  live_service_ids_.clear();
  // backends
  uint32_t bkey, bnext;
  uint32_t* bprev = nullptr;
  while (bpf_map_get_next_key(fds_.backends, bprev, &bnext) == 0) {
    skiff_lb4_backend v;
    if (bpf_map_lookup_elem(fds_.backends, &bnext, &v) == 0) {
      BackendRef ref;
      ref.backend = {v.address, ntohs(v.port), v.proto, v.flags};
      backends_[bnext] = ref;
    }
    bkey = bnext;
    bprev = &bkey;
  }
  // services: slot 0 entries first, then slots
  std::vector<std::pair<skiff_lb4_key, skiff_lb4_service>> entries;
  skiff_lb4_key skey, snext;
  skiff_lb4_key* sprev = nullptr;
  while (bpf_map_get_next_key(fds_.services, sprev, &snext) == 0) {
    skiff_lb4_service v;
    if (bpf_map_lookup_elem(fds_.services, &snext, &v) == 0) entries.emplace_back(snext, v);
    skey = snext;
    sprev = &skey;
  }
  std::map<FrontendKey, std::map<uint16_t, uint32_t>> slots;
  for (const auto& [k, v] : entries) {
    FrontendKey fk{k.address, ntohs(k.dport), k.proto, k.scope};
    if (k.backend_slot == 0) {
      Programmed& p = frontends_[fk];
      p.service_id = v.service_id;
      p.flags = v.flags;
      p.affinity_timeout_s = v.affinity_timeout;
      p.slots.assign(v.count, 0);
      live_service_ids_.insert(v.service_id);
    } else {
      slots[fk][k.backend_slot] = v.backend_id;
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
      if (p.slots[i] && backends_.count(p.slots[i])) {
        backends_[p.slots[i]].service_id = p.service_id;
      }
    }
  }
  // Orphaned slot entries of frontends without slot 0 are deleted right away.
  for (const auto& [fk, s] : slots) {
    if (frontends_.count(fk)) continue;
    for (const auto& [slot, id] : s) {
      skiff_lb4_key key = MakeKey(fk, slot);
      RETURN_IF_ERROR(Delete(fds_.services, &key, "orphan service slot"));
    }
  }
  for (const auto& [id, ref] : backends_) backend_ids_[{ref.service_id, Identity(ref.backend)}] = id;
  log::Info("recovered pinned service maps ", log::Field("frontends", static_cast<long long>(frontends_.size())), " ",
            log::Field("backends", static_cast<long long>(backends_.size())));
  return absl::OkStatus();
}

absl::Status ServiceMap::SyncFrontend(const FrontendKey& fk, const Frontend& want, uint32_t service_id,
                                      const std::map<Backend, uint32_t>& ids, Programmed* p, ApplyStats* st) {
  std::vector<uint32_t> want_ids;
  want_ids.reserve(want.backends.size());
  for (const Backend& b : want.backends) want_ids.push_back(ids.at(Identity(b)));
  std::set<uint32_t> want_set(want_ids.begin(), want_ids.end());
  std::set<uint32_t> old_set(p->slots.begin(), p->slots.end());
  std::deque<uint32_t> added;
  for (uint32_t id : want_ids)
    if (!old_set.count(id)) added.push_back(id);

  std::vector<uint32_t> slots = p->slots;
  std::vector<size_t> holes;
  auto write_slot = [&](size_t index) -> absl::Status {
    skiff_lb4_key key = MakeKey(fk, static_cast<uint16_t>(index + 1));
    skiff_lb4_service v{};
    v.backend_id = slots[index];
    v.service_id = service_id;
    ++st->map_writes;
    return Update(fds_.services, &key, &v, "service slot");
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
  // 3. Fill remaining holes from the tail; the departing backends stay valid
  //    until count shrinks below them.
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
  // 4. Publish the new count.
  if (slots.size() != p->slots.size() || p->service_id != service_id || p->flags != want.flags ||
      p->affinity_timeout_s != want.affinity_timeout_s) {
    skiff_lb4_key key = MakeKey(fk, 0);
    skiff_lb4_service v{};
    v.count = static_cast<uint16_t>(slots.size());
    v.flags = want.flags;
    v.service_id = service_id;
    v.affinity_timeout = want.affinity_timeout_s;
    ++st->map_writes;
    RETURN_IF_ERROR(Update(fds_.services, &key, &v, "service entry"));
  }
  // 5. Drop slots beyond it.
  for (uint32_t s = slots.size() + 1; s <= p->stored_slots; ++s) {
    skiff_lb4_key key = MakeKey(fk, static_cast<uint16_t>(s));
    ++st->map_deletes;
    RETURN_IF_ERROR(Delete(fds_.services, &key, "service slot"));
  }
  p->service_id = service_id;
  p->flags = want.flags;
  p->affinity_timeout_s = want.affinity_timeout_s;
  p->slots = std::move(slots);
  p->stored_slots = p->slots.size();
  return absl::OkStatus();
}

absl::Status ServiceMap::DeleteFrontend(const FrontendKey& fk, const Programmed& p, ApplyStats* st) {
  skiff_lb4_key key = MakeKey(fk, 0);
  ++st->map_deletes;
  RETURN_IF_ERROR(Delete(fds_.services, &key, "service entry"));
  for (uint32_t s = 1; s <= p.stored_slots; ++s) {
    key = MakeKey(fk, static_cast<uint16_t>(s));
    ++st->map_deletes;
    RETURN_IF_ERROR(Delete(fds_.services, &key, "service slot"));
  }
  return absl::OkStatus();
}

absl::Status ServiceMap::WriteMaglev(uint32_t service_id, const std::vector<uint32_t>& backend_ids, ApplyStats* st) {
  if (fds_.maglev < 0) return absl::OkStatus();
  std::vector<std::pair<uint64_t, uint32_t>> in;
  for (uint32_t id : backend_ids) {
    const Backend& b = backends_.at(id).backend;
    in.emplace_back((static_cast<uint64_t>(b.address) << 24) | (static_cast<uint64_t>(b.port) << 8) | b.proto, id);
  }
  std::vector<uint32_t> table = BuildMaglevTable(in, SKIFF_MAGLEV_TABLE_SIZE);
  ++st->map_writes;
  return Update(fds_.maglev, &service_id, table.data(), "maglev table");
}

absl::StatusOr<ApplyStats> ServiceMap::Apply(const DesiredState& desired) {
  ApplyStats st;
  // 1. A service id per service port; frontends recovered from the maps keep
  //    the id they had.
  std::map<std::string, uint32_t> want_ids;
  std::set<uint32_t> claimed;
  for (const auto& [fk, f] : desired.frontends) {
    if (want_ids.count(f.service_port)) continue;
    auto known = service_ids_.find(f.service_port);
    if (known != service_ids_.end()) {
      want_ids[f.service_port] = known->second;
      claimed.insert(known->second);
    }
  }
  for (const auto& [fk, f] : desired.frontends) {
    if (want_ids.count(f.service_port)) continue;
    uint32_t id = 0;
    auto cur = frontends_.find(fk);
    if (cur != frontends_.end() && !claimed.count(cur->second.service_id)) id = cur->second.service_id;
    if (!id) {
      do id = AllocServiceId();
      while (claimed.count(id));
    }
    want_ids[f.service_port] = id;
    claimed.insert(id);
  }
  // 2. Backend entries: (service id, backend) -> id, written before any slot
  //    names them.
  std::map<std::pair<uint32_t, Backend>, uint8_t> needed;  // -> flags
  for (const auto& [fk, f] : desired.frontends) {
    uint32_t sid = want_ids[f.service_port];
    for (const Backend& b : f.backends) needed[{sid, Identity(b)}] |= b.flags;
  }
  std::map<uint32_t, std::map<Backend, uint32_t>> ids_by_service;
  for (const auto& [k, flags] : needed) {
    uint32_t id;
    auto it = backend_ids_.find(k);
    bool write = false;
    if (it != backend_ids_.end()) {
      id = it->second;
      write = backends_[id].backend.flags != flags;
    } else {
      id = AllocBackendId();
      backend_ids_[k] = id;
      write = true;
    }
    if (write) {
      Backend b = k.second;
      b.flags = flags;
      backends_[id] = {b, k.first};
      skiff_lb4_backend v{};
      v.address = b.address;
      v.port = htons(b.port);
      v.proto = b.proto;
      v.flags = b.flags;
      ++st.map_writes;
      RETURN_IF_ERROR(Update(fds_.backends, &id, &v, "backend"));
    }
    ids_by_service[k.first][k.second] = id;
  }
  // Counters for new service ids.
  std::vector<skiff_lb_counters> zero(ncpus_);
  for (const auto& [sp, sid] : want_ids) {
    if (live_service_ids_.count(sid)) continue;
    ++st.map_writes;
    RETURN_IF_ERROR(Update(fds_.counters, &sid, zero.data(), "counters"));
    live_service_ids_.insert(sid);
  }
  // 3. Frontends.
  std::map<uint32_t, std::vector<uint32_t>> maglev_want;
  for (const auto& [fk, f] : desired.frontends) {
    uint32_t sid = want_ids[f.service_port];
    Programmed& p = frontends_[fk];
    bool is_new = p.service_id == 0;
    if (is_new || p.service_id != sid || p.flags != f.flags || p.affinity_timeout_s != f.affinity_timeout_s ||
        p.slots.size() != f.backends.size() || std::find(p.slots.begin(), p.slots.end(), 0u) != p.slots.end()) {
      // A new frontend has service id 0 here, so SyncFrontend always writes
      // its slot 0 (a refusing entry when it has no backend).
      RETURN_IF_ERROR(SyncFrontend(fk, f, sid, ids_by_service[sid], &p, &st));
    } else {
      // Same size: check membership.
      const auto& ids = ids_by_service[sid];
      std::set<uint32_t> cur(p.slots.begin(), p.slots.end());
      bool same = true;
      for (const Backend& b : f.backends) same = same && cur.count(ids.at(Identity(b)));
      if (!same) RETURN_IF_ERROR(SyncFrontend(fk, f, sid, ids, &p, &st));
    }
    if (fk.scope == SKIFF_LB_SCOPE_EXT && !maglev_want.count(sid)) {
      std::vector<uint32_t> set = p.slots;
      std::sort(set.begin(), set.end());
      maglev_want[sid] = set;
    }
  }
  // 4. Frontends that went away.
  for (auto it = frontends_.begin(); it != frontends_.end();) {
    if (desired.frontends.count(it->first)) {
      ++it;
      continue;
    }
    RETURN_IF_ERROR(DeleteFrontend(it->first, it->second, &st));
    it = frontends_.erase(it);
  }
  // 5. Maglev tables of external frontends.
  for (const auto& [sid, set] : maglev_want) {
    auto it = maglev_sets_.find(sid);
    if (it != maglev_sets_.end() && it->second == set) continue;
    RETURN_IF_ERROR(WriteMaglev(sid, set, &st));
    maglev_sets_[sid] = set;
  }
  // 6. Backends no slot names any more.
  for (auto it = backend_ids_.begin(); it != backend_ids_.end();) {
    if (needed.count(it->first)) {
      ++it;
      continue;
    }
    uint32_t id = it->second;
    ++st.map_deletes;
    RETURN_IF_ERROR(Delete(fds_.backends, &id, "backend"));
    backends_.erase(id);
    free_backend_ids_.push_back(id);
    it = backend_ids_.erase(it);
  }
  // 7. Service ids no longer used.
  for (auto it = live_service_ids_.begin(); it != live_service_ids_.end();) {
    if (claimed.count(*it)) {
      ++it;
      continue;
    }
    uint32_t sid = *it;
    ++st.map_deletes;
    RETURN_IF_ERROR(Delete(fds_.counters, &sid, "counters"));
    if (fds_.maglev >= 0 && maglev_sets_.count(sid)) {
      ++st.map_deletes;
      RETURN_IF_ERROR(Delete(fds_.maglev, &sid, "maglev table"));
    }
    maglev_sets_.erase(sid);
    free_service_ids_.push_back(sid);
    it = live_service_ids_.erase(it);
  }
  for (auto it = maglev_sets_.begin(); it != maglev_sets_.end();) {
    if (maglev_want.count(it->first)) {
      ++it;
      continue;
    }
    uint32_t sid = it->first;
    ++st.map_deletes;
    if (fds_.maglev >= 0) RETURN_IF_ERROR(Delete(fds_.maglev, &sid, "maglev table"));
    it = maglev_sets_.erase(it);
  }
  service_ids_ = std::move(want_ids);
  st.frontends = frontends_.size();
  st.backends = backends_.size();
  return st;
}

std::map<std::string, ServiceCounters> ServiceMap::ReadCounters() const {
  std::map<std::string, ServiceCounters> out;
  std::vector<skiff_lb_counters> v(ncpus_);
  for (const auto& [sp, sid] : service_ids_) {
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
