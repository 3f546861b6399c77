#include "skiff/podnet/podnet.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netlink/attr.h>
#include <netlink/msg.h>
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
#include "rtnl_batch.h"

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

void PutIpv4(nl_msg* m, int attr, uint32_t ip) { nla_put_u32(m, attr, htonl(ip)); }

void AddRouteRequest(RtnlBatch& b, const RouteSpec& r, const std::string& what) {
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_dst_len = static_cast<unsigned char>(r.prefix);
  rt.rtm_table = RT_TABLE_MAIN;
  rt.rtm_protocol = r.protocol;
  rt.rtm_scope = r.scope;
  rt.rtm_type = r.type;
  nl_msg* m = b.Add(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &rt, sizeof(rt), "add route " + what);
  if (m == nullptr) return;
  if (r.prefix > 0) PutIpv4(m, RTA_DST, r.dst);
  if (r.ifindex != 0) nla_put_u32(m, RTA_OIF, static_cast<uint32_t>(r.ifindex));
  if (r.gateway != 0) PutIpv4(m, RTA_GATEWAY, r.gateway);
}

constexpr int kLoopbackIfindex = 1;

// No IPv6 link-local address on either end: the pod network is IPv4, and
// address generation, DAD and router solicitations cost time per veth.
void PutNoIpv6AddrGen(nl_msg* m) {
  nlattr* af = nla_nest_start(m, IFLA_AF_SPEC);
  nlattr* in6 = nla_nest_start(m, AF_INET6);
  nla_put_u8(m, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
  nla_nest_end(m, in6);
  nla_nest_end(m, af);
}

void AddGetLink(RtnlBatch& b, const std::string& name, std::function<void(nlmsghdr*)> on_reply) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  nl_msg* m = b.Add(RTM_GETLINK, 0, &ifi, sizeof(ifi), "get link " + name, {ENODEV}, std::move(on_reply));
  if (m != nullptr) nla_put_string(m, IFLA_IFNAME, name.c_str());
}

void AddDeleteLink(RtnlBatch& b, const std::string& name) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  nl_msg* m = b.Add(RTM_DELLINK, 0, &ifi, sizeof(ifi), "delete link " + name, {ENODEV});
  if (m != nullptr) nla_put_string(m, IFLA_IFNAME, name.c_str());
}

// Brings a link up without an IPv6 link-local address: the pod network is
// IPv4, and address generation, DAD and router solicitations cost time per
// veth. The mode must be set before the link goes up, hence two requests.
void AddLinkUp(RtnlBatch& b, int ifindex, const std::string& what, bool ipv6_linklocal = false) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  if (!ipv6_linklocal) {
    nl_msg* m = b.Add(RTM_NEWLINK, 0, &ifi, sizeof(ifi), "set addrgenmode of " + what);
    if (m != nullptr) PutNoIpv6AddrGen(m);
  }
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  b.Add(RTM_NEWLINK, 0, &ifi, sizeof(ifi), "set " + what + " up");
}

// One request: both ends named, the peer created directly in the namespace
// `peer_ns` (no move afterwards). Neither end can be up yet: a veth refuses
// to open before its peer is attached (ENOTCONN), and an address-generation
// mode is refused at creation; AddLinkUp sets both afterwards.
void AddVethPair(RtnlBatch& b, const std::string& name, const std::string& peer_name, int peer_ns) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  nl_msg* m = b.Add(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof(ifi), "add veth " + name);
  if (m == nullptr) return;
  nla_put_string(m, IFLA_IFNAME, name.c_str());
  nlattr* info = nla_nest_start(m, IFLA_LINKINFO);
  nla_put_string(m, IFLA_INFO_KIND, "veth");
  nlattr* data = nla_nest_start(m, IFLA_INFO_DATA);
  // VETH_INFO_PEER holds an ifinfomsg before its attributes, so it is not a
  // plain nest and must not carry NLA_F_NESTED.
  nlattr* peer = nla_nest_start(m, VETH_INFO_PEER);
  if (peer != nullptr) peer->nla_type &= ~NLA_F_NESTED;
  nlmsg_append(m, &ifi, sizeof(ifi), NLMSG_ALIGNTO);
  nla_put_string(m, IFLA_IFNAME, peer_name.c_str());
  nla_put_u32(m, IFLA_NET_NS_FD, static_cast<uint32_t>(peer_ns));
  nla_nest_end(m, peer);
  nla_nest_end(m, data);
  nla_nest_end(m, info);
}

