#include "skiff/manifest/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "skiff/common/status.h"

namespace skiff::manifest {

namespace pb = ::google::protobuf;
using FD = pb::FieldDescriptor;

// ------------------------------------------------------------------ kinds

const std::vector<KindInfo>& AllKinds() {
  static const std::vector<KindInfo> kKinds = {
      {"v1", "", "Namespace", "namespaces", "namespace", {"ns"}, false, 1},
      {"v1", "", "Node", "nodes", "node", {"no"}, false, 2},
      {"v1", "", "Pod", "pods", "pod", {"po"}, true, 3},
      {"v1", "", "Service", "services", "service", {"svc"}, true, 4},
      {"discovery.k8s.io/v1", "discovery.k8s.io", "EndpointSlice", "endpointslices", "endpointslice", {}, true, 5},
      {"apps/v1", "apps", "Deployment", "deployments", "deployment", {"deploy"}, true, 6},
      {"apps/v1", "apps", "ReplicaSet", "replicasets", "replicaset", {"rs"}, true, 7},
      {"coordination.k8s.io/v1", "coordination.k8s.io", "Lease", "leases", "lease", {}, true, 8},
      {"v1", "", "Event", "events", "event", {"ev"}, true, 9},
      {"v1", "", "ConfigMap", "configmaps", "configmap", {"cm"}, true, 10},
      {"v1", "", "Secret", "secrets", "secret", {}, true, 11},
      {"v1", "", "ServiceAccount", "serviceaccounts", "serviceaccount", {"sa"}, true, 12},
      {"rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io", "Role", "roles", "role", {}, true, 13},
      {"rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io", "ClusterRole", "clusterroles", "clusterrole", {},
       false, 14},
      {"rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io", "RoleBinding", "rolebindings", "rolebinding", {},
       true, 15},
      {"rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings",
       "clusterrolebinding", {}, false, 16},
  };
  return kKinds;
}

const KindInfo* FindKind(std::string_view api_version, std::string_view kind) {
  for (const auto& k : AllKinds())
    if (k.kind == kind && k.api_version == api_version) return &k;
  return nullptr;
}

const KindInfo* FindResource(std::string_view name) {
  std::string n(name);
  std::string group;
  if (size_t dot = n.find('.'); dot != std::string::npos) {
    group = n.substr(dot + 1);
    n = n.substr(0, dot);
    if (size_t slash = group.find('/'); slash != std::string::npos) group = group.substr(0, slash);
  }
  std::string lower = n;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const auto& k : AllKinds()) {
    if (!group.empty() && k.group != group) continue;
    std::string kind_lower = k.kind;
    std::transform(kind_lower.begin(), kind_lower.end(), kind_lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (lower == k.resource || lower == k.singular || lower == kind_lower ||
        std::find(k.short_names.begin(), k.short_names.end(), lower) != k.short_names.end())
      return &k;
  }
  return nullptr;
}

namespace {
const pb::OneofDescriptor* KindOneof() { return Object::descriptor()->FindOneofByName("kind"); }
}  // namespace

const KindInfo* KindOf(const Object& obj) {
  const FD* f = obj.GetReflection()->GetOneofFieldDescriptor(obj, KindOneof());
  if (f == nullptr) return nullptr;
  for (const auto& k : AllKinds())
    if (k.oneof_field == f->number()) return &k;
  return nullptr;
}

const pb::Message* Inner(const Object& obj) {
  const FD* f = obj.GetReflection()->GetOneofFieldDescriptor(obj, KindOneof());
  if (f == nullptr) return nullptr;
  return &obj.GetReflection()->GetMessage(obj, f);
}

pb::Message* MutableInner(Object* obj) {
  const FD* f = obj->GetReflection()->GetOneofFieldDescriptor(*obj, KindOneof());
  if (f == nullptr) return nullptr;
  return obj->GetReflection()->MutableMessage(obj, f);
}

Object NewObject(const KindInfo& info) {
  Object obj;
  const FD* f = Object::descriptor()->FindFieldByNumber(info.oneof_field);
  pb::Message* inner = obj.GetReflection()->MutableMessage(&obj, f);
  const pb::Reflection* r = inner->GetReflection();
  r->SetString(inner, inner->GetDescriptor()->FindFieldByName("api_version"), info.api_version);
  r->SetString(inner, inner->GetDescriptor()->FindFieldByName("kind"), info.kind);
  return obj;
}

const ObjectMeta& Meta(const Object& obj) {
  const pb::Message* inner = Inner(obj);
  if (inner == nullptr) return ObjectMeta::default_instance();
  const FD* f = inner->GetDescriptor()->FindFieldByName("metadata");
  return static_cast<const ObjectMeta&>(inner->GetReflection()->GetMessage(*inner, f));
}

ObjectMeta* MutableMeta(Object* obj) {
  pb::Message* inner = MutableInner(obj);
  if (inner == nullptr) return nullptr;
  const FD* f = inner->GetDescriptor()->FindFieldByName("metadata");
  return static_cast<ObjectMeta*>(inner->GetReflection()->MutableMessage(inner, f));
}

// ------------------------------------------------------------------ base64

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += kB64[n & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t n = uint8_t(in[i]) << 16;
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

absl::StatusOr<std::string> Base64Decode(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '=') {
      ++pad;
      continue;
    }
    const char* p = std::strchr(kB64, c);
    if (c == '\0' || p == nullptr || pad > 0) {
      return absl::InvalidArgumentError(absl::StrCat("illegal base64 data at input byte ", i));
    }
    acc = (acc << 6) | static_cast<uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (in.size() % 4 != 0 || pad > 2) {
    return absl::InvalidArgumentError(absl::StrCat("illegal base64 data at input byte ", in.size()));
  }
  return out;
}

// ------------------------------------------------------------------ parse

namespace {

bool IsNullWord(const std::string& s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }

int BoolWord(const std::string& s) {
  static const std::set<std::string> kTrue = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
  static const std::set<std::string> kFalse = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
  if (kTrue.count(s)) return 1;
  if (kFalse.count(s)) return 0;
  return -1;
}

Value PlainScalar(const std::string& s) {
  if (IsNullWord(s)) return Value::Null();
  if (int b = BoolWord(s); b >= 0) {
    Value v = Value::Bool(b == 1);
    v.set_text(s);
    return v;
  }
  static const std::regex kDec(R"(^[-+]?(0|[1-9][0-9_]*)$)");
  static const std::regex kOct(R"(^[-+]?0o?[0-7_]+$)");
  static const std::regex kHex(R"(^[-+]?0x[0-9a-fA-F_]+$)");
  static const std::regex kFloat(R"(^[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?$|^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$)");
  std::string digits;
  for (char c : s)
    if (c != '_') digits += c;
  auto as_int = [&](int base, size_t skip) -> std::optional<Value> {
    std::string d = digits;
    bool neg = false;
    if (!d.empty() && (d[0] == '-' || d[0] == '+')) {
      neg = d[0] == '-';
      d = d.substr(1);
    }
    d = d.substr(skip);
    errno = 0;
    char* end = nullptr;
    long long n = std::strtoll(d.c_str(), &end, base);
    if (errno != 0 || end == d.c_str() || *end != '\0') return std::nullopt;
    Value v = Value::Int(neg ? -n : n);
    v.set_text(s);
    return v;
  };
  std::optional<Value> iv;
  if (std::regex_match(s, kDec)) {
    iv = as_int(10, 0);
  } else if (std::regex_match(s, kHex)) {
    iv = as_int(16, 2);
  } else if (std::regex_match(s, kOct)) {
    size_t start = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    iv = as_int(8, s.compare(start, 2, "0o") == 0 ? 2 : 1);
  } else if (std::regex_match(s, kFloat) && s != "." && s != "-." && s != "+.") {
    Value v = Value::Double(std::strtod(digits.c_str(), nullptr));
    v.set_text(s);
    return v;
  }
  if (iv) return *iv;
  return Value::String(s);
}

Value FromNode(const YAML::Node& n) {
  Value v;
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      break;
    case YAML::NodeType::Scalar:
      if (n.Tag() == "?") {
        v = PlainScalar(n.Scalar());
      } else {
        v = Value::String(n.Scalar());
        v.set_quoted(true);
      }
      break;
    case YAML::NodeType::Sequence:
      v = Value::List();
      for (const auto& item : n) v.Append(FromNode(item));
      break;
    case YAML::NodeType::Map:
      v = Value::Map();
      for (const auto& kv : n) {
        std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
        v.Set(key, FromNode(kv.second));
      }
      break;
  }
  v.set_line(n.Mark().line >= 0 ? n.Mark().line + 1 : 0);
  return v;
}

std::string SourceQuoted(std::string_view source) { return absl::StrCat("\"", std::string(source), "\""); }

}  // namespace

