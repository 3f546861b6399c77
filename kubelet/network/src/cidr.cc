#include "skiff/podnet/cidr.h"

#include <arpa/inet.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace skiff::podnet {

absl::StatusOr<uint32_t> ParseIpv4(const std::string& text) {
  in_addr a{};
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: \"", text, "\""));
  }
  return ntohl(a.s_addr);
}

std::string FormatIpv4(uint32_t ip) {
  in_addr a{htonl(ip)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

std::string Ipv4Cidr::ToString() const { return absl::StrCat(FormatIpv4(network), "/", prefix); }

absl::StatusOr<Ipv4Cidr> ParseCidr(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("not a CIDR: \"", text, "\""));
  auto ip = ParseIpv4(text.substr(0, slash));
  if (!ip.ok()) return ip.status();
  std::string p = text.substr(slash + 1);
  char* end = nullptr;
  long prefix = std::strtol(p.c_str(), &end, 10);
  if (p.empty() || *end != '\0' || prefix < 0 || prefix > 32) {
    return absl::InvalidArgumentError(absl::StrCat("bad prefix length in \"", text, "\""));
  }
  Ipv4Cidr c;
  c.prefix = static_cast<int>(prefix);
  uint32_t mask = prefix == 0 ? 0 : (0xffffffffu << (32 - prefix));
  if ((*ip & ~mask) != 0) return absl::InvalidArgumentError(absl::StrCat("host bits set in \"", text, "\""));
  c.network = *ip;
  return c;
}

}  // namespace skiff::podnet
