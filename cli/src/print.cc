#include "print.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cmd.h"

namespace skiff::cli {

using api::v1::Object;
using manifest::Value;

// ------------------------------------------------------------------ ages

std::string HumanDuration(int64_t seconds) {
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 60 * 2) return absl::StrCat(seconds, "s");
  int64_t minutes = seconds / 60;
  if (minutes < 10) {
    int64_t s = seconds % 60;
    return s == 0 ? absl::StrCat(minutes, "m") : absl::StrCat(minutes, "m", s, "s");
  }
  if (minutes < 60 * 3) return absl::StrCat(minutes, "m");
  int64_t hours = seconds / 3600;
  if (hours < 8) {
    int64_t m = minutes % 60;
    return m == 0 ? absl::StrCat(hours, "h") : absl::StrCat(hours, "h", m, "m");
  }
  if (hours < 48) return absl::StrCat(hours, "h");
  if (hours < 24 * 8) {
    int64_t h = hours % 24;
    return h == 0 ? absl::StrCat(hours / 24, "d") : absl::StrCat(hours / 24, "d", h, "h");
  }
  if (hours < 24 * 365 * 2) return absl::StrCat(hours / 24, "d");
  if (hours < 24 * 365 * 8) {
    int64_t dy = (hours / 24) % 365;
    return dy == 0 ? absl::StrCat(hours / 24 / 365, "y") : absl::StrCat(hours / 24 / 365, "y", dy, "d");
  }
  return absl::StrCat(hours / 24 / 365, "y");
}

std::string Age(const std::string& rfc3339, std::chrono::system_clock::time_point now) {
  auto s = SecondsSince(rfc3339, now);
  return s ? HumanDuration(*s) : "<unknown>";
}

std::string RenderTable(const Table& t, bool headers, size_t padding) {
  std::vector<std::vector<std::string>> all;
  if (headers) all.push_back(t.header);
  for (const auto& r : t.rows) all.push_back(r);
  std::vector<size_t> width(t.header.size(), 0);
  for (const auto& r : all)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  std::string out;
  for (const auto& r : all) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line.append(width[i] - r[i].size() + padding, ' ');
    }
    out += line;
    out += '\n';
  }
  return out;
}

// ------------------------------------------------------------------ labels

std::string FormatLabels(const google::protobuf::Map<std::string, std::string>& m, bool none) {
  std::map<std::string, std::string> sorted(m.begin(), m.end());
  std::vector<std::string> parts;
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
  if (parts.empty()) return none ? "<none>" : "";
  return absl::StrJoin(parts, ",");
}

std::string FormatLabelSelector(const api::v1::LabelSelector& sel) {
  std::vector<std::string> parts;
  std::map<std::string, std::string> sorted(sel.match_labels().begin(), sel.match_labels().end());
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
  for (const auto& e : sel.match_expressions()) {
    std::vector<std::string> vals(e.values().begin(), e.values().end());
    if (e.operator_() == "In") parts.push_back(absl::StrCat(e.key(), " in (", absl::StrJoin(vals, ","), ")"));
    if (e.operator_() == "NotIn") parts.push_back(absl::StrCat(e.key(), " notin (", absl::StrJoin(vals, ","), ")"));
    if (e.operator_() == "Exists") parts.push_back(e.key());
    if (e.operator_() == "DoesNotExist") parts.push_back(absl::StrCat("!", e.key()));
  }
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<std::vector<Requirement>> ParseSelector(const std::string& s) {
  std::vector<Requirement> out;
  // Split on commas outside parentheses.
  std::vector<std::string> terms;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      terms.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  terms.push_back(cur);
  for (std::string t : terms) {
    t = std::string(absl::StripAsciiWhitespace(t));
    if (t.empty()) continue;
    Requirement r;
    auto bad = [&] { return absl::InvalidArgumentError(absl::StrCat("unable to parse requirement: \"", t, "\"")); };
    size_t sp = t.find(' ');
    if (sp != std::string::npos && (t.find(" in ") != std::string::npos || t.find(" notin ") != std::string::npos)) {
      r.key = t.substr(0, sp);
      std::string rest(absl::StripAsciiWhitespace(t.substr(sp)));
      r.op = rest.rfind("notin", 0) == 0 ? "notin" : "in";
      size_t open = rest.find('('), close = rest.rfind(')');
      if (open == std::string::npos || close == std::string::npos || close < open) return bad();
      for (auto v : absl::StrSplit(rest.substr(open + 1, close - open - 1), ','))
        r.values.emplace_back(absl::StripAsciiWhitespace(v));
    } else if (size_t ne = t.find("!="); ne != std::string::npos) {
      r.key = std::string(absl::StripAsciiWhitespace(t.substr(0, ne)));
      r.op = "!=";
      r.values.emplace_back(absl::StripAsciiWhitespace(t.substr(ne + 2)));
    } else if (size_t eq = t.find('='); eq != std::string::npos) {
      r.key = std::string(absl::StripAsciiWhitespace(t.substr(0, eq)));
      size_t vstart = (eq + 1 < t.size() && t[eq + 1] == '=') ? eq + 2 : eq + 1;
      r.op = "=";
      r.values.emplace_back(absl::StripAsciiWhitespace(t.substr(vstart)));
    } else if (t[0] == '!') {
      r.key = std::string(absl::StripAsciiWhitespace(t.substr(1)));
      r.op = "!";
    } else {
      r.key = t;
      r.op = "exists";
    }
    if (r.key.empty() || r.key.find(' ') != std::string::npos) return bad();
    out.push_back(std::move(r));
  }
  return out;
}

bool SelectorMatches(const std::vector<Requirement>& sel, const google::protobuf::Map<std::string, std::string>& labels) {
  for (const auto& r : sel) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    auto in = [&] { return has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end(); };
    if (r.op == "=" && !in()) return false;
    if (r.op == "in" && !in()) return false;
    if ((r.op == "!=" || r.op == "notin") && in()) return false;
    if (r.op == "exists" && !has) return false;
    if (r.op == "!" && has) return false;
  }
  return true;
}