absl::StatusOr<std::vector<Value>> ParseValues(std::string_view text, std::string_view source) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("error parsing ", std::string(source), ": yaml: line ",
                                                   e.mark.line + 1, ": ", e.msg));
  }
  std::vector<Value> out;
  for (const auto& d : docs) {
    Value v = FromNode(d);
    if (v.is_null()) continue;  // empty document ("---" at the end)
    if (!v.is_map()) {
      return absl::InvalidArgumentError(absl::StrCat("error validating ", SourceQuoted(source),
                                                     ": error validating data: line ", v.line(),
                                                     ": a document must be a mapping"));
    }
    const Value* kind = v.Find("kind");
    const Value* items = v.Find("items");
    if (kind != nullptr && kind->is_string() && kind->text() == "List" && items != nullptr) {
      if (!items->is_list()) {
        return absl::InvalidArgumentError(absl::StrCat("error validating ", SourceQuoted(source),
                                                       ": error validating data: items: expected a list (line ",
                                                       items->line(), ")"));
      }
      for (const auto& item : items->items()) out.push_back(item);
      continue;
    }
    out.push_back(std::move(v));
  }
  return out;
}

absl::StatusOr<Value> ParseValue(std::string_view text, std::string_view source) {
  try {
    return FromNode(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("error parsing ", std::string(source), ": yaml: line ",
                                                   e.mark.line + 1, ": ", e.msg));
  }
}

