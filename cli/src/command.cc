// Flag parsing, the invocation context, kubectl-shaped errors, dispatch.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cmd.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::cli {

// ------------------------------------------------------------------ flags

std::string Flags::Get(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() || it->second.empty() ? def : it->second.back();
}
std::vector<std::string> Flags::All(const std::string& name) const {
  std::vector<std::string> out;
  auto it = values_.find(name);
  if (it == values_.end()) return out;
  // Repeated flags may also be comma-separated lists, as kubectl's -f.
  for (const auto& v : it->second) out.push_back(v);
  return out;
}
bool Flags::Bool(const std::string& name, bool def) const {
  if (!Has(name)) return def;
  std::string v = Get(name);
  return !(v == "false" || v == "0" || v == "False");
}
absl::StatusOr<int64_t> Flags::Int(const std::string& name, int64_t def) const {
  if (!Has(name)) return def;
  int64_t n;
  std::string v = Get(name);
  if (!absl::SimpleAtoi(v, &n)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid argument \"", v, "\" for \"--", name,
                                                   "\" flag: strconv.ParseInt: parsing \"", v,
                                                   "\": invalid syntax"));
  }
  return n;
}

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs) {
  Flags f;
  auto by_long = [&](const std::string& n) -> const FlagSpec* {
    for (const auto& s : specs)
      if (s.name == n) return &s;
    return nullptr;
  };
  auto by_short = [&](char c) -> const FlagSpec* {
    for (const auto& s : specs)
      if (s.short_name == c) return &s;
    return nullptr;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (f.dash_seen) {
      f.after_dash.push_back(a);
      continue;
    }
    if (a == "--") {
      f.dash_seen = true;
      continue;
    }
    if (a.size() > 2 && a.rfind("--", 0) == 0) {
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      const FlagSpec* s = by_long(name);
      if (s == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag: --", name));
      if (s->takes_value && !has_value) {
        if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("flag needs an argument: --", name));
        value = args[++i];
      } else if (!s->takes_value && !has_value) {
        value = "true";
      }
      f.Set(s->name, value);
      continue;
    }
    if (a.size() > 1 && a[0] == '-' && a != "-") {
      for (size_t j = 1; j < a.size(); ++j) {
        const FlagSpec* s = by_short(a[j]);
        if (s == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat("unknown shorthand flag: '", std::string(1, a[j]), "' in ", a));
        }
        if (s->takes_value) {
          std::string value = a.substr(j + 1);
          if (!value.empty() && value[0] == '=') value = value.substr(1);
          if (value.empty()) {
            if (i + 1 >= args.size()) {
              return absl::InvalidArgumentError(
                  absl::StrCat("flag needs an argument: '", std::string(1, a[j]), "' in -", std::string(1, a[j])));
            }
            value = args[++i];
          }
          f.Set(s->name, value);
          break;
        }
        f.Set(s->name, "true");
      }
      continue;
    }
    f.args.push_back(a);
  }
  return f;
}

// ------------------------------------------------------------------ context

std::string Ctx::Getenv(const std::string& name) const {
  if (env.getenv) return env.getenv(name);
  const char* v = ::getenv(name.c_str());
  return v ? v : "";
}

std::string Ctx::ConfigPath() const {
  if (flags.Has("config")) return flags.Get("config");
  if (flags.Has("kubeconfig")) return flags.Get("kubeconfig");
  std::string e = Getenv("SKIFFCONFIG");
  if (!e.empty()) return e;
  std::string home = Getenv("HOME");
  std::string user = (home.empty() ? std::string("/root") : home) + "/.skiff/config";
  // On a control-plane machine the administrator's config is the fallback,
  // as skiff::client::DefaultConfigPath() does.
  std::error_code ec;
  if (!std::filesystem::exists(user, ec) && std::filesystem::exists("/etc/skiff/admin.conf", ec)) {
    return "/etc/skiff/admin.conf";
  }
  return user;
}

absl::StatusOr<ClientConfig*> Ctx::Config() {
  if (!config_) {
    ASSIGN_OR_RETURN(ClientConfig c, LoadClientConfig(ConfigPath()));
    config_ = std::move(c);
  }
  return &*config_;
}

