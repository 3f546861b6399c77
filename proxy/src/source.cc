#include "skiff/proxy/source.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "raw_objects.h"
#include "skiff/proxy/desired.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace skiff::proxy {

// ---- CompactState ----

NameTable::NameTable() { Intern(""); }

uint32_t NameTable::Intern(std::string_view s) {
  if (auto it = ids_.find(s); it != ids_.end()) return it->second;
  uint32_t id = static_cast<uint32_t>(names_.size());
  names_.emplace_back(s);
  ids_.emplace(names_.back(), id);
  return id;
}

uint32_t NameTable::Find(std::string_view s) const {
  auto it = ids_.find(s);
  return it == ids_.end() ? kNone : it->second;
}

// Record layout (all little-endian as the host, unaligned):
//   u32 size, u32 namespace id, varint name length, name
//   Service:  u16 healthCheckNodePort, then the routing fields: u8 type,
//             u8 flags, u32 affinity timeout, cluster IPs, external IPs
//             (varint count, addresses), varint port count, per port
//             u32 name id, u8 protocol, u16 port, u16 nodePort
//   Slice:    varint service name length, service name, varint port count,
//             per port u32 name id, u8 protocol, u16 port; varint endpoint
//             count, per endpoint u8 conditions, u32 node id, addresses
//   address:  u8 family (4, 6, or 0 for text), 4 or 16 bytes, or varint
//             length and the text
namespace {

enum : uint8_t { kAffinity = 1, kExternalLocal = 2, kInternalLocal = 4 };
enum : uint8_t { kReady = 4, kServing = 2, kTerminating = 1 };

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) { out_->clear(); }
  template <typename T>
  void Fixed(T v) {
    out_->append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void Var(uint64_t v) {
    while (v >= 0x80) {
      out_->push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out_->push_back(static_cast<char>(v));
  }
  void Str(std::string_view s) {
    Var(s.size());
    out_->append(s);
  }
  void Ip(const std::string& text) {
    in_addr a4;
    in6_addr a6;
    if (inet_pton(AF_INET, text.c_str(), &a4) == 1) {
      Fixed<uint8_t>(4);
      Fixed(a4.s_addr);
    } else if (inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
      Fixed<uint8_t>(6);
      out_->append(reinterpret_cast<const char*>(&a6), sizeof(a6));
    } else {
      Fixed<uint8_t>(0);
      Str(text);
    }
  }
  template <typename List>
  void Ips(const List& ips) {
    Var(ips.size());
    for (const std::string& ip : ips) Ip(ip);
  }

 private:
  std::string* out_;
};

class Reader {
 public:
  explicit Reader(const uint8_t* p) : p_(p) {}
  template <typename T>
  T Fixed() {
    T v;
    memcpy(&v, p_, sizeof(v));
    p_ += sizeof(v);
    return v;
  }
  uint64_t Var() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      uint8_t b = *p_++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  }
  std::string_view Str() {
    size_t n = Var();
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  RecordIp Ip() {
    RecordIp ip;
    ip.family = Fixed<uint8_t>();
    if (ip.family == 4) {
      ip.v4 = Fixed<uint32_t>();
    } else if (ip.family == 6) {
      memcpy(ip.v6.data(), p_, 16);
      p_ += 16;
    } else {
      ip.text = Str();
    }
    return ip;
  }
  void Ips(std::vector<RecordIp>* out) {
    out->clear();
    for (size_t n = Var(); n > 0; --n) out->push_back(Ip());
  }
  const uint8_t* pos() const { return p_; }

 private:
  const uint8_t* p_;
};

// A record's header (its size is filled in by Finish) and key.
void Begin(Writer& w, NameTable& names, const std::string& ns, const std::string& name) {
  w.Fixed<uint32_t>(0);
  w.Fixed(names.Intern(ns));
  w.Str(name);
}

// A port as Service and EndpointSlice ports begin: name id, protocol, number.
void PortHead(Writer& w, NameTable& names, const std::string& name, Protocol protocol, uint16_t port) {
  w.Fixed(names.Intern(name));
  w.Fixed(static_cast<uint8_t>(protocol));
  w.Fixed(port);
}

void Finish(std::string* rec) {
  uint32_t n = static_cast<uint32_t>(rec->size());
  memcpy(rec->data(), &n, sizeof(n));
}

std::string IpText(const RecordIp& ip) {
  if (ip.family == 4) return Ipv4ToString(ip.v4);
  if (ip.family == 6) return Ipv6ToString(ip.v6);
  return std::string(ip.text);
}

uint32_t RecordSize(const uint8_t* rec) {
  uint32_t n;
  memcpy(&n, rec, sizeof(n));
  return n;
}

std::string_view Bytes(const uint8_t* rec) { return {reinterpret_cast<const char*>(rec), RecordSize(rec)}; }

}  // namespace

size_t CompactState::KeyHash::operator()(const Key& k) const {
  return std::hash<std::string_view>()(k.name) * 31 + k.ns;
}