// ------------------------------------------------------------------ tables

namespace {

std::string OrNone(const std::string& s) { return s.empty() ? "<none>" : s; }

std::string PodStatus(const api::v1::Pod& pod) {
  std::string reason = pod.status().phase();
  if (!pod.status().reason().empty()) reason = pod.status().reason();
  bool initializing = false;
  const auto& inits = pod.status().init_container_statuses();
  for (int i = 0; i < inits.size(); ++i) {
    const auto& c = inits[i];
    if (c.state().has_terminated() && c.state().terminated().exit_code() == 0) continue;
    if (c.state().has_terminated()) {
      reason = c.state().terminated().reason().empty()
                   ? absl::StrCat("Init:ExitCode:", c.state().terminated().exit_code())
                   : absl::StrCat("Init:", c.state().terminated().reason());
    } else if (c.state().has_waiting() && !c.state().waiting().reason().empty() &&
               c.state().waiting().reason() != "PodInitializing") {
      reason = absl::StrCat("Init:", c.state().waiting().reason());
    } else {
      reason = absl::StrCat("Init:", i, "/", pod.spec().init_containers_size());
    }
    initializing = true;
    break;
  }
  if (!initializing) {
    bool has_running = false;
    const auto& cs = pod.status().container_statuses();
    for (int i = cs.size() - 1; i >= 0; --i) {
      const auto& c = cs[i];
      if (c.state().has_waiting() && !c.state().waiting().reason().empty()) {
        reason = c.state().waiting().reason();
      } else if (c.state().has_terminated() && !c.state().terminated().reason().empty()) {
        reason = c.state().terminated().reason();
      } else if (c.state().has_terminated()) {
        reason = c.state().terminated().signal() != 0
                     ? absl::StrCat("Signal:", c.state().terminated().signal())
                     : absl::StrCat("ExitCode:", c.state().terminated().exit_code());
      } else if (c.ready() && c.state().has_running()) {
        has_running = true;
      }
    }
    if (reason == "Completed" && has_running) {
      reason = "NotReady";
      for (const auto& cond : pod.status().conditions())
        if (cond.type() == "Ready" && cond.status() == "True") reason = "Running";
    }
  }
  if (!pod.metadata().deletion_timestamp().empty()) {
    reason = pod.status().reason() == "NodeLost" ? "Unknown" : "Terminating";
  }
  return reason.empty() ? "Pending" : reason;
}

std::string ServicePorts(const api::v1::Service& s) {
  std::vector<std::string> parts;
  for (const auto& p : s.spec().ports()) {
    std::string proto = p.protocol().empty() ? "TCP" : p.protocol();
    parts.push_back(p.node_port() ? absl::StrCat(p.port(), ":", p.node_port(), "/", proto)
                                  : absl::StrCat(p.port(), "/", proto));
  }
  return parts.empty() ? "<none>" : absl::StrJoin(parts, ",");
}

std::string ServiceExternalIP(const api::v1::Service& s) {
  std::string type = s.spec().type().empty() ? "ClusterIP" : s.spec().type();
  std::vector<std::string> ips(s.spec().external_ips().begin(), s.spec().external_ips().end());
  if (type == "ExternalName") return s.spec().external_name();
  if (type == "LoadBalancer") {
    for (const auto& ing : s.status().load_balancer().ingress())
      ips.push_back(ing.ip().empty() ? ing.hostname() : ing.ip());
    return ips.empty() ? "<pending>" : absl::StrJoin(ips, ",");
  }
  return ips.empty() ? "<none>" : absl::StrJoin(ips, ",");
}

std::string Containers(const api::v1::PodSpec& spec, bool images) {
  std::vector<std::string> parts;
  for (const auto& c : spec.containers()) parts.push_back(images ? c.image() : c.name());
  return absl::StrJoin(parts, ",");
}

std::string NodeRoles(const api::v1::Node& n) {
  std::set<std::string> roles;
  for (const auto& [k, v] : n.metadata().labels()) {
    if (k.rfind("node-role.kubernetes.io/", 0) == 0) roles.insert(k.substr(strlen("node-role.kubernetes.io/")));
    if (k == "kubernetes.io/role") roles.insert(v);
  }
  roles.erase("");
  return roles.empty() ? "<none>" : absl::StrJoin(roles, ",");
}

std::string NodeStatus(const api::v1::Node& n) {
  std::string status = "Unknown";
  for (const auto& c : n.status().conditions()) {
    if (c.type() == "Ready") status = c.status() == "True" ? "Ready" : c.status() == "False" ? "NotReady" : "Unknown";
  }
  if (n.spec().unschedulable()) status += ",SchedulingDisabled";
  return status;
}

std::string NodeAddress(const api::v1::Node& n, const std::string& type) {
  for (const auto& a : n.status().addresses())
    if (a.type() == type) return a.address();
  return "<none>";
}

std::string Restarts(const api::v1::Pod& pod, std::chrono::system_clock::time_point now) {
  int restarts = 0;
  std::optional<int64_t> last;
  for (const auto& c : pod.status().container_statuses()) {
    restarts += c.restart_count();
    if (c.last_state().has_terminated()) {
      auto ago = SecondsSince(c.last_state().terminated().finished_at(), now);
      if (ago && (!last || *ago < *last)) last = ago;
    }
  }
  if (restarts > 0 && last) return absl::StrCat(restarts, " (", HumanDuration(*last), " ago)");
  return std::to_string(restarts);
}

std::vector<std::string> Row(const manifest::KindInfo& k, const Object& obj, const TableOptions& o) {
  const auto& meta = manifest::Meta(obj);
  std::string age = Age(meta.creation_timestamp(), o.now);
  switch (k.oneof_field) {
    case 1: {
      const auto& n = obj.namespace_();
      return {meta.name(), n.status().phase().empty() ? "Active" : n.status().phase(), age};
    }
    case 2: {
      const auto& n = obj.node();
      std::vector<std::string> r = {meta.name(), NodeStatus(n), NodeRoles(n), age,
                                    n.status().node_info().kubelet_version()};
      if (o.wide) {
        r.push_back(NodeAddress(n, "InternalIP"));
        r.push_back(NodeAddress(n, "ExternalIP"));
        r.push_back(OrNone(n.status().node_info().os_image()));
        r.push_back(OrNone(n.status().node_info().kernel_version()));
        r.push_back(OrNone(n.status().node_info().container_runtime_version()));
      }
      return r;
    }
    case 3: {
      const auto& p = obj.pod();
      int ready = 0;
      for (const auto& c : p.status().container_statuses()) ready += c.ready() ? 1 : 0;
      std::vector<std::string> r = {meta.name(), absl::StrCat(ready, "/", p.spec().containers_size()), PodStatus(p),
                                    Restarts(p, o.now), age};
      if (o.wide) {
        r.push_back(OrNone(p.status().pod_ip()));
        r.push_back(OrNone(p.spec().node_name()));
        r.push_back(OrNone(p.status().nominated_node_name()));
        r.push_back("<none>");
      }
      return r;
    }
    case 4: {
      const auto& s = obj.service();
      std::vector<std::string> r = {meta.name(), s.spec().type().empty() ? "ClusterIP" : s.spec().type(),
                                    OrNone(s.spec().cluster_ip()), ServiceExternalIP(s), ServicePorts(s), age};
      if (o.wide) r.push_back(FormatLabels(s.spec().selector()));
      return r;
    }
    case 5: {
      const auto& e = obj.endpoint_slice();
      std::vector<std::string> ports, addrs;
      for (const auto& p : e.ports()) ports.push_back(p.has_port() ? std::to_string(p.port()) : "<unset>");
      for (const auto& ep : e.endpoints())
        for (const auto& a : ep.addresses()) addrs.push_back(a);
      std::string endpoints = "<unset>";
      if (!addrs.empty()) {
        std::vector<std::string> first(addrs.begin(), addrs.begin() + std::min<size_t>(3, addrs.size()));
        endpoints = absl::StrJoin(first, ",");
        if (addrs.size() > 3) absl::StrAppend(&endpoints, " + ", addrs.size() - 3, " more...");
      }
      return {meta.name(), e.address_type(), ports.empty() ? "<unset>" : absl::StrJoin(ports, ","), endpoints, age};
    }
    case 6: {
      const auto& d = obj.deployment();
      int desired = d.spec().has_replicas() ? d.spec().replicas() : 1;
      std::vector<std::string> r = {meta.name(), absl::StrCat(d.status().ready_replicas(), "/", desired),
                                    std::to_string(d.status().updated_replicas()),
                                    std::to_string(d.status().available_replicas()), age};
      if (o.wide) {
        r.push_back(Containers(d.spec().template_().spec(), false));
        r.push_back(Containers(d.spec().template_().spec(), true));
        r.push_back(OrNone(FormatLabelSelector(d.spec().selector())));
      }
      return r;
    }
    case 7: {
      const auto& rs = obj.replica_set();
      std::vector<std::string> r = {meta.name(), std::to_string(rs.spec().has_replicas() ? rs.spec().replicas() : 1),
                                    std::to_string(rs.status().replicas()),
                                    std::to_string(rs.status().ready_replicas()), age};
      if (o.wide) {
        r.push_back(Containers(rs.spec().template_().spec(), false));
        r.push_back(Containers(rs.spec().template_().spec(), true));
        r.push_back(OrNone(FormatLabelSelector(rs.spec().selector())));
      }
      return r;
    }
    case 8: return {meta.name(), OrNone(obj.lease().spec().holder_identity()), age};
    case 9: {
      const auto& e = obj.event();
      std::string seen = !e.last_timestamp().empty() ? e.last_timestamp()
                         : !e.event_time().empty()   ? e.event_time()
                                                     : meta.creation_timestamp();
      std::string kind = e.involved_object().kind();
      std::transform(kind.begin(), kind.end(), kind.begin(), [](unsigned char c) { return std::tolower(c); });
      return {Age(seen, o.now), e.type(), e.reason(), absl::StrCat(kind, "/", e.involved_object().name()),
              e.message()};
    }
    case 10: {
      const auto& c = obj.config_map();
      return {meta.name(), std::to_string(c.data_size() + c.binary_data_size()), age};
    }
    case 11: {
      const auto& s = obj.secret();
      return {meta.name(), s.type().empty() ? "Opaque" : s.type(), std::to_string(s.data_size()), age};
    }
    case 12: return {meta.name(), std::to_string(obj.service_account().secrets_size()), age};
    case 13:
    case 14: return {meta.name(), meta.creation_timestamp()};
    case 15: {
      const auto& rb = obj.role_binding();
      return {meta.name(), absl::StrCat(rb.role_ref().kind(), "/", rb.role_ref().name()), age};
    }
    case 16: {
      const auto& rb = obj.cluster_role_binding();
      return {meta.name(), absl::StrCat(rb.role_ref().kind(), "/", rb.role_ref().name()), age};
    }
  }
  return {meta.name(), age};
}

std::vector<std::string> Header(const manifest::KindInfo& k, bool wide) {
  switch (k.oneof_field) {
    case 1: return {"NAME", "STATUS", "AGE"};
    case 2:
      if (wide)
        return {"NAME",        "STATUS",      "ROLES",    "AGE",           "VERSION",
                "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"};
      return {"NAME", "STATUS", "ROLES", "AGE", "VERSION"};
    case 3:
      if (wide) return {"NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"};
      return {"NAME", "READY", "STATUS", "RESTARTS", "AGE"};
    case 4:
      if (wide) return {"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"};
      return {"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"};
    case 5: return {"NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"};
    case 6:
      if (wide) return {"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"};
      return {"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"};
    case 7:
      if (wide) return {"NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"};
      return {"NAME", "DESIRED", "CURRENT", "READY", "AGE"};
    case 8: return {"NAME", "HOLDER", "AGE"};
    case 9: return {"LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"};
    case 10: return {"NAME", "DATA", "AGE"};
    case 11: return {"NAME", "TYPE", "DATA", "AGE"};
    case 12: return {"NAME", "SECRETS", "AGE"};
    case 13:
    case 14: return {"NAME", "CREATED AT"};
    case 15:
    case 16: return {"NAME", "ROLE", "AGE"};
  }
  return {"NAME", "AGE"};
}

}  // namespace

