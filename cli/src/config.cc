#include "config.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/manifest/manifest.h"

namespace skiff::cli {

using manifest::Value;

const ContextEntry* ClientConfig::FindContext(const std::string& name) const {
  for (const auto& c : contexts)
    if (c.name == name) return &c;
  return nullptr;
}
ContextEntry* ClientConfig::FindContext(const std::string& name) {
  for (auto& c : contexts)
    if (c.name == name) return &c;
  return nullptr;
}
const ClusterEntry* ClientConfig::FindCluster(const std::string& name) const {
  for (const auto& c : clusters)
    if (c.name == name) return &c;
  return nullptr;
}
const UserEntry* ClientConfig::FindUser(const std::string& name) const {
  for (const auto& u : users)
    if (u.name == name) return &u;
  return nullptr;
}

namespace {

std::string Str(const Value& m, const char* key) {
  const Value* v = m.Find(key);
  return v != nullptr && v->is_scalar() && !v->is_null() ? v->text() : "";
}

absl::StatusOr<std::string> B64(const Value& m, const char* key, const std::string& path) {
  std::string s = Str(m, key);
  if (s.empty()) return s;
  auto d = manifest::Base64Decode(s);
  if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat("error loading config file \"", path, "\": ", key, ": ",
                                                              d.status().message()));
  return *d;
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("unable to read ", path, ": ", std::strerror(errno)));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path) {
  ClientConfig cfg;
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return cfg;
  ASSIGN_OR_RETURN(std::string text, ReadAll(path));
  auto parsed = manifest::ParseValue(text, path);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("error loading config file \"", path, "\": ",
                                                                   parsed.status().message()));
  const Value& root = *parsed;
  if (root.is_null()) return cfg;
  if (!root.is_map()) return absl::InvalidArgumentError(absl::StrCat("error loading config file \"", path,
                                                                     "\": not a mapping"));
  auto list = [&](const char* key) -> std::vector<Value> {
    const Value* v = root.Find(key);
    return v != nullptr && v->is_list() ? v->items() : std::vector<Value>{};
  };
  for (const Value& e : list("clusters")) {
    ClusterEntry c;
    c.name = Str(e, "name");
    if (const Value* d = e.Find("cluster"); d != nullptr && d->is_map()) {
      c.server = Str(*d, "server");
      ASSIGN_OR_RETURN(c.certificate_authority_data, B64(*d, "certificate-authority-data", path));
      c.certificate_authority = Str(*d, "certificate-authority");
      c.insecure_skip_tls_verify = Str(*d, "insecure-skip-tls-verify") == "true";
    }
    cfg.clusters.push_back(std::move(c));
  }
  for (const Value& e : list("users")) {
    UserEntry u;
    u.name = Str(e, "name");
    if (const Value* d = e.Find("user"); d != nullptr && d->is_map()) {
      ASSIGN_OR_RETURN(u.client_certificate_data, B64(*d, "client-certificate-data", path));
      ASSIGN_OR_RETURN(u.client_key_data, B64(*d, "client-key-data", path));
      u.client_certificate = Str(*d, "client-certificate");
      u.client_key = Str(*d, "client-key");
      u.token = Str(*d, "token");
    }
    cfg.users.push_back(std::move(u));
  }
  for (const Value& e : list("contexts")) {
    ContextEntry c;
    c.name = Str(e, "name");
    if (const Value* d = e.Find("context"); d != nullptr && d->is_map()) {
      c.cluster = Str(*d, "cluster");
      c.user = Str(*d, "user");
      c.ns = Str(*d, "namespace");
    }
    cfg.contexts.push_back(std::move(c));
  }
  cfg.current_context = Str(root, "current-context");
  return cfg;
}