CompactState::Key CompactState::KeyOfRecord(const uint8_t* rec) {
  Reader r(rec + 4);
  Key k;
  k.ns = r.Fixed<uint32_t>();
  k.name = r.Str();
  return k;
}

CompactState::Key CompactState::ServiceKeyOfSlice(const uint8_t* slice) {
  Reader r(slice + 4);
  Key k;
  k.ns = r.Fixed<uint32_t>();
  r.Str();
  k.name = r.Str();
  return k;
}

CompactState::Key CompactState::KeyOfEntry(const Entry& e) {
  return e.service ? KeyOfRecord(e.service.get()) : ServiceKeyOfSlice(e.slices.front());
}

bool CompactState::ParseKey(const std::string& key, Key* out) const {
  size_t slash = key.find('/');
  if (slash == std::string::npos) return false;
  out->ns = names_.Find(std::string_view(key).substr(0, slash));
  if (out->ns == NameTable::kNone) return false;
  out->name = std::string_view(key).substr(slash + 1);
  return true;
}

std::string CompactState::KeyString(const Key& k) const {
  std::string s = names_.Name(k.ns);
  s += '/';
  s += k.name;
  return s;
}

std::string CompactState::KeyOf(const Entry& e) const { return KeyString(KeyOfEntry(e)); }

void CompactState::EncodeService(const Service& svc) {
  Writer w(&scratch_);
  Begin(w, names_, svc.ns, svc.name);
  w.Fixed(svc.health_check_node_port);
  w.Fixed(static_cast<uint8_t>(svc.type));
  w.Fixed<uint8_t>((svc.affinity_client_ip ? kAffinity : 0) | (svc.external_policy_local ? kExternalLocal : 0) |
                   (svc.internal_policy_local ? kInternalLocal : 0));
  w.Fixed(svc.affinity_timeout_s);
  w.Ips(svc.cluster_ips);
  w.Ips(svc.external_ips);
  w.Var(svc.ports.size());
  for (const ServicePort& p : svc.ports) {
    PortHead(w, names_, p.name, p.protocol, p.port);
    w.Fixed(p.node_port);
  }
  Finish(&scratch_);
}

void CompactState::EncodeSlice(const EndpointSlice& es) {
  Writer w(&scratch_);
  Begin(w, names_, es.ns, es.name);
  w.Str(es.service_name);
  w.Var(es.ports.size());
  for (const EndpointPort& p : es.ports) PortHead(w, names_, p.name, p.protocol, p.port);
  w.Var(es.endpoints.size());
  for (const Endpoint& e : es.endpoints) {
    w.Fixed<uint8_t>((e.ready ? kReady : 0) | (e.serving ? kServing : 0) | (e.terminating ? kTerminating : 0));
    w.Fixed(names_.Intern(e.node_name));
    w.Ips(e.addresses);
  }
  Finish(&scratch_);
}

CompactState::Record CompactState::Copy() const {
  Record r(new uint8_t[scratch_.size()]);
  memcpy(r.get(), scratch_.data(), scratch_.size());
  return r;
}

void CompactState::Decode(const uint8_t* rec, ServiceRecord* out) const {
  Reader r(rec + 4);
  out->ns = r.Fixed<uint32_t>();
  out->name = r.Str();
  out->health_check_node_port = r.Fixed<uint16_t>();
  const uint8_t* routing = r.pos();
  out->type = static_cast<ServiceType>(r.Fixed<uint8_t>());
  uint8_t flags = r.Fixed<uint8_t>();
  out->affinity_client_ip = flags & kAffinity;
  out->external_policy_local = flags & kExternalLocal;
  out->internal_policy_local = flags & kInternalLocal;
  out->affinity_timeout_s = r.Fixed<uint32_t>();
  r.Ips(&out->cluster_ips);
  r.Ips(&out->external_ips);
  out->ports.clear();
  for (size_t n = r.Var(); n > 0; --n) {
    ServiceRecord::Port p;
    p.name = r.Fixed<uint32_t>();
    p.protocol = static_cast<Protocol>(r.Fixed<uint8_t>());
    p.port = r.Fixed<uint16_t>();
    p.node_port = r.Fixed<uint16_t>();
    out->ports.push_back(p);
  }
  out->routing_bytes = {reinterpret_cast<const char*>(routing), RecordSize(rec) - size_t(routing - rec)};
}

void CompactState::Decode(const uint8_t* rec, SliceRecord* out) const {
  Reader r(rec + 4);
  out->ns = r.Fixed<uint32_t>();
  out->name = r.Str();
  out->service_name = r.Str();
  out->ports.clear();
  for (size_t n = r.Var(); n > 0; --n) {
    SliceRecord::Port p;
    p.name = r.Fixed<uint32_t>();
    p.protocol = static_cast<Protocol>(r.Fixed<uint8_t>());
    p.port = r.Fixed<uint16_t>();
    out->ports.push_back(p);
  }
  out->endpoints.clear();
  out->addresses.clear();
  for (size_t n = r.Var(); n > 0; --n) {
    SliceRecord::Endpoint e;
    uint8_t c = r.Fixed<uint8_t>();
    e.ready = c & kReady;
    e.serving = c & kServing;
    e.terminating = c & kTerminating;
    e.node = r.Fixed<uint32_t>();
    e.first = static_cast<uint32_t>(out->addresses.size());
    size_t count = r.Var();
    for (size_t i = 0; i < count; ++i) out->addresses.push_back(r.Ip());
    e.count = static_cast<uint32_t>(count);
    out->endpoints.push_back(e);
  }
  out->bytes = Bytes(rec);
}

