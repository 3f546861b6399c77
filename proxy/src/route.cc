#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/route.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "skiff/common/status.h"
#include "skiff/proxy/agent.h"

namespace skiff::proxy {

absl::Status EnsureUnreachableRoute(const std::string& cidr) {
  std::unique_ptr<nl_sock, void (*)(nl_sock*)> sk(nl_socket_alloc(), nl_socket_free);
  if (!sk) return absl::ResourceExhaustedError("nl_socket_alloc");
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0)
    return absl::InternalError(std::string("netlink connect: ") + nl_geterror(err));
  const int family = cidr.find(':') == std::string::npos ? AF_INET : AF_INET6;
  nl_addr* dst_raw = nullptr;
  if (int err = nl_addr_parse(cidr.c_str(), family, &dst_raw); err < 0)
    return absl::InvalidArgumentError("service CIDR " + cidr + ": " + nl_geterror(err));
  std::unique_ptr<nl_addr, void (*)(nl_addr*)> dst(dst_raw, nl_addr_put);
  std::unique_ptr<rtnl_route, void (*)(rtnl_route*)> route(rtnl_route_alloc(), rtnl_route_put);
  rtnl_route_set_family(route.get(), family);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_type(route.get(), RTN_UNREACHABLE);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  if (int err = rtnl_route_set_dst(route.get(), dst.get()); err < 0)
    return absl::InternalError(std::string("route dst: ") + nl_geterror(err));
  if (int err = rtnl_route_add(sk.get(), route.get(), NLM_F_CREATE | NLM_F_REPLACE); err < 0)
    return absl::InternalError("add unreachable route " + cidr + ": " + nl_geterror(err));
  return absl::OkStatus();
}

absl::StatusOr<std::string> FindCgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype;
    rest >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, devno, root, mountpoint;
    head >> id >> parent >> devno >> root >> mountpoint;
    return mountpoint;
  }
  return absl::NotFoundError("no cgroup2 mount in /proc/self/mountinfo");
}

}  // namespace skiff::proxy
