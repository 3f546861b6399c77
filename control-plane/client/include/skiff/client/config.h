// Client config files, kubeconfig-shaped YAML:
//
//   apiVersion: v1
//   kind: Config
//   clusters:
//   - name: skiff
//     cluster:
//       server: https://127.0.0.1:6443        # http:// = plaintext (tests only)
//       certificate-authority-data: <base64 PEM>   # or certificate-authority: <path>
//   users:
//   - name: admin
//     user:
//       client-certificate-data: <base64 PEM>      # or client-certificate: <path>
//       client-key-data: <base64 PEM>              # or client-key: <path>
//       token: <bearer token>                      # alternative to a certificate
//   contexts:
//   - name: admin@skiff
//     context: {cluster: skiff, user: admin, namespace: default}
//   current-context: admin@skiff
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "skiff/client/credentials.h"

namespace skiff::client {

struct ClientConfig {
  Credentials credentials;
  std::string ns = "default";  // the context's namespace
  std::string context;
};

// $SKIFFCONFIG, else $KUBECONFIG, else ~/.skiff/config if it exists, else /etc/skiff/admin.conf.
std::string DefaultConfigPath();
// context "" = current-context.
absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path, const std::string& context = "");
absl::StatusOr<ClientConfig> ParseClientConfig(const std::string& yaml, const std::string& context = "",
                                               const std::string& base_dir = ".");
std::string RenderClientConfig(const Credentials& creds, const std::string& cluster_name = "skiff",
                               const std::string& user_name = "admin", const std::string& ns = "default");
// Writes atomically with mode 0600.
absl::Status WriteClientConfig(const std::string& path, const Credentials& creds, const std::string& cluster_name = "skiff",
                               const std::string& user_name = "admin", const std::string& ns = "default");

}  // namespace skiff::client
