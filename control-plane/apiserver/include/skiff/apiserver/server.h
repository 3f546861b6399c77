// The API server: gRPC service `skiff.api.v1.Api` over TLS, backed by the
// registry on etcd, with authentication, RBAC and NodeRestriction, plus a
// plain-HTTP health/metrics endpoint.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/apiserver/registry.h"
#include "skiff/client/client.h"

namespace skiff::apiserver {

struct ServerOptions {
  std::string data_dir;
  std::string listen = "127.0.0.1:6443";       // port 0 = pick a free one
  std::string health_listen = "127.0.0.1:10259";  // "" = none; port 0 = pick
  std::vector<std::string> etcd_servers;       // or etcd_channel
  std::shared_ptr<grpc::Channel> etcd_channel;  // an in-process store
  std::string service_cluster_ip_range = "10.96.0.0/12";
  int node_port_min = 30000, node_port_max = 32767;
  std::vector<std::string> tls_sans;           // extra DNS names / IPs in the serving cert
  std::string token_auth_file;
  std::string advertise_address;               // for the `kubernetes` Service endpoints
  bool insecure = false;                       // plaintext, everyone is admin (tests only)
  int bookmark_interval_ms = 5000;
  bool kubelet_tls = false;                    // dial kubelets with TLS (cluster CA)
  WatchCache::Options cache;
};

class ApiServer {
 public:
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(ServerOptions opts);
  ~ApiServer();
  void Shutdown();
  void Wait();

  int port() const;
  int health_port() const;
  std::string address() const;  // host:port clients dial
  // A system:masters client credential for components in this process
  // (scheduler, controllers); never written to disk.
  client::Credentials InternalCredentials() const;
  // What <data-dir>/admin.conf holds.
  client::Credentials AdminCredentials() const;
  Registry* registry();

  struct Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Creates (once) or loads the PKI under <data_dir>/pki and writes
// <data_dir>/admin.conf for `server`. Exposed for tests.
struct Pki {
  std::string ca_cert, ca_key, serving_cert, serving_key, admin_cert, admin_key;
};
absl::StatusOr<Pki> EnsurePki(const std::string& data_dir, const std::vector<std::string>& sans);

}  // namespace skiff::apiserver
