// skiffctl rollout status|history|undo|restart
#include <algorithm>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cmd.h"
#include "print.h"

namespace skiff::cli {

namespace {

constexpr char kRevision[] = "deployment.kubernetes.io/revision";
constexpr char kChangeCause[] = "kubernetes.io/change-cause";

int64_t RevisionOf(const api::v1::ReplicaSet& rs) {
  auto it = rs.metadata().annotations().find(kRevision);
  int64_t r = 0;
  if (it != rs.metadata().annotations().end()) (void)absl::SimpleAtoi(it->second, &r);
  return r;
}

// The deployment's ReplicaSets (owned by its uid), oldest revision first.
absl::StatusOr<std::vector<api::v1::ReplicaSet>> OwnedReplicaSets(client::Client* c, const api::v1::Deployment& d) {
  client::ListOptions lo;
  lo.label_selector = FormatLabelSelector(d.spec().selector());
  ASSIGN_OR_RETURN(auto list, c->List("replicasets", d.metadata().namespace_(), lo));
  std::vector<api::v1::ReplicaSet> out;
  for (const auto& item : list.items()) {
    for (const auto& o : item.replica_set().metadata().owner_references()) {
      if (o.uid() == d.metadata().uid() || (o.uid().empty() && o.name() == d.metadata().name())) {
        out.push_back(item.replica_set());
        break;
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    if (RevisionOf(a) != RevisionOf(b)) return RevisionOf(a) < RevisionOf(b);
    return a.metadata().creation_timestamp() < b.metadata().creation_timestamp();
  });
  return out;
}

// kubectl's rollout status message; done when the rollout finished.
std::string StatusMessage(const api::v1::Deployment& d, bool* done) {
  *done = false;
  const auto& s = d.status();
  const std::string& name = d.metadata().name();
  if (d.metadata().generation() > s.observed_generation()) return "Waiting for deployment spec update to be observed...\n";
  for (const auto& c : s.conditions()) {
    if (c.type() == "Progressing" && c.reason() == "ProgressDeadlineExceeded") {
      return absl::StrCat("error: deployment \"", name, "\" exceeded its progress deadline\n");
    }
  }
  int desired = d.spec().has_replicas() ? d.spec().replicas() : 1;
  if (s.updated_replicas() < desired) {
    return absl::StrCat("Waiting for deployment \"", name, "\" rollout to finish: ", s.updated_replicas(), " out of ",
                        desired, " new replicas have been updated...\n");
  }
  if (s.replicas() > s.updated_replicas()) {
    return absl::StrCat("Waiting for deployment \"", name, "\" rollout to finish: ", s.replicas() - s.updated_replicas(),
                        " old replicas are pending termination...\n");
  }
  if (s.available_replicas() < s.updated_replicas()) {
    return absl::StrCat("Waiting for deployment \"", name, "\" rollout to finish: ", s.available_replicas(), " of ",
                        s.updated_replicas(), " updated replicas are available...\n");
  }
  *done = true;
  return absl::StrCat("deployment \"", name, "\" successfully rolled out\n");
}

std::chrono::seconds ParseTimeout(const std::string& s) {
  if (s.empty() || s == "0" || s == "0s") return std::chrono::seconds(0);
  std::string d = s;
  int64_t mult = 1;
  if (d.back() == 's') d.pop_back();
  else if (d.back() == 'm') {
    d.pop_back();
    mult = 60;
  } else if (d.back() == 'h') {
    d.pop_back();
    mult = 3600;
  }
  int64_t n = 0;
  (void)absl::SimpleAtoi(d, &n);
  return std::chrono::seconds(n * mult);
}

}  // namespace

int CmdRollout(Ctx& ctx) {
  if (ctx.flags.args.size() < 2) {
    return Fail(ctx, "Usage: skiffctl rollout status|history|undo|restart deployment/NAME");
  }
  std::string sub = ctx.flags.args[0];
  auto pairs = ResolveTypeNames(std::vector<std::string>(ctx.flags.args.begin() + 1, ctx.flags.args.end()));
  if (!pairs.ok()) return Fail(ctx, pairs.status());
  if (pairs->empty() || (*pairs)[0].second.empty()) return Fail(ctx, "required resource not specified");
  const KindInfo* k = (*pairs)[0].first;
  std::string name = (*pairs)[0].second;
  if (k->kind != "Deployment") return Fail(ctx, absl::StrCat("no ", sub, " support for kind \"", k->kind, "\""));
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  std::string ns = ctx.Namespace();

  if (sub == "status") {
    auto timeout = ParseTimeout(ctx.flags.Get("timeout"));
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last;
    while (true) {
      auto got = c->Get("deployments", ns, name);
      if (!got.ok()) return ServerFail(ctx, got.status());
      bool done = false;
      std::string msg = StatusMessage(got->deployment(), &done);
      if (msg.rfind("error: ", 0) == 0) {
        ctx.err() << msg;
        return 1;
      }
      if (msg != last) ctx.out() << msg;
      ctx.out().flush();
      last = msg;
      if (done || !ctx.flags.Bool("watch", true)) return 0;
      if (timeout.count() > 0 && std::chrono::steady_clock::now() > deadline) {
        return Fail(ctx, "timed out waiting for the condition");
      }
      std::this_thread::sleep_for(ctx.env.poll_interval);
    }
  }
  if (sub == "restart") {
    auto updated = UpdateWithRetry(c, *k, ns, name, [&](Object* obj) {
      (*obj->mutable_deployment()->mutable_spec()->mutable_template_()->mutable_metadata()->mutable_annotations())
          ["kubectl.kubernetes.io/restartedAt"] = Rfc3339(ctx.Now());
      return absl::OkStatus();
    });
    if (!updated.ok()) return ServerFail(ctx, updated.status());
    ctx.out() << TypeName(*k) << "/" << name << " restarted\n";
    return 0;
  }
  auto dep = c->Get("deployments", ns, name);
  if (!dep.ok()) return ServerFail(ctx, dep.status());
  auto rss = OwnedReplicaSets(c, dep->deployment());
  if (!rss.ok()) return ServerFail(ctx, rss.status());
  if (sub == "history") {
    if (ctx.flags.Has("revision")) {
      auto want = ctx.flags.Int("revision", 0);
      if (!want.ok()) return Fail(ctx, want.status());
      for (const auto& rs : *rss) {
        if (RevisionOf(rs) != *want) continue;
        ctx.out() << TypeName(*k) << "/" << name << " with revision #" << *want << "\nPod Template:\n";
        Object tmp;
        *tmp.mutable_pod()->mutable_metadata() = rs.spec().template_().metadata();
        *tmp.mutable_pod()->mutable_spec() = rs.spec().template_().spec();
        Value v = manifest::EncodeMessage(rs.spec().template_());
        std::string yaml = manifest::ToYaml(v);
        size_t start = 0;
        while (start < yaml.size()) {
          size_t nl = yaml.find('\n', start);
          ctx.out() << "  " << yaml.substr(start, nl - start) << "\n";
          start = nl + 1;
        }
        return 0;
      }
      return Fail(ctx, absl::StrCat("unable to find the specified revision"));
    }
    ctx.out() << TypeName(*k) << "/" << name << " \n";
    Table t;
    t.header = {"REVISION", "CHANGE-CAUSE"};
    for (size_t i = 0; i < rss->size(); ++i) {
      const auto& rs = (*rss)[i];
      auto cause = rs.metadata().annotations().find(kChangeCause);
      int64_t rev = RevisionOf(rs);
      t.rows.push_back({std::to_string(rev ? rev : static_cast<int64_t>(i + 1)),
                        cause == rs.metadata().annotations().end() ? "<none>" : cause->second});
    }
    ctx.out() << RenderTable(t) << "\n";
    return 0;
  }
  if (sub == "undo") {
    auto to = ctx.flags.Int("to-revision", 0);
    if (!to.ok()) return Fail(ctx, to.status());
    if (rss->size() < 2 && *to == 0) return Fail(ctx, "no rollout history found for deployment \"" + name + "\"");
    // The current template is the newest revision; undo goes to the one before.
    const api::v1::ReplicaSet* target = nullptr;
    if (*to > 0) {
      for (const auto& rs : *rss)
        if (RevisionOf(rs) == *to) target = &rs;
      if (target == nullptr) return Fail(ctx, absl::StrCat("unable to find specified revision ", *to, " in history"));
    } else {
      target = &(*rss)[rss->size() - 2];
    }
    api::v1::PodTemplateSpec tmpl = target->spec().template_();
    tmpl.mutable_metadata()->mutable_labels()->erase("pod-template-hash");
    if (tmpl.SerializeAsString() == dep->deployment().spec().template_().SerializeAsString()) {
      ctx.out() << TypeName(*k) << "/" << name << " skipped rollback (current template already matches revision "
                << RevisionOf(*target) << ")\n";
      return 0;
    }
    auto updated = UpdateWithRetry(c, *k, ns, name, [&](Object* obj) {
      *obj->mutable_deployment()->mutable_spec()->mutable_template_() = tmpl;
      return absl::OkStatus();
    });
    if (!updated.ok()) return ServerFail(ctx, updated.status());
    ctx.out() << TypeName(*k) << "/" << name << " rolled back\n";
    return 0;
  }
  return Fail(ctx, absl::StrCat("unknown command \"", sub, "\" for \"skiffctl rollout\""));
}

}  // namespace skiff::cli
