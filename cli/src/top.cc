// skiffctl top nodes|pods: CPU and memory from the kubelets' Stats, passed
// through by the API server (Api.NodeStats), printed with kubectl's columns.
#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cmd.h"
#include "print.h"

namespace skiff::cli {

namespace {

// A Kubernetes quantity in thousandths of its unit ("250m" -> 250, "2" ->
// 2000, "1Ki" -> 1024000); nullopt if it is not one.
std::optional<double> MilliQuantity(const std::string& q) {
  size_t end = 0;
  while (end < q.size() && (std::isdigit(static_cast<unsigned char>(q[end])) || q[end] == '.')) ++end;
  double number = 0;
  if (end == 0 || !absl::SimpleAtod(q.substr(0, end), &number)) return std::nullopt;
  static const std::map<std::string, double> kSuffix = {
      {"", 1e3},       {"m", 1},          {"k", 1e6},        {"M", 1e9},        {"G", 1e12},
      {"T", 1e15},     {"P", 1e18},       {"E", 1e21},       {"Ki", 1024e3},    {"Mi", 1048576e3},
      {"Gi", 1073741824e3}, {"Ti", 1099511627776e3}, {"Pi", 1125899906842624e3}, {"Ei", 1152921504606846976e3}};
  auto it = kSuffix.find(q.substr(end));
  if (it == kSuffix.end()) return std::nullopt;
  return number * it->second;
}

std::string Cores(uint64_t nano) { return absl::StrCat(nano / 1000000, "m"); }
std::string Mebibytes(uint64_t bytes) { return absl::StrCat(bytes / (1024 * 1024), "Mi"); }

// The column for a value a node cannot measure (ContainerStats.unavailable,
// e.g. memory on a cgroup2 without the memory controller): kubectl's word
// for a missing figure, never a 0 that reads as a measurement.
constexpr char kUnknown[] = "<unknown>";

bool Measured(const api::v1::ContainerStats& c, const std::string& what) {
  return std::find(c.unavailable().begin(), c.unavailable().end(), what) == c.unavailable().end();
}

// A pod's CPU (nano-cores) or memory (bytes): the sum of its containers,
// nullopt if any container's value is unavailable (a partial sum would
// understate the pod).
std::optional<uint64_t> PodSum(const api::v1::PodStats& p, const std::string& what) {
  uint64_t s = 0;
  for (const auto& c : p.containers()) {
    if (!Measured(c, what)) return std::nullopt;
    s += what == "cpu" ? c.cpu_usage_nano_cores() : c.memory_working_set_bytes();
  }
  return s;
}
std::optional<uint64_t> ContainerValue(const api::v1::ContainerStats& c, const std::string& what) {
  if (!Measured(c, what)) return std::nullopt;
  return what == "cpu" ? c.cpu_usage_nano_cores() : c.memory_working_set_bytes();
}
std::string CpuColumn(std::optional<uint64_t> nano) { return nano ? Cores(*nano) : kUnknown; }
std::string MemoryColumn(std::optional<uint64_t> bytes) { return bytes ? Mebibytes(*bytes) : kUnknown; }

// --sort-by order: larger first, unknown values last.
bool Larger(std::optional<uint64_t> a, std::optional<uint64_t> b) {
  if (a.has_value() != b.has_value()) return a.has_value();
  return a.value_or(0) > b.value_or(0);
}

// Go's time.Duration.String() at second precision ("45s", "5m0s", "1h2m3s"),
// as kubectl prints a pod's age in "Metrics not available" errors.
std::string GoDuration(int64_t s) {
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m", s % 60, "s");
  return absl::StrCat(s / 3600, "h", (s % 3600) / 60, "m", s % 60, "s");
}

// Stats of one node; nullopt when its kubelet could not be asked. An API
// server without the call at all is kubectl's "Metrics API not available".
struct Fetch {
  std::optional<api::v1::StatsResponse> stats;
  bool api_missing = false;
  absl::Status error;
};
Fetch FetchStats(NodeApi* node, const std::string& name) {
  Fetch f;
  auto s = node->NodeStats(name);
  if (s.ok()) {
    f.stats = *std::move(s);
  } else if (s.status().code() == absl::StatusCode::kUnimplemented) {
    f.api_missing = true;
  } else {
    f.error = s.status();
  }
  return f;
}

bool SortBy(Ctx& ctx, std::string* by) {
  *by = ctx.flags.Get("sort-by");
  if (by->empty() || *by == "cpu" || *by == "memory") return true;
  Fail(ctx, absl::StrCat("--sort-by accepts only cpu or memory"));
  return false;
}

int TopNodes(Ctx& ctx, client::Client* c, NodeApi* node) {
  std::string sort_by;
  if (!SortBy(ctx, &sort_by)) return 1;
  std::vector<api::v1::Node> nodes;
  if (ctx.flags.args.size() > 1) {
    for (size_t i = 1; i < ctx.flags.args.size(); ++i) {
      auto got = c->Get("nodes", "", ctx.flags.args[i]);
      if (!got.ok()) return ServerFail(ctx, got.status());
      nodes.push_back(got->node());
    }
  } else {
    client::ListOptions lo;
    lo.label_selector = ctx.flags.Get("selector");
    auto list = c->List("nodes", "", lo);
    if (!list.ok()) return ServerFail(ctx, list.status());
    for (const auto& item : list->items()) nodes.push_back(item.node());
  }
  struct Row {
    std::string name;
    std::optional<api::v1::StatsResponse> stats;
    std::optional<double> cpu_alloc, mem_alloc;  // millicores, milli-bytes
  };
  std::vector<Row> rows;
  bool any = false;
  for (const auto& n : nodes) {
    Fetch f = FetchStats(node, n.metadata().name());
    if (f.api_missing) return Fail(ctx, "Metrics API not available");
    Row r{n.metadata().name(), f.stats, std::nullopt, std::nullopt};
    auto alloc = [&](const char* key) -> std::optional<double> {
      for (const auto* m : {&n.status().allocatable(), &n.status().capacity()}) {
        auto it = m->find(key);
        if (it != m->end()) return MilliQuantity(it->second);
      }
      return std::nullopt;
    };
    r.cpu_alloc = alloc("cpu");
    r.mem_alloc = alloc("memory");
    any = any || r.stats.has_value();
    rows.push_back(std::move(r));
  }
  if (!any) return Fail(ctx, "metrics not available yet");
  std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
    // Nodes without metrics last, as kubectl does.
    if (a.stats.has_value() != b.stats.has_value()) return a.stats.has_value();
    if (!a.stats) return a.name < b.name;
    if (sort_by == "cpu") return a.stats->cpu_usage_nano_cores() > b.stats->cpu_usage_nano_cores();
    if (sort_by == "memory") return a.stats->memory_working_set_bytes() > b.stats->memory_working_set_bytes();
    return a.name < b.name;
  });
  Table t;
  t.header = {"NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"};
  auto percent = [](double used_milli, std::optional<double> alloc_milli) -> std::string {
    if (!alloc_milli || *alloc_milli <= 0) return "<unknown>";
    return absl::StrCat(static_cast<int64_t>(used_milli * 100 / *alloc_milli), "%");
  };
  for (const auto& r : rows) {
    if (!r.stats) {
      t.rows.push_back({r.name, "<unknown>", "<unknown>", "<unknown>", "<unknown>"});
      continue;
    }
    uint64_t cpu = r.stats->cpu_usage_nano_cores(), mem = r.stats->memory_working_set_bytes();
    t.rows.push_back({r.name, Cores(cpu), percent(static_cast<double>(cpu / 1000000), r.cpu_alloc), Mebibytes(mem),
                      percent(static_cast<double>(mem) * 1000, r.mem_alloc)});
  }
  ctx.out() << RenderTable(t, !ctx.flags.Bool("no-headers"));
  return 0;
}