void AddAddress(RtnlBatch& b, int ifindex, uint32_t ip, const std::string& what) {
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = 32;
  ifa.ifa_index = ifindex;
  nl_msg* m = b.Add(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &ifa, sizeof(ifa),
                    "add address " + FormatIpv4(ip) + " to " + what, {EEXIST});
  if (m == nullptr) return;
  PutIpv4(m, IFA_LOCAL, ip);
  PutIpv4(m, IFA_ADDRESS, ip);
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
  if (options.enable_nat) {
    auto nat = NodeNat::Open(options.pod_cidr, options.cluster_cidr);
    if (nat.ok()) {
      pn->nat_ = std::move(*nat);
    } else {
      pn->nat_status_ = nat.status();
      log::Warn("podnet: no hostPort or masquerade: ", nat.status());
    }
  } else {
    pn->nat_status_ = absl::FailedPreconditionError("NAT disabled by configuration");
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

  // A netlink socket opened inside the pod's namespace stays bound to it, and
  // the namespace's fd lets the veth's peer be created right there.
  NlSock pod_sock;
  UniqueFd pod_ns;
  auto connect_inside = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(pod_sock, Connect());
    pod_ns = UniqueFd(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!pod_ns.valid()) return LastErrnoError("open netns of pod " + pod_uid);
    return absl::OkStatus();
  };
  bool fresh = false;
  if (IsNetns(res.netns_path)) {
    RETURN_IF_ERROR(EnterNetns(res.netns_path, connect_inside));
  } else {
    DeleteNetns(res.netns_path).IgnoreError();  // a stale plain file
    RETURN_IF_ERROR(CreateNetns(res.netns_path, connect_inside));
    fresh = true;
  }

  // The node-side veth's RTM_NEWLINK carries its index and, in IFLA_LINK,
  // the index of its peer inside the pod's namespace.
  int host_if = 0, pod_if = 0;
  auto read_link = [&](nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWLINK) return;
    auto* ifi = static_cast<ifinfomsg*>(nlmsg_data(h));
    nlattr* tb[IFLA_MAX + 1];
    if (nlmsg_parse(h, sizeof(*ifi), tb, IFLA_MAX, nullptr) < 0 || tb[IFLA_LINK] == nullptr) return;
    host_if = ifi->ifi_index;
    pod_if = static_cast<int>(nla_get_u32(tb[IFLA_LINK]));
  };
  if (!fresh) {  // a pod set up before (a kubelet restart): keep what is there
    RtnlBatch probe(sock_);
    AddGetLink(probe, res.host_veth, read_link);
    RETURN_IF_ERROR(probe.Run());
  }
  const bool create = host_if == 0 || pod_if == 0;
  if (create) {
    RtnlBatch b(sock_);
    AddDeleteLink(b, res.host_veth);
    AddVethPair(b, res.host_veth, "eth0", pod_ns.get());
    AddGetLink(b, res.host_veth, read_link);
    RETURN_IF_ERROR(b.Run());
    if (host_if == 0 || pod_if == 0) return absl::InternalError("veth " + res.host_veth + " has no peer index");
  }

  RtnlBatch node(sock_);
  AddLinkUp(node, host_if, res.host_veth);
  AddAddress(node, host_if, gw, res.host_veth);
  RouteSpec host_route;
  host_route.dst = ip;
  host_route.prefix = 32;
  host_route.ifindex = host_if;
  host_route.scope = RT_SCOPE_LINK;
  host_route.protocol = kRouteProtocol;
  AddRouteRequest(node, host_route, res.ip + " dev " + res.host_veth);
  RETURN_IF_ERROR(node.Run());

  RtnlBatch pod(pod_sock.get());
  AddLinkUp(pod, kLoopbackIfindex, "lo of pod " + pod_uid, /*ipv6_linklocal=*/true);
  AddLinkUp(pod, pod_if, "eth0 of pod " + pod_uid);
  AddAddress(pod, pod_if, ip, "eth0 of pod " + pod_uid);
  RouteSpec gw_route;
  gw_route.dst = gw;
  gw_route.prefix = 32;
  gw_route.ifindex = pod_if;
  gw_route.scope = RT_SCOPE_LINK;
  AddRouteRequest(pod, gw_route, "gateway in pod " + pod_uid);
  RouteSpec def;
  def.ifindex = pod_if;
  def.gateway = gw;
  AddRouteRequest(pod, def, "default route in pod " + pod_uid);
  RETURN_IF_ERROR(pod.Run());
  return res;
}

absl::Status PodNetwork::SetHostPorts(const std::string& pod_uid, const std::vector<PortMapping>& ports) {
  std::lock_guard<std::mutex> lock(mu_);
  auto allocs = ipam_->Allocations();
  auto it = allocs.find(pod_uid);
  if (it == allocs.end()) return absl::FailedPreconditionError("hostPorts for pod " + pod_uid + " before its network");
  if (!nat_) {
    if (ports.empty()) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("hostPort unavailable: ", nat_status_.message()));
  }
  return nat_->SetPorts(it->second, ports);
}

absl::Status PodNetwork::Teardown(const std::string& pod_uid) {
  std::lock_guard<std::mutex> lock(mu_);
  if (nat_) {
    auto allocs = ipam_->Allocations();
    if (auto it = allocs.find(pod_uid); it != allocs.end()) RETURN_IF_ERROR(nat_->RemovePorts(it->second));
  }
  // Deleting the node-side end removes the pair and, with the link, its /32 route.
  RtnlBatch b(sock_);
  AddDeleteLink(b, HostVethName(pod_uid));
  RETURN_IF_ERROR(b.Run());
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