const CompactState::Entry* CompactState::Find(const std::string& service_key) const {
  Key k;
  if (!ParseKey(service_key, &k)) return nullptr;
  auto it = entries_.find(k);
  return it == entries_.end() ? nullptr : &*it;
}

bool CompactState::PutService(const Service& svc) {
  EncodeService(svc);
  Key k = KeyOfRecord(reinterpret_cast<const uint8_t*>(scratch_.data()));
  auto it = entries_.find(k);
  if (it != entries_.end() && it->service && Bytes(it->service.get()) == scratch_) return false;
  if (it == entries_.end()) {
    // Built in its slot (moving a fresh Entry in trips a false
    // maybe-uninitialized warning of GCC 12 on the inline vector).
    entries_.lazy_emplace(k, [&](const auto& ctor) { ctor(Copy()); });
    ++services_;
    return true;
  }
  if (!it->service) ++services_;
  it->service = Copy();  // the same key, so the entry's hash stays
  return true;
}

bool CompactState::EraseService(const std::string& ns, const std::string& name) {
  uint32_t id = names_.Find(ns);
  if (id == NameTable::kNone) return false;
  auto it = entries_.find(Key{id, name});
  if (it == entries_.end() || !it->service) return false;
  --services_;
  if (it->slices.empty()) {
    entries_.erase(it);
  } else {
    it->service.reset();
  }
  return true;
}

void CompactState::Link(const uint8_t* slice) {
  Key k = ServiceKeyOfSlice(slice);
  auto it = entries_.find(k);
  if (it == entries_.end()) {
    entries_.lazy_emplace(k, [&](const auto& ctor) { ctor(slice); });
    return;
  }
  auto& v = it->slices;
  std::string_view name = KeyOfRecord(slice).name;
  auto pos = std::lower_bound(v.begin(), v.end(), name,
                              [](const uint8_t* a, std::string_view n) { return KeyOfRecord(a).name < n; });
  v.insert(pos, slice);
}

// Before the slice's record is freed: the entry of its Service forgets it
// (and goes when nothing else is stored under that key). The key of an entry
// with no Service is read from its first slice, so it is erased before the
// last slice goes.
void CompactState::Unlink(const uint8_t* slice) {
  auto it = entries_.find(ServiceKeyOfSlice(slice));
  if (it == entries_.end()) return;
  auto& v = it->slices;
  if (!it->service && v.size() == 1 && v[0] == slice) {
    entries_.erase(it);
    return;
  }
  v.erase(std::remove(v.begin(), v.end(), slice), v.end());
}

bool CompactState::PutSlice(const EndpointSlice& es, std::set<std::string>* services) {
  EncodeSlice(es);
  const auto* enc = reinterpret_cast<const uint8_t*>(scratch_.data());
  Key k = KeyOfRecord(enc);
  auto it = slices_.find(k);
  if (services) {
    if (it != slices_.end()) services->insert(KeyString(ServiceKeyOfSlice(it->get())));
    services->insert(KeyString(ServiceKeyOfSlice(enc)));
  }
  if (it != slices_.end()) {
    if (Bytes(it->get()) == scratch_) return false;
    Unlink(it->get());
    slices_.erase(it);
  }
  Record rec = Copy();
  const uint8_t* p = rec.get();
  slices_.insert(std::move(rec));
  Link(p);
  return true;
}

bool CompactState::EraseSlice(const std::string& ns, const std::string& name, std::set<std::string>* services) {
  uint32_t id = names_.Find(ns);
  if (id == NameTable::kNone) return false;
  auto it = slices_.find(Key{id, name});
  if (it == slices_.end()) return false;
  if (services) services->insert(KeyString(ServiceKeyOfSlice(it->get())));
  Unlink(it->get());
  slices_.erase(it);
  return true;
}