// ------------------------------------------------------------------ decode

namespace {

bool IsIntOrString(const FD* f) {
  static const std::set<std::string> kFields = {
      "skiff.api.v1.HTTPGetAction.port", "skiff.api.v1.TCPSocketAction.port", "skiff.api.v1.ServicePort.target_port",
      "skiff.api.v1.RollingUpdateDeployment.max_unavailable", "skiff.api.v1.RollingUpdateDeployment.max_surge"};
  return kFields.count(f->full_name()) > 0;
}

const char* TypeName(const Value& v) {
  switch (v.type()) {
    case Value::Type::kNull: return "null";
    case Value::Type::kBool: return "boolean";
    case Value::Type::kInt: return "integer";
    case Value::Type::kDouble: return "number";
    case Value::Type::kString: return "string";
    case Value::Type::kList: return "array";
    case Value::Type::kMap: return "object";
  }
  return "?";
}

const FD* FieldByJsonName(const pb::Descriptor* d, const std::string& key) {
  for (int i = 0; i < d->field_count(); ++i)
    if (d->field(i)->json_name() == key) return d->field(i);
  return nullptr;
}

class Decoder {
 public:
  std::vector<std::string> errors;

  void Error(const std::string& path, const Value& v, const std::string& what) {
    errors.push_back(absl::StrCat(what, " \"", path, "\"", v.line() ? absl::StrCat(" (line ", v.line(), ")") : ""));
  }
  void TypeError(const std::string& path, const Value& v, const char* expected) {
    errors.push_back(absl::StrCat("invalid type for field \"", path, "\": expected ", expected, ", got ", TypeName(v),
                                  v.is_scalar() && !v.is_null() ? absl::StrCat(" \"", v.text(), "\"") : "",
                                  v.line() ? absl::StrCat(" (line ", v.line(), ")") : ""));
  }

