#include "skiff/apiserver/registry.h"

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/message_differencer.h"
#include "skiff/apiserver/merge_patch.h"
#include "skiff/apiserver/selectors.h"
#include "skiff/apiserver/validation.h"
#include "skiff/common/log.h"

namespace skiff::apiserver {

namespace v1 = ::skiff::api::v1;

// ---------------------------------------------------------------- helpers

std::string QualifiedResource(const ResourceInfo& info) {
  return info.group.empty() ? info.resource : absl::StrCat(info.resource, ".", info.group);
}

absl::Status NotFoundError(const ResourceInfo& info, const std::string& name) {
  return absl::NotFoundError(absl::StrCat(QualifiedResource(info), " \"", name, "\" not found"));
}
absl::Status AlreadyExistsError(const ResourceInfo& info, const std::string& name) {
  return absl::AlreadyExistsError(absl::StrCat(QualifiedResource(info), " \"", name, "\" already exists"));
}
absl::Status ConflictError(const ResourceInfo& info, const std::string& name) {
  return absl::AbortedError(absl::StrCat("Operation cannot be fulfilled on ", QualifiedResource(info), " \"", name,
                                         "\": the object has been modified; please apply your changes to the latest "
                                         "version and try again"));
}

std::string NowRfc3339() { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()); }

static std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng;
}

std::string NewUid() {
  uint64_t a = Rng()(), b = Rng()();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  char buf[40];
  snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
           static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
           static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

static std::string RandomSuffix() {
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string s;
  for (int i = 0; i < 5; ++i) s += kAlphabet[Rng()() % (sizeof(kAlphabet) - 1)];
  return s;
}

static std::string Ipv4ToString(uint32_t ip) {
  in_addr a;
  a.s_addr = htonl(ip);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

static bool ParseIpv4(const std::string& s, uint32_t* out) {
  in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

static const char kIpKeyPrefix[] = "/registry/ranges/serviceips/";
static const char kPortKeyPrefix[] = "/registry/ranges/servicenodeports/";

// ---------------------------------------------------------------- lifecycle

Registry::Registry(EtcdClient* etcd, RegistryOptions opts) : etcd_(etcd), opts_(std::move(opts)) {
  std::vector<std::string> parts = absl::StrSplit(opts_.service_cluster_ip_range, '/');
  uint32_t base = 0;
  int bits = 0;
  if (parts.size() == 2 && ParseIpv4(parts[0], &base) && absl::SimpleAtoi(parts[1], &bits) && bits >= 8 && bits <= 30) {
    uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    cidr_base_ = base & mask;
    cidr_size_ = ~mask + 1;
  } else {
    log::Error("invalid --service-cluster-ip-range ", opts_.service_cluster_ip_range, ", using 10.96.0.0/12");
    ParseIpv4("10.96.0.0", &cidr_base_);
    cidr_size_ = 1u << 20;
  }
}

Registry::~Registry() { Stop(); }

absl::Status Registry::Start(const std::string& advertise_ip, int port) {
  for (const auto& info : AllResources()) {
    auto cache = std::make_unique<WatchCache>(etcd_, info, opts_.cache);
    RETURN_IF_ERROR(cache->Start());
    // Requests can arrive while the caches start: publish each under the lock.
    std::lock_guard<std::mutex> l(caches_mu_);
    caches_[info.resource] = std::move(cache);
  }
  return EnsureBootstrapObjects(advertise_ip, port);
}

void Registry::Stop() {
  stopping_ = true;
  {
    std::lock_guard<std::mutex> l(threads_mu_);
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }
  std::lock_guard<std::mutex> l(caches_mu_);
  for (auto& [name, c] : caches_) c->Stop();
}

WatchCache* Registry::cache(const std::string& resource) {
  std::lock_guard<std::mutex> l(caches_mu_);
  auto it = caches_.find(resource);
  return it == caches_.end() ? nullptr : it->second.get();
}

// ---------------------------------------------------------------- reads

absl::StatusOr<Registry::Stored> Registry::Read(const ResourceInfo& info, const std::string& ns,
                                                const std::string& name) {
  auto kv = etcd_->Get(StorageKey(info, ns, name));
  if (!kv.ok()) {
    if (kv.status().code() == absl::StatusCode::kNotFound) return NotFoundError(info, name);
    return kv.status();
  }
  Stored s;
  if (!s.obj.ParseFromString(kv->value())) return absl::InternalError(absl::StrCat("corrupt object at ", kv->key()));
  s.mod_revision = kv->mod_revision();
  MutableMeta(&s.obj)->set_resource_version(std::to_string(s.mod_revision));
  return s;
}

absl::StatusOr<Object> Registry::Get(const std::string& resource, const std::string& ns, const std::string& name) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  ASSIGN_OR_RETURN(Stored s, Read(*info, info->namespaced ? ns : "", name));
  return s.obj;
}

namespace {
struct ContinueToken {
  int64_t rev = 0;
  std::string start;
};
std::string EncodeContinue(const ContinueToken& t) {
  return absl::WebSafeBase64Escape(absl::StrCat(t.rev, ":", t.start));
}
absl::StatusOr<ContinueToken> DecodeContinue(const std::string& s) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(s, &raw)) return absl::FailedPreconditionError("continue key is not valid: invalid encoding");
  auto colon = raw.find(':');
  ContinueToken t;
  if (colon == std::string::npos || !absl::SimpleAtoi(raw.substr(0, colon), &t.rev))
    return absl::FailedPreconditionError("continue key is not valid: incorrect encoded start resourceVersion");
  t.start = raw.substr(colon + 1);
  return t;
}
}  // namespace

