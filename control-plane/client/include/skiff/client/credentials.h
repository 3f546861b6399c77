// Where and how to reach the API server: what a client config file holds.
// Kept apart from client.h (protobuf, gRPC) so that skiff-proxy's lean API
// client can read kubeconfigs through skiff::client_config alone.
#pragma once

#include <string>

namespace skiff::client {

struct Credentials {
  std::string server;       // host:port
  std::string ca_cert_pem;  // empty = system roots
  std::string client_cert_pem;
  std::string client_key_pem;
  std::string token;      // bearer token (alternative to a client certificate)
  bool insecure = false;  // plaintext, only for loopback tests that ask for it
};

}  // namespace skiff::client
