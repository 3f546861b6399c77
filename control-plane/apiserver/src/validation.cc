#include "skiff/apiserver/validation.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace skiff::apiserver {

namespace v1 = ::skiff::api::v1;

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

namespace {

bool IsAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return isalnum(static_cast<unsigned char>(c)) != 0; }

const char kDns1123LabelMsg[] =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const char kDns1123SubdomainMsg[] =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const char kDns1035LabelMsg[] =
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation "
    "is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const char kQualifiedNameMsg[] =
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const char kLabelValueMsg[] =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const char kConfigKeyMsg[] =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

bool MatchesLabel(const std::string& v) {
  if (v.empty() || !IsAlnumLower(v.front()) || !IsAlnumLower(v.back())) return false;
  for (char c : v)
    if (!IsAlnumLower(c) && c != '-') return false;
  return true;
}

std::vector<std::string> IsDns1035Label(const std::string& v) {
  std::vector<std::string> errs;
  if (v.size() > 63) errs.push_back("must be no more than 63 characters");
  bool ok = !v.empty() && v.front() >= 'a' && v.front() <= 'z' && IsAlnumLower(v.back());
  for (char c : v)
    if (!IsAlnumLower(c) && c != '-') ok = false;
  if (!ok) errs.push_back(kDns1035LabelMsg);
  return errs;
}

struct Errs {
  FieldErrors list;
  void Required(const std::string& path, const std::string& detail = "") {
    list.push_back({path, detail.empty() ? "Required value" : "Required value: " + detail});
  }
  void Invalid(const std::string& path, const std::string& value_repr, const std::string& detail) {
    list.push_back({path, absl::StrCat("Invalid value: ", value_repr, ": ", detail)});
  }
  void InvalidStr(const std::string& path, const std::string& value, const std::string& detail) {
    Invalid(path, Quote(value), detail);
  }
  void InvalidInt(const std::string& path, int64_t value, const std::string& detail) {
    Invalid(path, std::to_string(value), detail);
  }
  void Unsupported(const std::string& path, const std::string& value, std::vector<std::string> supported) {
    std::vector<std::string> q;
    for (auto& s : supported) q.push_back(Quote(s));
    list.push_back({path, absl::StrCat("Unsupported value: ", Quote(value), ": supported values: ", absl::StrJoin(q, ", "))});
  }
  void Duplicate(const std::string& path, const std::string& value_repr) {
    list.push_back({path, "Duplicate value: " + value_repr});
  }
  void NotFound(const std::string& path, const std::string& value) { list.push_back({path, "Not found: " + Quote(value)}); }
  void Forbidden(const std::string& path, const std::string& detail) { list.push_back({path, "Forbidden: " + detail}); }
  void Immutable(const std::string& path, const std::string& value_repr) {
    Invalid(path, value_repr, "field is immutable");
  }
};

std::string Idx(const std::string& base, int i) { return absl::StrCat(base, "[", i, "]"); }

std::string MsgJson(const google::protobuf::Message& m) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out);
  return out;
}