absl::StatusOr<v1::ObjectList> Registry::List(const std::string& resource, const std::string& ns,
                                              const ListParams& p) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  WatchFilter filter;
  filter.ns = info->namespaced ? ns : "";
  ASSIGN_OR_RETURN(filter.labels, LabelSelector::Parse(p.label_selector));
  ASSIGN_OR_RETURN(filter.fields, FieldSelector::Parse(p.field_selector));
  std::string fns = filter.fields.ExactValue("metadata.namespace");
  if (info->namespaced && filter.ns.empty() && !fns.empty()) filter.ns = fns;
  v1::ObjectList out;

  // resourceVersion=0 without paging: served from the watch cache.
  if (p.resource_version == "0" && p.continue_token.empty()) {
    int64_t rev = 0;
    WatchCache* wc = cache(info->resource);
    if (!wc) return absl::UnavailableError(absl::StrCat("the server is starting: ", info->resource, " are not ready"));
    auto items = wc->List(filter, &rev);
    int64_t n = 0;
    for (const auto& o : items) {
      if (p.limit > 0 && n >= p.limit) break;
      *out.add_items() = *o;
      ++n;
    }
    out.set_resource_version(std::to_string(rev));
    return out;
  }

  const std::string prefix = StoragePrefix(*info, filter.ns);
  const std::string end = PrefixEnd(prefix);
  ContinueToken tok;
  tok.start = prefix;
  if (!p.continue_token.empty()) {
    ASSIGN_OR_RETURN(tok, DecodeContinue(p.continue_token));
    if (tok.start.rfind(prefix, 0) != 0)
      return absl::FailedPreconditionError("continue key is not valid: key does not match the list prefix");
  } else if (!p.resource_version.empty() && p.resource_version != "0") {
    if (!absl::SimpleAtoi(p.resource_version, &tok.rev))
      return absl::FailedPreconditionError(absl::StrCat("invalid resource version: ", p.resource_version));
  }
  int64_t chunk = p.limit > 0 ? std::max<int64_t>(p.limit, 100) : 0;
  std::string key = tok.start;
  int64_t rev = tok.rev;
  int64_t n = 0;
  while (true) {
    auto r = etcd_->Range(key, end, rev, chunk);
    if (!r.ok()) {
      if (r.status().code() == absl::StatusCode::kOutOfRange ||
          r.status().message().find("compacted") != absl::string_view::npos) {
        if (!p.continue_token.empty())
          return absl::OutOfRangeError(
              "The provided continue parameter is too old to display a consistent list result. You can start a new "
              "list without the continue parameter.");
        return absl::OutOfRangeError(absl::StrCat("too old resource version: ", rev));
      }
      return r.status();
    }
    if (rev == 0) rev = r->revision;
    for (const auto& kv : r->kvs) {
      if (p.limit > 0 && n >= p.limit) {
        ContinueToken next{rev, kv.key()};
        out.set_continue_(EncodeContinue(next));
        break;
      }
      Object obj;
      if (!obj.ParseFromString(kv.value())) continue;
      MutableMeta(&obj)->set_resource_version(std::to_string(kv.mod_revision()));
      if (!filter.Matches(obj)) continue;
      *out.add_items() = std::move(obj);
      ++n;
    }
    if (!out.continue_().empty()) break;
    if (!r->more || r->kvs.empty()) break;
    key = r->kvs.back().key() + std::string(1, '\0');
    if (p.limit > 0 && n >= p.limit) {
      // Exactly filled; is there anything left?
      auto probe = etcd_->Range(key, end, rev, 1, false);
      if (probe.ok() && !probe->kvs.empty()) out.set_continue_(EncodeContinue({rev, probe->kvs[0].key()}));
      break;
    }
  }
  if (!out.continue_().empty() && p.label_selector.empty() && p.field_selector.empty()) {
    ContinueToken next;
    auto dec = DecodeContinue(out.continue_());
    if (dec.ok()) {
      auto cnt = etcd_->Range(dec->start, end, rev, 0, true);
      if (cnt.ok()) out.set_remaining_item_count(cnt->count);
    }
  }
  out.set_resource_version(std::to_string(rev));
  return out;
}

absl::StatusOr<std::shared_ptr<CacheWatcher>> Registry::Watch(const std::string& resource, const std::string& ns,
                                                              const std::string& label_selector,
                                                              const std::string& field_selector,
                                                              const std::string& resource_version) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  WatchFilter filter;
  filter.ns = info->namespaced ? ns : "";
  ASSIGN_OR_RETURN(filter.labels, LabelSelector::Parse(label_selector));
  ASSIGN_OR_RETURN(filter.fields, FieldSelector::Parse(field_selector));
  int64_t from = -1;
  if (!resource_version.empty() && resource_version != "0") {
    if (!absl::SimpleAtoi(resource_version, &from) || from < 0)
      return absl::FailedPreconditionError(absl::StrCat("invalid resource version: ", resource_version));
  }
  WatchCache* wc = cache(info->resource);
  if (!wc) return absl::UnavailableError(absl::StrCat("the server is starting: ", info->resource, " are not ready"));
  return wc->Watch(std::move(filter), from);
}

void Registry::Unwatch(const std::string& resource, const std::shared_ptr<CacheWatcher>& w) {
  if (WatchCache* wc = cache(resource)) wc->Unwatch(w);
}

// ---------------------------------------------------------------- allocation

