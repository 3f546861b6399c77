// IPv4 prefixes as plain integers (host byte order), for IPAM and routes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace skiff::podnet {

struct Ipv4Cidr {
  uint32_t network = 0;  // host byte order, host bits cleared
  int prefix = 0;

  uint32_t Size() const { return prefix == 0 ? 0xffffffffu : (1u << (32 - prefix)); }
  uint32_t Broadcast() const { return network + Size() - 1; }
  bool Contains(uint32_t ip) const { return prefix == 0 || (ip >> (32 - prefix)) == (network >> (32 - prefix)); }
  std::string ToString() const;
};

absl::StatusOr<uint32_t> ParseIpv4(const std::string& text);
std::string FormatIpv4(uint32_t ip);
// "10.244.1.0/24"; host bits set in the text are an error.
absl::StatusOr<Ipv4Cidr> ParseCidr(const std::string& text);

}  // namespace skiff::podnet