bool ProtoEqual(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

void ValidatePort(Errs* e, const std::string& path, int64_t port, bool required) {
  if (port == 0 && required) {
    e->Required(path);
    return;
  }
  if (port != 0 && (port < 1 || port > 65535)) e->InvalidInt(path, port, "must be between 1 and 65535, inclusive");
}

void ValidateProtocol(Errs* e, const std::string& path, const std::string& proto) {
  if (proto != "TCP" && proto != "UDP" && proto != "SCTP") e->Unsupported(path, proto, {"SCTP", "TCP", "UDP"});
}

void ValidateNonNegative(Errs* e, const std::string& path, int64_t v) {
  if (v < 0) e->InvalidInt(path, v, "must be greater than or equal to 0");
}

void ValidateIntOrStringPort(Errs* e, const std::string& path, const std::string& v) {
  if (v.empty()) {
    e->Required(path);
    return;
  }
  bool digits = std::all_of(v.begin(), v.end(), [](char c) { return isdigit(static_cast<unsigned char>(c)); });
  if (digits) {
    int64_t p = v.size() > 6 ? 999999 : std::stoll(v);
    if (p < 1 || p > 65535) e->InvalidInt(path, p, "must be between 1 and 65535, inclusive");
  } else {
    auto errs = IsDns1123Label(v);
    if (v.size() > 15) e->InvalidStr(path, v, "must be no more than 15 characters");
    else if (!errs.empty() || std::none_of(v.begin(), v.end(), [](char c) { return isalpha(static_cast<unsigned char>(c)); }))
      e->InvalidStr(path, v, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
  }
}

void ValidateProbe(Errs* e, const std::string& path, const v1::Probe& p, bool is_readiness) {
  int handlers = (p.has_exec() ? 1 : 0) + (p.has_http_get() ? 1 : 0) + (p.has_tcp_socket() ? 1 : 0);
  if (handlers == 0) e->Required(path, "must specify a handler type");
  if (handlers > 1) e->Forbidden(path, "may not specify more than 1 handler type");
  ValidateNonNegative(e, path + ".initialDelaySeconds", p.initial_delay_seconds());
  ValidateNonNegative(e, path + ".timeoutSeconds", p.timeout_seconds());
  ValidateNonNegative(e, path + ".periodSeconds", p.period_seconds());
  ValidateNonNegative(e, path + ".successThreshold", p.success_threshold());
  ValidateNonNegative(e, path + ".failureThreshold", p.failure_threshold());
  if (!is_readiness && p.success_threshold() != 1)
    e->InvalidInt(path + ".successThreshold", p.success_threshold(), "must be 1");
  if (p.has_exec() && p.exec().command().empty()) e->Required(path + ".exec.command");
  if (p.has_http_get()) ValidateIntOrStringPort(e, path + ".httpGet.port", p.http_get().port());
  if (p.has_tcp_socket()) ValidateIntOrStringPort(e, path + ".tcpSocket.port", p.tcp_socket().port());
}

// Kubernetes' resource.Quantity syntax: a signed decimal number and a suffix
// (decimal SI n u m "" k M G T P E, binary Ki..Ei, or an e/E exponent).
std::optional<long double> ParseQuantityValue(const std::string& q) {
  size_t i = 0;
  if (i < q.size() && (q[i] == '+' || q[i] == '-')) ++i;
  size_t num_start = i;
  int dots = 0, digits = 0;
  while (i < q.size() && (isdigit(static_cast<unsigned char>(q[i])) || q[i] == '.')) {
    if (q[i] == '.') ++dots;
    else ++digits;
    ++i;
  }
  if (digits == 0 || dots > 1) return std::nullopt;
  long double value = std::stold(q.substr(0, i));
  (void)num_start;
  std::string suffix = q.substr(i);
  static const std::pair<const char*, long double> kSuffixes[] = {
      {"", 1},         {"n", 1e-9L},    {"u", 1e-6L},    {"m", 1e-3L},    {"k", 1e3L},    {"M", 1e6L},
      {"G", 1e9L},     {"T", 1e12L},    {"P", 1e15L},    {"E", 1e18L},    {"Ki", 1024.0L}, {"Mi", 1048576.0L},
      {"Gi", 1073741824.0L}, {"Ti", 1099511627776.0L}, {"Pi", 1125899906842624.0L}, {"Ei", 1152921504606846976.0L}};
  for (const auto& [name, mult] : kSuffixes)
    if (suffix == name) return value * mult;
  if (suffix.size() >= 2 && (suffix[0] == 'e' || suffix[0] == 'E')) {
    size_t j = 1;
    if (suffix[j] == '+' || suffix[j] == '-') ++j;
    if (j == suffix.size()) return std::nullopt;
    for (size_t k = j; k < suffix.size(); ++k)
      if (!isdigit(static_cast<unsigned char>(suffix[k]))) return std::nullopt;
    if (suffix.size() - j > 3) return std::nullopt;
    return value * std::pow(10.0L, std::stoi(suffix.substr(1)));
  }
  return std::nullopt;
}

bool IsStandardContainerResource(const std::string& name) {
  return name == "cpu" || name == "memory" || name == "ephemeral-storage" || name.rfind("hugepages-", 0) == 0;
}

void ValidateResources(Errs* e, const std::string& path, const v1::ResourceRequirements& r) {
  std::map<std::string, long double> limits;
  auto check = [&](const std::string& kind, const google::protobuf::Map<std::string, std::string>& m,
                   std::map<std::string, long double>* parsed) {
    std::vector<std::string> names;
    for (const auto& [k, v] : m) names.push_back(k);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const std::string& q = m.at(name);
      std::string fp = absl::StrCat(path, ".", kind, "[", name, "]");
      if (name.find('/') != std::string::npos) {
        for (const auto& msg : IsQualifiedName(name)) e->InvalidStr(fp, name, msg);
      } else if (!IsStandardContainerResource(name)) {
        e->InvalidStr(fp, name, "must be a standard resource for containers");
        continue;
      }
      auto v = ParseQuantityValue(q);
      if (!v) {
        e->InvalidStr(fp, q, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'");
        continue;
      }
      if (*v < 0) {
        e->InvalidStr(fp, q, "must be greater than or equal to 0");
        continue;
      }
      if (parsed) (*parsed)[name] = *v;
      if (kind == "requests") {
        auto it = limits.find(name);
        if (it != limits.end() && *v > it->second)
          e->InvalidStr(path + ".requests", q,
                        absl::StrCat("must be less than or equal to ", name, " limit of ", r.limits().at(name)));
      }
    }
  };
  check("limits", r.limits(), &limits);
  check("requests", r.requests(), nullptr);
}

void ValidateSeccomp(Errs* e, const std::string& path, const v1::SeccompProfile& sp) {
  if (sp.type() != "RuntimeDefault" && sp.type() != "Unconfined" && sp.type() != "Localhost")
    e->Unsupported(path + ".type", sp.type(), {"Localhost", "RuntimeDefault", "Unconfined"});
  if (sp.type() == "Localhost" && sp.localhost_profile().empty())
    e->Required(path + ".localhostProfile", "must be set when seccomp type is Localhost");
  if (sp.type() != "Localhost" && !sp.localhost_profile().empty())
    e->InvalidStr(path + ".localhostProfile", sp.localhost_profile(), "can only be set when seccomp type is Localhost");
}

void ValidateId(Errs* e, const std::string& path, int64_t id) {
  if (id < 0 || id > 2147483647) e->InvalidInt(path, id, "must be between 0 and 2147483647, inclusive");
}

void ValidateContainerSecurityContext(Errs* e, const std::string& path, const v1::SecurityContext& sc) {
  if (sc.has_run_as_user()) ValidateId(e, path + ".runAsUser", sc.run_as_user());
  if (sc.has_run_as_group()) ValidateId(e, path + ".runAsGroup", sc.run_as_group());
  bool no_escalation = sc.has_allow_privilege_escalation() && !sc.allow_privilege_escalation();
  if (no_escalation && sc.has_privileged() && sc.privileged())
    e->Invalid(path, "\"\"", "cannot set `allowPrivilegeEscalation` to false and `privileged` to true");
  if (no_escalation)
    for (const auto& cap : sc.capabilities().add())
      if (cap == "CAP_SYS_ADMIN" || cap == "SYS_ADMIN")
        e->Invalid(path, "\"\"", "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN");
  if (sc.has_seccomp_profile()) ValidateSeccomp(e, path + ".seccompProfile", sc.seccomp_profile());
}

void ValidatePodSecurityContext(Errs* e, const std::string& path, const v1::PodSecurityContext& sc) {
  if (sc.has_run_as_user()) ValidateId(e, path + ".runAsUser", sc.run_as_user());
  if (sc.has_run_as_group()) ValidateId(e, path + ".runAsGroup", sc.run_as_group());
  if (sc.has_fs_group()) ValidateId(e, path + ".fsGroup", sc.fs_group());
  for (int i = 0; i < sc.supplemental_groups_size(); ++i)
    ValidateId(e, Idx(path + ".supplementalGroups", i), sc.supplemental_groups(i));
  if (sc.has_seccomp_profile()) ValidateSeccomp(e, path + ".seccompProfile", sc.seccomp_profile());
}

void ValidateNodeSelectorTerm(Errs* e, const std::string& path, const v1::NodeSelectorTerm& t) {
  for (int j = 0; j < t.match_expressions_size(); ++j) {
    const auto& r = t.match_expressions(j);
    std::string p = Idx(path + ".matchExpressions", j);
    const std::string& op = r.operator_();
    if (op == "In" || op == "NotIn") {
      if (r.values().empty()) e->Required(p + ".values", "must be specified when `operator` is 'In' or 'NotIn'");
    } else if (op == "Exists" || op == "DoesNotExist") {
      if (!r.values().empty()) e->Forbidden(p + ".values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
    } else if (op == "Gt" || op == "Lt") {
      if (r.values_size() != 1) e->Required(p + ".values", "must be specified single value when `operator` is 'Lt' or 'Gt'");
    } else {
      e->InvalidStr(p + ".operator", op, "not a valid selector operator");
    }
    for (const auto& m : IsQualifiedName(r.key())) e->InvalidStr(p + ".key", r.key(), m);
    for (int k = 0; k < r.values_size(); ++k)
      for (const auto& m : IsValidLabelValue(r.values(k))) e->InvalidStr(Idx(p + ".values", k), r.values(k), m);
  }
  for (int j = 0; j < t.match_fields_size(); ++j) {
    const auto& r = t.match_fields(j);
    std::string p = Idx(path + ".matchFields", j);
    if (r.operator_() == "In" || r.operator_() == "NotIn") {
      if (r.values_size() != 1)
        e->Required(p + ".values", "must be only one value when `operator` is 'In' or 'NotIn' for node field selector");
    } else {
      e->InvalidStr(p + ".operator", r.operator_(), "not a valid selector operator");
    }
    if (r.key() != "metadata.name") {
      e->InvalidStr(p + ".key", r.key(), "not a valid field selector key");
    } else {
      for (int k = 0; k < r.values_size(); ++k)
        for (const auto& m : IsDns1123Subdomain(r.values(k))) e->InvalidStr(Idx(p + ".values", k), r.values(k), m);
    }
  }
}

void ValidateNodeAffinity(Errs* e, const std::string& path, const v1::NodeAffinity& na) {
  if (na.has_required_during_scheduling_ignored_during_execution()) {
    std::string rp = path + ".requiredDuringSchedulingIgnoredDuringExecution";
    const auto& ns = na.required_during_scheduling_ignored_during_execution();
    if (ns.node_selector_terms().empty())
      e->Required(rp + ".nodeSelectorTerms", "must have at least one node selector term");
    for (int i = 0; i < ns.node_selector_terms_size(); ++i)
      ValidateNodeSelectorTerm(e, Idx(rp + ".nodeSelectorTerms", i), ns.node_selector_terms(i));
  }
  for (int i = 0; i < na.preferred_during_scheduling_ignored_during_execution_size(); ++i) {
    const auto& t = na.preferred_during_scheduling_ignored_during_execution(i);
    std::string p = Idx(path + ".preferredDuringSchedulingIgnoredDuringExecution", i);
    if (t.weight() < 1 || t.weight() > 100) e->InvalidInt(p + ".weight", t.weight(), "must be in the range 1-100");
    ValidateNodeSelectorTerm(e, p + ".preference", t.preference());
  }
}

void ValidateContainers(Errs* e, const std::string& base, const google::protobuf::RepeatedPtrField<v1::Container>& cs,
                        const std::set<std::string>& volumes, std::set<std::string>* names, bool init,
                        bool host_network) {
  for (int i = 0; i < cs.size(); ++i) {
    const auto& c = cs[i];
    std::string p = Idx(base, i);
    if (c.name().empty()) {
      e->Required(p + ".name");
    } else {
      for (const auto& m : IsDns1123Label(c.name())) e->InvalidStr(p + ".name", c.name(), m);
      if (!names->insert(c.name()).second) e->Duplicate(p + ".name", Quote(c.name()));
    }
    if (c.image().empty()) e->Required(p + ".image");
    if (c.image_pull_policy() != "Always" && c.image_pull_policy() != "IfNotPresent" && c.image_pull_policy() != "Never")
      e->Unsupported(p + ".imagePullPolicy", c.image_pull_policy(), {"Always", "IfNotPresent", "Never"});
    std::set<std::string> port_names;
    for (int j = 0; j < c.ports_size(); ++j) {
      const auto& port = c.ports(j);
      std::string pp = Idx(p + ".ports", j);
      if (!port.name().empty()) {
        if (port.name().size() > 15) e->InvalidStr(pp + ".name", port.name(), "must be no more than 15 characters");
        else if (!MatchesLabel(port.name()))
          e->InvalidStr(pp + ".name", port.name(), "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
        if (!port_names.insert(port.name()).second) e->Duplicate(pp + ".name", Quote(port.name()));
      }
      ValidatePort(e, pp + ".containerPort", port.container_port(), true);
      ValidatePort(e, pp + ".hostPort", port.host_port(), false);
      ValidateProtocol(e, pp + ".protocol", port.protocol());
    }
    std::set<std::string> env_seen;
    for (int j = 0; j < c.env_size(); ++j) {
      const auto& env = c.env(j);
      std::string ep = Idx(p + ".env", j);
      if (env.name().empty()) e->Required(ep + ".name");
      if (env.has_value_from()) {
        const auto& vf = env.value_from();
        int n = vf.has_config_map_key_ref() + vf.has_secret_key_ref() + vf.has_field_ref() + vf.has_resource_field_ref();
        if (!env.value().empty())
          e->Invalid(ep + ".valueFrom", "\"\"", "may not be specified when `value` is not empty");
        if (n == 0) e->Invalid(ep + ".valueFrom", "\"\"", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`");
        if (n > 1) e->Invalid(ep + ".valueFrom", "\"\"", "may not have more than one field specified at a time");
        if (vf.has_config_map_key_ref() && vf.config_map_key_ref().key().empty()) e->Required(ep + ".valueFrom.configMapKeyRef.key");
        if (vf.has_secret_key_ref() && vf.secret_key_ref().key().empty()) e->Required(ep + ".valueFrom.secretKeyRef.key");
        if (vf.has_field_ref() && vf.field_ref().field_path().empty()) e->Required(ep + ".valueFrom.fieldRef.fieldPath");
      }
    }
    std::set<std::string> mount_paths;
    for (int j = 0; j < c.volume_mounts_size(); ++j) {
      const auto& vm = c.volume_mounts(j);
      std::string mp = Idx(p + ".volumeMounts", j);
      if (vm.name().empty()) e->Required(mp + ".name");
      else if (!volumes.count(vm.name())) e->NotFound(mp + ".name", vm.name());
      if (vm.mount_path().empty()) e->Required(mp + ".mountPath");
      else if (!mount_paths.insert(vm.mount_path()).second) e->Invalid(mp + ".mountPath", Quote(vm.mount_path()), "must be unique");
    }
    if (c.has_liveness_probe()) {
      if (init) e->Forbidden(p + ".livenessProbe", "may not be set for init containers without restartPolicy=Always");
      else ValidateProbe(e, p + ".livenessProbe", c.liveness_probe(), false);
    }
    if (c.has_readiness_probe()) {
      if (init) e->Forbidden(p + ".readinessProbe", "may not be set for init containers");
      else ValidateProbe(e, p + ".readinessProbe", c.readiness_probe(), true);
    }
    if (c.has_startup_probe()) {
      if (init) e->Forbidden(p + ".startupProbe", "may not be set for init containers without restartPolicy=Always");
      else ValidateProbe(e, p + ".startupProbe", c.startup_probe(), false);
    }
    if (c.has_resources()) ValidateResources(e, p + ".resources", c.resources());
    if (c.has_security_context()) ValidateContainerSecurityContext(e, p + ".securityContext", c.security_context());
    if (host_network)
      for (int j = 0; j < c.ports_size(); ++j)
        if (c.ports(j).host_port() != 0 && c.ports(j).host_port() != c.ports(j).container_port())
          e->InvalidInt(Idx(p + ".ports", j) + ".hostPort", c.ports(j).host_port(),
                        "must match `containerPort` when `hostNetwork` is true");
    if (!c.termination_message_policy().empty() && c.termination_message_policy() != "File" &&
        c.termination_message_policy() != "FallbackToLogsOnError")
      e->Unsupported(p + ".terminationMessagePolicy", c.termination_message_policy(), {"File", "FallbackToLogsOnError"});
  }
}

void ValidatePodSpec(Errs* e, const std::string& base, const v1::PodSpec& spec) {
  std::set<std::string> volumes;
  for (int i = 0; i < spec.volumes_size(); ++i) {
    const auto& v = spec.volumes(i);
    std::string p = Idx(base + ".volumes", i);
    if (v.name().empty()) {
      e->Required(p + ".name");
    } else {
      for (const auto& m : IsDns1123Label(v.name())) e->InvalidStr(p + ".name", v.name(), m);
      if (!volumes.insert(v.name()).second) e->Duplicate(p + ".name", Quote(v.name()));
    }
    int n = v.has_empty_dir() + v.has_host_path() + v.has_config_map() + v.has_secret();
    if (n == 0) e->Required(p, "must specify a volume type");
    if (n > 1) e->Forbidden(p, "may not specify more than 1 volume type");
    if (v.has_host_path() && v.host_path().path().empty()) e->Required(p + ".hostPath.path");
    if (v.has_config_map() && v.config_map().name().empty()) e->Required(p + ".configMap.name");
    if (v.has_secret() && v.secret().secret_name().empty()) e->Required(p + ".secret.secretName");
  }
  std::set<std::string> names;
  if (spec.containers().empty()) e->Required(base + ".containers");
  ValidateContainers(e, base + ".containers", spec.containers(), volumes, &names, false, spec.host_network());
  ValidateContainers(e, base + ".initContainers", spec.init_containers(), volumes, &names, true, spec.host_network());
  if (spec.has_security_context()) ValidatePodSecurityContext(e, base + ".securityContext", spec.security_context());
  if (spec.affinity().has_node_affinity())
    ValidateNodeAffinity(e, base + ".affinity.nodeAffinity", spec.affinity().node_affinity());
  if (spec.restart_policy() != "Always" && spec.restart_policy() != "OnFailure" && spec.restart_policy() != "Never")
    e->Unsupported(base + ".restartPolicy", spec.restart_policy(), {"Always", "OnFailure", "Never"});
  static const std::vector<std::string> kDns = {"ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"};
  if (std::find(kDns.begin(), kDns.end(), spec.dns_policy()) == kDns.end())
    e->Unsupported(base + ".dnsPolicy", spec.dns_policy(), kDns);
  if (spec.has_termination_grace_period_seconds())
    ValidateNonNegative(e, base + ".terminationGracePeriodSeconds", spec.termination_grace_period_seconds());
  if (spec.has_active_deadline_seconds() && spec.active_deadline_seconds() <= 0)
    e->InvalidInt(base + ".activeDeadlineSeconds", spec.active_deadline_seconds(), "must be between 1 and 2147483647, inclusive");
  if (!spec.node_name().empty())
    for (const auto& m : IsDns1123Subdomain(spec.node_name())) e->InvalidStr(base + ".nodeName", spec.node_name(), m);
  for (const auto& [k, v] : spec.node_selector()) {
    for (const auto& m : IsQualifiedName(k)) e->InvalidStr(base + ".nodeSelector", k, m);
    for (const auto& m : IsValidLabelValue(v)) e->InvalidStr(base + ".nodeSelector", v, m);
  }
  for (int i = 0; i < spec.tolerations_size(); ++i) {
    const auto& t = spec.tolerations(i);
    std::string p = Idx(base + ".tolerations", i);
    if (!t.operator_().empty() && t.operator_() != "Equal" && t.operator_() != "Exists")
      e->Unsupported(p + ".operator", t.operator_(), {"Equal", "Exists"});
    if (t.operator_() == "Exists" && !t.value().empty())
      e->InvalidStr(p + ".operator", t.value(), "value must be empty when `operator` is 'Exists'");
    if (t.key().empty() && t.operator_() != "Exists")
      e->InvalidStr(p + ".operator", t.operator_(), "operator must be Exists when `key` is empty, which means \"match all values and all keys\"");
    if (!t.effect().empty() && t.effect() != "NoSchedule" && t.effect() != "PreferNoSchedule" && t.effect() != "NoExecute")
      e->Unsupported(p + ".effect", t.effect(), {"NoSchedule", "PreferNoSchedule", "NoExecute"});
  }
  if (!spec.hostname().empty())
    for (const auto& m : IsDns1123Label(spec.hostname())) e->InvalidStr(base + ".hostname", spec.hostname(), m);
}

void ValidateMeta(Errs* e, const ObjectMeta& m, bool namespaced, bool label_name /*DNS-1123 label*/, bool dns1035,
                  bool path_segment) {
  if (m.name().empty()) {
    e->Required("metadata.name", "name or generateName is required");
  } else {
    std::vector<std::string> errs;
    if (path_segment) {
      if (m.name() == "." || m.name() == "..") errs.push_back(absl::StrCat("may not be '", m.name(), "'"));
      for (const char* bad : {"/", "%"})
        if (m.name().find(bad) != std::string::npos) errs.push_back(absl::StrCat("may not contain '", bad, "'"));
    } else {
      errs = dns1035 ? IsDns1035Label(m.name()) : (label_name ? IsDns1123Label(m.name()) : IsDns1123Subdomain(m.name()));
    }
    for (const auto& msg : errs) e->InvalidStr("metadata.name", m.name(), msg);
  }
  if (namespaced) {
    if (m.namespace_().empty()) e->Required("metadata.namespace");
    else for (const auto& msg : IsDns1123Label(m.namespace_())) e->InvalidStr("metadata.namespace", m.namespace_(), msg);
  } else if (!m.namespace_().empty()) {
    e->Forbidden("metadata.namespace", "not allowed on this type");
  }
  std::map<std::string, std::string> sorted(m.labels().begin(), m.labels().end());
  for (const auto& [k, v] : sorted) {
    for (const auto& msg : IsQualifiedName(k)) e->InvalidStr("metadata.labels", k, msg);
    for (const auto& msg : IsValidLabelValue(v)) e->InvalidStr("metadata.labels", v, msg);
  }
  std::map<std::string, std::string> ann(m.annotations().begin(), m.annotations().end());
  size_t total = 0;
  for (const auto& [k, v] : ann) {
    for (const auto& msg : IsQualifiedName(k)) e->InvalidStr("metadata.annotations", k, msg);
    total += k.size() + v.size();
  }
  if (total > 256 * 1024) e->list.push_back({"metadata.annotations", "Too long: must have at most 262144 bytes"});
  for (int i = 0; i < m.owner_references_size(); ++i) {
    const auto& o = m.owner_references(i);
    std::string p = Idx("metadata.ownerReferences", i);
    if (o.api_version().empty()) e->Invalid(p + ".apiVersion", Quote(o.api_version()), "version must not be empty");
    if (o.kind().empty()) e->Invalid(p + ".kind", Quote(o.kind()), "kind must not be empty");
    if (o.name().empty()) e->Invalid(p + ".name", Quote(o.name()), "name must not be empty");
    if (o.uid().empty()) e->Invalid(p + ".uid", Quote(o.uid()), "uid must not be empty");
  }
  for (int i = 0; i < m.finalizers_size(); ++i) {
    const std::string& f = m.finalizers(i);
    for (const auto& msg : IsQualifiedName(f)) e->InvalidStr(Idx("metadata.finalizers", i), f, msg);
  }
}

void ValidateMetaUpdate(Errs* e, const ObjectMeta& m, const ObjectMeta& old) {
  if (m.name() != old.name()) e->Immutable("metadata.name", Quote(m.name()));
  if (m.namespace_() != old.namespace_()) e->Immutable("metadata.namespace", Quote(m.namespace_()));
  if (!m.uid().empty() && m.uid() != old.uid()) e->Immutable("metadata.uid", Quote(m.uid()));
  if (!m.creation_timestamp().empty() && m.creation_timestamp() != old.creation_timestamp())
    e->Immutable("metadata.creationTimestamp", Quote(m.creation_timestamp()));
}

bool ParseIPv4(const std::string& s, uint32_t* out) {
  in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

void ValidateLabelSelectorProto(Errs* e, const std::string& path, const v1::LabelSelector& sel) {
  for (const auto& [k, v] : sel.match_labels()) {
    for (const auto& msg : IsQualifiedName(k)) e->InvalidStr(path + ".matchLabels", k, msg);
    for (const auto& msg : IsValidLabelValue(v)) e->InvalidStr(path + ".matchLabels", v, msg);
  }
  for (int i = 0; i < sel.match_expressions_size(); ++i) {
    const auto& r = sel.match_expressions(i);
    std::string p = Idx(path + ".matchExpressions", i);
    const std::string& op = r.operator_();
    if (op == "In" || op == "NotIn") {
      if (r.values().empty()) e->Required(p + ".values", "must be specified when `operator` is 'In' or 'NotIn'");
    } else if (op == "Exists" || op == "DoesNotExist") {
      if (!r.values().empty()) e->Forbidden(p + ".values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
    } else {
      e->Invalid(p + ".operator", Quote(op), "not a valid selector operator");
    }
    for (const auto& msg : IsQualifiedName(r.key())) e->InvalidStr(p + ".key", r.key(), msg);
  }
}

bool SelectorMatchesLabels(const v1::LabelSelector& sel, const google::protobuf::Map<std::string, std::string>& labels) {
  for (const auto& [k, v] : sel.match_labels()) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  for (const auto& r : sel.match_expressions()) {
    auto it = labels.find(r.key());
    bool has = it != labels.end();
    bool in = has && std::find(r.values().begin(), r.values().end(), it->second) != r.values().end();
    if (r.operator_() == "In" && !in) return false;
    if (r.operator_() == "NotIn" && in) return false;
    if (r.operator_() == "Exists" && !has) return false;
    if (r.operator_() == "DoesNotExist" && has) return false;
  }
  return true;
}

void ValidateWorkload(Errs* e, const v1::LabelSelector* sel, bool has_sel, const v1::PodTemplateSpec& tmpl,
                      std::optional<int32_t> replicas) {
  if (replicas.has_value()) ValidateNonNegative(e, "spec.replicas", *replicas);
  if (!has_sel || (sel->match_labels().empty() && sel->match_expressions().empty())) {
    e->Required("spec.selector");
  } else {
    ValidateLabelSelectorProto(e, "spec.selector", *sel);
    if (!SelectorMatchesLabels(*sel, tmpl.metadata().labels())) {
      std::vector<std::string> kv;
      std::map<std::string, std::string> sorted(tmpl.metadata().labels().begin(), tmpl.metadata().labels().end());
      for (const auto& [k, v] : sorted) kv.push_back(absl::StrCat(Quote(k), ":", Quote(v)));
      e->Invalid("spec.template.metadata.labels", absl::StrCat("map[string]string{", absl::StrJoin(kv, ", "), "}"),
                 "`selector` does not match template `labels`");
    }
  }
  for (const auto& [k, v] : std::map<std::string, std::string>(tmpl.metadata().labels().begin(), tmpl.metadata().labels().end())) {
    for (const auto& msg : IsQualifiedName(k)) e->InvalidStr("spec.template.metadata.labels", k, msg);
    for (const auto& msg : IsValidLabelValue(v)) e->InvalidStr("spec.template.metadata.labels", v, msg);
  }
  ValidatePodSpec(e, "spec.template.spec", tmpl.spec());
  if (tmpl.spec().restart_policy() != "Always" && !tmpl.spec().restart_policy().empty())
    e->Unsupported("spec.template.spec.restartPolicy", tmpl.spec().restart_policy(), {"Always"});
}

void ValidateIntOrPercent(Errs* e, const std::string& path, const std::string& v) {
  if (v.empty()) return;
  std::string num = v;
  if (v.back() == '%') num = v.substr(0, v.size() - 1);
  bool digits = !num.empty() && std::all_of(num.begin(), num.end(), [](char c) { return isdigit(static_cast<unsigned char>(c)); });
  if (!digits) {
    if (!num.empty() && num[0] == '-') e->InvalidStr(path, v, "must be greater than or equal to 0");
    else e->InvalidStr(path, v, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
    return;
  }
  if (v.back() == '%' && std::stoll(num) > 100) e->InvalidStr(path, v, "must not be greater than 100%");
}

void ValidateService(Errs* e, const v1::Service& svc, const v1::Service* old) {
  const auto& s = svc.spec();
  static const std::vector<std::string> kTypes = {"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"};
  if (std::find(kTypes.begin(), kTypes.end(), s.type()) == kTypes.end())
    e->Unsupported("spec.type", s.type(), kTypes);
  bool headless = s.cluster_ip() == "None";
  if (s.type() == "ExternalName") {
    if (s.external_name().empty()) e->Required("spec.externalName");
  } else if (s.ports().empty() && !headless) {
    e->Required("spec.ports");
  }
  if (headless && (s.type() == "NodePort" || s.type() == "LoadBalancer"))
    e->InvalidStr("spec.clusterIPs[0]", "None", absl::StrCat("may not be set to 'None' for ", s.type(), " services"));
  if (!s.cluster_ip().empty() && !headless) {
    uint32_t ip;
    if (!ParseIPv4(s.cluster_ip(), &ip))
      e->InvalidStr("spec.clusterIPs[0]", s.cluster_ip(), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
  }
  std::set<std::string> names;
  std::set<std::pair<int, std::string>> port_proto;
  for (int i = 0; i < s.ports_size(); ++i) {
    const auto& p = s.ports(i);
    std::string pp = Idx("spec.ports", i);
    if (s.ports_size() > 1 && p.name().empty()) e->Required(pp + ".name");
    if (!p.name().empty()) {
      for (const auto& m : IsDns1123Label(p.name())) e->InvalidStr(pp + ".name", p.name(), m);
      if (!names.insert(p.name()).second) e->Duplicate(pp + ".name", Quote(p.name()));
    }
    ValidatePort(e, pp + ".port", p.port(), true);
    ValidateProtocol(e, pp + ".protocol", p.protocol());
    if (p.node_port() != 0) {
      ValidatePort(e, pp + ".nodePort", p.node_port(), false);
      if (s.type() == "ClusterIP" || s.type() == "ExternalName")
        e->Forbidden(pp + ".nodePort", absl::StrCat("may not be used when `type` is '", s.type(), "'"));
    }
    if (!port_proto.insert({p.port(), p.protocol()}).second)
      e->Duplicate(pp, absl::StrCat("core.ServicePort{Name:", Quote(p.name()), ", Protocol:", Quote(p.protocol()), ", Port:", p.port(), "}"));
    if (!p.target_port().empty()) ValidateIntOrStringPort(e, pp + ".targetPort", p.target_port());
  }
  if (s.session_affinity() != "None" && s.session_affinity() != "ClientIP")
    e->Unsupported("spec.sessionAffinity", s.session_affinity(), {"ClientIP", "None"});
  if (!s.external_traffic_policy().empty() && s.external_traffic_policy() != "Cluster" && s.external_traffic_policy() != "Local")
    e->Unsupported("spec.externalTrafficPolicy", s.external_traffic_policy(), {"Cluster", "Local"});
  if (!s.internal_traffic_policy().empty() && s.internal_traffic_policy() != "Cluster" && s.internal_traffic_policy() != "Local")
    e->Unsupported("spec.internalTrafficPolicy", s.internal_traffic_policy(), {"Cluster", "Local"});
  for (int i = 0; i < s.external_ips_size(); ++i) {
    uint32_t ip;
    if (!ParseIPv4(s.external_ips(i), &ip))
      e->InvalidStr(Idx("spec.externalIPs", i), s.external_ips(i), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
  }
  for (const auto& [k, v] : std::map<std::string, std::string>(s.selector().begin(), s.selector().end())) {
    for (const auto& m : IsQualifiedName(k)) e->InvalidStr("spec.selector", k, m);
    for (const auto& m : IsValidLabelValue(v)) e->InvalidStr("spec.selector", v, m);
  }
  if (old && !old->spec().cluster_ip().empty() && s.cluster_ip() != old->spec().cluster_ip() &&
      s.type() != "ExternalName" && old->spec().type() != "ExternalName")
    e->Immutable("spec.clusterIP", Quote(s.cluster_ip()));
}

void ValidateConfigKeys(Errs* e, const std::string& base, const std::vector<std::string>& keys) {
  for (const auto& k : keys) {
    bool ok = !k.empty() && k.size() <= 253 && std::all_of(k.begin(), k.end(), [](char c) {
      return isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
    if (!ok) e->InvalidStr(absl::StrCat(base, "[", k, "]"), k, kConfigKeyMsg);
    else if (k == "." || k == "..") e->InvalidStr(absl::StrCat(base, "[", k, "]"), k, "must not be '.' or '..'");
  }
}

}  // namespace

std::vector<std::string> IsDns1123Label(const std::string& v) {
  std::vector<std::string> errs;
  if (v.size() > 63) errs.push_back("must be no more than 63 characters");
  if (!MatchesLabel(v)) errs.push_back(kDns1123LabelMsg);
  return errs;
}

std::vector<std::string> IsDns1123Subdomain(const std::string& v) {
  std::vector<std::string> errs;
  if (v.size() > 253) errs.push_back("must be no more than 253 characters");
  bool ok = !v.empty();
  size_t start = 0;
  while (ok && start <= v.size()) {
    size_t dot = v.find('.', start);
    std::string part = v.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!MatchesLabel(part)) ok = false;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (!ok) errs.push_back(kDns1123SubdomainMsg);
  return errs;
}

std::vector<std::string> IsQualifiedName(const std::string& v) {
  std::vector<std::string> errs;
  std::string name = v;
  auto slash = v.find('/');
  if (slash != std::string::npos) {
    std::string prefix = v.substr(0, slash);
    name = v.substr(slash + 1);
    if (prefix.empty()) {
      errs.push_back("prefix part must be non-empty");
    } else {
      for (const auto& m : IsDns1123Subdomain(prefix)) errs.push_back("prefix part " + m);
    }
    if (name.find('/') != std::string::npos) {
      errs.push_back(
          "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
          "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
          "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. "
          "'example.com/MyName')");
      return errs;
    }
  }
  if (name.empty()) {
    errs.push_back("name part must be non-empty");
    return errs;
  }
  if (name.size() > 63) errs.push_back("name part must be no more than 63 characters");
  bool ok = IsAlnum(name.front()) && IsAlnum(name.back());
  for (char c : name)
    if (!IsAlnum(c) && c != '-' && c != '_' && c != '.') ok = false;
  if (!ok) errs.push_back(kQualifiedNameMsg);
  return errs;
}

std::vector<std::string> IsValidLabelValue(const std::string& v) {
  std::vector<std::string> errs;
  if (v.empty()) return errs;
  if (v.size() > 63) errs.push_back("must be no more than 63 characters");
  bool ok = IsAlnum(v.front()) && IsAlnum(v.back());
  for (char c : v)
    if (!IsAlnum(c) && c != '-' && c != '_' && c != '.') ok = false;
  if (!ok) errs.push_back(kLabelValueMsg);
  return errs;
}

absl::Status InvalidError(const std::string& kind, const std::string& name, const FieldErrors& errs) {
  std::vector<std::string> parts;
  for (const auto& e : errs) parts.push_back(e.ToString());
  std::string body = parts.size() == 1 ? parts[0] : absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
  // Kubernetes names the kind with its API group ("Deployment.apps"), core
  // kinds bare ("Pod").
  std::string qualified = kind;
  for (const auto& r : AllResources()) {
    if (r.kind == kind && !r.group.empty()) {
      qualified = absl::StrCat(kind, ".", r.group);
      break;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(qualified, " ", Quote(name), " is invalid: ", body));
}

// ---------------------------------------------------------------- defaults

namespace {

void DefaultProbe(v1::Probe* p) {
  if (p->timeout_seconds() == 0) p->set_timeout_seconds(1);
  if (p->period_seconds() == 0) p->set_period_seconds(10);
  if (p->success_threshold() == 0) p->set_success_threshold(1);
  if (p->failure_threshold() == 0) p->set_failure_threshold(3);
  if (p->has_http_get()) {
    if (p->http_get().scheme().empty()) p->mutable_http_get()->set_scheme("HTTP");
    if (p->http_get().path().empty()) p->mutable_http_get()->set_path("/");
  }
}

void DefaultContainer(v1::Container* c) {
  if (c->image_pull_policy().empty()) {
    const std::string& img = c->image();
    auto slash = img.rfind('/');
    std::string last = slash == std::string::npos ? img : img.substr(slash + 1);
    bool has_digest = img.find('@') != std::string::npos;
    auto colon = last.find(':');
    std::string tag = colon == std::string::npos ? "" : last.substr(colon + 1);
    c->set_image_pull_policy(!has_digest && (tag.empty() || tag == "latest") ? "Always" : "IfNotPresent");
  }
  if (c->termination_message_path().empty()) c->set_termination_message_path("/dev/termination-log");
  if (c->termination_message_policy().empty()) c->set_termination_message_policy("File");
  for (auto& p : *c->mutable_ports())
    if (p.protocol().empty()) p.set_protocol("TCP");
  if (c->has_liveness_probe()) DefaultProbe(c->mutable_liveness_probe());
  if (c->has_readiness_probe()) DefaultProbe(c->mutable_readiness_probe());
  if (c->has_startup_probe()) DefaultProbe(c->mutable_startup_probe());
}

void DefaultPodSpec(v1::PodSpec* s) {
  if (s->restart_policy().empty()) s->set_restart_policy("Always");
  if (s->dns_policy().empty()) s->set_dns_policy("ClusterFirst");
  if (!s->has_termination_grace_period_seconds()) s->set_termination_grace_period_seconds(30);
  if (s->scheduler_name().empty()) s->set_scheduler_name("default-scheduler");
  if (!s->has_enable_service_links()) s->set_enable_service_links(true);
  if (!s->has_security_context()) s->mutable_security_context();
  for (auto& c : *s->mutable_containers()) DefaultContainer(&c);
  for (auto& c : *s->mutable_init_containers()) DefaultContainer(&c);
  for (auto& v : *s->mutable_volumes()) {
    if (v.has_config_map() && !v.config_map().has_default_mode()) v.mutable_config_map()->set_default_mode(0644);
    if (v.has_secret() && !v.secret().has_default_mode()) v.mutable_secret()->set_default_mode(0644);
  }
}

}  // namespace

void ApplyDefaults(Object* obj) {
  if (obj->has_pod()) {
    DefaultPodSpec(obj->mutable_pod()->mutable_spec());
  } else if (obj->has_service()) {
    auto* s = obj->mutable_service()->mutable_spec();
    if (s->type().empty()) s->set_type("ClusterIP");
    if (s->session_affinity().empty()) s->set_session_affinity("None");
    if (s->session_affinity() == "ClientIP" && !s->session_affinity_config().client_ip().has_timeout_seconds())
      s->mutable_session_affinity_config()->mutable_client_ip()->set_timeout_seconds(10800);
    for (auto& p : *s->mutable_ports()) {
      if (p.protocol().empty()) p.set_protocol("TCP");
      if (p.target_port().empty() || p.target_port() == "0") p.set_target_port(std::to_string(p.port()));
    }
    if (s->type() == "NodePort" || s->type() == "LoadBalancer") {
      if (s->external_traffic_policy().empty()) s->set_external_traffic_policy("Cluster");
    }
    if (s->type() != "ExternalName") {
      if (s->internal_traffic_policy().empty()) s->set_internal_traffic_policy("Cluster");
      if (s->ip_families().empty()) s->add_ip_families("IPv4");
      if (s->ip_family_policy().empty()) s->set_ip_family_policy("SingleStack");
    }
  } else if (obj->has_deployment()) {
    auto* s = obj->mutable_deployment()->mutable_spec();
    if (!s->has_replicas()) s->set_replicas(1);
    if (s->strategy().type().empty()) s->mutable_strategy()->set_type("RollingUpdate");
    if (s->strategy().type() == "RollingUpdate") {
      auto* ru = s->mutable_strategy()->mutable_rolling_update();
      if (ru->max_unavailable().empty()) ru->set_max_unavailable("25%");
      if (ru->max_surge().empty()) ru->set_max_surge("25%");
    }
    if (!s->has_revision_history_limit()) s->set_revision_history_limit(10);
    if (!s->has_progress_deadline_seconds()) s->set_progress_deadline_seconds(600);
    DefaultPodSpec(s->mutable_template_()->mutable_spec());
  } else if (obj->has_replica_set()) {
    auto* s = obj->mutable_replica_set()->mutable_spec();
    if (!s->has_replicas()) s->set_replicas(1);
    DefaultPodSpec(s->mutable_template_()->mutable_spec());
  } else if (obj->has_secret()) {
    auto* s = obj->mutable_secret();
    if (s->type().empty()) s->set_type("Opaque");
    for (const auto& [k, v] : s->string_data()) (*s->mutable_data())[k] = v;
    s->clear_string_data();
  } else if (obj->has_namespace_()) {
    if (obj->namespace_().status().phase().empty()) obj->mutable_namespace_()->mutable_status()->set_phase("Active");
  } else if (obj->has_endpoint_slice()) {
    for (auto& p : *obj->mutable_endpoint_slice()->mutable_ports())
      if (p.protocol().empty()) p.set_protocol("TCP");
  } else if (obj->has_event()) {
    auto* ev = obj->mutable_event();
    if (ev->type().empty()) ev->set_type("Normal");
  }
}

// ---------------------------------------------------------------- validate

FieldErrors Validate(const Object& obj, const Object* old) {
  Errs e;
  const ResourceInfo* info = ResourceForObject(obj);
  if (!info) {
    e.Required("kind");
    return e.list;
  }
  const ObjectMeta& m = Meta(obj);
  bool label_name = obj.has_namespace_();
  bool dns1035 = obj.has_service();
  bool path_segment = info->group == "rbac.authorization.k8s.io";
  ValidateMeta(&e, m, info->namespaced, label_name, dns1035, path_segment);
  if (old) ValidateMetaUpdate(&e, m, Meta(*old));

  switch (obj.kind_case()) {
    case Object::kPod: {
      ValidatePodSpec(&e, "spec", obj.pod().spec());
      if (old) {
        // Pods are mostly immutable: images, activeDeadlineSeconds, tolerations
        // (additions), and nodeName once (binding) may change.
        v1::PodSpec a = obj.pod().spec(), b = old->pod().spec();
        for (int i = 0; i < a.containers_size() && i < b.containers_size(); ++i)
          a.mutable_containers(i)->set_image(b.containers(i).image());
        for (int i = 0; i < a.init_containers_size() && i < b.init_containers_size(); ++i)
          a.mutable_init_containers(i)->set_image(b.init_containers(i).image());
        a.clear_active_deadline_seconds();
        b.clear_active_deadline_seconds();
        a.clear_tolerations();
        b.clear_tolerations();
        if (b.node_name().empty()) b.set_node_name(a.node_name());
        if (b.termination_grace_period_seconds() < 0) b.set_termination_grace_period_seconds(a.termination_grace_period_seconds());
        if (!ProtoEqual(a, b)) {
          if (a.node_name() != b.node_name())
            e.Invalid("spec.nodeName", Quote(obj.pod().spec().node_name()), "field is immutable once set");
          else
            e.Forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, "
                                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                                "(only additions to existing tolerations) or `spec.terminationGracePeriodSeconds` "
                                "(allow it to be set to 1 if it was previously negative)");
        }
      }
      break;
    }
    case Object::kService:
      ValidateService(&e, obj.service(), old ? &old->service() : nullptr);
      break;
    case Object::kDeployment: {
      const auto& s = obj.deployment().spec();
      ValidateWorkload(&e, &s.selector(), s.has_selector(), s.template_(),
                       s.has_replicas() ? std::optional<int32_t>(s.replicas()) : std::nullopt);
      if (s.strategy().type() != "RollingUpdate" && s.strategy().type() != "Recreate")
        e.Unsupported("spec.strategy.type", s.strategy().type(), {"Recreate", "RollingUpdate"});
      if (s.strategy().type() == "Recreate" && s.strategy().has_rolling_update())
        e.Forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'");
      if (s.strategy().type() == "RollingUpdate") {
        const auto& ru = s.strategy().rolling_update();
        ValidateIntOrPercent(&e, "spec.strategy.rollingUpdate.maxUnavailable", ru.max_unavailable());
        ValidateIntOrPercent(&e, "spec.strategy.rollingUpdate.maxSurge", ru.max_surge());
        if ((ru.max_unavailable() == "0" || ru.max_unavailable() == "0%") && (ru.max_surge() == "0" || ru.max_surge() == "0%"))
          e.InvalidStr("spec.strategy.rollingUpdate.maxUnavailable", ru.max_unavailable(), "may not be 0 when `maxSurge` is 0");
      }
      if (s.has_revision_history_limit()) ValidateNonNegative(&e, "spec.revisionHistoryLimit", s.revision_history_limit());
      ValidateNonNegative(&e, "spec.minReadySeconds", s.min_ready_seconds());
      if (old && !ProtoEqual(s.selector(), old->deployment().spec().selector()))
        e.Immutable("spec.selector", MsgJson(s.selector()));
      break;
    }
    case Object::kReplicaSet: {
      const auto& s = obj.replica_set().spec();
      ValidateWorkload(&e, &s.selector(), s.has_selector(), s.template_(),
                       s.has_replicas() ? std::optional<int32_t>(s.replicas()) : std::nullopt);
      ValidateNonNegative(&e, "spec.minReadySeconds", s.min_ready_seconds());
      if (old && !ProtoEqual(s.selector(), old->replica_set().spec().selector()))
        e.Immutable("spec.selector", MsgJson(s.selector()));
      break;
    }
    case Object::kConfigMap: {
      std::vector<std::string> keys;
      for (const auto& [k, v] : obj.config_map().data()) keys.push_back(k);
      std::sort(keys.begin(), keys.end());
      ValidateConfigKeys(&e, "data", keys);
      std::vector<std::string> bkeys;
      for (const auto& [k, v] : obj.config_map().binary_data()) {
        bkeys.push_back(k);
        if (obj.config_map().data().count(k)) e.InvalidStr(absl::StrCat("data[", k, "]"), k, "duplicate of key present in binaryData");
      }
      std::sort(bkeys.begin(), bkeys.end());
      ValidateConfigKeys(&e, "binaryData", bkeys);
      if (old && old->config_map().immutable() &&
          (!ProtoEqual(obj.config_map(), old->config_map()) || true)) {
        v1::ConfigMap a = obj.config_map(), b = old->config_map();
        a.clear_metadata();
        b.clear_metadata();
        if (!ProtoEqual(a, b)) e.Forbidden("data", "field is immutable when `immutable` is set");
      }
      break;
    }
    case Object::kSecret: {
      std::vector<std::string> keys;
      for (const auto& [k, v] : obj.secret().data()) keys.push_back(k);
      std::sort(keys.begin(), keys.end());
      ValidateConfigKeys(&e, "data", keys);
      if (old && obj.secret().type() != old->secret().type()) e.Immutable("type", Quote(obj.secret().type()));
      if (old && old->secret().immutable()) {
        v1::Secret a = obj.secret(), b = old->secret();
        a.clear_metadata();
        b.clear_metadata();
        if (!ProtoEqual(a, b)) e.Forbidden("data", "field is immutable when `immutable` is set");
      }
      break;
    }
    case Object::kNode: {
      for (int i = 0; i < obj.node().spec().taints_size(); ++i) {
        const auto& t = obj.node().spec().taints(i);
        std::string p = Idx("spec.taints", i);
        if (t.key().empty()) e.Required(p + ".key");
        else for (const auto& msg : IsQualifiedName(t.key())) e.InvalidStr(p + ".key", t.key(), msg);
        if (t.effect() != "NoSchedule" && t.effect() != "PreferNoSchedule" && t.effect() != "NoExecute")
          e.Unsupported(p + ".effect", t.effect(), {"NoSchedule", "PreferNoSchedule", "NoExecute"});
      }
      break;
    }
    case Object::kEndpointSlice: {
      const auto& es = obj.endpoint_slice();
      if (es.address_type() != "IPv4" && es.address_type() != "IPv6" && es.address_type() != "FQDN")
        e.Unsupported("addressType", es.address_type(), {"IPv4", "IPv6", "FQDN"});
      for (int i = 0; i < es.endpoints_size(); ++i) {
        const auto& ep = es.endpoints(i);
        std::string p = Idx("endpoints", i);
        if (ep.addresses().empty()) e.Required(p + ".addresses", "must contain at least 1 address");
        for (int j = 0; j < ep.addresses_size(); ++j) {
          uint32_t ip;
          if (es.address_type() == "IPv4" && !ParseIPv4(ep.addresses(j), &ip))
            e.InvalidStr(Idx(p + ".addresses", j), ep.addresses(j), "must be a valid IPv4 address");
        }
      }
      for (int i = 0; i < es.ports_size(); ++i) {
        const auto& p = es.ports(i);
        std::string pp = Idx("ports", i);
        if (p.has_port()) ValidatePort(&e, pp + ".port", p.port(), false);
        ValidateProtocol(&e, pp + ".protocol", p.protocol());
      }
      if (old && es.address_type() != old->endpoint_slice().address_type())
        e.Immutable("addressType", Quote(es.address_type()));
      break;
    }
    case Object::kLease: {
      const auto& s = obj.lease().spec();
      if (s.has_lease_duration_seconds() && s.lease_duration_seconds() <= 0)
        e.InvalidInt("spec.leaseDurationSeconds", s.lease_duration_seconds(), "must be greater than 0");
      if (s.has_lease_transitions()) ValidateNonNegative(&e, "spec.leaseTransitions", s.lease_transitions());
      break;
    }
    case Object::kEvent: {
      if (obj.event().involved_object().name().empty() && obj.event().involved_object().kind().empty())
        e.Required("involvedObject");
      break;
    }
    case Object::kRoleBinding:
    case Object::kClusterRoleBinding: {
      const auto& ref = obj.has_role_binding() ? obj.role_binding().role_ref() : obj.cluster_role_binding().role_ref();
      if (ref.name().empty()) e.Required("roleRef.name");
      if (ref.kind() != "Role" && ref.kind() != "ClusterRole")
        e.Unsupported("roleRef.kind", ref.kind(), {"Role", "ClusterRole"});
      if (obj.has_cluster_role_binding() && ref.kind() == "Role")
        e.Unsupported("roleRef.kind", ref.kind(), {"ClusterRole"});
      if (old) {
        const auto& oref = old->has_role_binding() ? old->role_binding().role_ref() : old->cluster_role_binding().role_ref();
        if (!ProtoEqual(ref, oref)) e.Immutable("roleRef", MsgJson(ref));
      }
      break;
    }
    default:
      break;
  }
  return e.list;
}

}  // namespace skiff::apiserver