  // A scalar value for field `f` (not repeated) into `msg`, or into a repeated
  // field when `add`.
  void Scalar(const Value& v, pb::Message* msg, const FD* f, const std::string& path, bool add) {
    const pb::Reflection* r = msg->GetReflection();
    switch (f->cpp_type()) {
      case FD::CPPTYPE_STRING: {
        std::string s;
        if (f->type() == FD::TYPE_BYTES) {
          if (!v.is_string()) return TypeError(path, v, "a base64 string");
          auto decoded = Base64Decode(v.text());
          if (!decoded.ok()) {
            errors.push_back(absl::StrCat("invalid value for field \"", path, "\": ", decoded.status().message(),
                                          v.line() ? absl::StrCat(" (line ", v.line(), ")") : ""));
            return;
          }
          s = *decoded;
        } else if (IsIntOrString(f)) {
          if (v.type() == Value::Type::kInt) {
            s = std::to_string(v.int_value());
          } else if (v.is_string()) {
            s = v.text();
          } else {
            return TypeError(path, v, "an integer or a string");
          }
        } else {
          if (!v.is_scalar()) return TypeError(path, v, "string");
          s = v.text();
        }
        if (add) {
          r->AddString(msg, f, s);
        } else {
          r->SetString(msg, f, s);
        }
        return;
      }
      case FD::CPPTYPE_BOOL: {
        if (v.type() != Value::Type::kBool) return TypeError(path, v, "boolean");
        if (add) {
          r->AddBool(msg, f, v.bool_value());
        } else {
          r->SetBool(msg, f, v.bool_value());
        }
        return;
      }
      case FD::CPPTYPE_INT32:
      case FD::CPPTYPE_INT64:
      case FD::CPPTYPE_UINT32:
      case FD::CPPTYPE_UINT64: {
        int64_t n;
        if (v.type() == Value::Type::kInt) {
          n = v.int_value();
        } else if (v.type() == Value::Type::kDouble && v.double_value() == static_cast<double>(
                                                                               static_cast<int64_t>(v.double_value()))) {
          n = static_cast<int64_t>(v.double_value());
        } else {
          return TypeError(path, v, "integer");
        }
        bool is32 = f->cpp_type() == FD::CPPTYPE_INT32 || f->cpp_type() == FD::CPPTYPE_UINT32;
        bool is_unsigned = f->cpp_type() == FD::CPPTYPE_UINT32 || f->cpp_type() == FD::CPPTYPE_UINT64;
        if ((is32 && (n > INT32_MAX || n < INT32_MIN)) || (is_unsigned && n < 0)) {
          errors.push_back(absl::StrCat("invalid value for field \"", path, "\": ", n, " is out of range",
                                        v.line() ? absl::StrCat(" (line ", v.line(), ")") : ""));
          return;
        }
        switch (f->cpp_type()) {
          case FD::CPPTYPE_INT32:
            add ? r->AddInt32(msg, f, static_cast<int32_t>(n)) : r->SetInt32(msg, f, static_cast<int32_t>(n));
            break;
          case FD::CPPTYPE_INT64: add ? r->AddInt64(msg, f, n) : r->SetInt64(msg, f, n); break;
          case FD::CPPTYPE_UINT32:
            add ? r->AddUInt32(msg, f, static_cast<uint32_t>(n)) : r->SetUInt32(msg, f, static_cast<uint32_t>(n));
            break;
          default:
            add ? r->AddUInt64(msg, f, static_cast<uint64_t>(n)) : r->SetUInt64(msg, f, static_cast<uint64_t>(n));
        }
        return;
      }
      case FD::CPPTYPE_DOUBLE:
      case FD::CPPTYPE_FLOAT: {
        double d;
        if (v.type() == Value::Type::kInt) {
          d = static_cast<double>(v.int_value());
        } else if (v.type() == Value::Type::kDouble) {
          d = v.double_value();
        } else {
          return TypeError(path, v, "number");
        }
        if (f->cpp_type() == FD::CPPTYPE_DOUBLE) {
          add ? r->AddDouble(msg, f, d) : r->SetDouble(msg, f, d);
        } else {
          add ? r->AddFloat(msg, f, static_cast<float>(d)) : r->SetFloat(msg, f, static_cast<float>(d));
        }
        return;
      }
      case FD::CPPTYPE_ENUM: {
        if (!v.is_scalar()) return TypeError(path, v, "string");
        const pb::EnumValueDescriptor* ev = f->enum_type()->FindValueByName(v.text());
        if (ev == nullptr) {
          errors.push_back(absl::StrCat("invalid value for field \"", path, "\": unsupported value \"", v.text(), "\"",
                                        v.line() ? absl::StrCat(" (line ", v.line(), ")") : ""));
          return;
        }
        add ? r->AddEnum(msg, f, ev) : r->SetEnum(msg, f, ev);
        return;
      }
      case FD::CPPTYPE_MESSAGE: break;
    }
  }

