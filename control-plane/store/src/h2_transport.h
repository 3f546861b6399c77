// A lean gRPC-over-HTTP/2 server transport (nghttp2 sessions on
// non-blocking sockets, one epoll loop per thread) for the store's client
// port. It knows gRPC's framing (5-byte message prefix, grpc-status /
// grpc-message trailers) but nothing of etcd: the method table comes from
// server.cc.
//
// Threading: every connection belongs to one Loop. Handler callbacks run on
// that loop's thread; other threads (the store's committer, a watch sender)
// reach a call only through Loop::Post with a CallRef, and the posted
// function finds the call again (or nothing, when it has gone meanwhile).
// Everything a loop turn produced is written with one send per connection.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"

namespace google::protobuf {
class MethodDescriptor;
}

namespace skiff::store::h2 {

class Loop;
class Call;

// Names one call from any thread (and keeps its loop's queue alive, so a
// write that completes after the transport stopped finds nothing, safely).
struct CallRef {
  std::shared_ptr<Loop> loop;
  uint64_t conn_id = 0;
  int32_t stream_id = 0;
};

// One call's behaviour; owned by its Call, runs on the loop thread.
class Handler {
 public:
  virtual ~Handler() = default;
  // A complete request message (without the 5-byte prefix).
  virtual void OnMessage(Call* call, std::string_view msg) = 0;
  // The client finished sending (END_STREAM).
  virtual void OnHalfClose(Call* call) = 0;
};

// The server side of one HTTP/2 stream. Loop thread only.
class Call {
 public:
  virtual ~Call() = default;
  virtual CallRef Ref() const = 0;
  // Queues one response message (headers go out before the first one).
  virtual void Send(const google::protobuf::MessageLite& msg) = 0;
  // Ends the call with this status (trailers; trailers-only without a message).
  virtual void Finish(const absl::Status& st) = 0;
  // Bytes queued on this call and not yet handed to the connection.
  virtual size_t QueuedBytes() const = 0;
  virtual bool Finished() const = 0;
  // Runs fn (on the loop thread) once everything queued so far was handed to
  // the connection.
  virtual void OnDrained(std::function<void()> fn) = 0;
  // The auth token the client sent (gRPC metadata "token" or "authorization";
  // on the JSON gateway the Authorization header); "" for none.
  virtual std::string_view Token() const = 0;
  // The common name of the client certificate TLS verified; "" for none.
  virtual std::string_view PeerCommonName() const = 0;
};

using HandlerFactory = std::function<std::unique_ptr<Handler>()>;

struct PlainResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

struct TransportOptions {
  // "host:port" / "[v6]:port" for TCP, "unix:/path" for a unix socket.
  std::vector<std::string> listen;
  std::vector<bool> tls;  // per listen entry
  std::string cert_file, key_file, trusted_ca_file;
  bool client_cert_auth = false;
  int threads = 2;
  // Requests above this answer RESOURCE_EXHAUSTED like grpc-go's server.
  size_t max_recv_message_bytes = 4 << 20;
  // Called with the request path (":path"); null = UNIMPLEMENTED.
  std::function<HandlerFactory(std::string_view path)> route;
  // Runs first on each loop thread.
  std::function<void()> on_loop_start;
  // Runs on the loop thread after each turn's reads, before its writes.
  // Post()s it makes for this loop's calls run at once, in the same turn.
  std::function<void()> on_turn_end;
  // Plain HTTP GET and HEAD requests (not gRPC) on the same port, as etcd
  // serves /health, /version and /metrics on its client URLs: over HTTP/1.x
  // (one request per connection, closed after the response) and over
  // HTTP/2. Runs on the loop thread. Null = gRPC only.
  std::function<PlainResponse(std::string_view path)> plain_http;
  // A JSON gateway on the same port, as etcd's grpc-gateway serves /v3/kv/range
  // and the rest: an HTTP/1.x POST whose path this maps to a gRPC method is
  // that call, its request messages JSON objects in the body (one for a unary
  // method, any number for a client stream), its response the JSON of the
  // response message, or for a server stream one {"result":...} line per
  // message in a chunked body; errors are grpc-gateway's JSON bodies and HTTP
  // codes. Needs plain_http. Null (or a null method) = no gateway.
  std::function<const google::protobuf::MethodDescriptor*(std::string_view path)> json_route;
};

class Transport {
 public:
  static absl::StatusOr<std::unique_ptr<Transport>> Start(TransportOptions options);
  virtual ~Transport() = default;
  virtual std::vector<int> Ports() const = 0;
  // GOAWAY to every connection, then close them and stop the loops.
  virtual void Shutdown() = 0;
  virtual void Wait() = 0;
};

// Runs fn on the call's loop thread with the call, or with nullptr when the
// call (or its connection) is gone. Thread-safe, never blocks.
void Post(const CallRef& ref, std::function<void(Call*)> fn);

// The whole HTTP/1.x response (Connection: close) to a request head
// ("METHOD /path HTTP/1.x" and headers), as Go's net/http words it: GET and
// HEAD go to serve, other methods get 405; an HTTP/1.0 request gets an
// HTTP/1.0 answer.
std::string Http1Response(std::string_view head, const std::function<PlainResponse(std::string_view path)>& serve);

// grpc-message's percent-encoding (bytes outside printable ASCII and '%').
std::string PercentEncode(std::string_view s);

}  // namespace skiff::store::h2
