// The client config file, kubeconfig-shaped (clusters, users, contexts,
// current-context), default ~/.skiff/config.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/client/client.h"

namespace skiff::cli {

struct ClusterEntry {
  std::string name;
  std::string server;  // https://host:port or http://host:port
  std::string certificate_authority_data;  // PEM (decoded)
  std::string certificate_authority;       // file
  bool insecure_skip_tls_verify = false;
};

struct UserEntry {
  std::string name;
  std::string client_certificate_data;  // PEM
  std::string client_key_data;          // PEM
  std::string client_certificate;       // file
  std::string client_key;               // file
  std::string token;
};

struct ContextEntry {
  std::string name;
  std::string cluster;
  std::string user;
  std::string ns;
};

struct ClientConfig {
  std::vector<ClusterEntry> clusters;
  std::vector<UserEntry> users;
  std::vector<ContextEntry> contexts;
  std::string current_context;

  const ContextEntry* FindContext(const std::string& name) const;
  ContextEntry* FindContext(const std::string& name);
  const ClusterEntry* FindCluster(const std::string& name) const;
  const UserEntry* FindUser(const std::string& name) const;
};

// A missing file is an empty config (not an error).
absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path);
absl::Status SaveClientConfig(const ClientConfig& cfg, const std::string& path);
// YAML text; `raw` = false redacts key and token data as kubectl does.
std::string ClientConfigYaml(const ClientConfig& cfg, bool raw);

// Credentials for `context` ("" = current), with `server` overriding the
// cluster's address. Reads certificate files. "host:port" in creds.server.
absl::StatusOr<client::Credentials> ResolveCredentials(const ClientConfig& cfg, const std::string& context,
                                                       const std::string& server);
// "https://10.0.0.1:6443" -> "10.0.0.1:6443"
std::string HostPort(const std::string& server_url);

}  // namespace skiff::cli
