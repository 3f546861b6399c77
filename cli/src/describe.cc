// skiffctl describe: a human summary of an object and its events.
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cmd.h"
#include "print.h"

namespace skiff::cli {

namespace {

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void Line(int level, const std::string& key, const std::string& value, int width = 0) {
    std::string k = std::string(static_cast<size_t>(level) * 2, ' ') + key + (key.empty() ? "" : ":");
    if (width == 0) width = 18;
    *out_ += k;
    if (!value.empty()) {
      *out_ += std::string(k.size() < static_cast<size_t>(width) ? static_cast<size_t>(width) - k.size() : 1, ' ');
      *out_ += value;
    }
    *out_ += '\n';
  }
  void Map(int level, const std::string& key, const google::protobuf::Map<std::string, std::string>& m,
           int width = 0) {
    std::map<std::string, std::string> sorted(m.begin(), m.end());
    if (sorted.empty()) return Line(level, key, "<none>", width);
    bool first = true;
    for (const auto& [k, v] : sorted) {
      std::string kv = absl::StrCat(k, "=", v);
      if (first) {
        Line(level, key, kv, width);
      } else {
        *out_ += std::string(static_cast<size_t>(width ? width : 18), ' ') + kv + "\n";
      }
      first = false;
    }
  }
  void Raw(const std::string& s) { *out_ += s; }

 private:
  std::string* out_;
};

std::string HumanTime(const std::string& rfc3339) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &err)) return rfc3339;
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S %z", t, absl::UTCTimeZone());
}

void DescribeContainer(Writer& w, const api::v1::Container& c, const api::v1::ContainerStatus* st, int base = 1) {
  w.Line(base, c.name(), "");
  if (st != nullptr) w.Line(base + 1, "Container ID", st->container_id(), 20);
  w.Line(base + 1, "Image", c.image(), 20);
  if (st != nullptr) w.Line(base + 1, "Image ID", st->image_id(), 20);
  std::vector<std::string> ports;
  for (const auto& p : c.ports())
    ports.push_back(absl::StrCat(p.container_port(), "/", p.protocol().empty() ? "TCP" : p.protocol()));
  w.Line(base + 1, "Port", ports.empty() ? "<none>" : absl::StrJoin(ports, ", "), 20);
  if (!c.command().empty()) {
    w.Line(base + 1, "Command", "", 20);
    for (const auto& a : c.command()) w.Raw(absl::StrCat("      ", a, "\n"));
  }
  if (!c.args().empty()) {
    w.Line(base + 1, "Args", "", 20);
    for (const auto& a : c.args()) w.Raw(absl::StrCat("      ", a, "\n"));
  }
  if (st != nullptr) {
    const auto& s = st->state();
    if (s.has_running()) {
      w.Line(base + 1, "State", "Running", 20);
      w.Line(base + 2, "Started", HumanTime(s.running().started_at()), 20);
    } else if (s.has_terminated()) {
      w.Line(base + 1, "State", "Terminated", 20);
      w.Line(base + 2, "Reason", s.terminated().reason(), 20);
      w.Line(base + 2, "Exit Code", std::to_string(s.terminated().exit_code()), 20);
    } else if (s.has_waiting()) {
      w.Line(base + 1, "State", "Waiting", 20);
      w.Line(base + 2, "Reason", s.waiting().reason(), 20);
    }
    if (st->last_state().has_terminated()) {
      w.Line(base + 1, "Last State", "Terminated", 20);
      w.Line(base + 2, "Reason", st->last_state().terminated().reason(), 20);
      w.Line(base + 2, "Exit Code", std::to_string(st->last_state().terminated().exit_code()), 20);
    }
    w.Line(base + 1, "Ready", st->ready() ? "True" : "False", 20);
    w.Line(base + 1, "Restart Count", std::to_string(st->restart_count()), 20);
  }
  if (!c.resources().limits().empty()) w.Map(base + 1, "Limits", c.resources().limits(), 20);
  if (!c.resources().requests().empty()) w.Map(base + 1, "Requests", c.resources().requests(), 20);
  if (c.env().empty()) {
    w.Line(base + 1, "Environment", "<none>", 20);
  } else {
    w.Line(base + 1, "Environment", "", 20);
    for (const auto& e : c.env()) w.Raw(absl::StrCat("      ", e.name(), ":  ", e.value(), "\n"));
  }
  if (c.volume_mounts().empty()) {
    w.Line(base + 1, "Mounts", "<none>", 20);
  } else {
    w.Line(base + 1, "Mounts", "", 20);
    for (const auto& m : c.volume_mounts())
      w.Raw(absl::StrCat("      ", m.mount_path(), " from ", m.name(), m.read_only() ? " (ro)" : " (rw)", "\n"));
  }
}