std::string Ctx::Namespace() {
  if (flags.Has("namespace")) return flags.Get("namespace");
  auto cfg = Config();
  if (cfg.ok()) {
    std::string name = flags.Has("context") ? flags.Get("context") : (*cfg)->current_context;
    if (const ContextEntry* c = (*cfg)->FindContext(name); c != nullptr && !c->ns.empty()) return c->ns;
  }
  return "default";
}

std::string Ctx::Server() {
  if (creds_) return creds_->server;
  if (flags.Has("server")) return HostPort(flags.Get("server"));
  auto cfg = Config();
  if (cfg.ok()) {
    auto creds = ResolveCredentials(**cfg, flags.Get("context"), "");
    if (creds.ok()) return creds->server;
  }
  return "";
}

namespace {

std::string ShortReason(std::string msg) {
  // gRPC messages nest reasons with ": "; the last one is the useful one.
  if (size_t p = msg.rfind(": "); p != std::string::npos) msg = msg.substr(p + 2);
  for (auto& c : msg) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return msg;
}

// One TCP connect to the server with a timeout, so an unreachable address
// gives a clear message at once instead of a gRPC error later.
absl::Status ProbeServer(const std::string& hostport, std::chrono::milliseconds timeout) {
  std::string host = hostport, port = "443";
  if (!hostport.empty() && hostport[0] == '[') {
    size_t close = hostport.find(']');
    host = hostport.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    if (close != std::string::npos && close + 1 < hostport.size() && hostport[close + 1] == ':') {
      port = hostport.substr(close + 2);
    }
  } else if (size_t c = hostport.rfind(':'); c != std::string::npos) {
    host = hostport.substr(0, c);
    port = hostport.substr(c + 1);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrCat("lookup ", host, ": ", gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(res, freeaddrinfo);
  absl::Status last = absl::UnavailableError("no address");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = LastErrnoError("socket");
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return absl::OkStatus();
    if (errno != EINPROGRESS) {
      last = absl::UnavailableError(std::strerror(errno));
      continue;
    }
    pollfd p{fd.get(), POLLOUT, 0};
    int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (rc == 0) {
      last = absl::UnavailableError("connection timed out");
      continue;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (rc < 0 || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
      last = absl::UnavailableError(std::strerror(errno));
      continue;
    }
    if (soerr == 0) return absl::OkStatus();
    last = absl::UnavailableError(std::strerror(soerr));
  }
  return last;
}

std::chrono::milliseconds ParseDuration(const std::string& s, std::chrono::milliseconds def) {
  if (s.empty() || s == "0") return def;
  absl::Duration d;
  if (absl::ParseDuration(s, &d)) return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
  int64_t secs;
  if (absl::SimpleAtoi(s, &secs)) return std::chrono::seconds(secs);
  return def;
}

}  // namespace

absl::Status Ctx::EnsureConnected() {
  if (conn_) return absl::OkStatus();
  ASSIGN_OR_RETURN(ClientConfig * cfg, Config());
  ASSIGN_OR_RETURN(client::Credentials creds, ResolveCredentials(*cfg, flags.Get("context"), flags.Get("server")));
  if (flags.Bool("insecure-skip-tls-verify")) creds.ca_cert_pem.clear();
  creds_ = creds;
  auto timeout = ParseDuration(flags.Get("request-timeout"), std::chrono::seconds(5));
  if (absl::Status probe = ProbeServer(creds.server, timeout); !probe.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the API server at ", creds.server, ": ", ShortReason(std::string(probe.message()))));
  }
  if (!env.dial) return absl::InternalError("no dialer configured");
  auto conn = env.dial(creds);
  if (!conn.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot reach the API server at ", creds.server, ": ",
                                               ShortReason(std::string(conn.status().message()))));
  }
  conn_ = std::move(*conn);
  return absl::OkStatus();
}

client::Client* Ctx::Client() {
  if (connect_failed_) return nullptr;
  if (absl::Status st = EnsureConnected(); !st.ok()) {
    connect_failed_ = true;
    Fail(*this, st);
    return nullptr;
  }
  return conn_->client.get();
}

