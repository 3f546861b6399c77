// The agent's view of the cluster: Services and EndpointSlices reduced to the
// fields service routing needs, and the interface through which a source (a
// file, the API watch) feeds them in.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"

namespace skiff::proxy {

// A list that almost always holds one element (a Service's cluster IP and
// port, an endpoint's address, a slice's port): kept inline, so the store's
// copy of 10k Services and slices needs no heap block per list.
template <typename T>
using OneOrMore = absl::InlinedVector<T, 1>;

enum class Protocol : uint8_t { kTcp = 6, kUdp = 17 };

struct ServicePort {
  std::string name;
  Protocol protocol = Protocol::kTcp;
  uint16_t port = 0;
  uint16_t node_port = 0;  // 0 = none
  bool operator==(const ServicePort&) const = default;
};

// spec.type; a type this agent does not know counts as ClusterIP, as before.
enum class ServiceType : uint8_t { kClusterIP, kNodePort, kLoadBalancer, kExternalName };

struct Service {
  std::string ns;
  std::string name;
  OneOrMore<std::string> cluster_ips;  // empty or "None" = headless
  std::vector<std::string> external_ips;
  OneOrMore<ServicePort> ports;
  ServiceType type = ServiceType::kClusterIP;
  bool affinity_client_ip = false;
  uint32_t affinity_timeout_s = 10800;
  bool external_policy_local = false;     // externalTrafficPolicy: Local
  bool internal_policy_local = false;     // internalTrafficPolicy: Local
  uint16_t health_check_node_port = 0;    // spec.healthCheckNodePort (eTP Local LoadBalancer)

  std::string Key() const { return ns + "/" + name; }
  bool operator==(const Service&) const = default;
};

struct EndpointPort {
  std::string name;
  Protocol protocol = Protocol::kTcp;
  uint16_t port = 0;
  bool operator==(const EndpointPort&) const = default;
};

struct Endpoint {
  OneOrMore<std::string> addresses;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
  std::string node_name;
  bool operator==(const Endpoint&) const = default;
};

struct EndpointSlice {
  std::string ns;
  std::string name;
  std::string service_name;  // label kubernetes.io/service-name
  std::vector<Endpoint> endpoints;
  OneOrMore<EndpointPort> ports;

  std::string Key() const { return ns + "/" + name; }
  bool operator==(const EndpointSlice&) const = default;
};

// The whole input at one moment.
struct ClusterState {
  std::map<std::string, Service> services;              // by ns/name
  std::map<std::string, EndpointSlice> endpoint_slices;  // by ns/name
};

// What changed since a previous look at a ClusterState: keys (ns/name) of
// Services and EndpointSlices that were added, modified or removed. `all`
// means "compare everything" (first sync, re-list, file reload). A changed
// EndpointSlice also puts its Service's key in `services`, and the key of the
// Service it named before when that differs or the slice is gone, so a
// consumer needs no slice -> service index of its own.
struct ChangeSet {
  bool all = false;
  std::set<std::string> services;
  std::set<std::string> slices;
  bool empty() const { return !all && services.empty() && slices.empty(); }
  static ChangeSet All() {
    ChangeSet c;
    c.all = true;
    return c;
  }
};

// ---- The store's compact form of a ClusterState ----
//
// The agent holds every Service and EndpointSlice of the cluster for as long
// as it runs; as model objects (strings, map nodes) that was ~700 B per
// Service plus slice. CompactState holds each object as one heap record:
// addresses in binary, namespaces / node names / port names as 4-byte ids
// of one NameTable, a slice's endpoints packed. Records are indexed by
// Service, with the slices that name it, so consumers need no slice index
// of their own. Sources still deliver model objects (the StateSink
// interface); the store encodes them as they arrive.

// An IPv6 address in network byte order.
using Ipv6Address = std::array<uint32_t, 4>;

// Short strings that repeat across objects (namespaces, node names, port
// names), held once; records hold their 4-byte id. Id 0 is "". Names are
// never dropped: a cluster has few distinct ones.
class NameTable {
 public:
  NameTable();
  NameTable(NameTable&&) = default;
  NameTable& operator=(NameTable&&) = default;
  uint32_t Intern(std::string_view s);
  // kNone when `s` was never interned.
  uint32_t Find(std::string_view s) const;
  const std::string& Name(uint32_t id) const { return names_[id]; }
  static constexpr uint32_t kNone = UINT32_MAX;

