#include "skiff/controllers/objects.h"

#include <cmath>
#include <cstdlib>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace skiff::objects {

namespace {

struct KindInfo {
  const char* kind;
  const char* resource;
  const char* api_version;
  const char* field;  // envelope field name
  bool namespaced;
};

const KindInfo kKinds[] = {
    {"Namespace", "namespaces", "v1", "namespace", false},
    {"Node", "nodes", "v1", "node", false},
    {"Pod", "pods", "v1", "pod", true},
    {"Service", "services", "v1", "service", true},
    {"EndpointSlice", "endpointslices", "discovery.k8s.io/v1", "endpoint_slice", true},
    {"Deployment", "deployments", "apps/v1", "deployment", true},
    {"ReplicaSet", "replicasets", "apps/v1", "replica_set", true},
    {"Lease", "leases", "coordination.k8s.io/v1", "lease", true},
    {"Event", "events", "v1", "event", true},
    {"ConfigMap", "configmaps", "v1", "config_map", true},
    {"Secret", "secrets", "v1", "secret", true},
    {"ServiceAccount", "serviceaccounts", "v1", "service_account", true},
    {"Role", "roles", "rbac.authorization.k8s.io/v1", "role", true},
    {"ClusterRole", "clusterroles", "rbac.authorization.k8s.io/v1", "cluster_role", false},
    {"RoleBinding", "rolebindings", "rbac.authorization.k8s.io/v1", "role_binding", true},
    {"ClusterRoleBinding", "clusterrolebindings", "rbac.authorization.k8s.io/v1", "cluster_role_binding", false},
};

const KindInfo* InfoByKind(const std::string& kind) {
  for (const auto& k : kKinds)
    if (kind == k.kind) return &k;
  return nullptr;
}
const KindInfo* InfoByResource(const std::string& res) {
  for (const auto& k : kKinds)
    if (res == k.resource) return &k;
  return nullptr;
}

const google::protobuf::FieldDescriptor* ActiveField(const Object& obj) {
  static const google::protobuf::OneofDescriptor* oneof = Object::descriptor()->FindOneofByName("kind");
  return obj.GetReflection()->GetOneofFieldDescriptor(obj, oneof);
}

}  // namespace

const google::protobuf::Message* Inner(const Object& obj) {
  const auto* f = ActiveField(obj);
  if (f == nullptr) return nullptr;
  return &obj.GetReflection()->GetMessage(obj, f);
}

google::protobuf::Message* MutableInner(Object* obj) {
  const auto* f = ActiveField(*obj);
  if (f == nullptr) return nullptr;
  return obj->GetReflection()->MutableMessage(obj, f);
}

const ObjectMeta& Meta(const Object& obj) {
  const auto* inner = Inner(obj);
  if (inner == nullptr) return ObjectMeta::default_instance();
  const auto* mf = inner->GetDescriptor()->FindFieldByName("metadata");
  return static_cast<const ObjectMeta&>(inner->GetReflection()->GetMessage(*inner, mf));
}

ObjectMeta* MutableMeta(Object* obj) {
  auto* inner = MutableInner(obj);
  if (inner == nullptr) return nullptr;
  const auto* mf = inner->GetDescriptor()->FindFieldByName("metadata");
  return static_cast<ObjectMeta*>(inner->GetReflection()->MutableMessage(inner, mf));
}

std::string KindOf(const Object& obj) {
  const auto* f = ActiveField(obj);
  if (f == nullptr) return "";
  for (const auto& k : kKinds)
    if (f->name() == k.field) return k.kind;
  return "";
}

