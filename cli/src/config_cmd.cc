// skiffctl config view|use-context|set-context|get-contexts|current-context
#include "absl/strings/str_cat.h"
#include "cmd.h"
#include "print.h"

namespace skiff::cli {

int CmdConfig(Ctx& ctx) {
  if (ctx.flags.args.empty()) {
    return Fail(ctx, "Usage: skiffctl config view|use-context|set-context|get-contexts|current-context");
  }
  std::string sub = ctx.flags.args[0];
  auto cfg = ctx.Config();
  if (!cfg.ok()) return Fail(ctx, cfg.status());
  ClientConfig& c = **cfg;
  std::string path = ctx.ConfigPath();
  if (sub == "view") {
    ClientConfig shown = c;
    if (ctx.flags.Bool("minify")) {
      const ContextEntry* cur = c.FindContext(c.current_context);
      if (cur == nullptr) return Fail(ctx, "current-context must exist in order to minify");
      shown.contexts = {*cur};
      shown.clusters.clear();
      shown.users.clear();
      if (const auto* cl = c.FindCluster(cur->cluster)) shown.clusters.push_back(*cl);
      if (const auto* u = c.FindUser(cur->user)) shown.users.push_back(*u);
    }
    ctx.out() << ClientConfigYaml(shown, ctx.flags.Bool("raw") || ctx.flags.Bool("flatten"));
    return 0;
  }
  if (sub == "current-context") {
    if (c.current_context.empty()) return Fail(ctx, "current-context is not set");
    ctx.out() << c.current_context << "\n";
    return 0;
  }
  if (sub == "get-contexts") {
    Table t;
    t.header = {"CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"};
    for (const auto& x : c.contexts)
      t.rows.push_back({x.name == c.current_context ? "*" : "", x.name, x.cluster, x.user, x.ns});
    ctx.out() << RenderTable(t);
    return 0;
  }
  if (sub == "use-context") {
    if (ctx.flags.args.size() < 2) return Fail(ctx, "Unexpected args: []");
    std::string name = ctx.flags.args[1];
    if (c.FindContext(name) == nullptr) return Fail(ctx, absl::StrCat("no context exists with the name: \"", name, "\""));
    c.current_context = name;
    if (absl::Status st = SaveClientConfig(c, path); !st.ok()) return Fail(ctx, st);
    ctx.out() << "Switched to context \"" << name << "\".\n";
    return 0;
  }
  if (sub == "set-context") {
    std::string name = ctx.flags.Bool("current") ? c.current_context
                       : ctx.flags.args.size() > 1 ? ctx.flags.args[1]
                                                   : "";
    if (name.empty()) return Fail(ctx, "you must specify a non-empty context name or --current");
    ContextEntry* e = c.FindContext(name);
    bool created = e == nullptr;
    if (created) {
      c.contexts.push_back({name, "", "", ""});
      e = &c.contexts.back();
    }
    if (ctx.flags.Has("cluster")) e->cluster = ctx.flags.Get("cluster");
    if (ctx.flags.Has("user")) e->user = ctx.flags.Get("user");
    if (ctx.flags.Has("namespace")) e->ns = ctx.flags.Get("namespace");
    if (absl::Status st = SaveClientConfig(c, path); !st.ok()) return Fail(ctx, st);
    ctx.out() << "Context \"" << name << "\" " << (created ? "created" : "modified") << ".\n";
    return 0;
  }
  return Fail(ctx, absl::StrCat("unknown command \"", sub, "\" for \"skiffctl config\""));
}

}  // namespace skiff::cli