Table MakeTable(const manifest::KindInfo& k, const std::vector<Object>& objs, const TableOptions& o) {
  Table t;
  t.header = Header(k, o.wide);
  if (o.with_namespace && k.namespaced) t.header.insert(t.header.begin(), "NAMESPACE");
  for (const auto& l : o.label_columns) {
    std::string h = l.substr(l.rfind('/') == std::string::npos ? 0 : l.rfind('/') + 1);
    std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::toupper(c); });
    t.header.push_back(h);
  }
  if (o.show_labels) t.header.push_back("LABELS");
  for (const auto& obj : objs) {
    std::vector<std::string> r = Row(k, obj, o);
    const auto& meta = manifest::Meta(obj);
    if (o.with_namespace && k.namespaced) r.insert(r.begin(), meta.namespace_());
    for (const auto& l : o.label_columns) {
      auto it = meta.labels().find(l);
      r.push_back(it == meta.labels().end() ? "" : it->second);
    }
    if (o.show_labels) r.push_back(FormatLabels(meta.labels()));
    t.rows.push_back(std::move(r));
  }
  return t;
}

// ------------------------------------------------------------------ jsonpath

namespace {

struct Step {
  enum Kind { kField, kIndex, kWildcard, kSlice, kFilter, kRecursive } kind = kField;
  std::string name;
  int64_t index = 0, end = 0;
  bool has_end = false;
  // Filter: @.path op literal (or just @.path for existence).
  std::string filter_path, filter_op, filter_value;
};

Step MakeStep(Step::Kind kind) {
  Step s;
  s.kind = kind;
  return s;
}

absl::StatusOr<std::vector<Step>> ParsePath(std::string expr) {
  std::vector<Step> steps;
  if (!expr.empty() && expr[0] == '$') expr = expr.substr(1);
  size_t i = 0;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("error parsing jsonpath ", expr, ", ", why));
  };
  if (!expr.empty() && expr[0] != '.' && expr[0] != '[') expr = "." + expr;
  while (i < expr.size()) {
    if (expr[i] == '.') {
      if (i + 1 < expr.size() && expr[i + 1] == '.') {
        steps.push_back(MakeStep(Step::kRecursive));
        ++i;
        continue;
      }
      ++i;
      size_t j = i;
      std::string name;
      // kubectl's jsonpath escapes dots inside keys: .annotations.a\.b/c
      while (j < expr.size() && expr[j] != '.' && expr[j] != '[') {
        if (expr[j] == '\\' && j + 1 < expr.size()) ++j;
        name += expr[j++];
      }
      if (name == "*") {
        steps.push_back(MakeStep(Step::kWildcard));
      } else if (!name.empty()) {
        Step s = MakeStep(Step::kField);
        s.name = name;
        steps.push_back(s);
      }
      i = j;
    } else if (expr[i] == '[') {
      size_t close = expr.find(']', i);
      if (expr.compare(i, 3, "[?(") == 0) close = expr.find(")]", i) + 1;
      if (close == std::string::npos || close == 0) return bad("unterminated [");
      std::string in = expr.substr(i + 1, close - i - 1);
      i = close + 1;
      if (in == "*") {
        steps.push_back(MakeStep(Step::kWildcard));
      } else if (!in.empty() && (in[0] == '\'' || in[0] == '"')) {
        Step s = MakeStep(Step::kField);
        s.name = in.substr(1, in.size() - 2);
        steps.push_back(s);
      } else if (in.rfind("?(", 0) == 0) {
        std::string f = in.substr(2, in.size() - 3);
        Step s = MakeStep(Step::kFilter);
        static const char* kOps[] = {"==", "!=", "<=", ">=", "<", ">"};
        size_t at = std::string::npos;
        for (const char* op : kOps) {
          at = f.find(op);
          if (at != std::string::npos) {
            s.filter_op = op;
            break;
          }
        }
        std::string lhs = at == std::string::npos ? f : f.substr(0, at);
        lhs = std::string(absl::StripAsciiWhitespace(lhs));
        if (lhs.rfind("@", 0) != 0) return bad("filter must start with @");
        s.filter_path = lhs.substr(1);
        if (at != std::string::npos) {
          std::string rhs(absl::StripAsciiWhitespace(f.substr(at + s.filter_op.size())));
          if (!rhs.empty() && (rhs[0] == '"' || rhs[0] == '\'')) rhs = rhs.substr(1, rhs.size() - 2);
          s.filter_value = rhs;
        }
        steps.push_back(s);
      } else if (size_t colon = in.find(':'); colon != std::string::npos) {
        Step s = MakeStep(Step::kSlice);
        std::string a = in.substr(0, colon), b = in.substr(colon + 1);
        s.index = a.empty() ? 0 : std::stoll(a);
        s.has_end = !b.empty();
        s.end = b.empty() ? 0 : std::stoll(b);
        steps.push_back(s);
      } else {
        Step s = MakeStep(Step::kIndex);
        try {
          s.index = std::stoll(in);
        } catch (...) {
          return bad(absl::StrCat("invalid array index ", in));
        }
        steps.push_back(s);
      }
    } else {
      return bad(absl::StrCat("unexpected character ", std::string(1, expr[i])));
    }
  }
  return steps;
}