void DescribePod(Writer& w, const api::v1::Pod& p) {
  const auto& m = p.metadata();
  w.Line(0, "Name", m.name());
  w.Line(0, "Namespace", m.namespace_());
  w.Line(0, "Service Account", p.spec().service_account_name().empty() ? "default" : p.spec().service_account_name());
  w.Line(0, "Node", p.spec().node_name().empty()     ? "<none>"
                    : p.status().host_ip().empty() ? p.spec().node_name()
                                                   : absl::StrCat(p.spec().node_name(), "/", p.status().host_ip()));
  if (!p.status().start_time().empty()) w.Line(0, "Start Time", HumanTime(p.status().start_time()));
  w.Map(0, "Labels", m.labels());
  w.Map(0, "Annotations", m.annotations());
  w.Line(0, "Status", m.deletion_timestamp().empty() ? p.status().phase() : "Terminating");
  if (!p.status().reason().empty()) w.Line(0, "Reason", p.status().reason());
  if (!p.status().message().empty()) w.Line(0, "Message", p.status().message());
  w.Line(0, "IP", p.status().pod_ip());
  std::string controlled;
  for (const auto& o : m.owner_references())
    if (o.controller()) controlled = absl::StrCat(o.kind(), "/", o.name());
  if (!controlled.empty()) w.Line(0, "Controlled By", controlled);
  if (!p.spec().init_containers().empty()) {
    w.Line(0, "Init Containers", "");
    for (const auto& c : p.spec().init_containers()) {
      const api::v1::ContainerStatus* st = nullptr;
      for (const auto& s : p.status().init_container_statuses())
        if (s.name() == c.name()) st = &s;
      DescribeContainer(w, c, st);
    }
  }
  w.Line(0, "Containers", "");
  for (const auto& c : p.spec().containers()) {
    const api::v1::ContainerStatus* st = nullptr;
    for (const auto& s : p.status().container_statuses())
      if (s.name() == c.name()) st = &s;
    DescribeContainer(w, c, st);
  }
  if (!p.status().conditions().empty()) {
    w.Line(0, "Conditions", "");
    w.Raw("  Type              Status\n");
    for (const auto& c : p.status().conditions())
      w.Raw(absl::StrCat("  ", c.type(), std::string(c.type().size() < 18 ? 18 - c.type().size() : 1, ' '),
                         c.status(), "\n"));
  }
  if (p.spec().volumes().empty()) {
    w.Line(0, "Volumes", "<none>");
  } else {
    w.Line(0, "Volumes", "");
    for (const auto& v : p.spec().volumes()) {
      w.Line(1, v.name(), "");
      if (v.has_empty_dir()) w.Line(2, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)");
      if (v.has_host_path()) {
        w.Line(2, "Type", "HostPath (bare host directory volume)");
        w.Line(2, "Path", v.host_path().path());
      }
      if (v.has_config_map()) {
        w.Line(2, "Type", "ConfigMap (a volume populated by a ConfigMap)");
        w.Line(2, "Name", v.config_map().name());
      }
      if (v.has_secret()) {
        w.Line(2, "Type", "Secret (a volume populated by a Secret)");
        w.Line(2, "SecretName", v.secret().secret_name());
      }
    }
  }
  w.Line(0, "QoS Class", p.status().qos_class().empty() ? "BestEffort" : p.status().qos_class());
  w.Map(0, "Node-Selectors", p.spec().node_selector());
  std::vector<std::string> tols;
  for (const auto& t : p.spec().tolerations())
    tols.push_back(absl::StrCat(t.key(), t.operator_() == "Exists" ? "" : "=" + t.value(), ":", t.effect()));
  w.Line(0, "Tolerations", tols.empty() ? "<none>" : absl::StrJoin(tols, ", "));
}