NodeApi* Ctx::Node() {
  if (Client() == nullptr) return nullptr;
  if (!conn_->node) {
    Fail(*this, "this connection does not support node streams");
    return nullptr;
  }
  return conn_->node.get();
}

// ------------------------------------------------------------------ errors

int Fail(Ctx& ctx, const absl::Status& st) { return Fail(ctx, std::string(st.message())); }
int Fail(Ctx& ctx, const std::string& msg) {
  ctx.err() << "error: " << msg << "\n";
  return 1;
}

std::string ReasonOf(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kNotFound: return "NotFound";
    case absl::StatusCode::kAlreadyExists: return "AlreadyExists";
    case absl::StatusCode::kAborted: return "Conflict";
    case absl::StatusCode::kInvalidArgument: return "Invalid";
    case absl::StatusCode::kOutOfRange: return "Expired";
    case absl::StatusCode::kUnauthenticated: return "Unauthorized";
    case absl::StatusCode::kPermissionDenied: return "Forbidden";
    case absl::StatusCode::kFailedPrecondition: return "BadRequest";
    case absl::StatusCode::kUnavailable: return "ServiceUnavailable";
    case absl::StatusCode::kDeadlineExceeded: return "Timeout";
    case absl::StatusCode::kUnimplemented: return "MethodNotAllowed";
    default: return "InternalError";
  }
}

bool IsTransportError(const absl::Status& st) {
  if (st.code() != absl::StatusCode::kUnavailable && st.code() != absl::StatusCode::kDeadlineExceeded) return false;
  std::string m(st.message());
  return absl::StrContains(m, "failed to connect") || absl::StrContains(m, "Connection refused") ||
         absl::StrContains(m, "Socket closed") || absl::StrContains(m, "Connection reset") ||
         absl::StrContains(m, "DNS resolution failed") || absl::StrContains(m, "Deadline Exceeded") ||
         absl::StrContains(m, "connections to all backends failing") || absl::StrContains(m, "cannot reach");
}

void PrintServerError(Ctx& ctx, const absl::Status& st, const std::string& prefix) {
  if (IsTransportError(st)) {
    if (absl::StrContains(std::string(st.message()), "cannot reach")) {
      ctx.err() << "error: " << st.message() << "\n";
    } else {
      ctx.err() << "error: cannot reach the API server at " << ctx.Server() << ": "
                << ShortReason(std::string(st.message())) << "\n";
    }
    return;
  }
  ctx.err() << "Error from server (" << ReasonOf(st) << "): " << prefix << st.message() << "\n";
}

int ServerFail(Ctx& ctx, const absl::Status& st, const std::string& prefix) {
  PrintServerError(ctx, st, prefix);
  return 1;
}

// ------------------------------------------------------------------ objects

std::string TypeName(const KindInfo& k) {
  return k.group.empty() ? k.singular : absl::StrCat(k.singular, ".", k.group);
}
std::string QualifiedResource(const KindInfo& k) {
  return k.group.empty() ? k.resource : absl::StrCat(k.resource, ".", k.group);
}
std::string RefName(const Object& obj) {
  const KindInfo* k = manifest::KindOf(obj);
  return absl::StrCat(k ? TypeName(*k) : "unknown", "/", manifest::Meta(obj).name());
}
std::string NsFor(const KindInfo& k, const std::string& ns) { return k.namespaced ? ns : ""; }

absl::StatusOr<const KindInfo*> ResolveKind(const std::string& name) {
  const KindInfo* k = manifest::FindResource(name);
  if (k == nullptr) {
    return absl::NotFoundError(absl::StrCat("the server doesn't have a resource type \"", name, "\""));
  }
  return k;
}

absl::StatusOr<std::vector<std::pair<const KindInfo*, std::string>>> ResolveTypeNames(
    const std::vector<std::string>& args) {
  std::vector<std::pair<const KindInfo*, std::string>> out;
  if (args.empty()) return out;
  if (args[0].find('/') != std::string::npos) {
    for (const auto& a : args) {
      size_t slash = a.find('/');
      if (slash == std::string::npos) {
        return absl::InvalidArgumentError(
            "there is no need to specify a resource type as a separate argument when passing arguments in "
            "resource/name form (e.g. 'skiffctl get resource/<resource_name>' instead of 'skiffctl get resource "
            "resource/<resource_name>'");
      }
      ASSIGN_OR_RETURN(const KindInfo* k, ResolveKind(a.substr(0, slash)));
      out.emplace_back(k, a.substr(slash + 1));
    }
    return out;
  }
  ASSIGN_OR_RETURN(const KindInfo* k, ResolveKind(args[0]));
  if (args.size() == 1) {
    out.emplace_back(k, "");
  } else {
    for (size_t i = 1; i < args.size(); ++i) out.emplace_back(k, args[i]);
  }
  return out;
}