absl::Status Registry::PlanServiceAllocations(const v1::Service* old, v1::Service* svc,
                                              std::vector<std::string>* create_keys,
                                              std::vector<std::string>* delete_keys, bool* user_chosen,
                                              bool avoid_taken) {
  auto* spec = svc->mutable_spec();
  // After a collision (another replica, or a crowded range) the next pick
  // avoids what is already allocated instead of guessing blindly again.
  auto taken_suffixes = [&](const std::string& prefix) -> absl::StatusOr<std::set<std::string>> {
    std::set<std::string> out;
    if (!avoid_taken) return out;
    ASSIGN_OR_RETURN(EtcdRange r, etcd_->Range(prefix, PrefixEnd(prefix), 0, 0));
    for (const auto& kv : r.kvs) out.insert(kv.key().substr(prefix.size()));
    return out;
  };
  // A random value in [lo, lo+span) not in `taken`: random probes, then a scan.
  auto pick = [&](uint64_t lo, uint64_t span, const std::function<bool(uint64_t)>& taken) -> std::optional<uint64_t> {
    for (int i = 0; i < 64; ++i) {
      uint64_t v = lo + Rng()() % span;
      if (!taken(v)) return v;
    }
    uint64_t start = Rng()() % span;
    for (uint64_t i = 0; i < span; ++i) {
      uint64_t v = lo + (start + i) % span;
      if (!taken(v)) return v;
    }
    return std::nullopt;
  };
  // Dynamic values come from the upper band of a range first, and from its
  // lower band only once the upper one is full, so values users pick from
  // the lower band rarely collide with dynamic ones (Kubernetes' service IP
  // and NodePort static subranges, KEP-3070 and KEP-3668). static_span is the
  // size of the lower band within [lo, lo+span).
  auto pick_banded = [&](uint64_t lo, uint64_t span, uint64_t static_span,
                         const std::function<bool(uint64_t)>& taken) -> std::optional<uint64_t> {
    if (static_span == 0 || static_span >= span) return pick(lo, span, taken);
    if (auto v = pick(lo + static_span, span - static_span, taken)) return v;
    return pick(lo, static_span, taken);
  };
  *user_chosen = false;
  bool wants_ip = spec->type() != "ExternalName" && spec->cluster_ip() != "None";
  std::string old_ip = old ? old->spec().cluster_ip() : "";
  bool old_has_ip = !old_ip.empty() && old_ip != "None";
  if (wants_ip) {
    if (spec->cluster_ip().empty() && old_has_ip) spec->set_cluster_ip(old_ip);
    if (spec->cluster_ip().empty()) {
      // Random offset; the first address is the network, the last the broadcast,
      // the first usable one is reserved for the `kubernetes` Service. The
      // lower band is the first min(max(16, size/16), 256) usable addresses
      // (none in a range of 16 or fewer), `kubernetes` included.
      uint32_t span = cidr_size_ - 3;
      uint64_t band = cidr_size_ <= 16 ? 0 : std::clamp<uint64_t>(cidr_size_ / 16, 16, 256);
      ASSIGN_OR_RETURN(std::set<std::string> taken, taken_suffixes(kIpKeyPrefix));
      auto ip = pick_banded(cidr_base_ + 2, span, band > 0 ? band - 1 : 0, [&](uint64_t v) {
        return taken.count(Ipv4ToString(static_cast<uint32_t>(v))) > 0;
      });
      if (!ip) return absl::InternalError("Internal error occurred: failed to allocate a serviceIP: range is full");
      spec->set_cluster_ip(Ipv4ToString(static_cast<uint32_t>(*ip)));
      create_keys->push_back(kIpKeyPrefix + spec->cluster_ip());
    } else if (spec->cluster_ip() != old_ip) {
      uint32_t ip;
      if (!ParseIpv4(spec->cluster_ip(), &ip))
        return InvalidError("Service", svc->metadata().name(),
                            {{"spec.clusterIPs[0]", absl::StrCat("Invalid value: \"", spec->cluster_ip(), "\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")}});
      if (ip < cidr_base_ || ip >= cidr_base_ + cidr_size_)
        return InvalidError("Service", svc->metadata().name(),
                            {{"spec.clusterIPs", absl::StrCat("Invalid value: []string{\"", spec->cluster_ip(),
                                                             "\"}: failed to allocate IP ", spec->cluster_ip(),
                                                             ": the provided IP (", spec->cluster_ip(),
                                                             ") is not in the valid range. The range of valid IPs is ",
                                                             opts_.service_cluster_ip_range)}});
      *user_chosen = true;
      create_keys->push_back(kIpKeyPrefix + spec->cluster_ip());
    }
    spec->clear_cluster_ips();
    spec->add_cluster_ips(spec->cluster_ip());
  } else if (spec->cluster_ip() == "None") {
    spec->clear_cluster_ips();
    spec->add_cluster_ips("None");
  }
  if (old_has_ip && old_ip != spec->cluster_ip()) delete_keys->push_back(kIpKeyPrefix + old_ip);

  bool wants_ports = spec->type() == "NodePort" || spec->type() == "LoadBalancer";
  std::set<int> old_ports;
  if (old)
    for (const auto& p : old->spec().ports())
      if (p.node_port() != 0) old_ports.insert(p.node_port());
  std::set<int> kept;
  std::optional<std::set<std::string>> taken_ports;
  for (int i = 0; i < spec->ports_size(); ++i) {
    auto* p = spec->mutable_ports(i);
    if (!wants_ports) {
      p->set_node_port(0);
      continue;
    }
    if (p->node_port() == 0 && old) {
      // Keep the port this service port had (matched by port number and protocol).
      for (const auto& op : old->spec().ports())
        if (op.port() == p->port() && op.protocol() == p->protocol() && op.node_port() != 0 && !kept.count(op.node_port()))
          p->set_node_port(op.node_port());
    }
    if (p->node_port() == 0) {
      int span = opts_.node_port_max - opts_.node_port_min + 1;
      // The lower band: the first min(max(16, size/32), 128) ports.
      uint64_t band = span <= 16 ? 0 : std::clamp<uint64_t>(static_cast<uint64_t>(span) / 32, 16, 128);
      if (!taken_ports) {
        ASSIGN_OR_RETURN(taken_ports, taken_suffixes(kPortKeyPrefix));
      }
      auto picked = pick_banded(opts_.node_port_min, static_cast<uint64_t>(span), band, [&](uint64_t v) {
        int c = static_cast<int>(v);
        return kept.count(c) || old_ports.count(c) || taken_ports->count(std::to_string(c)) > 0;
      });
      if (!picked) return absl::InternalError("Internal error occurred: failed to allocate a nodePort: range is full");
      int port = static_cast<int>(*picked);
      p->set_node_port(port);
      create_keys->push_back(absl::StrCat(kPortKeyPrefix, port));
    } else if (!old_ports.count(p->node_port()) || kept.count(p->node_port())) {
      if (p->node_port() < opts_.node_port_min || p->node_port() > opts_.node_port_max)
        return InvalidError("Service", svc->metadata().name(),
                            {{absl::StrCat("spec.ports[", i, "].nodePort"),
                              absl::StrCat("Invalid value: ", p->node_port(),
                                           ": provided port is not in the valid range. The range of valid ports is ",
                                           opts_.node_port_min, "-", opts_.node_port_max)}});
      if (kept.count(p->node_port()) &&
          std::any_of(spec->ports().begin(), spec->ports().begin() + i,
                      [&](const v1::ServicePort& q) { return q.node_port() == p->node_port() && q.protocol() == p->protocol(); }))
        return InvalidError("Service", svc->metadata().name(),
                            {{absl::StrCat("spec.ports[", i, "].nodePort"),
                              absl::StrCat("Duplicate value: \"", p->node_port(), "\"")}});
      if (!kept.count(p->node_port())) {
        *user_chosen = true;
        create_keys->push_back(absl::StrCat(kPortKeyPrefix, p->node_port()));
      }
    }
    kept.insert(p->node_port());
  }
  for (int port : old_ports)
    if (!kept.count(port)) delete_keys->push_back(absl::StrCat(kPortKeyPrefix, port));
  return absl::OkStatus();
}

