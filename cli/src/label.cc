// skiffctl label / annotate
#include <map>

#include "absl/strings/str_cat.h"
#include "cmd.h"

namespace skiff::cli {

namespace {

int Edit(Ctx& ctx, bool labels) {
  const char* what = labels ? "label" : "annotation";
  // Arguments: TYPE NAME... KEY=VAL... KEY-  (or TYPE/NAME ...)
  std::vector<std::string> resources, changes;
  for (const auto& a : ctx.flags.args) {
    bool is_change = a.find('=') != std::string::npos || (a.size() > 1 && a.back() == '-' && a.find('/') == std::string::npos);
    if (is_change && !resources.empty()) {
      changes.push_back(a);
    } else {
      resources.push_back(a);
    }
  }
  if (changes.empty() && !ctx.flags.Bool("list")) return Fail(ctx, absl::StrCat("at least one ", what, " update is required"));
  std::map<std::string, std::string> set;
  std::vector<std::string> remove;
  for (const auto& ch : changes) {
    if (ch.back() == '-' && ch.find('=') == std::string::npos) {
      remove.push_back(ch.substr(0, ch.size() - 1));
    } else {
      size_t eq = ch.find('=');
      set[ch.substr(0, eq)] = ch.substr(eq + 1);
    }
  }
  std::vector<std::pair<const KindInfo*, std::string>> targets;
  client::Client* c = nullptr;
  if (ctx.flags.Has("selector") || ctx.flags.Bool("all")) {
    auto k = ResolveKind(resources.empty() ? "" : resources[0]);
    if (!k.ok()) return Fail(ctx, k.status());
    c = ctx.Client();
    if (c == nullptr) return 1;
    client::ListOptions lo;
    lo.label_selector = ctx.flags.Get("selector");
    auto list = c->List((*k)->resource, NsFor(**k, ctx.Namespace()), lo);
    if (!list.ok()) return ServerFail(ctx, list.status());
    for (const auto& item : list->items()) targets.emplace_back(*k, manifest::Meta(item).name());
  } else {
    auto pairs = ResolveTypeNames(resources);
    if (!pairs.ok()) return Fail(ctx, pairs.status());
    targets = *pairs;
    for (const auto& [k, n] : targets)
      if (n.empty()) return Fail(ctx, "resource(s) were provided, but no name was specified");
  }
  if (c == nullptr) c = ctx.Client();
  if (c == nullptr) return 1;
  int rc = 0;
  for (const auto& [k, name] : targets) {
    if (ctx.flags.Bool("list")) {
      auto got = c->Get(k->resource, NsFor(*k, ctx.Namespace()), name);
      if (!got.ok()) return ServerFail(ctx, got.status());
      const auto& m = labels ? manifest::Meta(*got).labels() : manifest::Meta(*got).annotations();
      for (const auto& [key, v] : std::map<std::string, std::string>(m.begin(), m.end()))
        ctx.out() << key << "=" << v << "\n";
      continue;
    }
    bool changed = false;
    auto updated = UpdateWithRetry(c, *k, ctx.Namespace(), name, [&](Object* obj) -> absl::Status {
      auto* m = labels ? manifest::MutableMeta(obj)->mutable_labels() : manifest::MutableMeta(obj)->mutable_annotations();
      changed = false;
      for (const auto& [key, v] : set) {
        auto it = m->find(key);
        if (it != m->end() && it->second != v && !ctx.flags.Bool("overwrite")) {
          return absl::FailedPreconditionError(
              absl::StrCat("'", key, "' already has a value (", it->second, "), and --overwrite is false"));
        }
        if (it == m->end() || it->second != v) changed = true;
        (*m)[key] = v;
      }
      for (const auto& key : remove) changed |= m->erase(key) > 0;
      return absl::OkStatus();
    });
    if (!updated.ok()) {
      rc = updated.status().code() == absl::StatusCode::kFailedPrecondition ? Fail(ctx, updated.status())
                                                                               : ServerFail(ctx, updated.status());
      continue;
    }
    ctx.out() << TypeName(*k) << "/" << name << (changed ? (labels ? " labeled" : " annotated")
                                                           : (labels ? " not labeled" : " not annotated"))
              << "\n";
  }
  return rc;
}

}  // namespace

int CmdLabel(Ctx& ctx) { return Edit(ctx, true); }
int CmdAnnotate(Ctx& ctx) { return Edit(ctx, false); }

}  // namespace skiff::cli