std::optional<int64_t> SecondsSince(const std::string& rfc3339, std::chrono::system_clock::time_point now) {
  if (rfc3339.empty()) return std::nullopt;
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &err)) return std::nullopt;
  absl::Time n = absl::FromChrono(now);
  return absl::ToInt64Seconds(n - t);
}

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromChrono(t), absl::UTCTimeZone());
}

absl::StatusOr<Object> UpdateWithRetry(client::Client* c, const KindInfo& k, const std::string& ns,
                                       const std::string& name, const std::function<absl::Status(Object*)>& mutate) {
  absl::Status last;
  for (int attempt = 0; attempt < 8; ++attempt) {
    ASSIGN_OR_RETURN(Object obj, c->Get(k.resource, NsFor(k, ns), name));
    RETURN_IF_ERROR(mutate(&obj));
    auto updated = c->Update(k.resource, NsFor(k, ns), obj);
    if (updated.ok()) return updated;
    last = updated.status();
    if (last.code() != absl::StatusCode::kAborted) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(20 * (attempt + 1)));
  }
  return last;
}

// ------------------------------------------------------------------ dispatch

namespace {

struct Verb {
  const char* name;
  int (*fn)(Ctx&);
  std::vector<FlagSpec> flags;
  const char* help;
};

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {"namespace", 'n', true, ""},  {"all-namespaces", 'A', false, ""}, {"config", 0, true, ""},
      {"kubeconfig", 0, true, ""},   {"server", 's', true, ""},          {"context", 0, true, ""},
      {"request-timeout", 0, true, ""}, {"help", 'h', false, ""},       {"insecure-skip-tls-verify", 0, false, ""},
      {"v", 'v', true, ""},
  };
  return kFlags;
}

const FlagSpec kFilename{"filename", 'f', true, ""};
const FlagSpec kRecursive{"recursive", 'R', false, ""};
const FlagSpec kOutput{"output", 'o', true, ""};
const FlagSpec kSelector{"selector", 'l', true, ""};
const FlagSpec kDryRun{"dry-run", 0, true, ""};
const FlagSpec kTimeout{"timeout", 0, true, ""};

