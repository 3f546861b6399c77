// skiffctl cluster-info, version, api-resources, top, token create,
// image import, completion
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmd.h"
#include "print.h"

namespace skiff::cli {

std::vector<std::string> VerbNames();

namespace {
constexpr char kClientVersion[] = "v0.1.0";
}

int CmdClusterInfo(Ctx& ctx) {
  client::Client* c = ctx.Client();
  if (c == nullptr) return 1;
  // A cheap read proves the server answers (and that we may talk to it).
  auto ns = c->Get("namespaces", "", "default");
  if (!ns.ok() && ns.status().code() != absl::StatusCode::kNotFound) return ServerFail(ctx, ns.status());
  ctx.out() << "Skiff control plane is running at https://" << ctx.Server() << "\n\n"
            << "To further debug and diagnose cluster problems, use 'skiffctl get nodes' and 'skiffctl get events -A'.\n";
  return 0;
}

int CmdVersion(Ctx& ctx) {
  std::string o = ctx.flags.Get("output");
  Value v = Value::Map();
  Value client_v = Value::Map();
  client_v.Set("gitVersion", Value::String(kClientVersion));
  client_v.Set("platform", Value::String("linux/amd64"));
  v.Set("clientVersion", client_v);
  int rc = 0;
  std::string server_line;
  if (!ctx.flags.Bool("client")) {
    NodeApi* node = ctx.Node();
    if (node == nullptr) {
      rc = 1;
    } else {
      auto info = node->Version();
      if (!info.ok()) {
        PrintServerError(ctx, info.status());
        rc = 1;
      } else {
        Value sv = Value::Map();
        sv.Set("buildDate", Value::String(info->build_date()));
        sv.Set("gitVersion", Value::String(info->git_version()));
        sv.Set("goVersion", Value::String(info->go_version()));
        sv.Set("platform", Value::String(info->platform()));
        v.Set("serverVersion", sv);
        server_line = info->git_version();
      }
    }
  }
  if (o == "yaml") {
    ctx.out() << manifest::ToYaml(v);
  } else if (o == "json") {
    ctx.out() << manifest::ToJson(v, 2) << "\n";
  } else {
    ctx.out() << "Client Version: " << kClientVersion << "\n";
    if (!server_line.empty()) ctx.out() << "Server Version: " << server_line << "\n";
  }
  return rc;
}

int CmdApiResources(Ctx& ctx) {
  Table t;
  t.header = {"NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"};
  std::string only = ctx.flags.Get("namespaced");
  for (const auto& k : manifest::AllKinds()) {
    if (!only.empty() && (only == "true") != k.namespaced) continue;
    t.rows.push_back({k.resource, absl::StrJoin(k.short_names, ","), k.api_version, k.namespaced ? "true" : "false",
                      k.kind});
  }
  if (ctx.flags.Get("output") == "name") {
    for (const auto& k : manifest::AllKinds())
      ctx.out() << (k.group.empty() ? k.resource : absl::StrCat(k.resource, ".", k.group)) << "\n";
    return 0;
  }
  ctx.out() << RenderTable(t, !ctx.flags.Bool("no-headers"));
  return 0;
}

int CmdToken(Ctx& ctx) {
  if (ctx.flags.args.empty() || ctx.flags.args[0] != "create") return Fail(ctx, "Usage: skiffctl token create [--ttl 24h]");
  NodeApi* node = ctx.Node();
  if (node == nullptr) return 1;
  api::v1::CreateBootstrapTokenRequest req;
  std::string ttl = ctx.flags.Get("ttl");
  if (!ttl.empty()) {
    int64_t mult = 1;
    std::string d = ttl;
    if (d.back() == 'h') mult = 3600;
    if (d.back() == 'm') mult = 60;
    if (!std::isdigit(static_cast<unsigned char>(d.back()))) d.pop_back();
    try {
      req.set_ttl_seconds(std::stoll(d) * mult);
    } catch (...) {
      return Fail(ctx, absl::StrCat("invalid --ttl ", ttl));
    }
  }
  req.set_description(ctx.flags.Get("description"));
  auto resp = node->CreateBootstrapToken(req);
  if (!resp.ok()) return ServerFail(ctx, resp.status());
  ctx.out() << "skiff-kubelet --server " << ctx.Server() << " --bootstrap-token " << resp->token()
            << " --discovery-token-ca-cert-hash " << resp->ca_cert_hash() << "\n";
  return 0;
}


int CmdCompletion(Ctx& ctx) {
  if (ctx.flags.args.empty()) return Fail(ctx, "Shell not specified.\nSee 'skiffctl completion -h' for help and examples");
  std::string shell = ctx.flags.args[0];
  std::vector<std::string> resources;
  for (const auto& k : manifest::AllKinds()) {
    resources.push_back(k.resource);
    for (const auto& s : k.short_names) resources.push_back(s);
  }
  std::string verbs = absl::StrJoin(VerbNames(), " ");
  std::string res = absl::StrJoin(resources, " ");
  if (shell == "bash") {
    ctx.out() << "# bash completion for skiffctl\n"
              << "_skiffctl() {\n"
              << "  local cur prev verb\n"
              << "  cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
              << "  prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
              << "  verb=\"${COMP_WORDS[1]}\"\n"
              << "  if [[ ${COMP_CWORD} -eq 1 ]]; then\n"
              << "    COMPREPLY=( $(compgen -W \"" << verbs << "\" -- \"$cur\") ); return 0\n"
              << "  fi\n"
              << "  case \"$prev\" in\n"
              << "    -f|--filename) COMPREPLY=( $(compgen -f -- \"$cur\") ); return 0;;\n"
              << "    -n|--namespace) COMPREPLY=( $(compgen -W \"$(skiffctl get namespaces -o name 2>/dev/null | "
                 "sed 's|.*/||')\" -- \"$cur\") ); return 0;;\n"
              << "    -o|--output) COMPREPLY=( $(compgen -W \"wide yaml json name jsonpath= custom-columns=\" -- "
                 "\"$cur\") ); return 0;;\n"
              << "  esac\n"
              << "  case \"$verb\" in\n"
              << "    get|describe|delete|edit|label|annotate|scale|expose)\n"
              << "      if [[ ${COMP_CWORD} -eq 2 ]]; then\n"
              << "        COMPREPLY=( $(compgen -W \"" << res << "\" -- \"$cur\") )\n"
              << "      else\n"
              << "        COMPREPLY=( $(compgen -W \"$(skiffctl get \"${COMP_WORDS[2]}\" -o name 2>/dev/null | "
                 "sed 's|.*/||')\" -- \"$cur\") )\n"
              << "      fi;;\n"
              << "    logs|exec|port-forward)\n"
              << "      COMPREPLY=( $(compgen -W \"$(skiffctl get pods -o name 2>/dev/null | sed 's|.*/||')\" -- "
                 "\"$cur\") );;\n"
              << "    rollout) COMPREPLY=( $(compgen -W \"status history undo restart\" -- \"$cur\") );;\n"
              << "    completion) COMPREPLY=( $(compgen -W \"bash zsh\" -- \"$cur\") );;\n"
              << "    config) COMPREPLY=( $(compgen -W \"view use-context set-context get-contexts current-context\" "
                 "-- \"$cur\") );;\n"
              << "  esac\n"
              << "}\n"
              << "complete -F _skiffctl skiffctl\n";
    return 0;
  }
  if (shell == "zsh") {
    ctx.out() << "#compdef skiffctl\n"
              << "# zsh completion for skiffctl\n"
              << "_skiffctl() {\n"
              << "  local -a verbs resources\n"
              << "  verbs=(" << verbs << ")\n"
              << "  resources=(" << res << ")\n"
              << "  if (( CURRENT == 2 )); then\n"
              << "    _describe 'command' verbs\n"
              << "  elif (( CURRENT == 3 )); then\n"
              << "    case $words[2] in\n"
              << "      get|describe|delete|edit|label|annotate|scale|expose) _describe 'resource' resources;;\n"
              << "      logs|exec|port-forward) compadd -- ${(f)\"$(skiffctl get pods -o name 2>/dev/null | sed "
                 "'s|.*/||')\"};;\n"
              << "      rollout) compadd status history undo restart;;\n"
              << "      completion) compadd bash zsh;;\n"
              << "      *) _files;;\n"
              << "    esac\n"
              << "  else\n"
              << "    compadd -- ${(f)\"$(skiffctl get $words[3] -o name 2>/dev/null | sed 's|.*/||')\"}\n"
              << "  fi\n"
              << "}\n"
              << "if [ \"$funcstack[1]\" = \"_skiffctl\" ]; then _skiffctl \"$@\"; else compdef _skiffctl skiffctl; fi\n";
    return 0;
  }
  return Fail(ctx, absl::StrCat("Unsupported shell type \"", shell, "\"."));
}

}  // namespace skiff::cli
