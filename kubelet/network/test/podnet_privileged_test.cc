// The pod network for real, inside a node network namespace this test makes
// for itself (the whole test process moves there first, and into a private
// mount namespace so its netns bind mounts vanish with it even on a crash).
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "skiff/common/status.h"
#include "skiff/podnet/nat.h"
#include "skiff/podnet/netns.h"
#include "skiff/podnet/podnet.h"

namespace skiff::podnet {
namespace {

bool g_isolated = false;

class PodNetworkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    // Never touch the machine's namespaces: everything below happens in ours.
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) return;
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) return;
    g_isolated = true;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_TRUE(g_isolated) << "could not enter a private network namespace";
    // Stale directories of crashed runs (their mounts died with their mount namespace).
    for (auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
      std::string n = e.path().filename();
      if (n.rfind("skiff-podnet-test-", 0) != 0) continue;
      int pid = atoi(n.c_str() + strlen("skiff-podnet-test-"));
      if (pid > 0 && pid != getpid() && kill(pid, 0) != 0) std::filesystem::remove_all(e.path());
    }
    base_ = std::filesystem::temp_directory_path() / ("skiff-podnet-test-" + std::to_string(getpid()));
    std::filesystem::remove_all(base_);
    opts_.run_dir = base_ + "/run";
    opts_.state_dir = base_ + "/state";
    opts_.pod_cidr = "10.244.7.0/24";
    opts_.service_cidr = "10.96.0.0/12";
  }
  void TearDown() override {
    if (base_.empty()) return;
    for (auto& uid : created_) {
      if (net_) net_->Teardown(uid).IgnoreError();
    }
    net_.reset();
    if (!outside_.empty()) {
      Sh("ip link del ext0 2>/dev/null");
      DeleteNetns(outside_).IgnoreError();
    }
    // Pods of the second node (a test that failed before its own teardown).
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(base_ + "/run2/netns", ec)) DeleteNetns(e.path()).IgnoreError();
    // The NAT table lives in this test's own node namespace; drop it anyway.
    if (auto nat = NodeNat::Open(opts_.pod_cidr, ""); nat.ok()) (*nat)->DeleteTable().IgnoreError();
    std::filesystem::remove_all(base_);
  }
  void Open() {
    net_.reset();
    auto n = PodNetwork::Open(opts_);
    ASSERT_TRUE(n.ok()) << n.status();
    net_ = std::move(*n);
  }
  PodNetworkResult Pod(const std::string& uid) {
    created_.insert(uid);
    auto r = net_->Setup(uid);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : PodNetworkResult{};
  }
  static int Sh(const std::string& cmd) { return system(cmd.c_str()); }
  // Another lab host outside the cluster CIDR: its own namespace, on a veth
  // to the node (node 192.168.77.1, host 192.168.77.2). No route to pods.
  void MakeOutsideHost() {
    outside_ = base_ + "/outside";
    ASSERT_TRUE(CreateNetns(outside_).ok());
    const std::string in = "nsenter --net=" + outside_ + " ";
    ASSERT_EQ(Sh("ip link add ext0 type veth peer name eth0 netns " + outside_), 0);
    ASSERT_EQ(Sh("ip addr add 192.168.77.1/24 dev ext0 && ip link set ext0 up"), 0);
    ASSERT_EQ(Sh(in + "ip addr add 192.168.77.2/24 dev eth0"), 0);
    ASSERT_EQ(Sh(in + "ip link set eth0 up && " + in + "ip link set lo up"), 0);
  }
  static int CountLinks(const std::string& prefix) {
    int n = 0;
    if (struct if_nameindex* idx = if_nameindex()) {
      for (struct if_nameindex* i = idx; i->if_index != 0; ++i) n += std::string(i->if_name).rfind(prefix, 0) == 0;
      if_freenameindex(idx);
    }
    return n;
  }

  std::string base_;
  PodNetworkOptions opts_;
  std::unique_ptr<PodNetwork> net_;
  std::set<std::string> created_;
  std::string outside_;
};

sockaddr_in Addr(const std::string& ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return a;
}

// A socket made inside `netns` ("" = the node's namespace) stays there.
int SocketIn(const std::string& netns, int type) {
  int fd = -1;
  if (netns.empty()) return socket(AF_INET, type | SOCK_CLOEXEC, 0);
  EXPECT_TRUE(RunInNetns(netns, [&] {
                fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
                return absl::OkStatus();
              }).ok());
  return fd;
}

bool WaitReadable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