  void Message(const Value& v, pb::Message* msg, const std::string& path) {
    if (!v.is_map()) return TypeError(path.empty() ? "." : path, v, "object");
    const pb::Descriptor* d = msg->GetDescriptor();
    const pb::Reflection* r = msg->GetReflection();
    for (const auto& [key, child] : v.entries()) {
      std::string child_path = path.empty() ? key : absl::StrCat(path, ".", key);
      const FD* f = FieldByJsonName(d, key);
      if (f == nullptr) {
        Error(child_path, child, "unknown field");
        continue;
      }
      if (child.is_null()) continue;  // `field:` / `field: null` = unset, as in Kubernetes
      if (f->is_map()) {
        if (!child.is_map()) {
          TypeError(child_path, child, "object");
          continue;
        }
        const FD* value_field = f->message_type()->map_value();
        for (const auto& [k, mv] : child.entries()) {
          std::string entry_path = absl::StrCat(child_path, ".", k);
          if (mv.is_null()) continue;
          pb::Message* entry = r->AddMessage(msg, f);
          entry->GetReflection()->SetString(entry, f->message_type()->map_key(), k);
          if (value_field->cpp_type() == FD::CPPTYPE_MESSAGE) {
            Message(mv, entry->GetReflection()->MutableMessage(entry, value_field), entry_path);
          } else {
            Scalar(mv, entry, value_field, entry_path, false);
          }
        }
      } else if (f->is_repeated()) {
        if (!child.is_list()) {
          TypeError(child_path, child, "array");
          continue;
        }
        for (size_t i = 0; i < child.items().size(); ++i) {
          const Value& item = child.items()[i];
          std::string item_path = absl::StrCat(child_path, "[", i, "]");
          if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
            Message(item, r->AddMessage(msg, f), item_path);
          } else {
            Scalar(item, msg, f, item_path, true);
          }
        }
      } else if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
        Message(child, r->MutableMessage(msg, f), child_path);
      } else {
        Scalar(child, msg, f, child_path, false);
      }
    }
  }
};

absl::Status JoinErrors(const std::vector<std::string>& errors, std::string_view prefix) {
  if (errors.empty()) return absl::OkStatus();
  std::string body = errors.size() == 1 ? errors[0] : absl::StrCat("[", absl::StrJoin(errors, ", "), "]");
  return absl::InvalidArgumentError(absl::StrCat(std::string(prefix), body));
}

}  // namespace

absl::Status DecodeMessage(const Value& v, pb::Message* msg, std::string_view path) {
  Decoder dec;
  dec.Message(v, msg, std::string(path));
  return JoinErrors(dec.errors, "");
}

absl::StatusOr<Object> DecodeObject(const Value& v, std::string_view source) {
  std::string validating = absl::StrCat("error validating ", SourceQuoted(source), ": error validating data: ");
  if (!v.is_map()) return absl::InvalidArgumentError(absl::StrCat(validating, "a document must be a mapping"));
  const Value* api_version = v.Find("apiVersion");
  const Value* kind = v.Find("kind");
  if (kind == nullptr || !kind->is_string() || kind->text().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(validating, "kind not set"));
  }
  if (api_version == nullptr || !api_version->is_string() || api_version->text().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(validating, "apiVersion not set"));
  }
  const KindInfo* info = FindKind(api_version->text(), kind->text());
  if (info == nullptr) {
    std::string name, ns;
    if (const Value* n = v.FindPath("metadata.name"); n != nullptr && n->is_scalar()) name = n->text();
    if (const Value* n = v.FindPath("metadata.namespace"); n != nullptr && n->is_scalar()) ns = n->text();
    return absl::InvalidArgumentError(absl::StrCat("resource mapping not found for name: \"", name,
                                                   "\" namespace: \"", ns, "\" from ", SourceQuoted(source),
                                                   ": no matches for kind \"", kind->text(), "\" in version \"",
                                                   api_version->text(), "\"\nensure CRDs are installed first"));
  }
  Object obj = NewObject(*info);
  Decoder dec;
  dec.Message(v, MutableInner(&obj), "");
  RETURN_IF_ERROR(JoinErrors(dec.errors, validating));
  if (obj.has_secret() && !obj.secret().string_data().empty()) {
    // Kubernetes merges stringData into data on write; do it here so every
    // server sees the same thing.
    auto* s = obj.mutable_secret();
    for (const auto& [k, val] : s->string_data()) (*s->mutable_data())[k] = val;
    s->clear_string_data();
  }
  return obj;
}