// ---------------------------------------------------------------- writes

absl::StatusOr<Object> Registry::Create(const std::string& resource, const std::string& ns, Object obj,
                                        bool dry_run) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  if (obj.kind_case() == Object::KIND_NOT_SET) return absl::FailedPreconditionError("Object 'Kind' is missing");
  if (static_cast<int>(obj.kind_case()) != info->oneof_field) {
    const ResourceInfo* got = ResourceForObject(obj);
    return absl::FailedPreconditionError(absl::StrCat("the kind of the provided object (", got ? got->kind : "?",
                                                      ") does not match the resource \"", resource, "\""));
  }
  ObjectMeta* m = MutableMeta(&obj);
  if (info->namespaced) {
    if (m->namespace_().empty()) m->set_namespace_(ns);
    else if (!ns.empty() && m->namespace_() != ns)
      return absl::FailedPreconditionError(
          "the namespace of the provided object does not match the namespace sent on the request");
  } else {
    m->clear_namespace_();
  }
  if (info->namespaced && !m->namespace_().empty()) {
    // The watch cache knows the namespace almost always; a namespace created
    // a moment ago may not have reached it yet, so fall back to etcd.
    std::shared_ptr<const Object> cached;
    if (auto* nc = cache("namespaces")) {
      WatchFilter all;
      int64_t rev;
      for (const auto& n : nc->List(all, &rev))
        if (Meta(*n).name() == m->namespace_()) cached = n;
    }
    if (!cached) {
      auto nsobj = Read(*LookupResource("namespaces").value(), "", m->namespace_());
      if (!nsobj.ok()) {
        if (nsobj.status().code() == absl::StatusCode::kNotFound)
          return absl::NotFoundError(absl::StrCat("namespaces \"", m->namespace_(), "\" not found"));
        return nsobj.status();
      }
      cached = std::make_shared<Object>(nsobj->obj);
    }
    if (!cached->namespace_().metadata().deletion_timestamp().empty())
      return absl::PermissionDeniedError(absl::StrCat(QualifiedResource(*info), " \"", m->name(),
                                                      "\" is forbidden: unable to create new content in namespace ",
                                                      m->namespace_(), " because it is being terminated"));
  }
  bool generated = m->name().empty() && !m->generate_name().empty();
  const std::string api_version = info->api_version, kind = info->kind;
  {
    google::protobuf::Message* inner = MutableInner(&obj, *info);
    const auto* d = inner->GetDescriptor();
    inner->GetReflection()->SetString(inner, d->FindFieldByName("api_version"), api_version);
    inner->GetReflection()->SetString(inner, d->FindFieldByName("kind"), kind);
  }
  m->set_uid(NewUid());
  m->set_creation_timestamp(NowRfc3339());
  m->set_generation(1);
  m->clear_resource_version();
  m->clear_deletion_timestamp();
  m->clear_deletion_grace_period_seconds();
  ApplyDefaults(&obj);
  if (obj.has_pod()) {
    auto* st = obj.mutable_pod()->mutable_status();
    if (st->phase().empty()) st->set_phase("Pending");
  }

  for (int attempt = 0; attempt < 16; ++attempt) {
    Object cand = obj;
    ObjectMeta* cm = MutableMeta(&cand);
    if (generated) cm->set_name(cm->generate_name() + RandomSuffix());
    FieldErrors errs = Validate(cand, nullptr);
    if (!errs.empty()) return InvalidError(info->kind, cm->name().empty() ? cm->generate_name() : cm->name(), errs);
    std::vector<std::string> alloc_create, alloc_delete;
    bool user_chosen = false;
    if (cand.has_service())
      RETURN_IF_ERROR(PlanServiceAllocations(nullptr, cand.mutable_service(), &alloc_create, &alloc_delete, &user_chosen,
                                             attempt > 0));
    if (dry_run) return cand;
    const std::string key = StorageKey(*info, cm->namespace_(), cm->name());
    cm->clear_resource_version();
    etcdserverpb::TxnRequest txn;
    auto add_absent = [&](const std::string& k) {
      auto* c = txn.add_compare();
      c->set_key(k);
      c->set_target(etcdserverpb::Compare::CREATE);
      c->set_result(etcdserverpb::Compare::EQUAL);
      c->set_create_revision(0);
    };
    add_absent(key);
    for (const auto& k : alloc_create) add_absent(k);
    auto* put = txn.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(cand.SerializeAsString());
    std::string owner = absl::StrCat(cm->namespace_(), "/", cm->name());
    for (const auto& k : alloc_create) {
      auto* ap = txn.add_success()->mutable_request_put();
      ap->set_key(k);
      ap->set_value(owner);
    }
    auto* probe = txn.add_failure()->mutable_request_range();
    probe->set_key(key);
    probe->set_count_only(true);
    ASSIGN_OR_RETURN(auto resp, etcd_->Txn(txn));
    if (resp.succeeded()) {
      cm->set_resource_version(std::to_string(resp.header().revision()));
      return cand;
    }
    bool object_exists = resp.responses_size() > 0 && resp.responses(0).response_range().count() > 0;
    if (object_exists) {
      if (generated) continue;
      return AlreadyExistsError(*info, cm->name());
    }
    if (user_chosen && !alloc_create.empty()) {
      // Which of the requested allocations is taken?
      for (const auto& k : alloc_create) {
        auto kv = etcd_->Get(k);
        if (!kv.ok()) continue;
        if (k.rfind(kIpKeyPrefix, 0) == 0 && cand.service().spec().cluster_ip() == k.substr(strlen(kIpKeyPrefix)))
          return InvalidError("Service", cm->name(),
                              {{"spec.clusterIPs", absl::StrCat("Invalid value: []string{\"", cand.service().spec().cluster_ip(),
                                                               "\"}: failed to allocate IP ", cand.service().spec().cluster_ip(),
                                                               ": provided IP is already allocated")}});
        if (k.rfind(kPortKeyPrefix, 0) == 0) {
          std::string port = k.substr(strlen(kPortKeyPrefix));
          for (int i = 0; i < cand.service().spec().ports_size(); ++i)
            if (std::to_string(cand.service().spec().ports(i).node_port()) == port &&
                obj.service().spec().ports(i).node_port() != 0)
              return InvalidError("Service", cm->name(),
                                  {{absl::StrCat("spec.ports[", i, "].nodePort"),
                                    absl::StrCat("Invalid value: ", port, ": provided port is already allocated")}});
        }
      }
    }
    // A randomly chosen IP or port was taken: choose again.
  }
  return absl::UnavailableError("could not allocate: too many collisions, retry");
}