// TCP from `from_ns` to server in `to_ns` at ip:port; returns what came back.
// `connect_port` (0 = `port`) differs from the server's port through a hostPort.
// `peer`, if given, receives the client address the server saw.
std::string TcpRoundTrip(const std::string& from_ns, const std::string& to_ns, const std::string& ip, int port,
                         int connect_port = 0, std::string* peer = nullptr) {
  int srv = SocketIn(to_ns, SOCK_STREAM);
  int one = 1;
  setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa = Addr("0.0.0.0", port);
  if (bind(srv, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(srv, 4) != 0) {
    close(srv);
    return "bind/listen failed";
  }
  int cli = SocketIn(from_ns, SOCK_STREAM);
  timeval tv{2, 0};
  setsockopt(cli, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in da = Addr(ip, connect_port != 0 ? connect_port : port);
  std::string out;
  if (connect(cli, reinterpret_cast<sockaddr*>(&da), sizeof(da)) == 0 && WaitReadable(srv, 2000)) {
    sockaddr_in from{};
    socklen_t fl = sizeof(from);
    int c = accept(srv, reinterpret_cast<sockaddr*>(&from), &fl);
    char text[INET_ADDRSTRLEN] = {};
    if (peer != nullptr) *peer = inet_ntop(AF_INET, &from.sin_addr, text, sizeof(text));
    if (write(cli, "ping", 4) != 4) out = "write failed";
    char buf[16] = {};
    if (WaitReadable(c, 2000)) {
      ssize_t n = read(c, buf, sizeof(buf));
      if (n > 0) out.assign(buf, n);
    }
    close(c);
  } else {
    out = std::string("connect failed: ") + strerror(errno);
  }
  close(cli);
  close(srv);
  return out;
}

std::string UdpRoundTrip(const std::string& from_ns, const std::string& to_ns, const std::string& ip, int port,
                         int connect_port = 0) {
  int srv = SocketIn(to_ns, SOCK_DGRAM);
  sockaddr_in sa = Addr("0.0.0.0", port);
  if (bind(srv, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(srv);
    return "bind failed";
  }
  int cli = SocketIn(from_ns, SOCK_DGRAM);
  sockaddr_in da = Addr(ip, connect_port != 0 ? connect_port : port);
  std::string out;
  sendto(cli, "dgram", 5, 0, reinterpret_cast<sockaddr*>(&da), sizeof(da));
  if (WaitReadable(srv, 2000)) {
    char buf[16] = {};
    ssize_t n = recv(srv, buf, sizeof(buf), 0);
    if (n > 0) out.assign(buf, n);
  }
  close(cli);
  close(srv);
  return out;
}

TEST_F(PodNetworkTest, PodsOnOneNodeReachEachOtherAndTheNodeOverTcpAndUdp) {
  Open();
  auto a = Pod("uid-a");
  auto b = Pod("uid-b");
  ASSERT_NE(a.ip, b.ip);
  EXPECT_EQ(TcpRoundTrip(a.netns_path, b.netns_path, b.ip, 8080), "ping");
  EXPECT_EQ(UdpRoundTrip(a.netns_path, b.netns_path, b.ip, 5353), "dgram");
  // node -> pod and pod -> node (the gateway address lives on the node).
  EXPECT_EQ(TcpRoundTrip("", a.netns_path, a.ip, 8081), "ping");
  EXPECT_EQ(TcpRoundTrip(b.netns_path, "", "10.244.7.1", 8082), "ping");
}

TEST_F(PodNetworkTest, ServiceCidrIsUnreachableOnTheNode) {
  Open();
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in da = Addr("10.96.0.10", 80);
  int rc = connect(s, reinterpret_cast<sockaddr*>(&da), sizeof(da));
  int err = errno;
  close(s);
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EHOSTUNREACH) << strerror(err);
}

TEST_F(PodNetworkTest, SetupIsIdempotentAndAddressesSurviveARestart) {
  Open();
  auto a1 = Pod("uid-a");
  auto a2 = Pod("uid-a");
  EXPECT_EQ(a1.ip, a2.ip);
  Open();  // a kubelet restart
  auto a3 = Pod("uid-a");
  auto b = Pod("uid-b");
  EXPECT_EQ(a1.ip, a3.ip);
  EXPECT_NE(b.ip, a1.ip);
  EXPECT_EQ(TcpRoundTrip(b.netns_path, a3.netns_path, a3.ip, 8083), "ping");
}

TEST_F(PodNetworkTest, HundredPodsDeletedReturnHundredAddressesAndLeaveNothing) {
  Open();
  std::set<std::string> ips;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) ips.insert(Pod("p" + std::to_string(i)).ip);
  auto setup_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ips.size(), 100u);
  EXPECT_EQ(net_->ipam().Allocations().size(), 100u);
  EXPECT_EQ(CountLinks("sk"), 100);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(net_->Teardown("p" + std::to_string(i)).ok());
  EXPECT_EQ(net_->ipam().Allocations().size(), 0u);
  EXPECT_EQ(CountLinks("sk"), 0);
  EXPECT_TRUE(std::filesystem::is_empty(opts_.run_dir + "/netns"));
  EXPECT_TRUE(net_->KnownPods().empty());
  RecordProperty("setup_ms_per_pod", std::to_string(setup_ms / 100));
  // Teardown of something already gone is fine.
  EXPECT_TRUE(net_->Teardown("p0").ok());
}

