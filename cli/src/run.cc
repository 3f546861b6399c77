// skiffctl run, expose, scale
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cmd.h"

namespace skiff::cli {

int CmdRun(Ctx& ctx) {
  if (ctx.flags.args.empty()) return Fail(ctx, "NAME is required for run");
  std::string name = ctx.flags.args[0];
  std::string image = ctx.flags.Get("image");
  if (image.empty()) return Fail(ctx, "required flag(s) \"image\" not set");
  Object obj = manifest::NewObject(*manifest::FindResource("pods"));
  auto* pod = obj.mutable_pod();
  pod->mutable_metadata()->set_name(name);
  if (ctx.flags.Has("labels")) {
    for (auto kv : absl::StrSplit(ctx.flags.Get("labels"), ',')) {
      std::string s(kv);
      size_t eq = s.find('=');
      if (eq == std::string::npos) return Fail(ctx, absl::StrCat("invalid label spec: ", s));
      (*pod->mutable_metadata()->mutable_labels())[s.substr(0, eq)] = s.substr(eq + 1);
    }
  } else {
    (*pod->mutable_metadata()->mutable_labels())["run"] = name;
  }
  for (const auto& a : ctx.flags.All("annotations")) {
    size_t eq = a.find('=');
    if (eq == std::string::npos) return Fail(ctx, absl::StrCat("invalid annotation spec: ", a));
    (*pod->mutable_metadata()->mutable_annotations())[a.substr(0, eq)] = a.substr(eq + 1);
  }
  auto* c = pod->mutable_spec()->add_containers();
  c->set_name(name);
  c->set_image(image);
  if (ctx.flags.Has("image-pull-policy")) c->set_image_pull_policy(ctx.flags.Get("image-pull-policy"));
  std::vector<std::string> rest = ctx.flags.after_dash;
  rest.insert(rest.begin(), ctx.flags.args.begin() + 1, ctx.flags.args.end());
  for (const auto& a : rest) {
    if (ctx.flags.Bool("command")) {
      c->add_command(a);
    } else {
      c->add_args(a);
    }
  }
  if (ctx.flags.Has("port")) {
    int port;
    if (!absl::SimpleAtoi(ctx.flags.Get("port"), &port)) return Fail(ctx, "--port must be a number");
    c->add_ports()->set_container_port(port);
  }
  for (const auto& e : ctx.flags.All("env")) {
    size_t eq = e.find('=');
    auto* ev = c->add_env();
    ev->set_name(e.substr(0, eq));
    if (eq != std::string::npos) ev->set_value(e.substr(eq + 1));
  }
  if (ctx.flags.Bool("stdin")) {
    c->set_stdin(true);
    c->set_stdin_once(true);
  }
  if (ctx.flags.Bool("tty")) c->set_tty(true);
  pod->mutable_spec()->set_restart_policy(ctx.flags.Get("restart", "Always"));
  pod->mutable_spec()->set_dns_policy("ClusterFirst");
  return CreateObject(ctx, obj, "created");
}

int CmdExpose(Ctx& ctx) {
  auto pairs = ResolveTypeNames(ctx.flags.args);
  if (!pairs.ok()) return Fail(ctx, pairs.status());
  if (pairs->size() != 1 || (*pairs)[0].second.empty()) {
    return Fail(ctx, "You must provide the resource to expose: TYPE NAME or TYPE/NAME");
  }
  const KindInfo* k = (*pairs)[0].first;
  std::string name = (*pairs)[0].second;
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  auto src = c->Get(k->resource, NsFor(*k, ctx.Namespace()), name);
  if (!src.ok()) return ServerFail(ctx, src.status());
  google::protobuf::Map<std::string, std::string> selector;
  std::vector<std::pair<int, std::string>> ports;  // port, protocol
  auto add_ports = [&](const api::v1::PodSpec& spec) {
    for (const auto& ctr : spec.containers())
      for (const auto& p : ctr.ports()) ports.emplace_back(p.container_port(), p.protocol().empty() ? "TCP" : p.protocol());
  };
  if (src->has_deployment()) {
    if (!src->deployment().spec().selector().match_expressions().empty()) {
      return Fail(ctx, "couldn't retrieve selectors via --selector flag or introspection: the deployment's selector "
                       "uses expressions; pass --selector");
    }
    selector = src->deployment().spec().selector().match_labels();
    add_ports(src->deployment().spec().template_().spec());
  } else if (src->has_replica_set()) {
    selector = src->replica_set().spec().selector().match_labels();
    add_ports(src->replica_set().spec().template_().spec());
  } else if (src->has_pod()) {
    selector = src->pod().metadata().labels();
    add_ports(src->pod().spec());
  } else if (src->has_service()) {
    selector = src->service().spec().selector();
    for (const auto& p : src->service().spec().ports()) ports.emplace_back(p.port(), p.protocol());
  } else {
    return Fail(ctx, absl::StrCat("cannot expose a ", k->kind));
  }
  if (ctx.flags.Has("selector")) {
    selector.clear();
    for (auto kv : absl::StrSplit(ctx.flags.Get("selector"), ',')) {
      std::string s(kv);
      size_t eq = s.find('=');
      if (eq != std::string::npos) selector[s.substr(0, eq)] = s.substr(eq + 1);
    }
  }
  if (ctx.flags.Has("port")) {
    int port;
    if (!absl::SimpleAtoi(ctx.flags.Get("port"), &port)) return Fail(ctx, "--port must be a number");
    ports = {{port, ctx.flags.Get("protocol", "TCP")}};
  }
  if (ports.empty()) {
    return Fail(ctx, absl::StrCat("couldn't find port via --port flag or introspection\nSee 'skiffctl expose -h' for "
                                  "help and examples"));
  }
  Object obj = manifest::NewObject(*manifest::FindResource("services"));
  auto* svc = obj.mutable_service();
  svc->mutable_metadata()->set_name(ctx.flags.Get("name", name));
  if (src->has_deployment()) *svc->mutable_metadata()->mutable_labels() = src->deployment().metadata().labels();
  if (src->has_pod()) *svc->mutable_metadata()->mutable_labels() = src->pod().metadata().labels();
  *svc->mutable_spec()->mutable_selector() = selector;
  if (ctx.flags.Has("type")) svc->mutable_spec()->set_type(ctx.flags.Get("type"));
  for (size_t i = 0; i < ports.size(); ++i) {
    auto* p = svc->mutable_spec()->add_ports();
    if (ports.size() > 1) p->set_name(absl::StrCat("port-", i + 1));
    p->set_port(ports[i].first);
    p->set_protocol(ports[i].second);
    p->set_target_port(ctx.flags.Get("target-port", std::to_string(ports[i].first)));
  }
  return CreateObject(ctx, obj, "exposed");
}

int CmdScale(Ctx& ctx) {
  if (!ctx.flags.Has("replicas")) return Fail(ctx, "required flag(s) \"replicas\" not set");
  auto replicas = ctx.flags.Int("replicas", 0);
  if (!replicas.ok()) return Fail(ctx, replicas.status());
  if (*replicas < 0) return Fail(ctx, "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0");
  std::vector<std::pair<const KindInfo*, std::string>> targets;
  if (ctx.flags.Has("filename")) {
    auto docs = manifest::ReadManifests(ctx.flags.All("filename"), false, *ctx.env.in);
    if (!docs.ok()) return Fail(ctx, docs.status());
    for (const auto& d : *docs) targets.emplace_back(manifest::KindOf(d.object), manifest::Meta(d.object).name());
  } else {
    auto pairs = ResolveTypeNames(ctx.flags.args);
    if (!pairs.ok()) return Fail(ctx, pairs.status());
    targets = *pairs;
  }
  if (targets.empty()) return Fail(ctx, "resource(s) were provided, but no name was specified");
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  int rc = 0;
  for (const auto& [k, name] : targets) {
    if (k->kind != "Deployment" && k->kind != "ReplicaSet") {
      rc = Fail(ctx, absl::StrCat("cannot scale a ", k->kind));
      continue;
    }
    auto current = ctx.flags.Int("current-replicas", -1);
    auto updated = UpdateWithRetry(c, *k, ctx.Namespace(), name, [&](Object* obj) -> absl::Status {
      int have = obj->has_deployment() ? (obj->deployment().spec().has_replicas() ? obj->deployment().spec().replicas() : 1)
                                       : (obj->replica_set().spec().has_replicas() ? obj->replica_set().spec().replicas() : 1);
      if (current.ok() && *current >= 0 && *current != have) {
        return absl::FailedPreconditionError(absl::StrCat("Expected replicas to be ", *current, ", was ", have));
      }
      if (obj->has_deployment()) obj->mutable_deployment()->mutable_spec()->set_replicas(static_cast<int32_t>(*replicas));
      if (obj->has_replica_set()) obj->mutable_replica_set()->mutable_spec()->set_replicas(static_cast<int32_t>(*replicas));
      return absl::OkStatus();
    });
    if (!updated.ok()) {
      if (updated.status().code() == absl::StatusCode::kFailedPrecondition) {
        rc = Fail(ctx, updated.status());
      } else {
        rc = ServerFail(ctx, updated.status());
      }
      continue;
    }
    ctx.out() << TypeName(*k) << "/" << name << " scaled\n";
  }
  return rc;
}

}  // namespace skiff::cli