const std::vector<Verb>& Verbs() {
  static const std::vector<Verb> kVerbs = {
      {"apply", CmdApply, {kFilename, kRecursive, kOutput, kDryRun, {"validate", 0, true, ""}, {"prune", 0, false, ""}},
       "Apply a configuration to a resource by file name or stdin"},
      {"create", CmdCreate,
       {kFilename, kRecursive, kOutput, kDryRun, {"image", 0, true, ""}, {"replicas", 'r', true, ""},
        {"port", 0, true, ""}, {"tcp", 0, true, ""}, {"from-literal", 0, true, ""}, {"from-file", 0, true, ""},
        {"type", 0, true, ""}, {"node-port", 0, true, ""}, {"clusterip", 0, true, ""}, {"validate", 0, true, ""},
        {"save-config", 0, false, ""}},
       "Create a resource from a file or from stdin"},
      {"get", CmdGet,
       {kFilename, kRecursive, kOutput, kSelector, {"field-selector", 0, true, ""}, {"watch", 'w', false, ""},
        {"watch-only", 0, false, ""}, {"show-labels", 0, false, ""}, {"no-headers", 0, false, ""},
        {"label-columns", 'L', true, ""}, {"ignore-not-found", 0, false, ""}, {"chunk-size", 0, true, ""},
        {"sort-by", 0, true, ""}},
       "Display one or many resources"},
      {"describe", CmdDescribe, {kFilename, kRecursive, kSelector, {"show-events", 0, false, ""}},
       "Show details of a specific resource or group of resources"},
      {"delete", CmdDelete,
       {kFilename, kRecursive, kSelector, kTimeout, kDryRun, kOutput, {"grace-period", 0, true, ""},
        {"force", 0, false, ""}, {"wait", 0, false, ""}, {"all", 0, false, ""}, {"ignore-not-found", 0, false, ""},
        {"now", 0, false, ""}, {"cascade", 0, true, ""}, {"field-selector", 0, true, ""}},
       "Delete resources by file names, stdin, resources and names, or by resources and label selector"},
      {"logs", CmdLogs,
       {{"follow", 'f', false, ""}, {"tail", 0, true, ""}, {"since", 0, true, ""}, {"since-time", 0, true, ""},
        {"previous", 'p', false, ""}, {"container", 'c', true, ""}, {"timestamps", 0, false, ""},
        {"limit-bytes", 0, true, ""}, {"all-containers", 0, false, ""}, kSelector},
       "Print the logs for a container in a pod"},
      {"exec", CmdExec, {{"stdin", 'i', false, ""}, {"tty", 't', false, ""}, {"container", 'c', true, ""}},
       "Execute a command in a container"},
      {"port-forward", CmdPortForward, {{"address", 0, true, ""}},
       "Forward one or more local ports to a pod"},
      {"run", CmdRun,
       {kOutput, kDryRun, {"image", 0, true, ""}, {"port", 0, true, ""}, {"labels", 'l', true, ""},
        {"env", 0, true, ""}, {"restart", 0, true, ""}, {"command", 0, false, ""}, {"stdin", 'i', false, ""},
        {"tty", 't', false, ""}, {"rm", 0, false, ""}, {"image-pull-policy", 0, true, ""},
        {"annotations", 0, true, ""}, {"overrides", 0, true, ""}},
       "Run a particular image on the cluster"},
      {"expose", CmdExpose,
       {kFilename, kOutput, kDryRun, {"port", 0, true, ""}, {"target-port", 0, true, ""}, {"name", 0, true, ""},
        {"type", 0, true, ""}, {"protocol", 0, true, ""}, {"selector", 0, true, ""}, {"labels", 'l', true, ""}},
       "Take a replication controller, service, deployment or pod and expose it as a new Kubernetes service"},
      {"scale", CmdScale,
       {kFilename, kOutput, kTimeout, kSelector, {"replicas", 0, true, ""}, {"current-replicas", 0, true, ""}},
       "Set a new size for a deployment or replica set"},
      {"rollout", CmdRollout,
       {kTimeout, {"watch", 'w', false, ""}, {"to-revision", 0, true, ""}, {"revision", 0, true, ""}},
       "Manage the rollout of a resource"},
      {"label", CmdLabel, {kFilename, kSelector, kOutput, {"overwrite", 0, false, ""}, {"all", 0, false, ""}, {"list", 0, false, ""}},
       "Update the labels on a resource"},
      {"annotate", CmdAnnotate, {kFilename, kSelector, kOutput, {"overwrite", 0, false, ""}, {"all", 0, false, ""}, {"list", 0, false, ""}},
       "Update the annotations on a resource"},
      {"cordon", CmdCordon, {kSelector, kDryRun}, "Mark node as unschedulable"},
      {"uncordon", CmdUncordon, {kSelector, kDryRun}, "Mark node as schedulable"},
      {"drain", CmdDrain,
       {kSelector, kTimeout, kDryRun, {"force", 0, false, ""}, {"grace-period", 0, true, ""},
        {"ignore-daemonsets", 0, false, ""}, {"delete-emptydir-data", 0, false, ""},
        {"disable-eviction", 0, false, ""}, {"pod-selector", 0, true, ""}},
       "Drain node in preparation for maintenance"},
      {"taint", CmdTaint, {kSelector, {"overwrite", 0, false, ""}, {"all", 0, false, ""}},
       "Update the taints on one or more nodes"},
      {"top", CmdTop, {kSelector, {"field-selector", 0, true, ""}, {"containers", 0, false, ""},
                        {"no-headers", 0, false, ""}, {"sort-by", 0, true, ""}},
       "Display resource (CPU/memory) usage"},
      {"cluster-info", CmdClusterInfo, {}, "Display cluster information"},
      {"version", CmdVersion, {kOutput, {"client", 0, false, ""}}, "Print the client and server version information"},
      {"api-resources", CmdApiResources, {kOutput, {"namespaced", 0, true, ""}, {"no-headers", 0, false, ""}},
       "Print the supported API resources on the server"},
      {"edit", CmdEdit, {kFilename, kOutput, {"windows-line-endings", 0, false, ""}}, "Edit a resource on the server"},
      {"config", CmdConfig,
       {kOutput, {"raw", 0, false, ""}, {"minify", 0, false, ""}, {"current", 0, false, ""},
        {"cluster", 0, true, ""}, {"user", 0, true, ""}, {"flatten", 0, false, ""}},
       "Modify client config files"},
      {"token", CmdToken, {{"ttl", 0, true, ""}, {"description", 0, true, ""}, {"print-join-command", 0, false, ""}},
       "Manage bootstrap tokens for joining nodes"},
      {"image", CmdImage, {{"node", 0, true, ""}, {"root-dir", 0, true, ""}, {"name", 0, true, ""},
                           {"insecure-registry", 0, true, ""}, {"credentials", 0, true, ""}},
       "Pull images into or import OCI image archives into this node's image store"},
      {"completion", CmdCompletion, {}, "Output shell completion code for the specified shell (bash or zsh)"},
  };
  return kVerbs;
}

