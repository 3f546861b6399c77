// Serves a Store over etcd's v3 gRPC API (KV, Watch, Lease, Maintenance,
// Cluster, grpc.health.v1) and /metrics + /health over plain HTTP.
//
//   ASSIGN_OR_RETURN(auto store, skiff::store::Store::Open(opts));
//   skiff::store::ServerOptions so;
//   so.listen_client_urls = {"http://127.0.0.1:2379"};
//   ASSIGN_OR_RETURN(auto server, skiff::store::Server::Start(store.get(), so));
//   ... server->Wait() or let it go out of scope to stop.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "skiff/store/store.h"

namespace skiff::store {

// The one mapping from engine errors (errors.h) to gRPC status. absl and
// gRPC share code numbers; the message is kept verbatim.
grpc::Status ToGrpcStatus(const absl::Status& st);

struct ServerOptions {
  // http://host:port, https://host:port (TLS), or unix:///path.
  std::vector<std::string> listen_client_urls = {"http://127.0.0.1:2379"};
  // http://host:port for /metrics and /health (empty = none).
  std::vector<std::string> listen_metrics_urls;
  std::string cert_file, key_file, trusted_ca_file;
  bool client_cert_auth = false;
  // "h2" (the lean nghttp2 transport, h2_transport.h) or "grpc" (gRPC C++,
  // the transport before; --experimental-transport=grpc).
  std::string transport = "h2";
  // Event-loop threads of the h2 transport.
  int transport_threads = 2;
  // h2: a loop commits the writes it read in a turn itself, at the end of
  // the turn (no hand-off to the committer thread and back); false = every
  // write goes through the committer thread.
  bool commit_on_loop = true;
  // etcd's Auth service (users, roles, tokens) on the h2 transport, its state
  // in this file (skiff-store: <data-dir>/member/skiff/auth); empty = none.
  std::string auth_file;
  int bcrypt_cost = 10;          // --bcrypt-cost
  int64_t auth_token_ttl_s = 300;  // --auth-token-ttl
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(Store* store, const ServerOptions& options);
  virtual ~Server() = default;
  // The bound gRPC ports, in the order of listen_client_urls (useful with :0).
  virtual std::vector<int> ClientPorts() const = 0;
  virtual std::vector<int> MetricsPorts() const = 0;
  virtual void Shutdown() = 0;
  virtual void Wait() = 0;
};

// Prometheus text exposition of the store's metrics.
std::string FormatMetrics(const Metrics& m);

}  // namespace skiff::store
