#include "skiff/podnet/podnet.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff/podnet/netns.h"

namespace skiff::podnet {
namespace {

absl::Status NlError(int err, const std::string& what) {
  // libnl's codes are its own (NLE_*); keep its text and map "exists"/"not found".
  int e = err < 0 ? -err : err;
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (e == NLE_EXIST) code = absl::StatusCode::kAlreadyExists;
  if (e == NLE_OBJ_NOTFOUND || e == NLE_NODEV) code = absl::StatusCode::kNotFound;
  return absl::Status(code, absl::StrCat(what, ": ", nl_geterror(err)));
}

struct NlSockDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
using NlSock = std::unique_ptr<nl_sock, NlSockDeleter>;
struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkPut>;
struct AddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
using NlAddrPtr = std::unique_ptr<nl_addr, AddrPut>;
struct RouteAddrPut {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct RoutePut {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
using RoutePtr = std::unique_ptr<rtnl_route, RoutePut>;

absl::StatusOr<NlSock> Connect() {
  NlSock s(nl_socket_alloc());
  if (!s) return absl::ResourceExhaustedError("nl_socket_alloc");
  int err = nl_connect(s.get(), NETLINK_ROUTE);
  if (err < 0) return NlError(err, "connect rtnetlink");
  return s;
}

NlAddrPtr Ipv4Addr(uint32_t ip, int prefix) {
  uint32_t be = htonl(ip);
  nl_addr* a = nl_addr_build(AF_INET, &be, sizeof(be));
  nl_addr_set_prefixlen(a, prefix);
  return NlAddrPtr(a);
}

absl::StatusOr<int> IfIndex(nl_sock* s, const std::string& name) {
  rtnl_link* l = nullptr;
  int err = rtnl_link_get_kernel(s, 0, name.c_str(), &l);
  if (err < 0) return NlError(err, "get link " + name);
  LinkPtr lp(l);
  return rtnl_link_get_ifindex(l);
}

absl::Status LinkUp(nl_sock* s, const std::string& name) {
  rtnl_link* l = nullptr;
  int err = rtnl_link_get_kernel(s, 0, name.c_str(), &l);
  if (err < 0) return NlError(err, "get link " + name);
  LinkPtr orig(l);
  LinkPtr change(rtnl_link_alloc());
  rtnl_link_set_flags(change.get(), IFF_UP);
  err = rtnl_link_change(s, orig.get(), change.get(), 0);
  if (err < 0) return NlError(err, "set " + name + " up");
  return absl::OkStatus();
}

absl::Status AddAddress(nl_sock* s, int ifindex, uint32_t ip, int prefix, const std::string& what) {
  std::unique_ptr<rtnl_addr, RouteAddrPut> a(rtnl_addr_alloc());
  rtnl_addr_set_ifindex(a.get(), ifindex);
  NlAddrPtr local = Ipv4Addr(ip, prefix);
  rtnl_addr_set_local(a.get(), local.get());
  int err = rtnl_addr_add(s, a.get(), 0);
  if (err < 0 && err != -NLE_EXIST) return NlError(err, "add address to " + what);
  return absl::OkStatus();
}

struct RouteSpec {
  uint32_t dst = 0;
  int prefix = 0;
  int ifindex = 0;        // 0: none
  uint32_t gateway = 0;   // 0: none
  uint8_t type = RTN_UNICAST;
  uint8_t scope = RT_SCOPE_UNIVERSE;
  uint8_t protocol = RTPROT_BOOT;
};

RoutePtr BuildRoute(const RouteSpec& r) {
  RoutePtr route(rtnl_route_alloc());
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_type(route.get(), r.type);
  rtnl_route_set_scope(route.get(), r.scope);
  rtnl_route_set_protocol(route.get(), r.protocol);
  NlAddrPtr dst = Ipv4Addr(r.dst, r.prefix);
  rtnl_route_set_dst(route.get(), dst.get());
  if (r.ifindex != 0 || r.gateway != 0) {
    rtnl_nexthop* nh = rtnl_route_nh_alloc();
    if (r.ifindex != 0) rtnl_route_nh_set_ifindex(nh, r.ifindex);
    if (r.gateway != 0) {
      NlAddrPtr gw = Ipv4Addr(r.gateway, 32);
      rtnl_route_nh_set_gateway(nh, gw.get());
    }
    rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh now
  }
  return route;
}

absl::Status AddRoute(nl_sock* s, const RouteSpec& r, const std::string& what) {
  RoutePtr route = BuildRoute(r);
  int err = rtnl_route_add(s, route.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (err < 0) return NlError(err, "add route " + what);
  return absl::OkStatus();
}

absl::Status DeleteLinkByName(nl_sock* s, const std::string& name) {
  LinkPtr l(rtnl_link_alloc());
  rtnl_link_set_name(l.get(), name.c_str());
  int err = rtnl_link_delete(s, l.get());
  if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) return NlError(err, "delete link " + name);
  return absl::OkStatus();
}

absl::Status WriteProc(const std::string& path, const std::string& value) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return LastErrnoError("open " + path);
  if (write(fd.get(), value.data(), value.size()) < 0) return LastErrnoError("write " + path);
  return absl::OkStatus();
}

absl::Status MkdirP(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      std::string cur = path.substr(0, i);
      if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + cur);
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string PodNetwork::HostVethName(const std::string& pod_uid) {
  // FNV-1a: stable across restarts, 10 characters fit IFNAMSIZ.
  uint32_t h = 2166136261u;
  for (unsigned char c : pod_uid) h = (h ^ c) * 16777619u;
  char buf[16];
  snprintf(buf, sizeof(buf), "sk%08x", h);
  return buf;
}

std::string PodNetwork::NetnsPath(const std::string& pod_uid) const {
  return options_.run_dir + "/netns/" + pod_uid;
}

absl::StatusOr<std::unique_ptr<PodNetwork>> PodNetwork::Open(const PodNetworkOptions& options) {
  std::unique_ptr<PodNetwork> pn(new PodNetwork());
  pn->options_ = options;
  ASSIGN_OR_RETURN(Ipv4Cidr cidr, ParseCidr(options.pod_cidr));
  RETURN_IF_ERROR(MkdirP(options.run_dir + "/netns"));
  std::string ipam_dir = options.state_dir + "/ipam/" + absl::StrReplaceAll(cidr.ToString(), {{"/", "_"}});
  ASSIGN_OR_RETURN(pn->ipam_, Ipam::Open(ipam_dir, options.pod_cidr));
  ASSIGN_OR_RETURN(NlSock s, Connect());
  pn->sock_ = s.release();
  // Both only ever apply to the namespace this process runs in: the node's.
  RETURN_IF_ERROR(WriteProc("/proc/sys/net/ipv4/ip_forward", "1"));
  if (!options.service_cidr.empty()) {
    ASSIGN_OR_RETURN(Ipv4Cidr svc, ParseCidr(options.service_cidr));
    RouteSpec r;
    r.dst = svc.network;
    r.prefix = svc.prefix;
    r.type = RTN_UNREACHABLE;
    r.protocol = kRouteProtocol;
    RETURN_IF_ERROR(AddRoute(pn->sock_, r, "unreachable " + svc.ToString()));
  }
  return pn;
}

PodNetwork::~PodNetwork() {
  if (sock_ != nullptr) nl_socket_free(sock_);
}

absl::StatusOr<PodNetworkResult> PodNetwork::Lookup(const std::string& pod_uid) {
  auto allocs = ipam_->Allocations();
  auto it = allocs.find(pod_uid);
  if (it == allocs.end()) return absl::NotFoundError("pod " + pod_uid + " has no address");
  return PodNetworkResult{NetnsPath(pod_uid), FormatIpv4(it->second), HostVethName(pod_uid)};
}

absl::StatusOr<PodNetworkResult> PodNetwork::Setup(const std::string& pod_uid) {
  std::lock_guard<std::mutex> lock(mu_);
  PodNetworkResult res;
  res.netns_path = NetnsPath(pod_uid);
  res.host_veth = HostVethName(pod_uid);
  ASSIGN_OR_RETURN(uint32_t ip, ipam_->Allocate(pod_uid));
  res.ip = FormatIpv4(ip);
  const uint32_t gw = ipam_->Gateway();

  if (!IsNetns(res.netns_path)) {
    DeleteNetns(res.netns_path).IgnoreError();  // a stale plain file
    RETURN_IF_ERROR(CreateNetns(res.netns_path));
  }
  // A socket opened inside the pod's namespace stays bound to it.
  NlSock pod_sock;
  RETURN_IF_ERROR(RunInNetns(res.netns_path, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(pod_sock, Connect());
    return absl::OkStatus();
  }));