void CompactState::Assign(ClusterState state, ChangeSet* changes) {
  // What is gone first, then what is new or different.
  std::vector<std::pair<std::string, std::string>> gone;
  for (const Entry& e : entries_) {
    if (!e.service) continue;
    Key k = KeyOfRecord(e.service.get());
    std::string key = KeyString(k);
    if (!state.services.count(key)) gone.emplace_back(names_.Name(k.ns), std::string(k.name));
  }
  for (const auto& [ns, name] : gone) {
    if (changes) changes->services.insert(ns + "/" + name);
    EraseService(ns, name);
  }
  gone.clear();
  for (const Record& r : slices_) {
    Key k = KeyOfRecord(r.get());
    if (!state.endpoint_slices.count(KeyString(k))) gone.emplace_back(names_.Name(k.ns), std::string(k.name));
  }
  for (const auto& [ns, name] : gone) {
    if (changes) changes->slices.insert(ns + "/" + name);
    EraseSlice(ns, name, changes ? &changes->services : nullptr);
  }
  // The records are allocated while `state` still lives, so they sit after
  // it rather than in the holes of its freed objects: when it is freed, its
  // pages are free as a whole and malloc_trim gives them back.
  for (const auto& [key, svc] : state.services)
    if (PutService(svc) && changes) changes->services.insert(key);
  std::set<std::string> touched;
  for (const auto& [key, es] : state.endpoint_slices) {
    touched.clear();
    if (PutSlice(es, &touched) && changes) {
      changes->slices.insert(key);
      changes->services.insert(touched.begin(), touched.end());
    }
  }
}

ClusterState CompactState::ToClusterState() const {
  ClusterState out;
  ServiceRecord sr;
  SliceRecord er;
  for (const Entry& e : entries_) {
    if (e.service) {
      Decode(e.service.get(), &sr);
      Service s;
      s.ns = names_.Name(sr.ns);
      s.name = sr.name;
      for (const RecordIp& ip : sr.cluster_ips) s.cluster_ips.push_back(IpText(ip));
      for (const RecordIp& ip : sr.external_ips) s.external_ips.push_back(IpText(ip));
      for (const auto& p : sr.ports) s.ports.push_back({names_.Name(p.name), p.protocol, p.port, p.node_port});
      s.type = sr.type;
      s.affinity_client_ip = sr.affinity_client_ip;
      s.affinity_timeout_s = sr.affinity_timeout_s;
      s.external_policy_local = sr.external_policy_local;
      s.internal_policy_local = sr.internal_policy_local;
      s.health_check_node_port = sr.health_check_node_port;
      out.services[s.Key()] = std::move(s);
    }
    for (const uint8_t* rec : e.slices) {
      Decode(rec, &er);
      EndpointSlice es;
      es.ns = names_.Name(er.ns);
      es.name = er.name;
      es.service_name = er.service_name;
      for (const auto& p : er.ports) es.ports.push_back({names_.Name(p.name), p.protocol, p.port});
      for (const auto& ep : er.endpoints) {
        Endpoint x;
        for (uint32_t i = 0; i < ep.count; ++i) x.addresses.push_back(IpText(er.addresses[ep.first + i]));
        x.ready = ep.ready;
        x.serving = ep.serving;
        x.terminating = ep.terminating;
        x.node_name = names_.Name(ep.node);
        es.endpoints.push_back(std::move(x));
      }
      out.endpoint_slices[es.Key()] = std::move(es);
    }
  }
  return out;
}

// ---- StateStore ----

void StateStore::Bump() {
  ++generation_;
  if (on_change_) on_change_();
  cv_.notify_all();
}

void StateStore::Replace(ClusterState state) {
  std::lock_guard lock(mu_);
  // A re-list or a file reload records only what differs, so the agent
  // looks at the changed services alone.
  if (!synced_) changes_.all = true;
  state_.Assign(std::move(state), synced_ ? &changes_ : nullptr);
  synced_ = true;
  Bump();
}

void StateStore::UpsertService(Service service) {
  std::lock_guard lock(mu_);
  changes_.services.insert(service.Key());
  state_.PutService(service);
  Bump();
}

void StateStore::DeleteService(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  changes_.services.insert(ns + "/" + name);
  state_.EraseService(ns, name);
  Bump();
}

// A slice change names the slice and the services it belonged to before and
// after (see ChangeSet).
void StateStore::UpsertEndpointSlice(EndpointSlice slice) {
  std::lock_guard lock(mu_);
  changes_.slices.insert(slice.Key());
  state_.PutSlice(slice, &changes_.services);
  Bump();
}

void StateStore::DeleteEndpointSlice(const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  changes_.slices.insert(ns + "/" + name);
  state_.EraseSlice(ns, name, &changes_.services);
  Bump();
}

uint64_t StateStore::Consume(uint64_t seen, int timeout_ms,
                             const std::function<void(const CompactState&, const ChangeSet&)>& fn) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return generation_ != seen; });
  if (generation_ == seen) return seen;
  fn(state_, changes_);
  changes_ = ChangeSet{};
  return generation_;
}

bool StateStore::synced() const {
  std::lock_guard lock(mu_);
  return synced_;
}

// ---- Validation: the one set of rules for every source ----