absl::StatusOr<Object> Registry::Update(const std::string& resource, const std::string& ns, Object obj,
                                        const std::string& subresource, bool dry_run) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  if (static_cast<int>(obj.kind_case()) != info->oneof_field)
    return absl::FailedPreconditionError(absl::StrCat("the kind of the provided object does not match the resource \"", resource, "\""));
  if (!subresource.empty() && subresource != "status")
    return absl::NotFoundError(absl::StrCat("the server could not find the requested resource (subresource \"", subresource, "\")"));
  if (subresource == "status" && !info->has_status)
    return absl::NotFoundError(absl::StrCat(QualifiedResource(*info), " has no status subresource"));
  bool unconditional = Meta(obj).resource_version().empty();
  for (int attempt = 0; attempt < 16; ++attempt) {
    bool retryable = false;
    auto r = UpdateOnce(*info, ns, obj, subresource, dry_run, &retryable);
    if (r.ok() || !(unconditional && retryable)) return r;
  }
  return ConflictError(*info, Meta(obj).name());
}

absl::StatusOr<Object> Registry::UpdateOnce(const ResourceInfo& info, const std::string& ns, Object obj,
                                            const std::string& subresource, bool dry_run, bool* retryable) {
  ObjectMeta* m = MutableMeta(&obj);
  std::string ons = info.namespaced ? (m->namespace_().empty() ? ns : m->namespace_()) : "";
  if (info.namespaced && !ns.empty() && ons != ns)
    return absl::FailedPreconditionError("the namespace of the provided object does not match the namespace sent on the request");
  if (m->name().empty()) return absl::FailedPreconditionError("name is required");
  // A conditional update whose resourceVersion is the cached one starts from
  // the watch cache instead of an etcd read: a mod_revision names one version
  // of one key, and the commit's compare on it refuses the write if etcd has
  // moved on since (a conflict, which a stale resourceVersion is anyway).
  Stored cur;
  bool cached = false;
  if (!m->resource_version().empty()) {
    if (WatchCache* wc = cache(info.resource)) {
      auto o = wc->Lookup(StorageKey(info, ons, m->name()));
      int64_t rv = 0;
      if (o && Meta(*o).resource_version() == m->resource_version() && absl::SimpleAtoi(m->resource_version(), &rv)) {
        cur.obj = *o;
        cur.mod_revision = rv;
        cached = true;
      }
    }
  }
  if (!cached) {
    ASSIGN_OR_RETURN(cur, Read(info, ons, m->name()));
  }
  if (!m->resource_version().empty() && m->resource_version() != std::to_string(cur.mod_revision))
    return ConflictError(info, m->name());
  Object next;
  if (subresource == "status") {
    next = cur.obj;
    CopyStatus(obj, &next);
  } else {
    next = obj;
    if (info.has_status) CopyStatus(cur.obj, &next);
    ObjectMeta* nm = MutableMeta(&next);
    const ObjectMeta& cm = Meta(cur.obj);
    if (nm->namespace_().empty() && info.namespaced) nm->set_namespace_(cm.namespace_());
    if (nm->uid().empty()) nm->set_uid(cm.uid());
    if (nm->creation_timestamp().empty()) nm->set_creation_timestamp(cm.creation_timestamp());
    // Set only by the server.
    nm->set_deletion_timestamp(cm.deletion_timestamp());
    if (cm.has_deletion_grace_period_seconds()) nm->set_deletion_grace_period_seconds(cm.deletion_grace_period_seconds());
    else nm->clear_deletion_grace_period_seconds();
    nm->set_generation(cm.generation());
    nm->set_generate_name(cm.generate_name());
    google::protobuf::Message* inner = MutableInner(&next, info);
    const auto* d = inner->GetDescriptor();
    inner->GetReflection()->SetString(inner, d->FindFieldByName("api_version"), info.api_version);
    inner->GetReflection()->SetString(inner, d->FindFieldByName("kind"), info.kind);
    ApplyDefaults(&next);
    if (!cm.deletion_timestamp().empty()) {
      // While terminating, finalizers may only be removed.
      for (const auto& f : nm->finalizers())
        if (std::find(cm.finalizers().begin(), cm.finalizers().end(), f) == cm.finalizers().end())
          return InvalidError(info.kind, m->name(),
                              {{"metadata.finalizers", absl::StrCat("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"", f, "\"}")}});
    }
  }
  FieldErrors errs = Validate(next, &cur.obj);
  if (!errs.empty()) return InvalidError(info.kind, m->name(), errs);
  if (!SpecEqual(next, cur.obj)) MutableMeta(&next)->set_generation(Meta(cur.obj).generation() + 1);
  auto r = Commit(info, cur, std::move(next), dry_run);
  if (!r.ok() && r.status().code() == absl::StatusCode::kAborted) *retryable = true;
  return r;
}