absl::StatusOr<std::vector<Document>> DecodeManifests(std::string_view text, std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Value> values, ParseValues(text, source));
  std::vector<Document> docs;
  for (auto& v : values) {
    ASSIGN_OR_RETURN(Object obj, DecodeObject(v, source));
    Document d;
    d.source = std::string(source);
    d.line = v.line();
    d.object = std::move(obj);
    d.value = std::move(v);
    docs.push_back(std::move(d));
  }
  return docs;
}

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("the path \"", path, "\" cannot be read: ", std::strerror(errno)));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::Status CollectDir(const std::filesystem::path& dir, bool recursive, std::vector<std::string>* out) {
  std::error_code ec;
  std::vector<std::filesystem::directory_entry> entries;
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    entries.push_back(*it);
  }
  if (ec) return absl::NotFoundError(absl::StrCat("error reading ", dir.string(), ": ", ec.message()));
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
  for (const auto& e : entries) {
    if (e.is_directory()) {
      if (recursive) RETURN_IF_ERROR(CollectDir(e.path(), recursive, out));
      continue;
    }
    std::string ext = e.path().extension().string();
    if (ext == ".yaml" || ext == ".yml" || ext == ".json") out->push_back(e.path().string());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Document>> ReadManifests(const std::vector<std::string>& paths, bool recursive,
                                                    std::istream& in) {
  std::vector<Document> all;
  for (const auto& p : paths) {
    std::vector<std::pair<std::string, std::string>> sources;  // name, text
    if (p == "-") {
      std::stringstream ss;
      ss << in.rdbuf();
      sources.emplace_back("STDIN", ss.str());
    } else {
      std::error_code ec;
      auto st = std::filesystem::status(p, ec);
      if (ec || !std::filesystem::exists(st)) {
        return absl::NotFoundError(absl::StrCat("the path \"", p, "\" does not exist"));
      }
      std::vector<std::string> files;
      if (std::filesystem::is_directory(st)) {
        RETURN_IF_ERROR(CollectDir(p, recursive, &files));
      } else {
        files.push_back(p);
      }
      for (const auto& f : files) {
        ASSIGN_OR_RETURN(std::string text, ReadFile(f));
        sources.emplace_back(f, std::move(text));
      }
    }
    for (const auto& [name, text] : sources) {
      ASSIGN_OR_RETURN(std::vector<Document> docs, DecodeManifests(text, name));
      for (auto& d : docs) all.push_back(std::move(d));
    }
  }
  return all;
}

absl::Status RequireName(const Document& doc) {
  const ObjectMeta& m = Meta(doc.object);
  if (!m.name().empty()) return absl::OkStatus();
  const KindInfo* info = KindOf(doc.object);
  return absl::InvalidArgumentError(absl::StrCat("error validating ", SourceQuoted(doc.source), ": ",
                                                 info ? info->kind : "object",
                                                 ": metadata.name: Required value: name is required"));
}

// ------------------------------------------------------------------ encode

namespace {

bool AlwaysEmit(const FD* f) {
  static const std::set<std::string> kFields = {
      "skiff.api.v1.ContainerStatus.ready", "skiff.api.v1.ContainerStatus.restart_count",
      "skiff.api.v1.ContainerStatus.name", "skiff.api.v1.ContainerStatus.image",
      "skiff.api.v1.ContainerStatus.image_id"};
  return kFields.count(f->full_name()) > 0;
}

Value EncodeScalar(const pb::Message& msg, const FD* f, int index) {
  const pb::Reflection* r = msg.GetReflection();
  bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(msg, f, index) : r->GetString(msg, f);
      if (f->type() == FD::TYPE_BYTES) return Value::String(Base64Encode(s));
      if (IsIntOrString(f) && !s.empty() && s.size() < 10 &&
          std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) {
        return Value::Int(std::stoll(s));
      }
      return Value::String(std::move(s));
    }
    case FD::CPPTYPE_BOOL: return Value::Bool(rep ? r->GetRepeatedBool(msg, f, index) : r->GetBool(msg, f));
    case FD::CPPTYPE_INT32: return Value::Int(rep ? r->GetRepeatedInt32(msg, f, index) : r->GetInt32(msg, f));
    case FD::CPPTYPE_INT64: return Value::Int(rep ? r->GetRepeatedInt64(msg, f, index) : r->GetInt64(msg, f));
    case FD::CPPTYPE_UINT32: return Value::Int(rep ? r->GetRepeatedUInt32(msg, f, index) : r->GetUInt32(msg, f));
    case FD::CPPTYPE_UINT64:
      return Value::Int(static_cast<int64_t>(rep ? r->GetRepeatedUInt64(msg, f, index) : r->GetUInt64(msg, f)));
    case FD::CPPTYPE_DOUBLE: return Value::Double(rep ? r->GetRepeatedDouble(msg, f, index) : r->GetDouble(msg, f));
    case FD::CPPTYPE_FLOAT: return Value::Double(rep ? r->GetRepeatedFloat(msg, f, index) : r->GetFloat(msg, f));
    case FD::CPPTYPE_ENUM:
      return Value::String(rep ? r->GetRepeatedEnum(msg, f, index)->name() : r->GetEnum(msg, f)->name());
    case FD::CPPTYPE_MESSAGE: break;
  }
  return Value();
}