  nl_sock* s = sock_;
  bool have_veth = IfIndex(s, res.host_veth).ok() && IfIndex(pod_sock.get(), "eth0").ok();
  if (!have_veth) {
    RETURN_IF_ERROR(DeleteLinkByName(s, res.host_veth));
    UniqueFd nsfd(open(res.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!nsfd.valid()) return LastErrnoError("open " + res.netns_path);
    LinkPtr veth(rtnl_link_veth_alloc());
    if (!veth) return absl::ResourceExhaustedError("rtnl_link_veth_alloc");
    rtnl_link_set_name(veth.get(), res.host_veth.c_str());
    LinkPtr peer(rtnl_link_veth_get_peer(veth.get()));
    rtnl_link_set_name(peer.get(), "eth0");
    rtnl_link_set_ns_fd(peer.get(), nsfd.get());
    int err = rtnl_link_add(s, veth.get(), NLM_F_CREATE | NLM_F_EXCL);
    if (err < 0) return NlError(err, "add veth " + res.host_veth);
  }
  ASSIGN_OR_RETURN(int host_if, IfIndex(s, res.host_veth));
  RETURN_IF_ERROR(AddAddress(s, host_if, gw, 32, res.host_veth));
  RETURN_IF_ERROR(LinkUp(s, res.host_veth));
  RouteSpec host_route;
  host_route.dst = ip;
  host_route.prefix = 32;
  host_route.ifindex = host_if;
  host_route.scope = RT_SCOPE_LINK;
  host_route.protocol = kRouteProtocol;
  RETURN_IF_ERROR(AddRoute(s, host_route, res.ip + " dev " + res.host_veth));

  nl_sock* ps = pod_sock.get();
  RETURN_IF_ERROR(LinkUp(ps, "lo"));
  ASSIGN_OR_RETURN(int pod_if, IfIndex(ps, "eth0"));
  RETURN_IF_ERROR(AddAddress(ps, pod_if, ip, 32, "eth0 of pod " + pod_uid));
  RETURN_IF_ERROR(LinkUp(ps, "eth0"));
  RouteSpec gw_route;
  gw_route.dst = gw;
  gw_route.prefix = 32;
  gw_route.ifindex = pod_if;
  gw_route.scope = RT_SCOPE_LINK;
  RETURN_IF_ERROR(AddRoute(ps, gw_route, "gateway in pod " + pod_uid));
  RouteSpec def;
  def.dst = 0;
  def.prefix = 0;
  def.ifindex = pod_if;
  def.gateway = gw;
  RETURN_IF_ERROR(AddRoute(ps, def, "default in pod " + pod_uid));
  return res;
}

absl::Status PodNetwork::Teardown(const std::string& pod_uid) {
  std::lock_guard<std::mutex> lock(mu_);
  // Deleting the node-side end removes the pair and, with the link, its /32 route.
  RETURN_IF_ERROR(DeleteLinkByName(sock_, HostVethName(pod_uid)));
  RETURN_IF_ERROR(DeleteNetns(NetnsPath(pod_uid)));
  return ipam_->Release(pod_uid);
}

std::set<std::string> PodNetwork::KnownPods() const {
  std::set<std::string> out;
  for (const auto& [owner, ip] : ipam_->Allocations()) out.insert(owner);
  std::string dir = options_.run_dir + "/netns";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.insert(n);
    }
    closedir(d);
  }
  return out;
}

absl::Status PodNetwork::SyncNodeRoutes(const std::map<std::string, std::string>& cidr_to_gateway) {
  std::lock_guard<std::mutex> lock(mu_);
  const Ipv4Cidr own = ipam_->cidr();
  std::map<std::pair<uint32_t, int>, uint32_t> want;
  for (const auto& [cidr_text, gw_text] : cidr_to_gateway) {
    ASSIGN_OR_RETURN(Ipv4Cidr c, ParseCidr(cidr_text));
    if (c.network == own.network && c.prefix == own.prefix) continue;
    ASSIGN_OR_RETURN(uint32_t gw, ParseIpv4(gw_text));
    want[{c.network, c.prefix}] = gw;
  }
  // Find the node routes we own now (gateway routes with our protocol).
  nl_cache* cache = nullptr;
  int err = rtnl_route_alloc_cache(sock_, AF_INET, 0, &cache);
  if (err < 0) return NlError(err, "list routes");
  struct Existing {
    uint32_t dst;
    int prefix;
    uint32_t gw;
  };
  std::vector<Existing> have;
  for (nl_object* o = nl_cache_get_first(cache); o != nullptr; o = nl_cache_get_next(o)) {
    auto* r = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_protocol(r) != kRouteProtocol || rtnl_route_get_table(r) != RT_TABLE_MAIN) continue;
    if (rtnl_route_get_type(r) != RTN_UNICAST || rtnl_route_get_nnexthops(r) != 1) continue;
    rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
    nl_addr* gw = rtnl_route_nh_get_gateway(nh);
    if (gw == nullptr) continue;  // a pod's link route
    nl_addr* dst = rtnl_route_get_dst(r);
    uint32_t d = 0, g = 0;
    if (nl_addr_get_len(dst) == 4) memcpy(&d, nl_addr_get_binary_addr(dst), 4);
    memcpy(&g, nl_addr_get_binary_addr(gw), 4);
    have.push_back({ntohl(d), static_cast<int>(nl_addr_get_prefixlen(dst)), ntohl(g)});
  }
  nl_cache_free(cache);
  for (const Existing& e : have) {
    auto it = want.find({e.dst, e.prefix});
    if (it != want.end() && it->second == e.gw) {
      want.erase(it);
      continue;
    }
    if (it != want.end()) continue;  // replaced below
    RouteSpec r;
    r.dst = e.dst;
    r.prefix = e.prefix;
    r.gateway = e.gw;
    r.protocol = kRouteProtocol;
    RoutePtr route = BuildRoute(r);
    err = rtnl_route_delete(sock_, route.get(), 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND) return NlError(err, "delete stale node route");
  }
  for (const auto& [dst, gw] : want) {
    RouteSpec r;
    r.dst = dst.first;
    r.prefix = dst.second;
    r.gateway = gw;
    r.protocol = kRouteProtocol;
    RETURN_IF_ERROR(AddRoute(sock_, r, absl::StrCat(FormatIpv4(dst.first), "/", dst.second, " via ", FormatIpv4(gw))));
  }
  return absl::OkStatus();
}

}  // namespace skiff::podnet