absl::StatusOr<Object> Registry::Commit(const ResourceInfo& info, const Stored& cur, Object next, bool dry_run) {
  ObjectMeta* nm = MutableMeta(&next);
  const std::string name = nm->name();
  // A terminating object whose last finalizer went away (and whose grace
  // period is over) is removed.
  if (!nm->deletion_timestamp().empty() && nm->finalizers().empty() && nm->deletion_grace_period_seconds() == 0 &&
      (!next.has_namespace_() || next.namespace_().spec().finalizers().empty())) {
    return DeleteNow(info, cur, dry_run);
  }
  std::vector<std::string> alloc_create, alloc_delete;
  bool user_chosen = false;
  if (next.has_service())
    RETURN_IF_ERROR(PlanServiceAllocations(&cur.obj.service(), next.mutable_service(), &alloc_create, &alloc_delete,
                                           &user_chosen, false));
  nm->set_resource_version(std::to_string(cur.mod_revision));
  if (google::protobuf::util::MessageDifferencer::Equals(next, cur.obj)) return next;  // no-op
  if (dry_run) return next;
  nm->clear_resource_version();
  const std::string key = StorageKey(info, nm->namespace_(), name);
  etcdserverpb::TxnRequest txn;
  auto* c = txn.add_compare();
  c->set_key(key);
  c->set_target(etcdserverpb::Compare::MOD);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_mod_revision(cur.mod_revision);
  for (const auto& k : alloc_create) {
    auto* ac = txn.add_compare();
    ac->set_key(k);
    ac->set_target(etcdserverpb::Compare::CREATE);
    ac->set_result(etcdserverpb::Compare::EQUAL);
    ac->set_create_revision(0);
  }
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(next.SerializeAsString());
  for (const auto& k : alloc_create) {
    auto* ap = txn.add_success()->mutable_request_put();
    ap->set_key(k);
    ap->set_value(absl::StrCat(nm->namespace_(), "/", name));
  }
  for (const auto& k : alloc_delete) txn.add_success()->mutable_request_delete_range()->set_key(k);
  ASSIGN_OR_RETURN(auto resp, etcd_->Txn(txn));
  if (!resp.succeeded()) {
    if (user_chosen) {
      auto again = etcd_->Get(key);
      if (again.ok() && again->mod_revision() == cur.mod_revision)
        return InvalidError(info.kind, name, {{"spec", "Invalid value: the requested ClusterIP or NodePort is already allocated"}});
    }
    return ConflictError(info, name);
  }
  nm->set_resource_version(std::to_string(resp.header().revision()));
  return next;
}

