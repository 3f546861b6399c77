// What every verb file shares: parsed flags, the invocation context (I/O,
// config, namespace, lazy connection), error printing with kubectl's shapes.
#pragma once

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/cli/cli.h"
#include "skiff/manifest/manifest.h"
#include "config.h"
#include "skiff/common/status.h"

namespace skiff::cli {

using ::skiff::api::v1::Object;
using ::skiff::manifest::KindInfo;
using ::skiff::manifest::Value;

struct FlagSpec {
  std::string name;        // long name without "--"
  char short_name = 0;     // 0 = none
  bool takes_value = false;
  std::string default_value;
};

class Flags {
 public:
  std::vector<std::string> args;        // positional, before "--"
  std::vector<std::string> after_dash;  // after "--"
  bool dash_seen = false;

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> All(const std::string& name) const;
  bool Bool(const std::string& name, bool def = false) const;
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t def) const;
  void Set(const std::string& name, const std::string& v) { values_[name].push_back(v); }

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

// Parses kubectl-style flags: --name=value, --name value, -n value, -nvalue,
// grouped short booleans (-it), "--" ends flags. Unknown flags are errors
// ("unknown flag: --foo", "unknown shorthand flag: 'z' in -z").
absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs);

class Ctx {
 public:
  Ctx(Environment& env, std::string verb, Flags flags) : env(env), verb(std::move(verb)), flags(std::move(flags)) {}
  Environment& env;
  std::string verb;  // "get", "rollout status", ...
  Flags flags;

  std::ostream& out() { return *env.out; }
  std::ostream& err() { return *env.err; }
  std::string Getenv(const std::string& name) const;

  // The client config file in use (--config, $SKIFFCONFIG, ~/.skiff/config).
  std::string ConfigPath() const;
  absl::StatusOr<ClientConfig*> Config();
  // Namespace: -n, else the context's, else "default".
  std::string Namespace();
  bool NamespaceExplicit() const { return flags.Has("namespace"); }
  bool AllNamespaces() const { return flags.Bool("all-namespaces"); }
  // The server address for messages ("127.0.0.1:6443").
  std::string Server();

  // Connects once; on failure prints the unreachable message and returns null.
  client::Client* Client();
  NodeApi* Node();

  std::chrono::system_clock::time_point Now() const { return env.now(); }

 private:
  absl::Status EnsureConnected();
  std::optional<ClientConfig> config_;
  std::optional<client::Credentials> creds_;
  std::optional<Connection> conn_;
  bool connect_failed_ = false;
};

// "error: <msg>" on stderr; returns 1.
int Fail(Ctx& ctx, const absl::Status& st);
int Fail(Ctx& ctx, const std::string& msg);
// "Error from server (<Reason>): <prefix><msg>" (or the unreachable message
// for transport errors); returns 1.
int ServerFail(Ctx& ctx, const absl::Status& st, const std::string& prefix = "");
// Prints a server error like ServerFail without returning.
void PrintServerError(Ctx& ctx, const absl::Status& st, const std::string& prefix = "");
std::string ReasonOf(const absl::Status& st);
// A transport failure (no server reached) rather than an answer from it.
bool IsTransportError(const absl::Status& st);

// ------------------------------------------------------------ object helpers

// "deployment.apps/web", "pod/web"
std::string TypeName(const KindInfo& k);
std::string RefName(const Object& obj);
// "deployments.apps", "pods"
std::string QualifiedResource(const KindInfo& k);
// Namespace argument for a call on `k`: "" for cluster-scoped kinds.
std::string NsFor(const KindInfo& k, const std::string& ns);
// Resolves "deploy", "deployment/web" etc.; error "the server doesn't have a
// resource type "x"".
absl::StatusOr<const KindInfo*> ResolveKind(const std::string& name);
// Parses the "TYPE NAME..." / "TYPE/NAME..." argument forms into pairs.
absl::StatusOr<std::vector<std::pair<const KindInfo*, std::string>>> ResolveTypeNames(
    const std::vector<std::string>& args);
// Seconds since an RFC 3339 time; nullopt if unparsable/empty.
std::optional<int64_t> SecondsSince(const std::string& rfc3339, std::chrono::system_clock::time_point now);
std::string Rfc3339(std::chrono::system_clock::time_point t);

// Get-modify-Update with retries on conflict.
absl::StatusOr<Object> UpdateWithRetry(client::Client* c, const KindInfo& k, const std::string& ns,
                                       const std::string& name, const std::function<absl::Status(Object*)>& mutate);

// Verb entry points, one file each.
int CmdApply(Ctx& ctx);
int CmdCreate(Ctx& ctx);
int CmdGet(Ctx& ctx);
int CmdDescribe(Ctx& ctx);
int CmdDelete(Ctx& ctx);
int CmdLogs(Ctx& ctx);
int CmdExec(Ctx& ctx);
int CmdPortForward(Ctx& ctx);
int CmdRun(Ctx& ctx);
int CmdExpose(Ctx& ctx);
int CmdScale(Ctx& ctx);
int CmdRollout(Ctx& ctx);
int CmdLabel(Ctx& ctx);
int CmdAnnotate(Ctx& ctx);
int CmdCordon(Ctx& ctx);
int CmdUncordon(Ctx& ctx);
int CmdDrain(Ctx& ctx);
int CmdTaint(Ctx& ctx);
int CmdTop(Ctx& ctx);
int CmdClusterInfo(Ctx& ctx);
int CmdVersion(Ctx& ctx);
int CmdApiResources(Ctx& ctx);
int CmdEdit(Ctx& ctx);
int CmdConfig(Ctx& ctx);
int CmdToken(Ctx& ctx);
int CmdImage(Ctx& ctx);
int CmdCompletion(Ctx& ctx);

// Creates `obj` (or prints it with --dry-run=client / -o), then prints
// "<type>/<name> <word>". Returns the exit code.
int CreateObject(Ctx& ctx, Object obj, const std::string& word);

// Output of objects: -o yaml|json|name|jsonpath=|custom-columns=|wide, or a
// table. Shared by get, create/run/expose --dry-run and friends.
int PrintOutput(Ctx& ctx, const KindInfo& k, const std::vector<Object>& objs, bool as_list);

}  // namespace skiff::cli
