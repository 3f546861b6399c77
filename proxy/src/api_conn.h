// A small gRPC client connection for skiff-proxy: HTTP/2 (nghttp2) over TLS
// 1.2 (mbedTLS) or plaintext, on one thread, with no gRPC, protobuf or
// OpenSSL library in the process. It carries the Watch streams and the
// occasional Create of the proxy's API source; messages are raw protobuf
// bytes (see api_wire.h).
//
// Trust is what the gRPC client (control-plane/client) applies: the server's
// certificate must chain to the kubeconfig's CA and name the host it was
// dialled as (an IP SAN for an address, a DNS SAN otherwise); the client
// presents the kubeconfig's certificate and key, and its bearer token (if
// any) as the `authorization` header of every call.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff/client/credentials.h"

namespace skiff::proxy {

class GrpcConnection {
 public:
  // Called with each complete gRPC message of a call.
  using OnMessage = std::function<void(std::string_view message)>;
  // Called once when the call ends: the grpc-status/grpc-message trailers as
  // a status (its code is the gRPC code), or Unavailable if the stream or the
  // connection broke.
  using OnClose = std::function<void(const absl::Status& status)>;

  // Connects to ep.server ("host:port", "[v6]:port"; plaintext HTTP/2 when
  // ep.insecure, for tests that ask for it), completes the TLS handshake and the HTTP/2 preface. Gives up
  // after `timeout_ms`, or soon after `stop` turns true.
  static absl::StatusOr<std::unique_ptr<GrpcConnection>> Connect(const client::Credentials& ep,
                                                                 int timeout_ms,
                                                                 const std::atomic<bool>& stop);
  virtual ~GrpcConnection() = default;

  // Starts a call of `path` ("/skiff.api.v1.Api/Watch") with one request
  // message (then half-closes). Returns the stream id.
  virtual absl::StatusOr<int32_t> StartCall(const std::string& path, std::string request,
                                            OnMessage on_message, OnClose on_close) = 0;
  virtual void CancelCall(int32_t stream_id) = 0;
  // Sends and receives for up to `timeout_ms`, delivering callbacks on this
  // thread. An error means the connection is gone (every open call has then
  // had its OnClose).
  virtual absl::Status Poll(int timeout_ms) = 0;
  virtual size_t open_calls() const = 0;
  // "TLSv1.2 <cipher suite>" or "plaintext", for the log.
  virtual std::string security() const = 0;
};

}  // namespace skiff::proxy