void DescribeDeployment(Writer& w, const api::v1::Deployment& d) {
  const auto& m = d.metadata();
  w.Line(0, "Name", m.name(), 24);
  w.Line(0, "Namespace", m.namespace_(), 24);
  w.Line(0, "CreationTimestamp", HumanTime(m.creation_timestamp()), 24);
  w.Map(0, "Labels", m.labels(), 24);
  w.Map(0, "Annotations", m.annotations(), 24);
  w.Line(0, "Selector", FormatLabelSelector(d.spec().selector()), 24);
  int desired = d.spec().has_replicas() ? d.spec().replicas() : 1;
  const auto& s = d.status();
  w.Line(0, "Replicas",
         absl::StrCat(desired, " desired | ", s.updated_replicas(), " updated | ", s.replicas(), " total | ",
                      s.available_replicas(), " available | ", s.unavailable_replicas(), " unavailable"),
         24);
  std::string strategy = d.spec().strategy().type().empty() ? "RollingUpdate" : d.spec().strategy().type();
  w.Line(0, "StrategyType", strategy, 24);
  w.Line(0, "MinReadySeconds", std::to_string(d.spec().min_ready_seconds()), 24);
  if (strategy == "RollingUpdate") {
    const auto& ru = d.spec().strategy().rolling_update();
    w.Line(0, "RollingUpdateStrategy",
           absl::StrCat(ru.max_unavailable().empty() ? "25%" : ru.max_unavailable(), " max unavailable, ",
                        ru.max_surge().empty() ? "25%" : ru.max_surge(), " max surge"),
           24);
  }
  w.Line(0, "Pod Template", "");
  w.Map(1, "Labels", d.spec().template_().metadata().labels(), 24);
  w.Line(1, "Containers", "");
  for (const auto& c : d.spec().template_().spec().containers()) DescribeContainer(w, c, nullptr, 2);
  if (!s.conditions().empty()) {
    w.Line(0, "Conditions", "");
    w.Raw("  Type           Status  Reason\n  ----           ------  ------\n");
    for (const auto& c : s.conditions())
      w.Raw(absl::StrCat("  ", c.type(), std::string(c.type().size() < 15 ? 15 - c.type().size() : 1, ' '),
                         c.status(), std::string(c.status().size() < 8 ? 8 - c.status().size() : 1, ' '),
                         c.reason(), "\n"));
  }
}

void DescribeService(Writer& w, const api::v1::Service& s) {
  const auto& m = s.metadata();
  w.Line(0, "Name", m.name(), 26);
  w.Line(0, "Namespace", m.namespace_(), 26);
  w.Map(0, "Labels", m.labels(), 26);
  w.Map(0, "Annotations", m.annotations(), 26);
  w.Line(0, "Selector", FormatLabels(s.spec().selector()), 26);
  w.Line(0, "Type", s.spec().type().empty() ? "ClusterIP" : s.spec().type(), 26);
  w.Line(0, "IP Family Policy", s.spec().ip_family_policy().empty() ? "SingleStack" : s.spec().ip_family_policy(), 26);
  w.Line(0, "IP", s.spec().cluster_ip().empty() ? "<none>" : s.spec().cluster_ip(), 26);
  for (const auto& p : s.spec().ports()) {
    std::string proto = p.protocol().empty() ? "TCP" : p.protocol();
    w.Line(0, "Port", absl::StrCat(p.name().empty() ? "<unset>" : p.name(), "  ", p.port(), "/", proto), 26);
    w.Line(0, "TargetPort", absl::StrCat(p.target_port().empty() ? std::to_string(p.port()) : p.target_port(), "/",
                                          proto),
           26);
    if (p.node_port()) w.Line(0, "NodePort", absl::StrCat(p.name().empty() ? "<unset>" : p.name(), "  ",
                                                          p.node_port(), "/", proto),
                              26);
  }
  w.Line(0, "Session Affinity", s.spec().session_affinity().empty() ? "None" : s.spec().session_affinity(), 26);
}