absl::StatusOr<Object> Registry::DeleteNow(const ResourceInfo& info, const Stored& cur, bool dry_run) {
  const ObjectMeta& m = Meta(cur.obj);
  Object last = cur.obj;
  if (dry_run) return last;
  const std::string key = StorageKey(info, m.namespace_(), m.name());
  etcdserverpb::TxnRequest txn;
  auto* c = txn.add_compare();
  c->set_key(key);
  c->set_target(etcdserverpb::Compare::MOD);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_mod_revision(cur.mod_revision);
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  if (cur.obj.has_service()) {
    const auto& s = cur.obj.service().spec();
    if (!s.cluster_ip().empty() && s.cluster_ip() != "None")
      txn.add_success()->mutable_request_delete_range()->set_key(kIpKeyPrefix + s.cluster_ip());
    for (const auto& p : s.ports())
      if (p.node_port() != 0)
        txn.add_success()->mutable_request_delete_range()->set_key(absl::StrCat(kPortKeyPrefix, p.node_port()));
  }
  ASSIGN_OR_RETURN(auto resp, etcd_->Txn(txn));
  if (!resp.succeeded()) return ConflictError(info, m.name());
  MutableMeta(&last)->set_resource_version(std::to_string(resp.header().revision()));
  return last;
}

absl::StatusOr<Object> Registry::Patch(const std::string& resource, const std::string& ns, const std::string& name,
                                       const std::string& merge_patch, const std::string& subresource, bool dry_run) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  std::string ons = info->namespaced ? ns : "";
  for (int attempt = 0; attempt < 16; ++attempt) {
    ASSIGN_OR_RETURN(Stored cur, Read(*info, ons, name));
    ASSIGN_OR_RETURN(std::string json, ToJson(cur.obj));
    ASSIGN_OR_RETURN(std::string patched, ApplyMergePatch(json, merge_patch));
    Object next;
    absl::Status st = FromJson(patched, *info, &next);
    if (!st.ok()) return absl::FailedPreconditionError(absl::StrCat("unable to apply patch: ", st.message()));
    const ObjectMeta& nm = Meta(next);
    if (nm.name() != name) return InvalidError(info->kind, name, {{"metadata.name", absl::StrCat("Invalid value: ", Quote(nm.name()), ": field is immutable")}});
    bool pinned = nm.resource_version() != std::to_string(cur.mod_revision);
    if (nm.resource_version().empty()) MutableMeta(&next)->set_resource_version(std::to_string(cur.mod_revision));
    bool retryable = false;
    auto r = UpdateOnce(*info, ons, std::move(next), subresource, dry_run, &retryable);
    if (r.ok() || !retryable || pinned) return r;
  }
  return ConflictError(*info, name);
}