namespace {

std::optional<Protocol> ParseProtocol(const std::string& p) {
  if (p.empty() || p == "TCP") return Protocol::kTcp;
  if (p == "UDP") return Protocol::kUdp;
  return std::nullopt;
}

// A port number in 1..65535; nullopt otherwise (absent, 0, negative, not a number).
std::optional<uint16_t> ValidPort(const RawNumber& n) {
  if (!n.value || *n.value < 1 || *n.value > 65535) return std::nullopt;
  return static_cast<uint16_t>(*n.value);
}

bool IsIpv4(const std::string& s) {
  in_addr a;
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool IsIpv6(const std::string& s) {
  in6_addr a;
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

// The clusterIPs that count, as kube-proxy reads them: with spec.ipFamilies,
// clusterIPs[i] is the address of family ipFamilies[i] (an address of the
// other family, or one without a family entry, is skipped); without it,
// each address counts for its own family. ipFamilyPolicy SingleStack keeps
// only the primary. Headless ("None") and empty lists pass unchanged.
template <typename Problem>
std::vector<std::string> ClusterIpsByFamily(const RawService& raw, const std::string& key, Problem&& problem) {
  std::vector<std::string> ips = raw.cluster_ips;
  auto warn = [&](const std::string& what) {
    log::Warn("service ", log::Field("service", key), " ", what);
    problem(what);
  };
  if (!raw.cluster_ip.empty() && !ips.empty() && raw.cluster_ip != ips[0])
    warn("clusterIP " + raw.cluster_ip + " differs from clusterIPs[0] " + ips[0] + ": using clusterIPs");
  const std::string& policy = raw.ip_family_policy;
  if (!policy.empty() && policy != "SingleStack" && policy != "PreferDualStack" && policy != "RequireDualStack")
    warn("unknown ipFamilyPolicy " + policy + " ignored");
  if (ips.empty() || ips[0] == "None" || ips[0].empty()) return ips;
  std::vector<std::string> out;
  if (raw.ip_families.empty()) {
    out = std::move(ips);
  } else {
    std::vector<std::string> seen;
    for (size_t i = 0; i < ips.size(); ++i) {
      if (i >= raw.ip_families.size()) {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: no ipFamilies entry for it");
        continue;
      }
      const std::string& fam = raw.ip_families[i];
      if (fam != "IPv4" && fam != "IPv6") {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: unknown ip family " + fam);
        continue;
      }
      if (std::find(seen.begin(), seen.end(), fam) != seen.end()) {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: a second " + fam + " address");
        continue;
      }
      if ((fam == "IPv4" && !IsIpv4(ips[i])) || (fam == "IPv6" && !IsIpv6(ips[i]))) {
        warn("clusterIPs[" + std::to_string(i) + "] " + ips[i] + " skipped: not an " + fam + " address");
        continue;
      }
      seen.push_back(fam);
      out.push_back(ips[i]);
    }
  }
  if (policy == "SingleStack" && out.size() > 1) {
    warn("ipFamilyPolicy SingleStack: only the primary clusterIP " + out[0] + " is used");
    out.resize(1);
  }
  if (policy == "RequireDualStack" && out.size() < 2)
    warn("ipFamilyPolicy RequireDualStack but only " + std::to_string(out.size()) + " usable clusterIP(s)");
  return out;
}

}  // namespace

bool AddService(RawService raw, ClusterState* out, std::vector<std::string>* problems) {
  auto problem = [&](std::string what) {
    if (problems) problems->push_back(std::move(what));
  };
  Service s;
  s.ns = raw.ns.empty() ? "default" : std::move(raw.ns);
  s.name = std::move(raw.name);
  if (s.name.empty()) {
    log::Warn("skipping Service without metadata.name");
    problem("no metadata.name");
    return false;
  }
  if (raw.type == "NodePort") s.type = ServiceType::kNodePort;
  else if (raw.type == "LoadBalancer") s.type = ServiceType::kLoadBalancer;
  else if (raw.type == "ExternalName") s.type = ServiceType::kExternalName;
  std::vector<std::string> cluster_ips = ClusterIpsByFamily(raw, s.Key(), problem);
  s.cluster_ips.assign(std::make_move_iterator(cluster_ips.begin()), std::make_move_iterator(cluster_ips.end()));
  s.external_ips = std::move(raw.external_ips);
  s.affinity_client_ip = raw.session_affinity == "ClientIP";
  if (s.affinity_client_ip && raw.affinity_timeout.value && *raw.affinity_timeout.value > 0 &&
      *raw.affinity_timeout.value <= 86400)
    s.affinity_timeout_s = static_cast<uint32_t>(*raw.affinity_timeout.value);
  s.external_policy_local = raw.external_traffic_policy == "Local";
  s.internal_policy_local = raw.internal_traffic_policy == "Local";
  if (auto hc = ValidPort(raw.health_check_node_port); hc && s.external_policy_local) s.health_check_node_port = *hc;
  for (RawServicePort& p : raw.ports) {
    ServicePort sp;
    sp.name = std::move(p.name);
    auto proto = ParseProtocol(p.protocol);
    auto port = ValidPort(p.port);
    if (!proto) {
      log::Warn("skipping service port: unsupported protocol ", log::Field("service", s.Key()), " ",
                log::Field("port", sp.name), " ", log::Field("protocol", p.protocol));
      problem("port \"" + sp.name + "\" skipped: unsupported protocol " + p.protocol);
      continue;
    }
    if (!port) {
      log::Warn("skipping service port: invalid port ", log::Field("service", s.Key()), " ",
                log::Field("port", sp.name), " ", log::Field("value", p.port.text));
      problem("port \"" + sp.name + "\" skipped: invalid port " + (p.port.text.empty() ? "0" : p.port.text));
      continue;
    }
    sp.protocol = *proto;
    sp.port = *port;
    if (p.node_port.present && !(p.node_port.value && *p.node_port.value == 0)) {
      if (auto np = ValidPort(p.node_port)) {
        sp.node_port = *np;
      } else {
        log::Warn("ignoring invalid nodePort ", log::Field("service", s.Key()), " ",
                  log::Field("value", p.node_port.text));
        problem("port \"" + sp.name + "\": invalid nodePort " + p.node_port.text + " ignored");
      }
    }
    s.ports.push_back(std::move(sp));
  }
  std::string key = s.Key();
  out->services[key] = std::move(s);
  return true;
}

bool AddEndpointSlice(RawEndpointSlice raw, ClusterState* out) {
  EndpointSlice es;
  es.ns = raw.ns.empty() ? "default" : std::move(raw.ns);
  es.name = std::move(raw.name);
  es.service_name = std::move(raw.service_name);
  if (es.name.empty() || es.service_name.empty()) {
    log::Warn("skipping EndpointSlice without name or kubernetes.io/service-name label ",
              log::Field("name", es.name));
    return false;
  }
  // IPv4 (also when absent) and IPv6 slices are used; FQDN slices are not.
  const bool v6 = raw.address_type == "IPv6";
  if (!raw.address_type.empty() && raw.address_type != "IPv4" && !v6) {
    log::Info("skipping EndpointSlice: address type not supported ", log::Field("slice", es.Key()), " ",
              log::Field("addressType", raw.address_type));
    return false;
  }
  for (RawEndpointPort& p : raw.ports) {
    EndpointPort ep;
    ep.name = std::move(p.name);
    auto proto = ParseProtocol(p.protocol);
    auto port = ValidPort(p.port);
    if (!proto || !port) {
      log::Warn("skipping endpoint port: invalid port or protocol ", log::Field("slice", es.Key()), " ",
                log::Field("port", ep.name));
      continue;
    }
    ep.protocol = *proto;
    ep.port = *port;
    es.ports.push_back(std::move(ep));
  }
  for (RawEndpoint& e : raw.endpoints) {
    Endpoint ep;
    for (std::string& a : e.addresses) {
      if (v6 ? IsIpv6(a) : IsIpv4(a)) ep.addresses.push_back(std::move(a));
      else
        log::Warn("skipping endpoint address ", log::Field("slice", es.Key()), " ", log::Field("address", a));
    }
    // Kubernetes: a missing ready condition means ready; serving defaults to
    // ready; terminating defaults to false.
    ep.ready = e.ready.value_or(true);
    ep.serving = e.serving.value_or(ep.ready);
    ep.terminating = e.terminating.value_or(false);
    ep.node_name = std::move(e.node_name);
    if (!ep.addresses.empty()) es.endpoints.push_back(std::move(ep));
  }
  std::string key = es.Key();
  out->endpoint_slices[key] = std::move(es);
  return true;
}

// ---- YAML (any Kubernetes-shaped document stream) ----

namespace {

// A child of a map, or a null node: yaml-cpp throws when indexing a missing
// child's children, and a missing field must never be fatal.
YAML::Node Get(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap()) return YAML::Node();
  YAML::Node c = n[key];
  return c ? c : YAML::Node();
}

std::string Str(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return "";
  return n.as<std::string>();
}

RawNumber Num(const YAML::Node& n) {
  RawNumber r;
  if (!n) return r;
  r.present = true;
  if (!n.IsScalar()) return r;
  r.text = n.as<std::string>();
  try {
    r.value = n.as<long>();
  } catch (const YAML::Exception&) {
  }
  return r;
}

std::optional<bool> Bool(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return std::nullopt;
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}

std::vector<std::string> Strs(const YAML::Node& n) {
  std::vector<std::string> out;
  if (n && n.IsSequence())
    for (const auto& x : n) out.push_back(Str(x));
  return out;
}

struct YamlAccess {
  using Node = YAML::Node;
  static Node Field(const Node& n, const char* key) { return Get(n, key); }
  static std::string String(const Node& n) { return Str(n); }
  static RawNumber Number(const Node& n) { return Num(n); }
  static std::optional<bool> Boolean(const Node& n) { return Bool(n); }
  static std::vector<std::string> Strings(const Node& n) { return Strs(n); }
  static bool IsList(const Node& n) { return n && n.IsSequence(); }
  template <typename F>
  static void Each(const Node& n, F f) {
    if (IsList(n))
      for (const auto& x : n) f(Node(x));
  }
};

}  // namespace

// One walk over a Kubernetes-shaped Service / EndpointSlice for every tree
// representation (yaml-cpp nodes, nlohmann JSON), through an accessor.
template <typename A>
void ConvertService(const typename A::Node& obj, ClusterState* out) {
  RawService r;
  const auto meta = A::Field(obj, "metadata");
  r.ns = A::String(A::Field(meta, "namespace"));
  r.name = A::String(A::Field(meta, "name"));
  const auto spec = A::Field(obj, "spec");
  r.type = A::String(A::Field(spec, "type"));
  r.cluster_ip = A::String(A::Field(spec, "clusterIP"));
  if (A::IsList(A::Field(spec, "clusterIPs"))) r.cluster_ips = A::Strings(A::Field(spec, "clusterIPs"));
  else if (!r.cluster_ip.empty())
    r.cluster_ips.push_back(r.cluster_ip);
  r.ip_families = A::Strings(A::Field(spec, "ipFamilies"));
  r.ip_family_policy = A::String(A::Field(spec, "ipFamilyPolicy"));
  r.external_ips = A::Strings(A::Field(spec, "externalIPs"));
  r.session_affinity = A::String(A::Field(spec, "sessionAffinity"));
  r.affinity_timeout = A::Number(A::Field(A::Field(A::Field(spec, "sessionAffinityConfig"), "clientIP"), "timeoutSeconds"));
  r.external_traffic_policy = A::String(A::Field(spec, "externalTrafficPolicy"));
  r.internal_traffic_policy = A::String(A::Field(spec, "internalTrafficPolicy"));
  r.health_check_node_port = A::Number(A::Field(spec, "healthCheckNodePort"));
  A::Each(A::Field(spec, "ports"), [&](const typename A::Node& p) {
    RawServicePort rp;
    rp.name = A::String(A::Field(p, "name"));
    rp.protocol = A::String(A::Field(p, "protocol"));
    rp.port = A::Number(A::Field(p, "port"));
    rp.node_port = A::Number(A::Field(p, "nodePort"));
    r.ports.push_back(std::move(rp));
  });
  AddService(std::move(r), out);
}

template <typename A>
void ConvertEndpointSlice(const typename A::Node& obj, ClusterState* out) {
  RawEndpointSlice r;
  const auto meta = A::Field(obj, "metadata");
  r.ns = A::String(A::Field(meta, "namespace"));
  r.name = A::String(A::Field(meta, "name"));
  r.service_name = A::String(A::Field(A::Field(meta, "labels"), "kubernetes.io/service-name"));
  r.address_type = A::String(A::Field(obj, "addressType"));
  A::Each(A::Field(obj, "ports"), [&](const typename A::Node& p) {
    RawEndpointPort rp;
    rp.name = A::String(A::Field(p, "name"));
    rp.protocol = A::String(A::Field(p, "protocol"));
    rp.port = A::Number(A::Field(p, "port"));
    r.ports.push_back(std::move(rp));
  });
  A::Each(A::Field(obj, "endpoints"), [&](const typename A::Node& e) {
    RawEndpoint re;
    re.addresses = A::Strings(A::Field(e, "addresses"));
    const auto c = A::Field(e, "conditions");
    re.ready = A::Boolean(A::Field(c, "ready"));
    re.serving = A::Boolean(A::Field(c, "serving"));
    re.terminating = A::Boolean(A::Field(c, "terminating"));
    re.node_name = A::String(A::Field(e, "nodeName"));
    r.endpoints.push_back(std::move(re));
  });
  AddEndpointSlice(std::move(r), out);
}

namespace {

void ParseObject(const YAML::Node& obj, ClusterState* out) {
  if (!obj || !obj.IsMap()) return;
  std::string kind = Str(Get(obj, "kind"));
  if (Get(obj, "items").IsSequence()) {
    for (const auto& item : Get(obj, "items")) ParseObject(item, out);
    return;
  }
  try {
    if (kind == "Service") ConvertService<YamlAccess>(obj, out);
    else if (kind == "EndpointSlice")
      ConvertEndpointSlice<YamlAccess>(obj, out);
    else if (!kind.empty())
      log::Debug("ignoring object ", log::Field("kind", kind));
  } catch (const YAML::Exception& e) {
    log::Warn("skipping malformed ", kind, ": ", e.what());
  }
}

// ---- JSON: streamed, one object at a time ----

using Json = nlohmann::json;

const Json* JGet(const Json* n, const char* key) {
  if (!n || !n->is_object()) return nullptr;
  auto it = n->find(key);
  return it == n->end() ? nullptr : &*it;
}

std::string JStr(const Json* n) {
  if (!n) return "";
  if (n->is_string()) return n->get<std::string>();
  if (n->is_number() || n->is_boolean()) return n->dump();
  return "";
}

RawNumber JNum(const Json* n) {
  RawNumber r;
  if (!n || n->is_null()) return r;
  r.present = true;
  r.text = n->is_string() ? n->get<std::string>() : n->dump();
  if (n->is_number_integer()) r.value = n->get<int64_t>();
  else if (n->is_string()) {
    // YAML reads "80" as a number too; keep the two sources alike.
    char* end = nullptr;
    const std::string& t = n->get_ref<const std::string&>();
    long v = strtol(t.c_str(), &end, 10);
    if (!t.empty() && end && *end == '\0') r.value = v;
  }
  return r;
}

std::optional<bool> JBool(const Json* n) {
  if (!n || !n->is_boolean()) return std::nullopt;
  return n->get<bool>();
}

std::vector<std::string> JStrs(const Json* n) {
  std::vector<std::string> out;
  if (n && n->is_array())
    for (const auto& x : *n) out.push_back(JStr(&x));
  return out;
}

struct JsonAccess {
  using Node = const Json*;
  static Node Field(Node n, const char* key) { return JGet(n, key); }
  static std::string String(Node n) { return JStr(n); }
  static RawNumber Number(Node n) { return JNum(n); }
  static std::optional<bool> Boolean(Node n) { return JBool(n); }
  static std::vector<std::string> Strings(Node n) { return JStrs(n); }
  static bool IsList(Node n) { return n && n->is_array(); }
  template <typename F>
  static void Each(Node n, F f) {
    if (IsList(n))
      for (const auto& x : *n) f(&x);
  }
};

void JsonObject(const Json& obj, ClusterState* out) {
  if (!obj.is_object()) return;
  std::string kind = JStr(JGet(&obj, "kind"));
  if (const Json* items = JGet(&obj, "items"); items && items->is_array()) {
    for (const auto& item : *items) JsonObject(item, out);
    return;
  }
  if (kind == "Service") ConvertService<JsonAccess>(&obj, out);
  else if (kind == "EndpointSlice")
    ConvertEndpointSlice<JsonAccess>(&obj, out);
  else if (!kind.empty())
    log::Debug("ignoring object ", log::Field("kind", kind));
}

// A single JSON document (an object or a `kind: List`): each item is turned
// into the model as soon as the parser closes it and then dropped, so a
// 10k-service list never exists as one tree in memory.
std::optional<ClusterState> ParseJsonStream(const std::string& text) {
  ClusterState state;
  auto cb = [&](int depth, Json::parse_event_t ev, Json& j) {
    if (ev == Json::parse_event_t::object_end && depth == 2 && j.is_object() && j.contains("kind") &&
        j.contains("metadata")) {
      JsonObject(j, &state);
      return false;  // consumed: do not keep it in the items array
    }
    return true;
  };
  Json top = Json::parse(text, cb, /*allow_exceptions=*/false);
  if (top.is_discarded()) return std::nullopt;
  JsonObject(top, &state);
  return state;
}

}  // namespace

absl::StatusOr<ClusterState> ParseClusterStateYaml(const std::string& text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    // JSON is YAML too, but yaml-cpp needs ~60x the text in memory for it.
    // A stream of several JSON documents falls through to yaml-cpp.
    if (auto st = ParseJsonStream(text)) return *std::move(st);
  }
  ClusterState state;
  try {
    for (const YAML::Node& doc : YAML::LoadAll(text)) ParseObject(doc, &state);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("parse services file: ", e.what()));
  }
  return state;
}

