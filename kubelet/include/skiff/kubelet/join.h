// Node join with a bootstrap token, as `kubeadm join` does it:
//
//   skiff-kubelet --join TOKEN --server HOST:PORT --discovery-token-ca-cert-hash sha256:HEX
//                 [--node-name NAME] [--kubeconfig /etc/skiff/kubelet.conf] [--write-config]
//
// 1. Discovers the cluster CA from the API server's TLS certificate chain and
//    accepts it only if the SHA-256 of its public key matches the hash.
// 2. Makes a key and a CSR for CN=system:node:<name>, O=system:nodes and has
//    the API server sign it (RequestNodeCertificate, authorized by the token).
// 3. Writes the node's client config (mode 0600) to --kubeconfig.
// 4. With --write-config: records server, kubeconfig and node-name in the
//    kubelet's and proxy's YAML configs, then enables and starts their units.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skiff::kubelet {

struct JoinOptions {
  std::string server;   // host:port of the API server
  std::string token;    // <id>.<secret>
  std::string ca_hash;  // sha256:<hex> of the CA's SubjectPublicKeyInfo
  std::string node_name;
  std::string kubeconfig_path = "/etc/skiff/kubelet.conf";
  bool write_config = false;
  std::string kubelet_config = "/etc/skiff/kubelet.yaml";
  std::string proxy_config = "/etc/skiff/proxy.yaml";
  bool start_units = true;  // with write_config: systemctl enable --now skiff-kubelet skiff-proxy
};

// The CA certificate (PEM) in `server`'s TLS chain whose public key hashes
// to `ca_hash`.
absl::StatusOr<std::string> DiscoverClusterCa(const std::string& server, const std::string& ca_hash);

absl::Status Join(const JoinOptions& opts);

// Sets `key: value` in a flat YAML config file (replacing an existing key,
// keeping every other line), creating the file if needed.
absl::Status SetConfigValue(const std::string& path, const std::string& key, const std::string& value);

}  // namespace skiff::kubelet
