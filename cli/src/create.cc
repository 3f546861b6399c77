// skiffctl create -f, and the generators: create deployment|service|
// namespace|configmap|secret generic|serviceaccount.
#include <fstream>
#include <sstream>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cmd.h"

namespace skiff::cli {

int CreateObject(Ctx& ctx, Object obj, const std::string& word) {
  const KindInfo* k = manifest::KindOf(obj);
  manifest::ObjectMeta* meta = manifest::MutableMeta(&obj);
  if (k->namespaced && meta->namespace_().empty()) meta->set_namespace_(ctx.Namespace());
  std::string dry = ctx.flags.Get("dry-run");
  if (dry == "client" || dry == "true") {
    if (ctx.flags.Has("output")) return PrintOutput(ctx, *k, {obj}, false);
    ctx.out() << RefName(obj) << " " << word << " (dry run)\n";
    return 0;
  }
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  auto created = c->Create(k->resource, NsFor(*k, meta->namespace_()), obj);
  if (!created.ok()) return ServerFail(ctx, created.status());
  if (ctx.flags.Has("output")) return PrintOutput(ctx, *k, {*created}, false);
  ctx.out() << RefName(*created) << " " << word << "\n";
  return 0;
}

namespace {

// "nginx:1.25" / "registry:5000/team/nginx@sha256:..." -> "nginx"
std::string ImageBaseName(const std::string& image) {
  std::string s = image;
  if (size_t at = s.find('@'); at != std::string::npos) s = s.substr(0, at);
  if (size_t slash = s.rfind('/'); slash != std::string::npos) s = s.substr(slash + 1);
  if (size_t colon = s.find(':'); colon != std::string::npos) s = s.substr(0, colon);
  return s;
}

absl::Status AddLiterals(Ctx& ctx, google::protobuf::Map<std::string, std::string>* data) {
  for (const auto& lit : ctx.flags.All("from-literal")) {
    size_t eq = lit.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("invalid literal source ", lit, ", expected key=value"));
    }
    (*data)[lit.substr(0, eq)] = lit.substr(eq + 1);
  }
  for (const auto& spec : ctx.flags.All("from-file")) {
    std::string key, path = spec;
    if (size_t eq = spec.find('='); eq != std::string::npos) {
      key = spec.substr(0, eq);
      path = spec.substr(eq + 1);
    }
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      for (const auto& e : std::filesystem::directory_iterator(path, ec))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.emplace_back(path);
    }
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      if (!in) return absl::NotFoundError(absl::StrCat("error reading ", f.string(), ": no such file or directory"));
      std::stringstream ss;
      ss << in.rdbuf();
      (*data)[key.empty() ? f.filename().string() : key] = ss.str();
    }
  }
  return absl::OkStatus();
}

int CreateFromFiles(Ctx& ctx) {
  auto docs = manifest::ReadManifests(ctx.flags.All("filename"), ctx.flags.Bool("recursive"), *ctx.env.in);
  if (!docs.ok()) return Fail(ctx, docs.status());
  for (const auto& d : *docs) {
    const KindInfo* k = manifest::KindOf(d.object);
    if (manifest::Meta(d.object).name().empty() && manifest::Meta(d.object).generate_name().empty()) {
      return Fail(ctx, manifest::RequireName(d));
    }
    const std::string& doc_ns = manifest::Meta(d.object).namespace_();
    if (k->namespaced && !doc_ns.empty() && ctx.NamespaceExplicit() && doc_ns != ctx.Namespace()) {
      return Fail(ctx, absl::StrCat("the namespace from the provided object \"", doc_ns,
                                    "\" does not match the namespace \"", ctx.Namespace(),
                                    "\". You must pass '--namespace=", doc_ns, "' to perform this operation."));
    }
  }
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  int rc = 0;
  for (auto d : *docs) {
    const KindInfo* k = manifest::KindOf(d.object);
    manifest::ObjectMeta* meta = manifest::MutableMeta(&d.object);
    if (k->namespaced && meta->namespace_().empty()) meta->set_namespace_(ctx.Namespace());
    auto created = c->Create(k->resource, NsFor(*k, meta->namespace_()), d.object);
    if (!created.ok()) {
      PrintServerError(ctx, created.status(), absl::StrCat("error when creating \"", d.source, "\": "));
      rc = 1;
      continue;
    }
    ctx.out() << RefName(*created) << " created\n";
  }
  return rc;
}

}  // namespace