std::string ResourceForKind(const std::string& kind) {
  const auto* k = InfoByKind(kind);
  return k ? k->resource : "";
}
std::string KindForResource(const std::string& resource) {
  const auto* k = InfoByResource(resource);
  return k ? k->kind : "";
}
std::string ApiVersionForKind(const std::string& kind) {
  const auto* k = InfoByKind(kind);
  return k ? k->api_version : "";
}
bool IsNamespaced(const std::string& resource) {
  const auto* k = InfoByResource(resource);
  return k ? k->namespaced : true;
}
int KindCaseForResource(const std::string& resource) {
  const auto* k = InfoByResource(resource);
  if (k == nullptr) return 0;
  const auto* f = Object::descriptor()->FindFieldByName(k->field);
  return f ? f->number() : 0;
}
const std::vector<std::string>& AllResources() {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> v;
    for (const auto& k : kKinds) v.push_back(k.resource);
    return v;
  }();
  return all;
}

std::string Key(const ObjectMeta& meta) { return Key(meta.namespace_(), meta.name()); }
std::string Key(const std::string& ns, const std::string& name) {
  return ns.empty() ? name : ns + "/" + name;
}
void SplitKey(const std::string& key, std::string* ns, std::string* name) {
  auto pos = key.find('/');
  if (pos == std::string::npos) {
    ns->clear();
    *name = key;
  } else {
    *ns = key.substr(0, pos);
    *name = key.substr(pos + 1);
  }
}

Object Wrap(const api::v1::Pod& m) { Object o; *o.mutable_pod() = m; return o; }
Object Wrap(const api::v1::Node& m) { Object o; *o.mutable_node() = m; return o; }
Object Wrap(const api::v1::Namespace& m) { Object o; *o.mutable_namespace_() = m; return o; }
Object Wrap(const api::v1::Service& m) { Object o; *o.mutable_service() = m; return o; }
Object Wrap(const api::v1::EndpointSlice& m) { Object o; *o.mutable_endpoint_slice() = m; return o; }
Object Wrap(const api::v1::Deployment& m) { Object o; *o.mutable_deployment() = m; return o; }
Object Wrap(const api::v1::ReplicaSet& m) { Object o; *o.mutable_replica_set() = m; return o; }
Object Wrap(const api::v1::Lease& m) { Object o; *o.mutable_lease() = m; return o; }
Object Wrap(const api::v1::Event& m) { Object o; *o.mutable_event() = m; return o; }
Object Wrap(const api::v1::ServiceAccount& m) { Object o; *o.mutable_service_account() = m; return o; }
Object Wrap(const api::v1::ConfigMap& m) { Object o; *o.mutable_config_map() = m; return o; }
Object Wrap(const api::v1::Secret& m) { Object o; *o.mutable_secret() = m; return o; }

// ---------------------------------------------------------------- selectors

bool MatchRequirement(const Requirement& r, const std::string* value) {
  using Op = Requirement::Op;
  switch (r.op) {
    case Op::kEquals:
    case Op::kIn:
      if (value == nullptr) return false;
      for (const auto& v : r.values)
        if (v == *value) return true;
      return false;
    case Op::kNotEquals:
    case Op::kNotIn:
      if (value == nullptr) return true;
      for (const auto& v : r.values)
        if (v == *value) return false;
      return true;
    case Op::kExists:
      return value != nullptr;
    case Op::kDoesNotExist:
      return value == nullptr;
    case Op::kGt:
    case Op::kLt: {
      if (value == nullptr || r.values.size() != 1) return false;
      int64_t have, want;
      if (!absl::SimpleAtoi(*value, &have) || !absl::SimpleAtoi(r.values[0], &want)) return false;
      return r.op == Op::kGt ? have > want : have < want;
    }
  }
  return false;
}

