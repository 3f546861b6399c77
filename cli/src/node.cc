// skiffctl cordon / uncordon / drain / taint
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmd.h"

namespace skiff::cli {

namespace {

absl::StatusOr<std::vector<std::string>> NodeNames(Ctx& ctx, client::Client* c, const std::vector<std::string>& args) {
  std::vector<std::string> names;
  if (ctx.flags.Has("selector")) {
    client::ListOptions lo;
    lo.label_selector = ctx.flags.Get("selector");
    ASSIGN_OR_RETURN(auto list, c->List("nodes", "", lo));
    for (const auto& n : list.items()) names.push_back(n.node().metadata().name());
    return names;
  }
  for (const auto& a : args) {
    std::string n = a;
    if (n.rfind("node/", 0) == 0) n = n.substr(5);
    if (n.rfind("nodes/", 0) == 0) n = n.substr(6);
    names.push_back(n);
  }
  if (names.empty()) return absl::InvalidArgumentError("resource(s) were provided, but no name was specified");
  return names;
}

const KindInfo& NodeKind() { return *manifest::FindResource("nodes"); }

// Returns 0/1; prints "node/x cordoned" or "already cordoned".
int SetUnschedulable(Ctx& ctx, client::Client* c, const std::string& name, bool value) {
  bool was = false;
  auto updated = UpdateWithRetry(c, NodeKind(), "", name, [&](Object* obj) {
    was = obj->node().spec().unschedulable();
    obj->mutable_node()->mutable_spec()->set_unschedulable(value);
    return absl::OkStatus();
  });
  if (!updated.ok()) return ServerFail(ctx, updated.status());
  ctx.out() << "node/" << name << (was == value ? " already " : " ") << (value ? "cordoned" : "uncordoned") << "\n";
  return 0;
}

int Cordon(Ctx& ctx, bool value) {
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  auto names = NodeNames(ctx, c, ctx.flags.args);
  if (!names.ok()) return names.status().code() == absl::StatusCode::kInvalidArgument ? Fail(ctx, names.status())
                                                                                      : ServerFail(ctx, names.status());
  int rc = 0;
  for (const auto& n : *names) rc |= SetUnschedulable(ctx, c, n, value);
  return rc;
}

}  // namespace

int CmdCordon(Ctx& ctx) { return Cordon(ctx, true); }
int CmdUncordon(Ctx& ctx) { return Cordon(ctx, false); }

int CmdDrain(Ctx& ctx) {
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  auto names = NodeNames(ctx, c, ctx.flags.args);
  if (!names.ok()) return Fail(ctx, names.status());
  for (const auto& node : *names) {
    if (int rc = SetUnschedulable(ctx, c, node, true); rc != 0) return rc;
    client::ListOptions lo;
    lo.field_selector = absl::StrCat("spec.nodeName=", node);
    lo.label_selector = ctx.flags.Get("pod-selector");
    auto pods = c->List("pods", "", lo);
    if (!pods.ok()) return ServerFail(ctx, pods.status());
    std::vector<api::v1::Pod> evict, unmanaged;
    for (const auto& item : pods->items()) {
      const auto& p = item.pod();
      if (p.spec().node_name() != node) continue;  // servers without field selectors
      if (p.metadata().annotations().count("kubernetes.io/config.mirror")) continue;  // static pods stay
      if (p.status().phase() == "Succeeded" || p.status().phase() == "Failed") {
        evict.push_back(p);
        continue;
      }
      bool controlled = false;
      for (const auto& o : p.metadata().owner_references()) controlled |= o.controller();
      if (!controlled) unmanaged.push_back(p);
      evict.push_back(p);
    }
    if (!unmanaged.empty() && !ctx.flags.Bool("force")) {
      std::vector<std::string> list;
      for (const auto& p : unmanaged) list.push_back(absl::StrCat(p.metadata().namespace_(), "/", p.metadata().name()));
      return Fail(ctx, absl::StrCat("unable to drain node \"", node,
                                    "\" due to error: cannot delete Pods that declare no controller (use --force to "
                                    "override): ",
                                    absl::StrJoin(list, ", "), ", continuing command...\nThere are pending nodes to be "
                                                              "drained:\n ",
                                    node));
    }
    if (!unmanaged.empty()) {
      std::vector<std::string> list;
      for (const auto& p : unmanaged) list.push_back(absl::StrCat(p.metadata().namespace_(), "/", p.metadata().name()));
      ctx.err() << "Warning: deleting Pods that declare no controller: " << absl::StrJoin(list, ", ") << "\n";
    }
    client::DeleteOptions opts;
    if (ctx.flags.Has("grace-period")) {
      auto g = ctx.flags.Int("grace-period", -1);
      if (!g.ok()) return Fail(ctx, g.status());
      if (*g >= 0) opts.grace_period_seconds = *g;
    }
    for (const auto& p : evict) {
      ctx.out() << "evicting pod " << p.metadata().namespace_() << "/" << p.metadata().name() << "\n";
      auto st = c->Delete("pods", p.metadata().namespace_(), p.metadata().name(), opts);
      if (!st.ok() && st.status().code() != absl::StatusCode::kNotFound) return ServerFail(ctx, st.status());
    }
    // Wait for the pods to be gone (or replaced by objects with other uids).
    std::string timeout = ctx.flags.Get("timeout");
    int64_t secs = 0;
    if (!timeout.empty()) {
      std::string d = timeout;
      if (d.back() == 's') d.pop_back();
      try {
        secs = std::stoll(d);
      } catch (...) {
        secs = 0;
      }
    }
    auto deadline = std::chrono::steady_clock::now() + (secs > 0 ? std::chrono::seconds(secs) : std::chrono::hours(24));
    for (const auto& p : evict) {
      while (true) {
        auto got = c->Get("pods", p.metadata().namespace_(), p.metadata().name());
        if ((!got.ok() && got.status().code() == absl::StatusCode::kNotFound) ||
            (got.ok() && got->pod().metadata().uid() != p.metadata().uid())) {
          ctx.out() << "pod/" << p.metadata().name() << " evicted\n";
          break;
        }
        if (!got.ok()) return ServerFail(ctx, got.status());
        if (std::chrono::steady_clock::now() > deadline) {
          return Fail(ctx, absl::StrCat("unable to drain node \"", node, "\" due to error: global timeout reached: ",
                                        timeout));
        }
        std::this_thread::sleep_for(ctx.env.poll_interval);
      }
    }
    ctx.out() << "node/" << node << " drained\n";
  }
  return 0;
}

int CmdTaint(Ctx& ctx) {
  // skiffctl taint nodes NAME key=value:Effect key:Effect- key-
  std::vector<std::string> args = ctx.flags.args;
  if (!args.empty() && (args[0] == "nodes" || args[0] == "node" || args[0] == "no")) args.erase(args.begin());
  if (args.empty() && !ctx.flags.Has("selector")) return Fail(ctx, "at least one node name is required");
  std::vector<std::string> nodes_args;
  std::vector<api::v1::Taint> add;
  std::vector<api::v1::Taint> remove;  // effect "" = any
  for (const auto& a : args) {
    bool looks_like_taint = a.find(':') != std::string::npos || a.find('=') != std::string::npos || a.back() == '-';
    if (!looks_like_taint) {
      nodes_args.push_back(a);
      continue;
    }
    std::string s = a;
    bool removal = s.back() == '-';
    if (removal) s.pop_back();
    api::v1::Taint t;
    size_t colon = s.find(':');
    std::string kv = colon == std::string::npos ? s : s.substr(0, colon);
    if (colon != std::string::npos) t.set_effect(s.substr(colon + 1));
    size_t eq = kv.find('=');
    t.set_key(kv.substr(0, eq));
    if (eq != std::string::npos) t.set_value(kv.substr(eq + 1));
    if (removal) {
      remove.push_back(t);
    } else {
      if (t.effect() != "NoSchedule" && t.effect() != "PreferNoSchedule" && t.effect() != "NoExecute") {
        return Fail(ctx, absl::StrCat("invalid taint effect: ", t.effect(),
                                      ", unsupported taint effect (NoSchedule, PreferNoSchedule, NoExecute)"));
      }
      add.push_back(t);
    }
  }
  if (add.empty() && remove.empty()) return Fail(ctx, "at least one taint update is required");
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  auto names = NodeNames(ctx, c, nodes_args);
  if (!names.ok()) return Fail(ctx, names.status());
  int rc = 0;
  for (const auto& n : *names) {
    bool removed_any = false;
    auto updated = UpdateWithRetry(c, NodeKind(), "", n, [&](Object* obj) -> absl::Status {
      auto* taints = obj->mutable_node()->mutable_spec()->mutable_taints();
      removed_any = false;
      for (const auto& r : remove) {
        bool found = false;
        for (int i = taints->size() - 1; i >= 0; --i) {
          if ((*taints)[i].key() == r.key() && (r.effect().empty() || (*taints)[i].effect() == r.effect())) {
            taints->DeleteSubrange(i, 1);
            found = true;
          }
        }
        if (!found) return absl::NotFoundError(absl::StrCat("taint \"", r.key(), r.effect().empty() ? "" : ":" + r.effect(), "\" not found"));
        removed_any = true;
      }
      for (const auto& t : add) {
        bool replaced = false;
        for (auto& existing : *taints) {
          if (existing.key() == t.key() && existing.effect() == t.effect()) {
            if (!ctx.flags.Bool("overwrite") && existing.value() != t.value()) {
              return absl::FailedPreconditionError(absl::StrCat(
                  "node ", n, " already has ", t.key(), " taint(s) with same effect(s) and --overwrite is false"));
            }
            existing.set_value(t.value());
            replaced = true;
          }
        }
        if (!replaced) *taints->Add() = t;
      }
      return absl::OkStatus();
    });
    if (!updated.ok()) {
      rc = Fail(ctx, updated.status());
      continue;
    }
    ctx.out() << "node/" << n << (add.empty() && removed_any ? " untainted" : " tainted") << "\n";
  }
  return rc;
}

}  // namespace skiff::cli