int CmdCreate(Ctx& ctx) {
  if (ctx.flags.Has("filename")) return CreateFromFiles(ctx);
  const auto& a = ctx.flags.args;
  if (a.empty()) return Fail(ctx, "must specify one of -f and -k, or a resource to create");
  std::string what = a[0];
  auto need_name = [&](size_t at) -> std::string { return a.size() > at ? a[at] : ""; };
  if (what == "namespace" || what == "ns") {
    std::string name = need_name(1);
    if (name.empty()) return Fail(ctx, "exactly one NAME is required, got 0");
    Object obj = manifest::NewObject(*manifest::FindResource("namespaces"));
    obj.mutable_namespace_()->mutable_metadata()->set_name(name);
    return CreateObject(ctx, obj, "created");
  }
  if (what == "deployment" || what == "deploy") {
    std::string name = need_name(1);
    if (name.empty()) return Fail(ctx, "exactly one NAME is required, got 0");
    auto images = ctx.flags.All("image");
    if (images.empty()) return Fail(ctx, "required flag(s) \"image\" not set");
    auto replicas = ctx.flags.Int("replicas", 1);
    if (!replicas.ok()) return Fail(ctx, replicas.status());
    Object obj = manifest::NewObject(*manifest::FindResource("deployments"));
    auto* d = obj.mutable_deployment();
    d->mutable_metadata()->set_name(name);
    (*d->mutable_metadata()->mutable_labels())["app"] = name;
    d->mutable_spec()->set_replicas(static_cast<int32_t>(*replicas));
    (*d->mutable_spec()->mutable_selector()->mutable_match_labels())["app"] = name;
    auto* tmpl = d->mutable_spec()->mutable_template_();
    (*tmpl->mutable_metadata()->mutable_labels())["app"] = name;
    for (const auto& img : images) {
      auto* ctr = tmpl->mutable_spec()->add_containers();
      ctr->set_name(ImageBaseName(img));
      ctr->set_image(img);
      if (ctx.flags.Has("port")) {
        auto port = ctx.flags.Int("port", 0);
        if (!port.ok()) return Fail(ctx, port.status());
        ctr->add_ports()->set_container_port(static_cast<int32_t>(*port));
      }
    }
    if (a.size() > 2 || ctx.flags.dash_seen) {
      auto* ctr = tmpl->mutable_spec()->mutable_containers(0);
      for (const auto& arg : ctx.flags.after_dash) ctr->add_command(arg);
    }
    return CreateObject(ctx, obj, "created");
  }
  if (what == "service" || what == "svc") {
    std::string type = need_name(1), name = need_name(2);
    std::string svc_type = type == "clusterip" ? "ClusterIP" : type == "nodeport" ? "NodePort"
                           : type == "loadbalancer" ? "LoadBalancer" : type == "externalname" ? "ExternalName" : "";
    if (svc_type.empty()) return Fail(ctx, "create service requires a type: clusterip, nodeport, loadbalancer or externalname");
    if (name.empty()) return Fail(ctx, "exactly one NAME is required, got 0");
    Object obj = manifest::NewObject(*manifest::FindResource("services"));
    auto* s = obj.mutable_service();
    s->mutable_metadata()->set_name(name);
    (*s->mutable_metadata()->mutable_labels())["app"] = name;
    s->mutable_spec()->set_type(svc_type);
    (*s->mutable_spec()->mutable_selector())["app"] = name;
    if (ctx.flags.Get("clusterip") == "None") s->mutable_spec()->set_cluster_ip("None");
    for (const auto& tcp : ctx.flags.All("tcp")) {
      for (auto one : absl::StrSplit(tcp, ',')) {
        std::vector<std::string> parts = absl::StrSplit(one, ':');
        int port = 0;
        if (!absl::SimpleAtoi(parts[0], &port)) return Fail(ctx, absl::StrCat("invalid port: ", std::string(one)));
        auto* p = s->mutable_spec()->add_ports();
        p->set_name(absl::StrCat(parts[0], "-", parts.size() > 1 ? parts[1] : parts[0]));
        p->set_port(port);
        p->set_protocol("TCP");
        p->set_target_port(parts.size() > 1 ? parts[1] : parts[0]);
        if (svc_type == "NodePort" && ctx.flags.Has("node-port")) {
          auto np = ctx.flags.Int("node-port", 0);
          if (!np.ok()) return Fail(ctx, np.status());
          p->set_node_port(static_cast<int32_t>(*np));
        }
      }
    }
    return CreateObject(ctx, obj, "created");
  }
  if (what == "configmap" || what == "cm") {
    std::string name = need_name(1);
    if (name.empty()) return Fail(ctx, "exactly one NAME is required, got 0");
    Object obj = manifest::NewObject(*manifest::FindResource("configmaps"));
    obj.mutable_config_map()->mutable_metadata()->set_name(name);
    if (absl::Status st = AddLiterals(ctx, obj.mutable_config_map()->mutable_data()); !st.ok()) return Fail(ctx, st);
    return CreateObject(ctx, obj, "created");
  }
  if (what == "secret") {
    if (need_name(1) != "generic") return Fail(ctx, "only \"create secret generic NAME\" is supported");
    std::string name = need_name(2);
    if (name.empty()) return Fail(ctx, "exactly one NAME is required, got 0");
    Object obj = manifest::NewObject(*manifest::FindResource("secrets"));
    obj.mutable_secret()->mutable_metadata()->set_name(name);
    obj.mutable_secret()->set_type(ctx.flags.Get("type", "Opaque"));
    if (absl::Status st = AddLiterals(ctx, obj.mutable_secret()->mutable_data()); !st.ok()) return Fail(ctx, st);
    return CreateObject(ctx, obj, "created");
  }
  if (what == "serviceaccount" || what == "sa") {
    std::string name = need_name(1);
    if (name.empty()) return Fail(ctx, "exactly one NAME is required, got 0");
    Object obj = manifest::NewObject(*manifest::FindResource("serviceaccounts"));
    obj.mutable_service_account()->mutable_metadata()->set_name(name);
    return CreateObject(ctx, obj, "created");
  }
  return Fail(ctx, absl::StrCat("unknown resource to create: \"", what,
                                "\" (supported: deployment, service, namespace, configmap, secret generic, "
                                "serviceaccount, or -f FILE)"));
}

}  // namespace skiff::cli
