// skiffctl delete
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cmd.h"

namespace skiff::cli {

namespace {

struct Target {
  const KindInfo* kind;
  std::string ns;
  std::string name;
  std::string source;  // -f file, for error messages
};

std::string Deleted(const KindInfo& k, const std::string& name) {
  return absl::StrCat(TypeName(k), " \"", name, "\"");
}

}  // namespace

int CmdDelete(Ctx& ctx) {
  std::vector<Target> targets;
  bool from_selector = false;
  if (ctx.flags.Has("filename")) {
    auto docs = manifest::ReadManifests(ctx.flags.All("filename"), ctx.flags.Bool("recursive"), *ctx.env.in);
    if (!docs.ok()) return Fail(ctx, docs.status());
    for (const auto& d : *docs) {
      const KindInfo* k = manifest::KindOf(d.object);
      const auto& m = manifest::Meta(d.object);
      targets.push_back({k, k->namespaced ? (m.namespace_().empty() ? ctx.Namespace() : m.namespace_()) : "",
                         m.name(), d.source});
    }
  }
  client::Client* c = nullptr;
  if (!ctx.flags.args.empty()) {
    bool list_mode = ctx.flags.Has("selector") || ctx.flags.Bool("all") || ctx.flags.Has("field-selector");
    if (list_mode && ctx.flags.args[0].find('/') == std::string::npos) {
      c = ctx.Client();
      if (c == nullptr) return 1;
      from_selector = true;
      for (auto kn : absl::StrSplit(ctx.flags.args[0], ',')) {
        auto k = ResolveKind(std::string(kn));
        if (!k.ok()) return Fail(ctx, k.status());
        client::ListOptions lo;
        lo.label_selector = ctx.flags.Get("selector");
        lo.field_selector = ctx.flags.Get("field-selector");
        std::string ns = ctx.AllNamespaces() ? "" : NsFor(**k, ctx.Namespace());
        auto list = c->List((*k)->resource, ns, lo);
        if (!list.ok()) return ServerFail(ctx, list.status());
        for (const auto& item : list->items()) {
          const auto& m = manifest::Meta(item);
          targets.push_back({*k, m.namespace_(), m.name(), ""});
        }
      }
    } else {
      auto pairs = ResolveTypeNames(ctx.flags.args);
      if (!pairs.ok()) return Fail(ctx, pairs.status());
      for (const auto& [k, n] : *pairs) {
        if (n.empty()) {
          return Fail(ctx, absl::StrCat("resource(s) were provided, but no name was specified"));
        }
        targets.push_back({k, NsFor(*k, ctx.Namespace()), n, ""});
      }
    }
  } else if (!ctx.flags.Has("filename")) {
    return Fail(ctx, "You must provide one or more resources by argument or filename.\nExample resource specifications "
                     "include:\n   '-f rsrc.yaml'\n   '--filename=rsrc.json'\n   '<resource> <name>'\n   '<resource>'");
  }
  if (targets.empty()) {
    if (from_selector) ctx.err() << "No resources found\n";
    return 0;
  }
  if (c == nullptr) c = ctx.Client();
  if (c == nullptr) return 1;

  client::DeleteOptions opts;
  bool force = ctx.flags.Bool("force");
  if (ctx.flags.Bool("now")) opts.grace_period_seconds = 1;
  if (ctx.flags.Has("grace-period")) {
    auto g = ctx.flags.Int("grace-period", -1);
    if (!g.ok()) return Fail(ctx, g.status());
    if (*g >= 0) opts.grace_period_seconds = *g;
  }
  if (force && !opts.grace_period_seconds) opts.grace_period_seconds = 0;
  if (force && opts.grace_period_seconds && *opts.grace_period_seconds == 0) {
    ctx.err() << "Warning: Immediate deletion does not wait for confirmation that the running resource has been "
                 "terminated. The resource may continue to run on the cluster indefinitely.\n";
  }
  if (opts.grace_period_seconds && *opts.grace_period_seconds == 0 && !force) {
    // kubectl: --grace-period=0 without --force means 1s.
    opts.grace_period_seconds = 1;
  }
  std::string cascade = ctx.flags.Get("cascade", "background");
  if (cascade == "orphan" || cascade == "false") opts.propagation_policy = "Orphan";
  if (cascade == "foreground") opts.propagation_policy = "Foreground";

  // --timeout (for --wait), checked before anything is deleted.
  std::chrono::milliseconds wait_for = std::chrono::hours(24 * 365);
  if (std::string timeout_s = ctx.flags.Get("timeout"); !timeout_s.empty() && timeout_s != "0s" && timeout_s != "0") {
    absl::Duration d;
    if (!absl::ParseDuration(timeout_s, &d) || d < absl::ZeroDuration()) {
      return Fail(ctx, absl::StrCat("invalid argument \"", timeout_s, "\" for \"--timeout\" flag: time: invalid duration \"",
                                    timeout_s, "\""));
    }
    wait_for = absl::ToChronoMilliseconds(d);
  }

  int rc = 0;
  std::vector<Target> deleted;
  for (const auto& t : targets) {
    auto st = c->Delete(t.kind->resource, t.ns, t.name, opts);
    if (!st.ok()) {
      if (st.status().code() == absl::StatusCode::kNotFound && ctx.flags.Bool("ignore-not-found")) continue;
      PrintServerError(ctx, st.status(),
                       t.source.empty() ? "" : absl::StrCat("error when deleting \"", t.source, "\": "));
      rc = 1;
      continue;
    }
    ctx.out() << Deleted(*t.kind, t.name) << (force ? " force deleted" : " deleted") << "\n";
    ctx.out().flush();
    deleted.push_back(t);
  }
  if (!ctx.flags.Bool("wait", true) || deleted.empty()) return rc;
  // --wait: until every object is gone (finalizers, graceful pod shutdown).
  auto deadline = std::chrono::steady_clock::now() + wait_for;
  for (const auto& t : deleted) {
    while (true) {
      auto got = c->Get(t.kind->resource, t.ns, t.name);
      if (!got.ok() && got.status().code() == absl::StatusCode::kNotFound) break;
      if (!got.ok()) return ServerFail(ctx, got.status());
      if (std::chrono::steady_clock::now() > deadline) {
        return Fail(ctx, absl::StrCat("timed out waiting for the condition on ", QualifiedResource(*t.kind), "/",
                                      t.name));
      }
      std::this_thread::sleep_for(ctx.env.poll_interval);
    }
  }
  return rc;
}

}  // namespace skiff::cli