 private:
  std::deque<std::string> names_;  // a deque: ids_ points into its strings, which never move
  std::unordered_map<std::string_view, uint32_t> ids_;
};

// An address as a record holds it: IPv4 or IPv6 in binary, or (family 0) the
// text of something that is neither ("None", "", a bad address).
struct RecordIp {
  uint8_t family = 0;  // 4, 6 or 0
  uint32_t v4 = 0;     // network byte order
  Ipv6Address v6{};
  std::string_view text;
};

// A stored Service, decoded for reading. Views point into the store and stay
// valid until the record is replaced or removed.
struct ServiceRecord {
  uint32_t ns = 0;  // NameTable id
  std::string_view name;
  ServiceType type = ServiceType::kClusterIP;
  bool affinity_client_ip = false;
  bool external_policy_local = false;
  bool internal_policy_local = false;
  uint32_t affinity_timeout_s = 0;
  uint16_t health_check_node_port = 0;
  std::vector<RecordIp> cluster_ips, external_ips;
  struct Port {
    uint32_t name;  // NameTable id
    Protocol protocol;
    uint16_t port, node_port;
  };
  std::vector<Port> ports;
  // The encoded fields that decide the Service's frontends (all but the
  // health-check port): what the builder fingerprints.
  std::string_view routing_bytes;
};

struct SliceRecord {
  uint32_t ns = 0;
  std::string_view name, service_name;
  struct Port {
    uint32_t name;
    Protocol protocol;
    uint16_t port;
  };
  struct Endpoint {
    uint32_t node;  // NameTable id
    bool ready, serving, terminating;
    uint32_t first, count;  // its range of `addresses`
  };
  std::vector<Port> ports;
  std::vector<Endpoint> endpoints;
  std::vector<RecordIp> addresses;
  std::string_view bytes;  // the whole encoded slice (name included)
};

class CompactState {
 public:
  CompactState() = default;
  CompactState(CompactState&&) = default;
  CompactState& operator=(CompactState&&) = default;

  // A Service key (namespace, name) with what is stored under it: the
  // Service (null when only slices name it) and the slices naming it,
  // sorted by name.
  using Record = std::unique_ptr<uint8_t[]>;
  struct Entry {
    explicit Entry(Record s) : service(std::move(s)) {}
    explicit Entry(const uint8_t* slice) : slices{slice} {}
    mutable Record service;                    // null when only slices name the key
    mutable OneOrMore<const uint8_t*> slices;  // records owned by slices_
  };

  // Store or replace; true when the record changed. For a slice,
  // `services` (when given) receives the "ns/name" of the Service it named
  // before (if stored) and of the one it names now.
  bool PutService(const Service& svc);
  bool PutSlice(const EndpointSlice& es, std::set<std::string>* services = nullptr);
  bool EraseService(const std::string& ns, const std::string& name);
  bool EraseSlice(const std::string& ns, const std::string& name, std::set<std::string>* services = nullptr);
  // Makes this hold exactly `state`. With `changes`, records the keys that
  // differ as the StateStore's ChangeSet does.
  void Assign(ClusterState state, ChangeSet* changes = nullptr);

  size_t service_count() const { return services_; }
  size_t slice_count() const { return slices_.size(); }
  const NameTable& names() const { return names_; }

  // By "ns/name"; null when nothing is stored under that key.
  const Entry* Find(const std::string& service_key) const;
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const Entry& e : entries_) fn(e);
  }
  std::string KeyOf(const Entry& e) const;
  void Decode(const uint8_t* service, ServiceRecord* out) const;
  void Decode(const uint8_t* slice, SliceRecord* out) const;
  // The model objects back (tests, debugging).
  ClusterState ToClusterState() const;

 private:
  struct Key {
    uint32_t ns;
    std::string_view name;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(const Key& k) const;
    size_t operator()(const Entry& e) const { return (*this)(KeyOfEntry(e)); }
    size_t operator()(const Record& rec) const { return (*this)(KeyOfRecord(rec.get())); }
  };
  struct KeyEq {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return Get(a) == Get(b);
    }
    static Key Get(const Key& k) { return k; }
    static Key Get(const Entry& e) { return KeyOfEntry(e); }
    static Key Get(const Record& r) { return KeyOfRecord(r.get()); }
  };
  static Key KeyOfRecord(const uint8_t* rec);
  static Key ServiceKeyOfSlice(const uint8_t* slice);
  static Key KeyOfEntry(const Entry& e);
  bool ParseKey(const std::string& key, Key* out) const;
  // Into scratch_; Copy() makes the record of it.
  void EncodeService(const Service& svc);
  void EncodeSlice(const EndpointSlice& es);
  Record Copy() const;
  void Unlink(const uint8_t* slice);
  void Link(const uint8_t* slice);
  std::string KeyString(const Key& k) const;

  NameTable names_;
  absl::flat_hash_set<Entry, KeyHash, KeyEq> entries_;
  absl::flat_hash_set<Record, KeyHash, KeyEq> slices_;
  size_t services_ = 0;
  std::string scratch_;  // encoding buffer
};

// Where a source delivers what it sees. Implementations are thread-safe: a
// source may call from its own thread. A list+watch source calls Replace()
// with the result of its list (and again after every re-list), then the
// Upsert/Delete calls for each watch event.
class StateSink {
 public:
  virtual ~StateSink() = default;
  // The complete current state (a list result or a file). Implementations
  // find out themselves what differs from what they had.
  virtual void Replace(ClusterState state) = 0;
  virtual void UpsertService(Service service) = 0;
  virtual void DeleteService(const std::string& ns, const std::string& name) = 0;
  virtual void UpsertEndpointSlice(EndpointSlice slice) = 0;
  virtual void DeleteEndpointSlice(const std::string& ns, const std::string& name) = 0;
};

}  // namespace skiff::proxy