absl::StatusOr<Object> Registry::Delete(const std::string& resource, const std::string& ns, const std::string& name,
                                        const DeleteParams& p) {
  ++requests_;
  ASSIGN_OR_RETURN(const ResourceInfo* info, LookupResource(resource));
  std::string ons = info->namespaced ? ns : "";
  if (p.grace_period_seconds.has_value() && *p.grace_period_seconds < 0)
    return InvalidError("DeleteOptions", "", {{"gracePeriodSeconds", absl::StrCat("Invalid value: ", *p.grace_period_seconds, ": must be greater than or equal to 0")}});
  if (!p.propagation_policy.empty() && p.propagation_policy != "Background" && p.propagation_policy != "Foreground" &&
      p.propagation_policy != "Orphan")
    return absl::FailedPreconditionError(absl::StrCat("unsupported propagationPolicy: ", p.propagation_policy));
  for (int attempt = 0; attempt < 16; ++attempt) {
    ASSIGN_OR_RETURN(Stored cur, Read(*info, ons, name));
    const ObjectMeta& m = Meta(cur.obj);
    if (!p.precondition_uid.empty() && p.precondition_uid != m.uid())
      return absl::AbortedError(absl::StrCat("Precondition failed: UID in precondition: ", p.precondition_uid,
                                             ", UID in object meta: ", m.uid()));
    if (!p.precondition_resource_version.empty() && p.precondition_resource_version != m.resource_version())
      return absl::AbortedError(absl::StrCat("Precondition failed: ResourceVersion in precondition: ",
                                             p.precondition_resource_version,
                                             ", ResourceVersion in object meta: ", m.resource_version()));
    Object next = cur.obj;
    ObjectMeta* nm = MutableMeta(&next);
    if (p.propagation_policy == "Foreground" || p.propagation_policy == "Orphan") {
      std::string f = p.propagation_policy == "Foreground" ? "foregroundDeletion" : "orphan";
      if (std::find(nm->finalizers().begin(), nm->finalizers().end(), f) == nm->finalizers().end() &&
          m.deletion_timestamp().empty())
        nm->add_finalizers(f);
    }
    int64_t grace = 0;
    if (cur.obj.has_pod()) {
      const auto& pod = cur.obj.pod();
      grace = p.grace_period_seconds.has_value() ? *p.grace_period_seconds
                                                 : pod.spec().termination_grace_period_seconds();
      // Never started on a node, or already finished: nothing to stop.
      if (pod.spec().node_name().empty() || pod.status().phase() == "Succeeded" || pod.status().phase() == "Failed")
        grace = 0;
      if (m.has_deletion_grace_period_seconds() && m.deletion_grace_period_seconds() < grace)
        grace = m.deletion_grace_period_seconds();
    }
    const bool is_ns = cur.obj.has_namespace_();
    if (is_ns && m.deletion_timestamp().empty()) {
      auto* fin = next.mutable_namespace_()->mutable_spec()->mutable_finalizers();
      if (std::find(fin->begin(), fin->end(), "kubernetes") == fin->end()) *fin->Add() = "kubernetes";
    }
    if (nm->finalizers().empty() && grace == 0 && !is_ns) {
      auto r = DeleteNow(*info, cur, p.dry_run);
      if (r.ok()) {
        return r;
      }
      if (r.status().code() == absl::StatusCode::kAborted) continue;
      return r;
    }
    if (!m.deletion_timestamp().empty() && (!m.has_deletion_grace_period_seconds() || m.deletion_grace_period_seconds() <= grace) &&
        nm->finalizers_size() == m.finalizers_size()) {
      return cur.obj;  // already terminating, nothing shortens
    }
    auto when = absl::Now() + absl::Seconds(grace);
    nm->set_deletion_timestamp(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", when, absl::UTCTimeZone()));
    nm->set_deletion_grace_period_seconds(grace);
    if (next.has_namespace_()) next.mutable_namespace_()->mutable_status()->set_phase("Terminating");
    auto r = Commit(*info, cur, std::move(next), p.dry_run);
    if (r.ok()) {
      if (r->has_namespace_() && !p.dry_run) {
        std::lock_guard<std::mutex> l(threads_mu_);
        threads_.emplace_back([this, n = name] { NamespaceCleanup(n); });
      }
      return r;
    }
    if (r.status().code() == absl::StatusCode::kAborted) continue;
    return r;
  }
  return ConflictError(*info, name);
}

// Deletes everything in a terminating namespace, waits for graceful pod
// deletion to finish, then drops the namespace's own finalizer.
void Registry::NamespaceCleanup(std::string ns) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  while (!stopping_ && std::chrono::steady_clock::now() < deadline) {
    bool remaining = false;
    for (const auto& info : AllResources()) {
      if (!info.namespaced) continue;
      ListParams lp;
      auto list = List(info.resource, ns, lp);
      if (!list.ok()) {
        remaining = true;
        continue;
      }
      for (const auto& item : list->items()) {
        remaining = true;
        if (Meta(item).deletion_timestamp().empty()) (void)Delete(info.resource, ns, Meta(item).name(), {});
      }
    }
    if (!remaining) {
      auto cur = Read(*LookupResource("namespaces").value(), "", ns);
      if (!cur.ok()) return;
      Object next = cur->obj;
      MutableMeta(&next)->clear_finalizers();
      next.mutable_namespace_()->mutable_spec()->clear_finalizers();
      auto r = Commit(*LookupResource("namespaces").value(), *cur, next, false);
      if (r.ok() && Meta(*r).deletion_timestamp().empty()) return;
      (void)DeleteNow(*LookupResource("namespaces").value(), *cur, false);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

// ---------------------------------------------------------------- bootstrap

absl::Status Registry::EnsureBootstrapObjects(const std::string& advertise_ip, int port) {
  for (const char* ns : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
    Object o;
    o.mutable_namespace_()->mutable_metadata()->set_name(ns);
    auto r = Create("namespaces", "", o);
    if (!r.ok() && r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
  }
  Object svc;
  auto* s = svc.mutable_service();
  s->mutable_metadata()->set_name("kubernetes");
  s->mutable_metadata()->set_namespace_("default");
  (*s->mutable_metadata()->mutable_labels())["component"] = "apiserver";
  (*s->mutable_metadata()->mutable_labels())["provider"] = "kubernetes";
  s->mutable_spec()->set_cluster_ip(Ipv4ToString(cidr_base_ + 1));
  auto* p = s->mutable_spec()->add_ports();
  p->set_name("https");
  p->set_port(443);
  p->set_target_port(std::to_string(port));
  // Resume the cleanup of namespaces that were terminating when we stopped.
  if (auto nss = List("namespaces", "", {}); nss.ok()) {
    for (const auto& n : nss->items()) {
      if (Meta(n).deletion_timestamp().empty()) continue;
      std::lock_guard<std::mutex> l(threads_mu_);
      threads_.emplace_back([this, name = Meta(n).name()] { NamespaceCleanup(name); });
    }
  }
  auto r = Create("services", "default", svc);
  if (!r.ok() && r.status().code() != absl::StatusCode::kAlreadyExists) return r.status();
  // The endpoints of the `kubernetes` Service: this API server.
  if (!advertise_ip.empty()) {
    Object es;
    auto* e = es.mutable_endpoint_slice();
    e->mutable_metadata()->set_name("kubernetes");
    e->mutable_metadata()->set_namespace_("default");
    (*e->mutable_metadata()->mutable_labels())["kubernetes.io/service-name"] = "kubernetes";
    e->set_address_type("IPv4");
    auto* ep = e->add_endpoints();
    ep->add_addresses(advertise_ip);
    ep->mutable_conditions()->set_ready(true);
    auto* ep_port = e->add_ports();
    ep_port->set_name("https");
    ep_port->set_port(port);
    ep_port->set_protocol("TCP");
    auto cur = Get("endpointslices", "default", "kubernetes");
    if (cur.ok()) {
      Object upd = es;
      upd.mutable_endpoint_slice()->mutable_metadata()->set_resource_version(Meta(*cur).resource_version());
      (void)Update("endpointslices", "default", upd, "");
    } else {
      (void)Create("endpointslices", "default", es);
    }
  }
  return absl::OkStatus();
}

}  // namespace skiff::apiserver
