// skiffctl as a library: the whole command line behind one entry point, with
// its I/O, clock and connection injected so tests can drive every verb
// against an in-memory API.
#pragma once

#include <chrono>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skiff/api/v1/api.pb.h"
#include "skiff/client/client.h"

namespace skiff::cli {

// The API server's calls beyond the generic verbs of client::Client.
class NodeApi {
 public:
  virtual ~NodeApi() = default;
  // Streams log bytes to `sink` until the log ends (or, with follow, until
  // the server closes the stream).
  virtual absl::Status Logs(const api::v1::LogsRequest& req, const std::function<void(const std::string&)>& sink) = 0;
  // Runs a command; copies stdin from `in_fd` (-1 = none), output to the
  // streams. Returns the remote exit code.
  virtual absl::StatusOr<int> Exec(const api::v1::ExecInput& first, int in_fd, std::ostream& out,
                                   std::ostream& err) = 0;
  // Forwards one accepted local connection `fd` to the pod's port.
  virtual absl::Status PortForward(const std::string& ns, const std::string& pod, int port, int fd) = 0;
  virtual absl::StatusOr<api::v1::VersionInfo> Version() = 0;
  // CPU and memory of a node and its pods (the kubelet's Stats, passed
  // through by the API server). Unimplemented = the server has no such call.
  virtual absl::StatusOr<api::v1::StatsResponse> NodeStats(const std::string& node_name) = 0;
  virtual absl::StatusOr<api::v1::CreateBootstrapTokenResponse> CreateBootstrapToken(
      const api::v1::CreateBootstrapTokenRequest& req) = 0;
};

struct Connection {
  std::unique_ptr<client::Client> client;
  std::unique_ptr<NodeApi> node;
};

struct Environment {
  std::istream* in = &std::cin;
  std::ostream* out = &std::cout;
  std::ostream* err = &std::cerr;
  int stdin_fd = 0;  // for exec -i
  // Connects to the API server described by `creds`. Errors are shown as
  // "error: cannot reach the API server at <server>: <reason>".
  std::function<absl::StatusOr<Connection>(const client::Credentials& creds)> dial;
  std::function<std::chrono::system_clock::time_point()> now = [] { return std::chrono::system_clock::now(); };
  std::function<std::string(const std::string&)> getenv;  // default: ::getenv
  // How long verbs that wait (rollout status, delete --wait, drain, get -w
  // in tests) poll before giving up when the user set no timeout; 0 = forever.
  std::chrono::milliseconds poll_interval{500};
};

// Runs `skiffctl <args...>` (args without the program name) and returns the
// exit code kubectl would.
int Run(const std::vector<std::string>& args, Environment& env);

// The production dialer: skiff::client over gRPC (TLS or insecure) plus the
// node streams on the same channel.
absl::StatusOr<Connection> DialGrpc(const client::Credentials& creds);

}  // namespace skiff::cli