void Collect(const Value& v, const std::vector<Step>& steps, size_t at, std::vector<Value>* out);

void CollectRecursive(const Value& v, const std::vector<Step>& steps, size_t at, std::vector<Value>* out) {
  Collect(v, steps, at, out);
  if (v.is_map())
    for (const auto& [k, c] : v.entries()) CollectRecursive(c, steps, at, out);
  if (v.is_list())
    for (const auto& c : v.items()) CollectRecursive(c, steps, at, out);
}

void Collect(const Value& v, const std::vector<Step>& steps, size_t at, std::vector<Value>* out) {
  if (at == steps.size()) {
    out->push_back(v);
    return;
  }
  const Step& s = steps[at];
  switch (s.kind) {
    case Step::kField:
      if (v.is_map())
        if (const Value* c = v.Find(s.name)) Collect(*c, steps, at + 1, out);
      break;
    case Step::kIndex:
      if (v.is_list()) {
        int64_t n = static_cast<int64_t>(v.items().size());
        int64_t i = s.index < 0 ? n + s.index : s.index;
        if (i >= 0 && i < n) Collect(v.items()[static_cast<size_t>(i)], steps, at + 1, out);
      }
      break;
    case Step::kWildcard:
      if (v.is_list())
        for (const auto& c : v.items()) Collect(c, steps, at + 1, out);
      if (v.is_map())
        for (const auto& [k, c] : v.entries()) Collect(c, steps, at + 1, out);
      break;
    case Step::kSlice:
      if (v.is_list()) {
        int64_t n = static_cast<int64_t>(v.items().size());
        int64_t b = s.index < 0 ? std::max<int64_t>(0, n + s.index) : std::min(s.index, n);
        int64_t e = !s.has_end ? n : s.end < 0 ? std::max<int64_t>(0, n + s.end) : std::min(s.end, n);
        for (int64_t i = b; i < e; ++i) Collect(v.items()[static_cast<size_t>(i)], steps, at + 1, out);
      }
      break;
    case Step::kFilter:
      if (v.is_list()) {
        auto sub = ParsePath(s.filter_path);
        if (!sub.ok()) break;
        for (const auto& c : v.items()) {
          std::vector<Value> got;
          Collect(c, *sub, 0, &got);
          bool keep;
          if (s.filter_op.empty()) {
            keep = !got.empty();
          } else {
            keep = false;
            for (const auto& g : got) {
              std::string t = g.text();
              if (s.filter_op == "==") keep |= t == s.filter_value;
              if (s.filter_op == "!=") keep |= t != s.filter_value;
              if (s.filter_op == "<" || s.filter_op == ">" || s.filter_op == "<=" || s.filter_op == ">=") {
                double a = std::strtod(t.c_str(), nullptr), b = std::strtod(s.filter_value.c_str(), nullptr);
                keep |= (s.filter_op == "<" && a < b) || (s.filter_op == ">" && a > b) ||
                        (s.filter_op == "<=" && a <= b) || (s.filter_op == ">=" && a >= b);
              }
            }
          }
          if (keep) Collect(c, steps, at + 1, out);
        }
      }
      break;
    case Step::kRecursive: CollectRecursive(v, steps, at + 1, out); break;
  }
}

