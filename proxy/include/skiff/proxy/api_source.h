// The API watch source of skiff-proxy: Services and EndpointSlices from the
// control plane over the proxy's own lean gRPC client (mbedTLS + nghttp2 +
// a hand-written protobuf reader, src/api_conn.h, src/api_wire.h), so the
// agent maps no gRPC, protobuf or OpenSSL library.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "skiff/client/credentials.h"
#include "skiff/proxy/source.h"

namespace skiff::proxy {

// Where the API server is and how to authenticate: the kubeconfig's cluster
// and user (the same file format and defaults as skiff::client's).
struct ApiSourceConfig {
  client::Credentials credentials;        // server host:port, CA, client cert + key, token
  std::string component = "skiff-proxy";  // Events' source.component
};

// Reads a kubeconfig (skiff::client::ParseClientConfig's format); `server`
// (host:port), when not empty, overrides its address.
absl::StatusOr<ApiSourceConfig> LoadApiSourceConfig(const std::string& kubeconfig, const std::string& server);

// One Watch per resource from resource_version "" with the initial events
// and their end marker; the first Replace() happens only once both initial
// bursts are in, so a restarted agent never sees a transiently empty cluster
// (which would remove the pinned services under live traffic). Afterwards
// every event is an Upsert*/Delete*. A lost connection resumes each watch
// from the last resourceVersion it saw; "too old" (410 Gone) or an ERROR
// event re-watches both from "" and Replace()s, so objects deleted while
// away disappear. A malformed Service is programmed without its bad parts
// and gets a Warning event "InvalidServiceSpec".
std::unique_ptr<Source> MakeApiSource(ApiSourceConfig config);

}  // namespace skiff::proxy