void DescribeNode(Writer& w, const api::v1::Node& n) {
  const auto& m = n.metadata();
  w.Line(0, "Name", m.name(), 20);
  w.Map(0, "Labels", m.labels(), 20);
  w.Map(0, "Annotations", m.annotations(), 20);
  w.Line(0, "CreationTimestamp", HumanTime(m.creation_timestamp()), 20);
  std::vector<std::string> taints;
  for (const auto& t : n.spec().taints())
    taints.push_back(absl::StrCat(t.key(), t.value().empty() ? "" : "=" + t.value(), ":", t.effect()));
  w.Line(0, "Taints", taints.empty() ? "<none>" : absl::StrJoin(taints, "\n                    "), 20);
  w.Line(0, "Unschedulable", n.spec().unschedulable() ? "true" : "false", 20);
  w.Line(0, "Conditions", "");
  w.Raw("  Type             Status  Reason                       Message\n"
        "  ----             ------  ------                       -------\n");
  for (const auto& c : n.status().conditions())
    w.Raw(absl::StrCat("  ", c.type(), std::string(c.type().size() < 17 ? 17 - c.type().size() : 1, ' '), c.status(),
                       std::string(c.status().size() < 8 ? 8 - c.status().size() : 1, ' '), c.reason(),
                       std::string(c.reason().size() < 29 ? 29 - c.reason().size() : 1, ' '), c.message(), "\n"));
  w.Line(0, "Addresses", "");
  for (const auto& a : n.status().addresses()) w.Line(1, a.type(), a.address());
  if (!n.status().capacity().empty()) {
    w.Line(0, "Capacity", "");
    for (const auto& [k, v] : std::map<std::string, std::string>(n.status().capacity().begin(),
                                                                  n.status().capacity().end()))
      w.Line(1, k, v);
  }
  if (!n.status().allocatable().empty()) {
    w.Line(0, "Allocatable", "");
    for (const auto& [k, v] : std::map<std::string, std::string>(n.status().allocatable().begin(),
                                                                  n.status().allocatable().end()))
      w.Line(1, k, v);
  }
  const auto& info = n.status().node_info();
  w.Line(0, "System Info", "");
  w.Line(1, "Kernel Version", info.kernel_version(), 28);
  w.Line(1, "OS Image", info.os_image(), 28);
  w.Line(1, "Container Runtime Version", info.container_runtime_version(), 28);
  w.Line(1, "Kubelet Version", info.kubelet_version(), 28);
  if (!n.spec().pod_cidr().empty()) w.Line(0, "PodCIDR", n.spec().pod_cidr(), 20);
}

void DescribeGeneric(Writer& w, const Object& obj) {
  const auto& m = manifest::Meta(obj);
  w.Line(0, "Name", m.name(), 14);
  if (!m.namespace_().empty()) w.Line(0, "Namespace", m.namespace_(), 14);
  w.Map(0, "Labels", m.labels(), 14);
  w.Map(0, "Annotations", m.annotations(), 14);
  Value v = manifest::EncodeObject(obj);
  v.Erase("metadata");
  v.Erase("apiVersion");
  v.Erase("kind");
  if (obj.has_secret()) {
    // Like kubectl: sizes, never the values.
    w.Line(0, "Type", obj.secret().type().empty() ? "Opaque" : obj.secret().type(), 14);
    w.Raw("\nData\n====\n");
    for (const auto& [k, val] : std::map<std::string, std::string>(obj.secret().data().begin(),
                                                                    obj.secret().data().end()))
      w.Raw(absl::StrCat(k, ":  ", val.size(), " bytes\n"));
    return;
  }
  if (obj.has_config_map()) {
    w.Raw("\nData\n====\n");
    for (const auto& [k, val] : std::map<std::string, std::string>(obj.config_map().data().begin(),
                                                                    obj.config_map().data().end()))
      w.Raw(absl::StrCat(k, ":\n----\n", val, "\n\n"));
    w.Raw(absl::StrCat("\nBinaryData\n====\n"));
    return;
  }
  if (!v.entries().empty()) {
    std::string yaml = manifest::ToYaml(v);
    for (auto& c : yaml) (void)c;
    // Present the remaining fields as indented YAML.
    std::string indented;
    size_t start = 0;
    while (start < yaml.size()) {
      size_t nl = yaml.find('\n', start);
      std::string line = yaml.substr(start, nl - start);
      if (!line.empty()) {
        // Capitalise top-level keys the way kubectl's generic describer does.
        if (line[0] != ' ' && line[0] != '-') line[0] = static_cast<char>(std::toupper(line[0]));
        indented += line;
      }
      indented += "\n";
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    w.Raw(indented);
  }
}

void DescribeEvents(Ctx& ctx, client::Client* c, const Object& obj, Writer& w) {
  const auto& m = manifest::Meta(obj);
  const KindInfo* k = manifest::KindOf(obj);
  auto list = c->List("events", m.namespace_().empty() ? "default" : m.namespace_());
  std::vector<api::v1::Event> events;
  if (list.ok()) {
    for (const auto& item : list->items()) {
      const auto& io = item.event().involved_object();
      if (io.name() != m.name() || io.kind() != k->kind) continue;
      if (!io.uid().empty() && !m.uid().empty() && io.uid() != m.uid()) continue;
      events.push_back(item.event());
    }
  }
  if (events.empty()) {
    w.Line(0, "Events", "<none>");
    return;
  }
  auto when = [](const api::v1::Event& e) {
    return !e.last_timestamp().empty() ? e.last_timestamp()
           : !e.event_time().empty()   ? e.event_time()
                                       : e.metadata().creation_timestamp();
  };
  std::sort(events.begin(), events.end(), [&](const auto& a, const auto& b) { return when(a) < when(b); });
  Table t;
  t.header = {"Type", "Reason", "Age", "From", "Message"};
  t.rows.push_back({"----", "------", "----", "----", "-------"});
  for (const auto& e : events) {
    std::string age = Age(when(e), ctx.Now());
    if (e.count() > 1 && !e.first_timestamp().empty()) {
      age = absl::StrCat(age, " (x", e.count(), " over ", Age(e.first_timestamp(), ctx.Now()), ")");
    }
    std::string from = !e.source().component().empty() ? e.source().component() : e.reporting_component();
    t.rows.push_back({e.type(), e.reason(), age, from, e.message()});
  }
  w.Raw("Events:\n");
  std::string table = RenderTable(t, true, 2);
  size_t start = 0;
  while (start < table.size()) {
    size_t nl = table.find('\n', start);
    w.Raw("  " + table.substr(start, nl - start + 1));
    start = nl + 1;
  }
}

}  // namespace