std::string ClientConfigYaml(const ClientConfig& cfg, bool raw) {
  auto data = [&](const std::string& pem) {
    return Value::String(raw ? manifest::Base64Encode(pem) : std::string("DATA+OMITTED"));
  };
  Value root = Value::Map();
  root.Set("apiVersion", Value::String("v1"));
  Value clusters = Value::List();
  for (const auto& c : cfg.clusters) {
    Value d = Value::Map();
    if (!c.certificate_authority_data.empty()) d.Set("certificate-authority-data", data(c.certificate_authority_data));
    if (!c.certificate_authority.empty()) d.Set("certificate-authority", Value::String(c.certificate_authority));
    if (c.insecure_skip_tls_verify) d.Set("insecure-skip-tls-verify", Value::Bool(true));
    d.Set("server", Value::String(c.server));
    Value e = Value::Map();
    e.Set("cluster", std::move(d));
    e.Set("name", Value::String(c.name));
    clusters.Append(std::move(e));
  }
  root.Set("clusters", std::move(clusters));
  Value contexts = Value::List();
  for (const auto& c : cfg.contexts) {
    Value d = Value::Map();
    d.Set("cluster", Value::String(c.cluster));
    if (!c.ns.empty()) d.Set("namespace", Value::String(c.ns));
    d.Set("user", Value::String(c.user));
    Value e = Value::Map();
    e.Set("context", std::move(d));
    e.Set("name", Value::String(c.name));
    contexts.Append(std::move(e));
  }
  root.Set("contexts", std::move(contexts));
  root.Set("current-context", Value::String(cfg.current_context));
  root.Set("kind", Value::String("Config"));
  root.Set("preferences", Value::Map());
  Value users = Value::List();
  for (const auto& u : cfg.users) {
    Value d = Value::Map();
    if (!u.client_certificate_data.empty()) d.Set("client-certificate-data", data(u.client_certificate_data));
    if (!u.client_certificate.empty()) d.Set("client-certificate", Value::String(u.client_certificate));
    if (!u.client_key_data.empty())
      d.Set("client-key-data", raw ? data(u.client_key_data) : Value::String("DATA+OMITTED"));
    if (!u.client_key.empty()) d.Set("client-key", Value::String(u.client_key));
    if (!u.token.empty()) d.Set("token", Value::String(raw ? u.token : "REDACTED"));
    Value e = Value::Map();
    e.Set("name", Value::String(u.name));
    e.Set("user", std::move(d));
    users.Append(std::move(e));
  }
  root.Set("users", std::move(users));
  return manifest::ToYaml(root);
}

absl::Status SaveClientConfig(const ClientConfig& cfg, const std::string& path) {
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return LastErrnoError(absl::StrCat("write ", tmp));
    f << ClientConfigYaml(cfg, true);
    if (!f.flush()) return LastErrnoError(absl::StrCat("write ", tmp));
  }
  if (::chmod(tmp.c_str(), 0600) != 0) return LastErrnoError(absl::StrCat("chmod ", tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError(absl::StrCat("rename ", tmp));
  return absl::OkStatus();
}

std::string HostPort(const std::string& server_url) {
  std::string s = server_url;
  if (size_t p = s.find("://"); p != std::string::npos) s = s.substr(p + 3);
  if (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

absl::StatusOr<client::Credentials> ResolveCredentials(const ClientConfig& cfg, const std::string& context,
                                                       const std::string& server) {
  client::Credentials creds;
  std::string ctx_name = context.empty() ? cfg.current_context : context;
  const ContextEntry* ctx = ctx_name.empty() ? nullptr : cfg.FindContext(ctx_name);
  if (!context.empty() && ctx == nullptr) {
    return absl::NotFoundError(absl::StrCat("context was not found for specified context: ", context));
  }
  const ClusterEntry* cluster = ctx ? cfg.FindCluster(ctx->cluster) : nullptr;
  const UserEntry* user = ctx ? cfg.FindUser(ctx->user) : nullptr;
  std::string url = !server.empty() ? server : cluster ? cluster->server : "";
  if (url.empty()) {
    return absl::FailedPreconditionError(
        "no server configured: set one with --server, or create a client config (~/.skiff/config, --config, "
        "$SKIFFCONFIG)");
  }
  creds.server = HostPort(url);
  creds.insecure = url.rfind("http://", 0) == 0;
  if (cluster != nullptr) {
    creds.ca_cert_pem = cluster->certificate_authority_data;
    if (creds.ca_cert_pem.empty() && !cluster->certificate_authority.empty()) {
      ASSIGN_OR_RETURN(creds.ca_cert_pem, ReadAll(cluster->certificate_authority));
    }
  }
  if (user != nullptr) {
    creds.client_cert_pem = user->client_certificate_data;
    creds.client_key_pem = user->client_key_data;
    if (creds.client_cert_pem.empty() && !user->client_certificate.empty()) {
      ASSIGN_OR_RETURN(creds.client_cert_pem, ReadAll(user->client_certificate));
    }
    if (creds.client_key_pem.empty() && !user->client_key.empty()) {
      ASSIGN_OR_RETURN(creds.client_key_pem, ReadAll(user->client_key));
    }
    creds.token = user->token;
  }
  return creds;
}

}  // namespace skiff::cli