std::string Render(const Value& v) {
  if (v.is_string()) return v.text();
  if (v.is_scalar()) return v.is_null() ? "" : v.text();
  return manifest::ToJson(v, 0);
}

struct Node {
  enum Kind { kText, kPath, kRange } kind;
  std::string text;  // text or path
  std::vector<Node> body;
};

std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

absl::StatusOr<std::vector<Node>> ParseTemplate(const std::string& t, size_t& i, bool in_range) {
  std::vector<Node> nodes;
  while (i < t.size()) {
    size_t open = t.find('{', i);
    if (open == std::string::npos) {
      nodes.push_back({Node::kText, t.substr(i), {}});
      i = t.size();
      break;
    }
    if (open > i) nodes.push_back({Node::kText, t.substr(i, open - i), {}});
    // Find the matching close brace, skipping quoted strings.
    size_t j = open + 1;
    char quote = 0;
    for (; j < t.size(); ++j) {
      if (quote) {
        if (t[j] == '\\') {
          ++j;
        } else if (t[j] == quote) {
          quote = 0;
        }
      } else if (t[j] == '"' || t[j] == '\'') {
        quote = t[j];
      } else if (t[j] == '}') {
        break;
      }
    }
    if (j >= t.size()) return absl::InvalidArgumentError(absl::StrCat("error parsing jsonpath ", t, ", unclosed action"));
    std::string inner(absl::StripAsciiWhitespace(t.substr(open + 1, j - open - 1)));
    i = j + 1;
    if (inner == "end") {
      if (!in_range) return absl::InvalidArgumentError(absl::StrCat("error parsing jsonpath ", t, ", not in range"));
      return nodes;
    }
    if (inner.rfind("range ", 0) == 0) {
      Node r{Node::kRange, std::string(absl::StripAsciiWhitespace(inner.substr(6))), {}};
      ASSIGN_OR_RETURN(r.body, ParseTemplate(t, i, true));
      nodes.push_back(std::move(r));
    } else if (!inner.empty() && (inner[0] == '"' || inner[0] == '\'')) {
      nodes.push_back({Node::kText, Unescape(inner.substr(1, inner.size() - 2)), {}});
    } else {
      nodes.push_back({Node::kPath, inner, {}});
    }
  }
  if (in_range) return absl::InvalidArgumentError(absl::StrCat("error parsing jsonpath ", t, ", range without end"));
  return nodes;
}