void PrintUsage(std::ostream& out) {
  out << "skiffctl controls a Skiff cluster, the way kubectl controls Kubernetes.\n\nCommands:\n";
  for (const auto& v : Verbs()) {
    std::string n = v.name;
    out << "  " << n << std::string(n.size() < 15 ? 15 - n.size() : 1, ' ') << v.help << "\n";
  }
  out << "\nUsage:\n  skiffctl [flags] [options]\n\nUse \"skiffctl <command> --help\" for more information about a given "
         "command.\n";
}

}  // namespace

std::vector<std::string> VerbNames() {
  std::vector<std::string> out;
  for (const auto& v : Verbs()) out.push_back(v.name);
  return out;
}

int Run(const std::vector<std::string>& args, Environment& env) {
  // The verb is the first argument that is not a global flag (or its value).
  size_t verb_at = args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.empty() || a[0] != '-') {
      verb_at = i;
      break;
    }
    if (a == "--") break;
    bool takes_value = false;
    for (const auto& g : GlobalFlags()) {
      if (a == "--" + g.name || (a.size() == 2 && a[1] == g.short_name)) takes_value = g.takes_value;
    }
    if (takes_value) ++i;
  }
  if (verb_at == args.size()) {
    PrintUsage(*env.out);
    return args.empty() ? 0 : 0;
  }
  const std::string verb = args[verb_at];
  const Verb* v = nullptr;
  for (const auto& candidate : Verbs())
    if (verb == candidate.name) v = &candidate;
  if (v == nullptr) {
    *env.err << "error: unknown command \"" << verb << "\" for \"skiffctl\"\n";
    return 1;
  }
  std::vector<std::string> rest(args.begin(), args.begin() + static_cast<long>(verb_at));
  rest.insert(rest.end(), args.begin() + static_cast<long>(verb_at) + 1, args.end());
  std::vector<FlagSpec> specs = GlobalFlags();
  specs.insert(specs.end(), v->flags.begin(), v->flags.end());
  auto flags = ParseFlags(rest, specs);
  if (!flags.ok()) {
    *env.err << "error: " << flags.status().message() << "\nSee 'skiffctl " << verb << " --help' for usage.\n";
    return 1;
  }
  if (flags->Bool("help")) {
    *env.out << v->help << ".\n\nUsage:\n  skiffctl " << verb << " [options]\n\nOptions:\n";
    for (const auto& f : v->flags) {
      *env.out << "    " << (f.short_name ? absl::StrCat("-", std::string(1, f.short_name), ", ") : "    ") << "--"
               << f.name << (f.takes_value ? "=''" : "") << "\n";
    }
    return 0;
  }
  Ctx ctx(env, verb, std::move(*flags));
  return v->fn(ctx);
}

}  // namespace skiff::cli