TEST_F(PodNetworkTest, RoutesToOtherNodesFollowTheirPodCidrs) {
  Open();
  // A fake neighbour on a dummy-free setup: routes via an on-link gateway need
  // a connected subnet, so give the node one on a veth of its own.
  auto a = Pod("uid-a");  // ensures the node has links
  ASSERT_TRUE(net_->SyncNodeRoutes({{"10.244.7.0/24", "10.244.7.1"}}).ok());  // own CIDR: ignored
  // Gateways must be reachable: use pod a's address as the "other node" for the test.
  ASSERT_TRUE(net_->SyncNodeRoutes({{"10.244.8.0/24", a.ip}, {"10.244.9.0/24", a.ip}}).ok());
  // Non-blocking connect: with a route it is in progress, without one it fails at once.
  auto try_connect = [] {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in da = Addr("10.244.8.5", 80);
    int rc = connect(s, reinterpret_cast<sockaddr*>(&da), sizeof(da));
    int err = rc == 0 ? 0 : errno;
    close(s);
    return err;
  };
  EXPECT_EQ(try_connect(), EINPROGRESS) << "no route to the other node's podCIDR";
  ASSERT_TRUE(net_->SyncNodeRoutes({{"10.244.9.0/24", a.ip}}).ok());
  int err = try_connect();
  EXPECT_EQ(err, ENETUNREACH) << "stale route to 10.244.8.0/24 was not removed";
}

TEST_F(PodNetworkTest, HostPortReachesThePodFromAnotherHostAndFromTheNodeUntilTeardown) {
  opts_.cluster_cidr = "10.244.0.0/16";
  Open();
  MakeOutsideHost();
  auto a = Pod("uid-hp");
  auto b = Pod("uid-other");
  ASSERT_TRUE(net_->SetHostPorts("uid-hp", {{"TCP", 30080, 8080}, {"UDP", 30081, 8081}}).ok());
  // Another pod cannot take a hostPort that is held.
  EXPECT_FALSE(net_->SetHostPorts("uid-other", {{"TCP", 30080, 9090}}).ok());
  EXPECT_EQ(TcpRoundTrip(outside_, a.netns_path, "192.168.77.1", 8080, 30080), "ping");
  EXPECT_EQ(UdpRoundTrip(outside_, a.netns_path, "192.168.77.1", 8081, 30081), "dgram");
  EXPECT_EQ(TcpRoundTrip("", a.netns_path, "192.168.77.1", 8080, 30080), "ping");  // from the node itself
  // A restarted kubelet still knows the mappings (kept in the kernel) ...
  Open();
  // ... and replacing them is exact: 30080 gone, 30090 new.
  ASSERT_TRUE(net_->SetHostPorts("uid-hp", {{"TCP", 30090, 8080}}).ok());
  EXPECT_NE(TcpRoundTrip(outside_, a.netns_path, "192.168.77.1", 8080, 30080), "ping");
  EXPECT_EQ(TcpRoundTrip(outside_, a.netns_path, "192.168.77.1", 8080, 30090), "ping");
  ASSERT_TRUE(net_->Teardown("uid-hp").ok());
  auto nat = NodeNat::Open(opts_.pod_cidr, opts_.cluster_cidr);
  ASSERT_TRUE(nat.ok()) << nat.status();
  auto left = (*nat)->List();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_TRUE(left->empty()) << "hostPort mappings left after teardown";
  // Now the other pod may have the port.
  EXPECT_TRUE(net_->SetHostPorts("uid-other", {{"TCP", 30090, 9090}}).ok());
  EXPECT_EQ(TcpRoundTrip(outside_, b.netns_path, "192.168.77.1", 9090, 30090), "ping");
}

