#include "skiff/client/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace skiff::client {

std::string DefaultConfigPath() {
  for (const char* env : {"SKIFFCONFIG", "KUBECONFIG"}) {
    const char* v = getenv(env);
    if (v && *v) return v;
  }
  const char* home = getenv("HOME");
  if (home && *home) {
    std::string p = absl::StrCat(home, "/.skiff/config");
    struct stat st;
    if (stat(p.c_str(), &st) == 0) return p;
  }
  return "/etc/skiff/admin.conf";
}

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("client config: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return base_dir + "/" + p;
}

// Reads "<key>-data" (base64) or "<key>" (a file path).
absl::StatusOr<std::string> DataOrFile(const YAML::Node& n, const std::string& key, const std::string& base_dir) {
  if (n[key + "-data"]) {
    std::string out;
    if (!absl::Base64Unescape(n[key + "-data"].as<std::string>(), &out))
      return absl::InvalidArgumentError(absl::StrCat("client config: ", key, "-data is not valid base64"));
    return out;
  }
  if (n[key]) return ReadFile(Resolve(base_dir, n[key].as<std::string>()));
  return std::string();
}

YAML::Node FindNamed(const YAML::Node& list, const std::string& name) {
  if (!list || !list.IsSequence()) return YAML::Node();
  for (const auto& item : list)
    if (item["name"] && item["name"].as<std::string>() == name) return item;
  return YAML::Node();
}

}  // namespace

absl::StatusOr<ClientConfig> ParseClientConfig(const std::string& yaml, const std::string& context,
                                               const std::string& base_dir) {
  try {
    YAML::Node root = YAML::Load(yaml);
    ClientConfig cfg;
    cfg.context = context;
    if (cfg.context.empty() && root["current-context"]) cfg.context = root["current-context"].as<std::string>();
    YAML::Node ctx;
    if (!cfg.context.empty()) {
      ctx = FindNamed(root["contexts"], cfg.context);
      if (!ctx || ctx.IsNull()) return absl::NotFoundError(absl::StrCat("client config: context \"", cfg.context, "\" not found"));
    } else if (root["contexts"] && root["contexts"].IsSequence() && root["contexts"].size() > 0) {
      ctx = root["contexts"][0];
      cfg.context = ctx["name"] ? ctx["name"].as<std::string>() : "";
    }
    std::string cluster_name, user_name;
    if (ctx && !ctx.IsNull() && ctx["context"]) {
      YAML::Node c = ctx["context"];
      if (c["cluster"]) cluster_name = c["cluster"].as<std::string>();
      if (c["user"]) user_name = c["user"].as<std::string>();
      if (c["namespace"]) cfg.ns = c["namespace"].as<std::string>();
    }
    YAML::Node cluster = cluster_name.empty() ? (root["clusters"] && root["clusters"].size() ? root["clusters"][0] : YAML::Node())
                                              : FindNamed(root["clusters"], cluster_name);
    if (!cluster || cluster.IsNull() || !cluster["cluster"]) return absl::NotFoundError("client config: no cluster");
    YAML::Node cl = cluster["cluster"];
    if (!cl["server"]) return absl::InvalidArgumentError("client config: cluster has no server");
    std::string server = cl["server"].as<std::string>();
    if (server.rfind("https://", 0) == 0) server = server.substr(8);
    else if (server.rfind("http://", 0) == 0) {
      server = server.substr(7);
      cfg.credentials.insecure = true;
    }
    while (!server.empty() && server.back() == '/') server.pop_back();
    cfg.credentials.server = server;
    auto ca = DataOrFile(cl, "certificate-authority", base_dir);
    if (!ca.ok()) return ca.status();
    cfg.credentials.ca_cert_pem = *ca;
    YAML::Node user = user_name.empty() ? (root["users"] && root["users"].size() ? root["users"][0] : YAML::Node())
                                        : FindNamed(root["users"], user_name);
    if (user && !user.IsNull() && user["user"]) {
      YAML::Node u = user["user"];
      auto cert = DataOrFile(u, "client-certificate", base_dir);
      if (!cert.ok()) return cert.status();
      auto key = DataOrFile(u, "client-key", base_dir);
      if (!key.ok()) return key.status();
      cfg.credentials.client_cert_pem = *cert;
      cfg.credentials.client_key_pem = *key;
      if (u["token"]) cfg.credentials.token = u["token"].as<std::string>();
      if (u["tokenFile"]) {
        auto t = ReadFile(Resolve(base_dir, u["tokenFile"].as<std::string>()));
        if (!t.ok()) return t.status();
        std::string tok = *t;
        while (!tok.empty() && (tok.back() == '\n' || tok.back() == '\r')) tok.pop_back();
        cfg.credentials.token = tok;
      }
    }
    return cfg;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("client config: ", e.what()));
  }
}

absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path, const std::string& context) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::string dir = ".";
  auto slash = path.rfind('/');
  if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  return ParseClientConfig(*text, context, dir);
}

std::string RenderClientConfig(const Credentials& c, const std::string& cluster_name, const std::string& user_name,
                               const std::string& ns) {
  YAML::Emitter out;
  std::string ctx_name = absl::StrCat(user_name, "@", cluster_name);
  out << YAML::BeginMap;
  out << YAML::Key << "apiVersion" << YAML::Value << "v1";
  out << YAML::Key << "kind" << YAML::Value << "Config";
  out << YAML::Key << "clusters" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << cluster_name;
  out << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "server" << YAML::Value << absl::StrCat(c.insecure ? "http://" : "https://", c.server);
  if (!c.ca_cert_pem.empty())
    out << YAML::Key << "certificate-authority-data" << YAML::Value << absl::Base64Escape(c.ca_cert_pem);
  out << YAML::EndMap << YAML::EndMap << YAML::EndSeq;
  out << YAML::Key << "users" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << user_name;
  out << YAML::Key << "user" << YAML::Value << YAML::BeginMap;
  if (!c.client_cert_pem.empty()) {
    out << YAML::Key << "client-certificate-data" << YAML::Value << absl::Base64Escape(c.client_cert_pem);
    out << YAML::Key << "client-key-data" << YAML::Value << absl::Base64Escape(c.client_key_pem);
  }
  if (!c.token.empty()) out << YAML::Key << "token" << YAML::Value << c.token;
  out << YAML::EndMap << YAML::EndMap << YAML::EndSeq;
  out << YAML::Key << "contexts" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << ctx_name;
  out << YAML::Key << "context" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "cluster" << YAML::Value << cluster_name;
  out << YAML::Key << "user" << YAML::Value << user_name;
  out << YAML::Key << "namespace" << YAML::Value << ns;
  out << YAML::EndMap << YAML::EndMap << YAML::EndSeq;
  out << YAML::Key << "current-context" << YAML::Value << ctx_name;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

absl::Status WriteClientConfig(const std::string& path, const Credentials& creds, const std::string& cluster_name,
                               const std::string& user_name, const std::string& ns) {
  std::string text = RenderClientConfig(creds, cluster_name, user_name, ns);
  std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("create ", tmp));
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return absl::ErrnoToStatus(err, absl::StrCat("write ", tmp));
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat("sync ", tmp));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat("rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace skiff::client