int CmdDescribe(Ctx& ctx) {
  std::vector<std::pair<const KindInfo*, std::string>> targets;
  if (ctx.flags.Has("filename")) {
    auto docs = manifest::ReadManifests(ctx.flags.All("filename"), ctx.flags.Bool("recursive"), *ctx.env.in);
    if (!docs.ok()) return Fail(ctx, docs.status());
    for (const auto& d : *docs) targets.emplace_back(manifest::KindOf(d.object), manifest::Meta(d.object).name());
  } else {
    if (ctx.flags.args.empty()) {
      return Fail(ctx, "You must specify the type of resource to describe. Use \"skiffctl api-resources\" for a "
                       "complete list of supported resources.");
    }
    auto pairs = ResolveTypeNames(ctx.flags.args);
    if (!pairs.ok()) return Fail(ctx, pairs.status());
    targets = *pairs;
  }
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  std::vector<Object> objs;
  int rc = 0;
  for (const auto& [k, name] : targets) {
    std::string ns = ctx.AllNamespaces() && name.empty() ? "" : NsFor(*k, ctx.Namespace());
    if (name.empty()) {
      client::ListOptions lo;
      lo.label_selector = ctx.flags.Get("selector");
      auto list = c->List(k->resource, ns, lo);
      if (!list.ok()) return ServerFail(ctx, list.status());
      for (const auto& item : list->items()) objs.push_back(item);
      if (list->items().empty()) ctx.err() << "No resources found in " << ctx.Namespace() << " namespace.\n";
    } else {
      auto got = c->Get(k->resource, ns, name);
      if (!got.ok()) {
        PrintServerError(ctx, got.status());
        rc = 1;
        continue;
      }
      objs.push_back(*got);
    }
  }
  bool first = true;
  for (const auto& obj : objs) {
    std::string out;
    Writer w(&out);
    if (obj.has_pod()) {
      DescribePod(w, obj.pod());
    } else if (obj.has_deployment()) {
      DescribeDeployment(w, obj.deployment());
    } else if (obj.has_service()) {
      DescribeService(w, obj.service());
    } else if (obj.has_node()) {
      DescribeNode(w, obj.node());
    } else {
      DescribeGeneric(w, obj);
    }
    if (ctx.flags.Bool("show-events", true) && !obj.has_event()) DescribeEvents(ctx, c, obj, w);
    if (!first) ctx.out() << "\n\n";
    first = false;
    ctx.out() << out;
  }
  return rc;
}

}  // namespace skiff::cli