TEST_F(PodNetworkTest, TrafficLeavingTheClusterCidrIsMasqueradedPodToPodIsNot) {
  opts_.cluster_cidr = "10.244.0.0/16";
  Open();
  MakeOutsideHost();
  auto a = Pod("uid-a");
  auto b = Pod("uid-b");
  std::string peer;
  // The outside host has no route to pods: only a masqueraded flow can work.
  EXPECT_EQ(TcpRoundTrip(a.netns_path, outside_, "192.168.77.2", 9000, 0, &peer), "ping");
  EXPECT_EQ(peer, "192.168.77.1") << "the outside host should see the node's address";
  EXPECT_EQ(TcpRoundTrip(a.netns_path, b.netns_path, b.ip, 9001, 0, &peer), "ping");
  EXPECT_EQ(peer, a.ip) << "pod-to-pod traffic must keep the pod's address";
}

TEST_F(PodNetworkTest, WithoutAClusterCidrNothingIsMasqueraded) {
  Open();
  MakeOutsideHost();
  auto a = Pod("uid-a");
  EXPECT_NE(TcpRoundTrip(a.netns_path, outside_, "192.168.77.2", 9002), "ping");
}

// Two nodes: this test's namespace and a second one on a shared link (as lab
// nodes share one L2), each with its own PodNetwork, podCIDR and routes to
// the other's podCIDR via its address.
TEST_F(PodNetworkTest, PodsOnTwoNodesReachEachOtherByPodIpOverTcpAndUdp) {
  opts_.cluster_cidr = "10.244.0.0/16";
  Open();
  const std::string node2 = base_ + "/node2";
  outside_ = node2;  // TearDown removes it and the link like the outside host
  ASSERT_TRUE(CreateNetns(node2).ok());
  const std::string in2 = "nsenter --net=" + node2 + " ";
  ASSERT_EQ(Sh("ip link add ext0 type veth peer name eth0 netns " + node2), 0);
  ASSERT_EQ(Sh("ip addr add 192.168.88.1/24 dev ext0 && ip link set ext0 up"), 0);
  ASSERT_EQ(Sh(in2 + "ip addr add 192.168.88.2/24 dev eth0 && " + in2 + "ip link set eth0 up"), 0);
  PodNetworkOptions o2 = opts_;
  o2.run_dir = base_ + "/run2";
  o2.state_dir = base_ + "/state2";
  o2.pod_cidr = "10.244.8.0/24";
  // The second node's PodNetwork acts on the namespace of the thread that
  // calls it: every call to it runs switched into node2.
  std::unique_ptr<PodNetwork> net2;
  PodNetworkResult c;
  ASSERT_TRUE(EnterNetns(node2, [&]() -> absl::Status {
                ASSIGN_OR_RETURN(net2, PodNetwork::Open(o2));
                RETURN_IF_ERROR(net2->SyncNodeRoutes({{"10.244.7.0/24", "192.168.88.1"}}));
                ASSIGN_OR_RETURN(c, net2->Setup("uid-c"));
                return absl::OkStatus();
              }).ok());
  ASSERT_TRUE(net_->SyncNodeRoutes({{"10.244.8.0/24", "192.168.88.2"}}).ok());
  auto a = Pod("uid-a");
  std::string peer;
  EXPECT_EQ(TcpRoundTrip(a.netns_path, c.netns_path, c.ip, 7001, 0, &peer), "ping");
  EXPECT_EQ(peer, a.ip) << "cross-node pod traffic must not be masqueraded";
  EXPECT_EQ(TcpRoundTrip(c.netns_path, a.netns_path, a.ip, 7002, 0, &peer), "ping");
  EXPECT_EQ(peer, c.ip);
  EXPECT_EQ(UdpRoundTrip(a.netns_path, c.netns_path, c.ip, 7003), "dgram");
  EXPECT_EQ(UdpRoundTrip(c.netns_path, a.netns_path, a.ip, 7004), "dgram");
  EXPECT_EQ(TcpRoundTrip("", c.netns_path, c.ip, 7005), "ping");  // node1 -> pod on node2
  EXPECT_TRUE(EnterNetns(node2, [&] { return net2->Teardown("uid-c"); }).ok());
  EXPECT_TRUE(EnterNetns(node2, [&] {
                net2.reset();
                return absl::OkStatus();
              }).ok());
}

}  // namespace
}  // namespace skiff::podnet
