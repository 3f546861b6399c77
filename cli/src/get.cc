// skiffctl get
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cmd.h"
#include "print.h"

namespace skiff::cli {

namespace {

Value ListValue(const std::vector<Object>& objs) {
  Value list = Value::Map();
  list.Set("apiVersion", Value::String("v1"));
  Value items = Value::List();
  for (const auto& o : objs) items.Append(manifest::EncodeObject(o));
  list.Set("items", std::move(items));
  list.Set("kind", Value::String("List"));
  Value meta = Value::Map();
  meta.Set("resourceVersion", Value::String(""));
  list.Set("metadata", std::move(meta));
  return list;
}

absl::StatusOr<Table> CustomColumns(const std::string& spec, const std::vector<Object>& objs) {
  Table t;
  std::vector<std::string> exprs;
  for (auto col : absl::StrSplit(spec, ',')) {
    std::string c(col);
    size_t colon = c.find(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected custom-columns spec: ", c, ", expected <header>:<json-path-expr>"));
    }
    t.header.push_back(c.substr(0, colon));
    std::string e = c.substr(colon + 1);
    if (e.size() > 1 && e.front() == '{' && e.back() == '}') e = e.substr(1, e.size() - 2);
    exprs.push_back(e);
  }
  for (const auto& o : objs) {
    Value v = manifest::EncodeObject(o);
    std::vector<std::string> row;
    for (const auto& e : exprs) {
      ASSIGN_OR_RETURN(std::vector<Value> got, JsonPathEval(e, v));
      std::vector<std::string> parts;
      for (const auto& g : got) parts.push_back(g.is_scalar() ? g.text() : manifest::ToJson(g, 0));
      row.push_back(parts.empty() ? "<none>" : absl::StrJoin(parts, ","));
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

}  // namespace

int PrintOutput(Ctx& ctx, const KindInfo& k, const std::vector<Object>& objs, bool as_list) {
  std::string o = ctx.flags.Get("output");
  if (o == "yaml" || o == "json") {
    Value v = as_list ? ListValue(objs) : manifest::EncodeObject(objs.empty() ? Object() : objs[0]);
    ctx.out() << (o == "yaml" ? manifest::ToYaml(v) : manifest::ToJson(v, 4) + "\n");
    return 0;
  }
  if (o == "name") {
    for (const auto& obj : objs) ctx.out() << RefName(obj) << "\n";
    return 0;
  }
  if (o.rfind("jsonpath=", 0) == 0 || o.rfind("jsonpath-as-json=", 0) == 0 || o.rfind("jsonpath-file=", 0) == 0) {
    std::string tmpl = o.substr(o.find('=') + 1);
    Value v = as_list ? ListValue(objs) : manifest::EncodeObject(objs.empty() ? Object() : objs[0]);
    auto text = JsonPathTemplate(tmpl, v);
    if (!text.ok()) return Fail(ctx, text.status());
    ctx.out() << *text;
    return 0;
  }
  if (o.rfind("custom-columns=", 0) == 0) {
    auto t = CustomColumns(o.substr(strlen("custom-columns=")), objs);
    if (!t.ok()) return Fail(ctx, t.status());
    ctx.out() << RenderTable(*t, !ctx.flags.Bool("no-headers"));
    return 0;
  }
  if (!o.empty() && o != "wide") {
    return Fail(ctx, absl::StrCat("unable to match a printer suitable for the output format \"", o,
                                  "\", allowed formats are: custom-columns,json,jsonpath,name,wide,yaml"));
  }
  TableOptions opts;
  opts.wide = o == "wide";
  opts.with_namespace = ctx.AllNamespaces();
  opts.show_labels = ctx.flags.Bool("show-labels");
  for (const auto& l : ctx.flags.All("label-columns"))
    for (auto part : absl::StrSplit(l, ',')) opts.label_columns.emplace_back(part);
  opts.now = ctx.Now();
  ctx.out() << RenderTable(MakeTable(k, objs, opts), !ctx.flags.Bool("no-headers"));
  return 0;
}

namespace {

struct Request {
  const KindInfo* kind;
  std::vector<std::string> names;  // empty = list
};

std::string NoResources(Ctx& ctx, const KindInfo& k) {
  if (ctx.AllNamespaces() || !k.namespaced) return "No resources found";
  return absl::StrCat("No resources found in ", ctx.Namespace(), " namespace.");
}

int Watch(Ctx& ctx, const Request& r, const std::string& rv) {
  client::Client* c = ctx.Client();
  client::ListOptions lo;
  lo.label_selector = ctx.flags.Get("selector");
  lo.field_selector = ctx.flags.Get("field-selector");
  lo.resource_version = rv;
  if (r.names.size() == 1) {
    lo.field_selector = absl::StrCat("metadata.name=", r.names[0],
                                     lo.field_selector.empty() ? "" : ",", lo.field_selector);
  }
  std::string ns = ctx.AllNamespaces() ? "" : NsFor(*r.kind, ctx.Namespace());
  auto stream = c->Watch(r.kind->resource, ns, lo);
  if (!stream.ok()) return ServerFail(ctx, stream.status());
  bool header = ctx.flags.Bool("watch-only");
  while (true) {
    auto ev = (*stream)->Next();
    if (!ev.ok()) {
      if (ev.status().code() == absl::StatusCode::kCancelled) return 0;
      return ServerFail(ctx, ev.status());
    }
    if (ev->type() == "BOOKMARK") continue;
    if (ev->type() == "ERROR") {
      ctx.err() << "Error from server: " << ev->error_message() << "\n";
      return 1;
    }
    std::string o = ctx.flags.Get("output");
    if (o.empty() || o == "wide") {
      TableOptions opts;
      opts.wide = o == "wide";
      opts.with_namespace = ctx.AllNamespaces();
      opts.show_labels = ctx.flags.Bool("show-labels");
      opts.now = ctx.Now();
      ctx.out() << RenderTable(MakeTable(*r.kind, {ev->object()}, opts), header && !ctx.flags.Bool("no-headers"));
      header = false;
    } else {
      if (o == "yaml") ctx.out() << "---\n";
      PrintOutput(ctx, *r.kind, {ev->object()}, false);
    }
    ctx.out().flush();
  }
}

}  // namespace

int CmdGet(Ctx& ctx) {
  std::vector<Request> reqs;
  if (ctx.flags.Has("filename")) {
    auto docs = manifest::ReadManifests(ctx.flags.All("filename"), ctx.flags.Bool("recursive"), *ctx.env.in);
    if (!docs.ok()) return Fail(ctx, docs.status());
    for (const auto& d : *docs) reqs.push_back({manifest::KindOf(d.object), {manifest::Meta(d.object).name()}});
  } else if (ctx.flags.args.empty()) {
    return Fail(ctx,
                "You must specify the type of resource to get. Use \"skiffctl api-resources\" for a complete list of "
                "supported resources.");
  } else if (ctx.flags.args[0].find('/') != std::string::npos) {
    auto pairs = ResolveTypeNames(ctx.flags.args);
    if (!pairs.ok()) return Fail(ctx, pairs.status());
    for (const auto& [k, n] : *pairs) reqs.push_back({k, {n}});
  } else {
    for (auto kname : absl::StrSplit(ctx.flags.args[0], ',')) {
      std::string kn(kname);
      if (kn == "all") {
        for (const char* r : {"pods", "services", "deployments", "replicasets"})
          reqs.push_back({manifest::FindResource(r), {}});
        continue;
      }
      auto k = ResolveKind(kn);
      if (!k.ok()) return Fail(ctx, k.status());
      reqs.push_back({*k, std::vector<std::string>(ctx.flags.args.begin() + 1, ctx.flags.args.end())});
    }
  }
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  std::string o = ctx.flags.Get("output");
  bool table = o.empty() || o == "wide";
  bool multi_kind = reqs.size() > 1;
  int rc = 0;
  // Single-object outputs (-o yaml of one named object) print the object, not a List.
  bool single = reqs.size() == 1 && reqs[0].names.size() == 1;
  std::vector<Object> all;
  const KindInfo* last_kind = nullptr;
  bool printed_any_table = false;
  std::string list_rv;
  for (const auto& r : reqs) {
    std::vector<Object> objs;
    std::string ns = ctx.AllNamespaces() && r.names.empty() ? "" : NsFor(*r.kind, ctx.Namespace());
    if (r.names.empty()) {
      client::ListOptions lo;
      lo.label_selector = ctx.flags.Get("selector");
      lo.field_selector = ctx.flags.Get("field-selector");
      auto list = c->List(r.kind->resource, ns, lo);
      if (!list.ok()) return ServerFail(ctx, list.status());
      for (const auto& item : list->items()) objs.push_back(item);
      list_rv = list->resource_version();
    } else {
      for (const auto& n : r.names) {
        auto got = c->Get(r.kind->resource, ns, n);
        if (!got.ok()) {
          if (got.status().code() == absl::StatusCode::kNotFound && ctx.flags.Bool("ignore-not-found")) continue;
          PrintServerError(ctx, got.status());
          rc = 1;
          continue;
        }
        objs.push_back(*got);
      }
    }
    if (ctx.flags.Bool("watch") || ctx.flags.Bool("watch-only")) {
      if (!ctx.flags.Bool("watch-only")) {
        if (objs.empty() && table) {
          ctx.err() << NoResources(ctx, *r.kind) << "\n";
        } else {
          PrintOutput(ctx, *r.kind, objs, false);
        }
        ctx.out().flush();
      }
      return Watch(ctx, r, ctx.flags.Bool("watch-only") ? "" : list_rv.empty() ? "0" : list_rv);
    }
    if (table) {
      if (objs.empty()) {
        if (r.names.empty() && !multi_kind) ctx.err() << NoResources(ctx, *r.kind) << "\n";
        continue;
      }
      if (printed_any_table) ctx.out() << "\n";
      if (multi_kind) {
        // kubectl names rows "kind/name" when several kinds are printed.
        std::vector<Object> renamed = objs;
        for (auto& obj : renamed) manifest::MutableMeta(&obj)->set_name(RefName(obj));
        PrintOutput(ctx, *r.kind, renamed, true);
      } else {
        PrintOutput(ctx, *r.kind, objs, true);
      }
      printed_any_table = true;
    } else {
      for (auto& obj : objs) all.push_back(std::move(obj));
      last_kind = r.kind;
    }
  }
  if (multi_kind && table && !printed_any_table && rc == 0) ctx.err() << NoResources(ctx, *reqs[0].kind) << "\n";
  if (!table && last_kind != nullptr) {
    if (single && all.empty()) return rc;
    PrintOutput(ctx, *last_kind, all, !(single && all.size() == 1));
  }
  return rc;
}

}  // namespace skiff::cli