Value EncodeUnsorted(const pb::Message& msg) {
  Value out = Value::Map();
  const pb::Reflection* r = msg.GetReflection();
  std::vector<const FD*> fields;
  r->ListFields(msg, &fields);
  for (int i = 0; i < msg.GetDescriptor()->field_count(); ++i) {
    const FD* f = msg.GetDescriptor()->field(i);
    if (AlwaysEmit(f) && std::find(fields.begin(), fields.end(), f) == fields.end()) fields.push_back(f);
  }
  for (const FD* f : fields) {
    if (f->is_map()) {
      Value m = Value::Map();
      const FD* kf = f->message_type()->map_key();
      const FD* vf = f->message_type()->map_value();
      for (int i = 0; i < r->FieldSize(msg, f); ++i) {
        const pb::Message& e = r->GetRepeatedMessage(msg, f, i);
        std::string key = e.GetReflection()->GetString(e, kf);
        m.Set(key, vf->cpp_type() == FD::CPPTYPE_MESSAGE ? EncodeUnsorted(e.GetReflection()->GetMessage(e, vf))
                                                         : EncodeScalar(e, vf, -1));
      }
      out.Set(f->json_name(), std::move(m));
    } else if (f->is_repeated()) {
      Value l = Value::List();
      for (int i = 0; i < r->FieldSize(msg, f); ++i) {
        l.Append(f->cpp_type() == FD::CPPTYPE_MESSAGE ? EncodeUnsorted(r->GetRepeatedMessage(msg, f, i))
                                                      : EncodeScalar(msg, f, i));
      }
      out.Set(f->json_name(), std::move(l));
    } else if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
      out.Set(f->json_name(), EncodeUnsorted(r->GetMessage(msg, f)));
    } else {
      out.Set(f->json_name(), EncodeScalar(msg, f, -1));
    }
  }
  return out;
}

}  // namespace

Value EncodeMessage(const pb::Message& msg) {
  Value v = EncodeUnsorted(msg);
  v.SortKeys();
  return v;
}

Value EncodeObject(const Object& obj) {
  const pb::Message* inner = Inner(obj);
  if (inner == nullptr) return Value::Map();
  Value v = EncodeUnsorted(*inner);
  if (const KindInfo* info = KindOf(obj)) {
    if (v.Find("apiVersion") == nullptr) v.Set("apiVersion", Value::String(info->api_version));
    if (v.Find("kind") == nullptr) v.Set("kind", Value::String(info->kind));
  }
  v.SortKeys();
  return v;
}

std::string ObjectToYaml(const Object& obj) { return ToYaml(EncodeObject(obj)); }
std::string ObjectToJson(const Object& obj) { return ToJson(EncodeObject(obj), 4) + "\n"; }

}  // namespace skiff::manifest