absl::StatusOr<ClusterState> LoadClusterStateFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return LastErrnoError("open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseClusterStateYaml(ss.str());
}

namespace {

class FileSource final : public Source {
 public:
  FileSource(std::string path, int poll_ms) : path_(std::move(path)), poll_ms_(poll_ms) {}

  absl::Status Run(StateSink& sink, const std::atomic<bool>& stop) override {
    struct timespec last_mtime {};
    off_t last_size = -1;
    bool loaded = false;
    while (!stop.load()) {
      struct stat st;
      if (stat(path_.c_str(), &st) != 0) {
        if (!loaded) return LastErrnoError("stat " + path_);
      } else if (!loaded || st.st_mtim.tv_sec != last_mtime.tv_sec ||
                 st.st_mtim.tv_nsec != last_mtime.tv_nsec || st.st_size != last_size) {
        auto state = LoadClusterStateFile(path_);
        if (state.ok()) {
          log::Info("loaded services file ", log::Field("path", path_), " ",
                    log::Field("services", static_cast<long long>(state->services.size())), " ",
                    log::Field("endpointslices", static_cast<long long>(state->endpoint_slices.size())));
          // The store diffs a replacement against what it holds.
          sink.Replace(*std::move(state));
          loaded = true;
        } else if (!loaded) {
          return state.status();
        } else {
          log::Warn("keeping previous state: ", state.status());
        }
        last_mtime = st.st_mtim;
        last_size = st.st_size;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms_));
    }
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int poll_ms_;
};

}  // namespace

std::unique_ptr<Source> MakeFileSource(std::string path, int poll_ms) {
  return std::make_unique<FileSource>(std::move(path), poll_ms);
}

}  // namespace skiff::proxy