absl::Status Execute(const std::vector<Node>& nodes, const Value& cur, std::string* out) {
  for (const auto& n : nodes) {
    if (n.kind == Node::kText) {
      *out += n.text;
    } else if (n.kind == Node::kPath) {
      ASSIGN_OR_RETURN(std::vector<Value> got, JsonPathEval(n.text, cur));
      std::vector<std::string> parts;
      for (const auto& g : got) parts.push_back(Render(g));
      *out += absl::StrJoin(parts, " ");
    } else {
      ASSIGN_OR_RETURN(std::vector<Value> got, JsonPathEval(n.text, cur));
      for (const auto& g : got) RETURN_IF_ERROR(Execute(n.body, g, out));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Value>> JsonPathEval(const std::string& expr, const Value& root) {
  ASSIGN_OR_RETURN(std::vector<Step> steps, ParsePath(expr));
  std::vector<Value> out;
  Collect(root, steps, 0, &out);
  return out;
}

absl::StatusOr<std::string> JsonPathTemplate(const std::string& tmpl, const Value& root) {
  size_t i = 0;
  ASSIGN_OR_RETURN(std::vector<Node> nodes, ParseTemplate(tmpl, i, false));
  std::string out;
  RETURN_IF_ERROR(Execute(nodes, root, &out));
  return out;
}

}  // namespace skiff::cli