int TopPods(Ctx& ctx, client::Client* c, NodeApi* node) {
  std::string sort_by;
  if (!SortBy(ctx, &sort_by)) return 1;
  bool all = ctx.AllNamespaces();
  std::string ns = all ? "" : ctx.Namespace();
  std::vector<api::v1::Pod> pods;
  bool named = ctx.flags.args.size() > 1;
  if (named) {
    for (size_t i = 1; i < ctx.flags.args.size(); ++i) {
      auto got = c->Get("pods", ctx.Namespace(), ctx.flags.args[i]);
      if (!got.ok()) return ServerFail(ctx, got.status());
      pods.push_back(got->pod());
    }
  } else {
    client::ListOptions lo;
    lo.label_selector = ctx.flags.Get("selector");
    lo.field_selector = ctx.flags.Get("field-selector");
    auto list = c->List("pods", ns, lo);
    if (!list.ok()) return ServerFail(ctx, list.status());
    for (const auto& item : list->items()) pods.push_back(item.pod());
  }
  // One Stats call per node that runs any of these pods.
  std::set<std::string> node_names;
  std::set<std::pair<std::string, std::string>> wanted;
  for (const auto& p : pods) {
    if (!p.spec().node_name().empty()) node_names.insert(p.spec().node_name());
    wanted.insert({p.metadata().namespace_(), p.metadata().name()});
  }
  std::vector<api::v1::PodStats> stats;
  for (const auto& n : node_names) {
    Fetch f = FetchStats(node, n);
    if (f.api_missing) return Fail(ctx, "Metrics API not available");
    if (!f.stats) continue;
    for (const auto& ps : f.stats->pods())
      if (wanted.count({ps.namespace_(), ps.name()})) stats.push_back(ps);
  }
  if (stats.empty()) {
    // kubectl: pods that exist but have no metrics yet are an error naming
    // the first one; no pods at all is "No resources found".
    if (!pods.empty()) {
      const auto& p = pods.front();
      int64_t age = SecondsSince(p.metadata().creation_timestamp(), ctx.Now()).value_or(0);
      return Fail(ctx, absl::StrCat("Metrics not available for pod ", p.metadata().namespace_(), "/",
                                    p.metadata().name(), ", age: ", GoDuration(age)));
    }
    if (all) {
      ctx.err() << "No resources found\n";
    } else {
      ctx.err() << "No resources found in " << ns << " namespace.\n";
    }
    return 0;
  }
  std::stable_sort(stats.begin(), stats.end(), [&](const auto& a, const auto& b) {
    if (!sort_by.empty()) return Larger(PodSum(a, sort_by), PodSum(b, sort_by));
    return std::tie(a.namespace_(), a.name()) < std::tie(b.namespace_(), b.name());
  });
  Table t;
  bool containers = ctx.flags.Bool("containers");
  if (all) t.header.push_back("NAMESPACE");
  if (containers) {
    t.header.insert(t.header.end(), {"POD", "NAME", "CPU(cores)", "MEMORY(bytes)"});
  } else {
    t.header.insert(t.header.end(), {"NAME", "CPU(cores)", "MEMORY(bytes)"});
  }
  for (const auto& p : stats) {
    if (containers) {
      for (const auto& ctr : p.containers()) {
        std::vector<std::string> row;
        if (all) row.push_back(p.namespace_());
        row.insert(row.end(), {p.name(), ctr.name(), CpuColumn(ContainerValue(ctr, "cpu")),
                               MemoryColumn(ContainerValue(ctr, "memory"))});
        t.rows.push_back(std::move(row));
      }
      continue;
    }
    std::vector<std::string> row;
    if (all) row.push_back(p.namespace_());
    row.insert(row.end(), {p.name(), CpuColumn(PodSum(p, "cpu")), MemoryColumn(PodSum(p, "memory"))});
    t.rows.push_back(std::move(row));
  }
  ctx.out() << RenderTable(t, !ctx.flags.Bool("no-headers"));
  return 0;
}

}  // namespace

int CmdTop(Ctx& ctx) {
  std::string what = ctx.flags.args.empty() ? "" : ctx.flags.args[0];
  bool nodes = what == "nodes" || what == "node" || what == "no";
  bool pods = what == "pods" || what == "pod" || what == "po";
  if (!nodes && !pods) return Fail(ctx, "Usage: skiffctl top nodes|pods [NAME] [-l selector] [--containers] [-A]");
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  NodeApi* node = ctx.Node();
  if (node == nullptr) return 1;
  return nodes ? TopNodes(ctx, c, node) : TopPods(ctx, c, node);
}

}  // namespace skiff::cli