namespace {

// Splits on commas that are not inside parentheses.
std::vector<std::string> SplitTopLevel(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '(') depth++;
    if (c == ')') depth--;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

std::string Trim(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

}  // namespace

absl::StatusOr<Selector> Selector::Parse(const std::string& text) {
  Selector sel;
  if (Trim(text).empty()) return sel;
  for (const auto& raw : SplitTopLevel(text)) {
    std::string part = Trim(raw);
    if (part.empty()) return absl::FailedPreconditionError("invalid label selector \"" + text + "\"");
    Requirement r;
    size_t p;
    if (part[0] == '!') {
      r.key = Trim(part.substr(1));
      r.op = Requirement::Op::kDoesNotExist;
    } else if ((p = part.find("!=")) != std::string::npos) {
      r.key = Trim(part.substr(0, p));
      r.op = Requirement::Op::kNotEquals;
      r.values.push_back(Trim(part.substr(p + 2)));
    } else if ((p = part.find("==")) != std::string::npos) {
      r.key = Trim(part.substr(0, p));
      r.op = Requirement::Op::kEquals;
      r.values.push_back(Trim(part.substr(p + 2)));
    } else if ((p = part.find('=')) != std::string::npos) {
      r.key = Trim(part.substr(0, p));
      r.op = Requirement::Op::kEquals;
      r.values.push_back(Trim(part.substr(p + 1)));
    } else if ((p = part.find('(')) != std::string::npos) {
      auto close = part.rfind(')');
      if (close == std::string::npos || close < p)
        return absl::FailedPreconditionError("invalid label selector \"" + text + "\"");
      std::vector<std::string> head = absl::StrSplit(Trim(part.substr(0, p)), ' ', absl::SkipEmpty());
      if (head.size() != 2) return absl::FailedPreconditionError("invalid label selector \"" + text + "\"");
      r.key = head[0];
      if (head[1] == "in") {
        r.op = Requirement::Op::kIn;
      } else if (head[1] == "notin") {
        r.op = Requirement::Op::kNotIn;
      } else {
        return absl::FailedPreconditionError("invalid label selector \"" + text + "\"");
      }
      for (const auto& v : absl::StrSplit(part.substr(p + 1, close - p - 1), ',')) {
        std::string t = Trim(std::string(v));
        if (!t.empty()) r.values.push_back(t);
      }
    } else {
      r.key = part;
      r.op = Requirement::Op::kExists;
    }
    if (r.key.empty() || r.key.find_first_of(" \t()") != std::string::npos)
      return absl::FailedPreconditionError("invalid label selector \"" + text + "\"");
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

absl::StatusOr<Selector> Selector::FromProto(const api::v1::LabelSelector& proto) {
  Selector sel;
  std::map<std::string, std::string> ordered(proto.match_labels().begin(), proto.match_labels().end());
  for (const auto& [k, v] : ordered) sel.reqs_.push_back({k, Requirement::Op::kEquals, {v}});
  for (const auto& e : proto.match_expressions()) {
    Requirement r;
    r.key = e.key();
    if (e.operator_() == "In") {
      r.op = Requirement::Op::kIn;
    } else if (e.operator_() == "NotIn") {
      r.op = Requirement::Op::kNotIn;
    } else if (e.operator_() == "Exists") {
      r.op = Requirement::Op::kExists;
    } else if (e.operator_() == "DoesNotExist") {
      r.op = Requirement::Op::kDoesNotExist;
    } else {
      return absl::InvalidArgumentError("invalid label selector operator \"" + e.operator_() + "\"");
    }
    r.values.assign(e.values().begin(), e.values().end());
    sel.reqs_.push_back(std::move(r));
  }
  return sel;
}

Selector Selector::FromMap(const google::protobuf::Map<std::string, std::string>& labels) {
  Selector sel;
  for (const auto& [k, v] : labels) sel.reqs_.push_back({k, Requirement::Op::kEquals, {v}});
  return sel;
}

bool Selector::Matches(const google::protobuf::Map<std::string, std::string>& labels) const {
  for (const auto& r : reqs_) {
    auto it = labels.find(r.key);
    if (!MatchRequirement(r, it == labels.end() ? nullptr : &it->second)) return false;
  }
  return true;
}

bool Selector::Matches(const std::map<std::string, std::string>& labels) const {
  for (const auto& r : reqs_) {
    auto it = labels.find(r.key);
    if (!MatchRequirement(r, it == labels.end() ? nullptr : &it->second)) return false;
  }
  return true;
}

absl::StatusOr<std::vector<FieldRequirement>> ParseFieldSelector(const std::string& text) {
  std::vector<FieldRequirement> out;
  if (Trim(text).empty()) return out;
  for (const auto& raw : absl::StrSplit(text, ',')) {
    std::string part = Trim(std::string(raw));
    FieldRequirement r;
    size_t p;
    if ((p = part.find("!=")) != std::string::npos) {
      r.field = Trim(part.substr(0, p));
      r.equals = false;
      r.value = Trim(part.substr(p + 2));
    } else if ((p = part.find("==")) != std::string::npos) {
      r.field = Trim(part.substr(0, p));
      r.value = Trim(part.substr(p + 2));
    } else if ((p = part.find('=')) != std::string::npos) {
      r.field = Trim(part.substr(0, p));
      r.value = Trim(part.substr(p + 1));
    } else {
      return absl::FailedPreconditionError("invalid field selector \"" + text + "\"");
    }
    out.push_back(std::move(r));
  }
  return out;
}

bool MatchFields(const Object& obj, const std::vector<FieldRequirement>& reqs) {
  for (const auto& r : reqs) {
    std::string have;
    const auto& meta = Meta(obj);
    if (r.field == "metadata.name") {
      have = meta.name();
    } else if (r.field == "metadata.namespace") {
      have = meta.namespace_();
    } else if (r.field == "spec.nodeName" && obj.has_pod()) {
      have = obj.pod().spec().node_name();
    } else if (r.field == "status.phase" && obj.has_pod()) {
      have = obj.pod().status().phase();
    } else if (r.field == "status.phase" && obj.has_namespace_()) {
      have = obj.namespace_().status().phase();
    } else if (r.field == "spec.unschedulable" && obj.has_node()) {
      have = obj.node().spec().unschedulable() ? "true" : "false";
    } else if (r.field == "involvedObject.name" && obj.has_event()) {
      have = obj.event().involved_object().name();
    } else if (r.field == "involvedObject.uid" && obj.has_event()) {
      have = obj.event().involved_object().uid();
    } else if (r.field == "involvedObject.kind" && obj.has_event()) {
      have = obj.event().involved_object().kind();
    } else if (r.field == "spec.schedulerName" && obj.has_pod()) {
      have = obj.pod().spec().scheduler_name();
    }
    if ((have == r.value) != r.equals) return false;
  }
  return true;
}

// ---------------------------------------------------------------- quantities

namespace {

absl::StatusOr<long double> ParseQuantity(const std::string& q) {
  std::string s = Trim(q);
  if (s.empty()) return absl::InvalidArgumentError("empty quantity");
  struct Suffix {
    const char* text;
    long double mult;
  };
  static const Suffix kSuffixes[] = {
      {"Ki", 1024.0L}, {"Mi", 1048576.0L}, {"Gi", 1073741824.0L}, {"Ti", 1099511627776.0L},
      {"Pi", 1125899906842624.0L}, {"Ei", 1152921504606846976.0L}, {"n", 1e-9L}, {"u", 1e-6L},
      {"m", 1e-3L}, {"k", 1e3L}, {"M", 1e6L}, {"G", 1e9L}, {"T", 1e12L}, {"P", 1e15L}, {"E", 1e18L},
  };
  long double mult = 1;
  std::string num = s;
  for (const auto& suf : kSuffixes) {
    std::string t = suf.text;
    if (s.size() > t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0) {
      // "1e3" ends in a digit, so "E" as suffix only when the previous char is a digit.
      num = s.substr(0, s.size() - t.size());
      mult = suf.mult;
      break;
    }
  }
  char* end = nullptr;
  long double v = std::strtold(num.c_str(), &end);
  if (end == num.c_str() || *end != '\0' || !std::isfinite(static_cast<double>(v)))
    return absl::InvalidArgumentError("invalid quantity \"" + q + "\"");
  return v * mult;
}

}  // namespace

absl::StatusOr<int64_t> ParseMilli(const std::string& quantity) {
  auto v = ParseQuantity(quantity);
  if (!v.ok()) return v.status();
  return static_cast<int64_t>(std::ceil(static_cast<double>(*v * 1000.0L) - 1e-9));
}

absl::StatusOr<int64_t> ParseValue(const std::string& quantity) {
  auto v = ParseQuantity(quantity);
  if (!v.ok()) return v.status();
  return static_cast<int64_t>(std::ceil(static_cast<double>(*v) - 1e-9));
}

std::string FormatMilliCpu(int64_t milli) {
  if (milli % 1000 == 0) return std::to_string(milli / 1000);
  return std::to_string(milli) + "m";
}

// ---------------------------------------------------------------- time

std::string FormatTime(absl::Time t) { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone()); }
std::string FormatMicroTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}
std::string Now() { return objects::FormatTime(absl::Now()); }
std::string NowMicro() { return objects::FormatMicroTime(absl::Now()); }
absl::Time ParseTime(const std::string& s) {
  absl::Time t;
  std::string err;
  if (s.empty()) return absl::InfinitePast();
  if (absl::ParseTime(absl::RFC3339_full, s, &t, &err)) return t;
  return absl::InfinitePast();
}

// ---------------------------------------------------------------- owners and conditions

const api::v1::OwnerReference* ControllerOf(const ObjectMeta& meta) {
  for (const auto& ref : meta.owner_references())
    if (ref.has_controller() && ref.controller()) return &ref;
  return nullptr;
}

api::v1::OwnerReference MakeControllerRef(const std::string& api_version, const std::string& kind,
                                          const ObjectMeta& owner) {
  api::v1::OwnerReference ref;
  ref.set_api_version(api_version);
  ref.set_kind(kind);
  ref.set_name(owner.name());
  ref.set_uid(owner.uid());
  ref.set_controller(true);
  ref.set_block_owner_deletion(true);
  return ref;
}

const api::v1::Condition* FindCondition(const google::protobuf::RepeatedPtrField<api::v1::Condition>& conds,
                                        const std::string& type) {
  for (const auto& c : conds)
    if (c.type() == type) return &c;
  return nullptr;
}

bool SetCondition(google::protobuf::RepeatedPtrField<api::v1::Condition>* conds, const std::string& type,
                  const std::string& status, const std::string& reason, const std::string& message) {
  for (auto& c : *conds) {
    if (c.type() != type) continue;
    if (c.status() == status && c.reason() == reason && c.message() == message) return false;
    if (c.status() != status) c.set_last_transition_time(Now());
    c.set_status(status);
    c.set_reason(reason);
    c.set_message(message);
    return true;
  }
  auto* c = conds->Add();
  c->set_type(type);
  c->set_status(status);
  c->set_reason(reason);
  c->set_message(message);
  c->set_last_transition_time(Now());
  return true;
}

bool IsPodReady(const api::v1::Pod& pod) {
  const auto* c = FindCondition(pod.status().conditions(), "Ready");
  return c != nullptr && c->status() == "True";
}
bool IsPodTerminating(const api::v1::Pod& pod) { return !pod.metadata().deletion_timestamp().empty(); }
bool IsPodActive(const api::v1::Pod& pod) {
  return !IsPodTerminating(pod) && pod.status().phase() != "Succeeded" && pod.status().phase() != "Failed";
}
bool IsPodAvailable(const api::v1::Pod& pod, int32_t min_ready_seconds, absl::Time now) {
  const auto* c = FindCondition(pod.status().conditions(), "Ready");
  if (c == nullptr || c->status() != "True") return false;
  if (min_ready_seconds <= 0) return true;
  absl::Time since = ParseTime(c->last_transition_time());
  return since + absl::Seconds(min_ready_seconds) <= now;
}

std::string RandomSuffix(int n) {
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::string s;
  for (int i = 0; i < n; i++) s.push_back(kAlphabet[rng() % (sizeof(kAlphabet) - 1)]);
  return s;
}

std::string SafeHash(const std::string& data) {
  uint32_t h = 2166136261u;
  for (unsigned char c : data) {
    h ^= c;
    h *= 16777619u;
  }
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string s;
  do {
    s.push_back(kAlphabet[h % 27]);
    h /= 27;
  } while (h != 0);
  return s;
}

}  // namespace skiff::objects
