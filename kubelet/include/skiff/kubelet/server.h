// The kubelet's network faces: the Kubelet gRPC service (logs, exec,
// port-forward, stats; kubelet.proto) and a small HTTP server for /healthz
// and Prometheus /metrics.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace grpc {
class Server;
}

namespace skiff::kubelet {

class Kubelet;

// Serves skiff.api.v1.Kubelet on `listen` ("host:port" or ":port"). Plaintext:
// the API server reaches it inside the cluster network.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartKubeletServer(Kubelet* kubelet, const std::string& listen);

// Reads a CRI log as `kubectl logs` shows it.
struct LogOptions {
  bool follow = false;
  int64_t tail_lines = -1;
  int64_t since_unix_nanos = 0;
  bool timestamps = false;
  int64_t limit_bytes = -1;
};
// Calls emit() with chunks; with follow, keeps going while still_running()
// says so and cancelled() does not.
absl::Status StreamLog(const std::string& path, const LogOptions& o, const std::function<bool(const std::string&)>& emit,
                       const std::function<bool()>& still_running, const std::function<bool()>& cancelled);

class HttpServer {
 public:
  using Handler = std::function<std::string(const std::string& path, int* code, std::string* content_type)>;
  ~HttpServer();
  absl::Status Start(const std::string& listen, Handler handler);
  void Stop();
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Handler handler_;
};

std::string RenderMetrics(Kubelet* k);

}  // namespace skiff::kubelet
