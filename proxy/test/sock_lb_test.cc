// Syscall-level tests of bpf/sock_lb.bpf.c: the programs are attached at a
// cgroup the test creates, this process joins it and the lab's node netns,
// and real connect()/sendmsg() calls go to service addresses that exist only
// in the maps, while backends answer from the lab's backend netns.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <atomic>
#include <iostream>
#include <random>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "lab.h"
#include "skiff/common/unique_fd.h"
#include "skiff/proxy/datapath.h"
#include "skiff/proxy/desired.h"
#include "skiff/proxy/service_map.h"
#include "skiff/proxy/source.h"
#include "skiff_bpf/lb.h"

namespace skiff::proxy {
namespace {

using testing::Lab;
using testing::TcpRequest;
using testing::UdpRequest;

Service MakeService(const std::string& name, const std::string& vip, OneOrMore<ServicePort> ports) {
  Service s;
  s.ns = "default";
  s.name = name;
  s.cluster_ips = {vip};
  s.ports = std::move(ports);
  return s;
}

EndpointSlice MakeSlice(const std::string& svc, const std::vector<std::string>& ips, OneOrMore<EndpointPort> ports,
                        const std::string& suffix = "a") {
  EndpointSlice es;
  es.ns = "default";
  es.name = svc + "-" + suffix;
  es.service_name = svc;
  for (const auto& ip : ips) {
    Endpoint e;
    e.addresses = {ip};
    e.node_name = "node-a";
    es.endpoints.push_back(e);
  }
  es.ports = std::move(ports);
  return es;
}

class SockLbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: netns, cgroups, BPF";
    lab_ = std::make_unique<Lab>("sl");
    ASSERT_TRUE(lab_->ok()) << lab_->error();
    for (int o : {11, 12, 13}) ASSERT_TRUE(lab_->AddBackendAddress(o)) << lab_->error();
    ASSERT_TRUE(lab_->StartServers({8080, 5353, 9090})) << lab_->error();
    OpenDatapath();
  }
  // Loads the datapath on the lab's bpffs, attaches it at the lab cgroup and
  // moves this process into the lab.
  void OpenDatapath() {
    DatapathOptions opts;
    opts.bpffs_dir = lab_->bpffs();
    auto dp = Datapath::Open(opts);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = *std::move(dp);
    ASSERT_TRUE(dp_->AttachSocketLb(lab_->cgroup()).ok());
    map_ = std::make_unique<ServiceMap>(dp_->maps());
    ASSERT_TRUE(lab_->Enter()) << lab_->error();
  }
  void TearDown() override {
    if (lab_) lab_->Leave();
    map_.reset();
    dp_.reset();
    if (lab_) Datapath::RemovePins(lab_->bpffs()).IgnoreError();
    lab_.reset();
  }
  void Program() {
    auto st = map_->ApplyDelta(builder_.Update(state_));
    ASSERT_TRUE(st.ok()) << st.status();
  }

  std::unique_ptr<Lab> lab_;
  std::unique_ptr<Datapath> dp_;
  std::unique_ptr<ServiceMap> map_;
  ClusterState state_;
  NodeConfig node_{"node-a", {}};
  DesiredBuilder builder_{node_};
};

TEST_F(SockLbTest, TcpConnectToClusterIpReachesEveryBackendAndPeerIsTheVip) {
  state_.services["default/web"] = MakeService("web", "10.96.0.10", {{"http", Protocol::kTcp, 80, 0}});
  state_.endpoint_slices["default/web-a"] =
      MakeSlice("web", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 40; ++i) {
    std::string peer;
    std::string got = TcpRequest("10.96.0.10", 80, &peer);
    ASSERT_TRUE(got == "10.0.0.11:8080" || got == "10.0.0.12:8080") << got;
    EXPECT_EQ(peer, "10.96.0.10:80");
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 2u) << "random selection should reach both backends in 40 connects";
  auto counters = map_->ReadCounters();
  EXPECT_EQ(counters["default/web:http/TCP"].connections, 40u);
}

TEST_F(SockLbTest, UdpSendmsgIsTranslatedPerDatagramAndRepliesComeFromTheVip) {
  state_.services["default/dns"] = MakeService("dns", "10.96.0.53", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/dns-a"] =
      MakeSlice("dns", {"10.0.0.11", "10.0.0.12"}, {{"dns", Protocol::kUdp, 5353}});
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) {
    std::string from;
    std::string got = UdpRequest("10.96.0.53", 53, /*connected=*/false, &from);
    ASSERT_TRUE(got == "10.0.0.11:5353" || got == "10.0.0.12:5353") << got;
    EXPECT_EQ(from, "10.96.0.53:53");
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 2u);
  std::string from;
  std::string got = UdpRequest("10.96.0.53", 53, /*connected=*/true, &from);
  EXPECT_TRUE(got == "10.0.0.11:5353" || got == "10.0.0.12:5353") << got;
  EXPECT_EQ(from, "10.96.0.53:53");
}

// A connected UDP socket of the test (owned, closed on destruction).
class ConnectedUdp {
 public:
  ConnectedUdp(const std::string& ip, int port) {
    sockaddr_in6 a6{};
    sockaddr_in a{};
    bool v6 = ip.find(':') != std::string::npos;
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons(port);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (v6) inet_pton(AF_INET6, ip.c_str(), &a6.sin6_addr);
    else
      inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    fd_ = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    connected_ = v6 ? connect(fd_, reinterpret_cast<sockaddr*>(&a6), sizeof(a6)) == 0
                    : connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~ConnectedUdp() { close(fd_); }
  // The backend's answer ("ip:port"), or "ERR:<errno name>".
  std::string Ask() {
    if (!connected_) return "ERR:connect";
    if (send(fd_, "q", 1, 0) != 1) return std::string("ERR:") + strerrorname_np(errno);
    char buf[128];
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n < 0) return std::string("ERR:") + strerrorname_np(errno);
    return std::string(buf, n);
  }
  int PendingError() {
    int e = 0;
    socklen_t l = sizeof(e);
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &e, &l);
    return e;
  }

 private:
  int fd_;
  bool connected_ = false;
};

TEST_F(SockLbTest, ConnectedUdpSocketToARemovedBackendIsAbortedAndAReconnectReachesALiveOne) {
  state_.services["default/dns"] = MakeService("dns", "10.96.0.53", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/dns-a"] = MakeSlice("dns", {"10.0.0.11"}, {{"dns", Protocol::kUdp, 5353}});
  state_.services["default/other"] = MakeService("other", "10.96.0.54", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/other-a"] = MakeSlice("other", {"10.0.0.13"}, {{"dns", Protocol::kUdp, 5353}});
  Program();
  ConnectedUdp moved("10.96.0.53", 53), kept("10.96.0.54", 53);
  ASSERT_EQ(moved.Ask(), "10.0.0.11:5353");
  ASSERT_EQ(kept.Ask(), "10.0.0.13:5353");
  // A socket connected to the pod address itself is not the LB's business.
  ConnectedUdp direct("10.0.0.11", 5353);
  ASSERT_EQ(direct.Ask(), "10.0.0.11:5353");

  state_.endpoint_slices["default/dns-a"] = MakeSlice("dns", {"10.0.0.12"}, {{"dns", Protocol::kUdp, 5353}});
  Program();
  if (dp_->maps().udp_destroy_link < 0) GTEST_FAIL() << "sock_destroy object did not load on this kernel";
  EXPECT_EQ(moved.PendingError(), ECONNABORTED);
  EXPECT_EQ(kept.PendingError(), 0);
  EXPECT_EQ(kept.Ask(), "10.0.0.13:5353");
  EXPECT_EQ(direct.PendingError(), 0);
  EXPECT_EQ(direct.Ask(), "10.0.0.11:5353");
  ConnectedUdp again("10.96.0.53", 53);
  EXPECT_EQ(again.Ask(), "10.0.0.12:5353");
}

// The same for a pod's socket: its network namespace is not the agent's,
// so the iterator must also run there.
TEST_F(SockLbTest, ConnectedUdpSocketOfAPodInItsOwnNetnsIsAbortedWhenItsBackendIsRemoved) {
  ASSERT_TRUE(lab_->AddPod()) << lab_->error();
  state_.services["default/dns"] = MakeService("dns", "10.96.0.53", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/dns-a"] = MakeSlice("dns", {"10.0.0.11"}, {{"dns", Protocol::kUdp, 5353}});
  Program();
  std::unique_ptr<ConnectedUdp> pod_sock, pod_again;
  std::string first, again;
  // The sockets are made in the pod netns (a thread that entered it); they
  // stay there after the thread is gone.
  std::thread pod([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    pod_sock = std::make_unique<ConnectedUdp>("10.96.0.53", 53);
    first = pod_sock->Ask();
  });
  pod.join();
  ASSERT_TRUE(pod_sock);
  ASSERT_EQ(first, "10.0.0.11:5353");
  state_.endpoint_slices["default/dns-a"] = MakeSlice("dns", {"10.0.0.12"}, {{"dns", Protocol::kUdp, 5353}});
  auto st = map_->ApplyDelta(builder_.Update(state_));
  ASSERT_TRUE(st.ok()) << st.status();
  if (dp_->maps().udp_destroy_link < 0) GTEST_FAIL() << "sock_destroy object did not load on this kernel";
  EXPECT_GE(st->udp_netns_walked, 2u);
  EXPECT_EQ(pod_sock->PendingError(), ECONNABORTED);
  std::thread pod2([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    pod_again = std::make_unique<ConnectedUdp>("10.96.0.53", 53);
    again = pod_again->Ask();
  });
  pod2.join();
  EXPECT_EQ(again, "10.0.0.12:5353");
}

std::string PeerOf(int fd) {
  sockaddr_in6 a{};
  socklen_t l = sizeof(a);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &l) != 0) return "ERR";
  char buf[INET6_ADDRSTRLEN];
  if (a.sin6_family == AF_INET6) {
    inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof(buf));
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a.sin6_port));
  }
  const auto& a4 = reinterpret_cast<const sockaddr_in&>(a);
  inet_ntop(AF_INET, &a4.sin_addr, buf, sizeof(buf));
  return std::string(buf) + ":" + std::to_string(ntohs(a4.sin_port));
}

TEST_F(SockLbTest, PinnedMapsOfAnOlderLayoutAreMigratedWithoutDroppingConnections) {
  // Play the older generation: the fixture's agent goes, one pinned as
  // layout "v0" takes its place, plus a state map whose record differs from
  // ours (it must not be carried over, and must be gone afterwards).
  map_.reset();
  dp_.reset();
  ASSERT_TRUE(Datapath::RemovePins(lab_->bpffs()).ok());
  const std::string old_ver = "v0";
  {
    UniqueFd fake(bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "ct4", 16, 24, 1024, nullptr));
    ASSERT_TRUE(fake);
    ASSERT_EQ(bpf_obj_pin(fake.get(), (lab_->bpffs() + "/skiff_ct4_" + old_ver).c_str()), 0);
  }
  DatapathOptions old_opts;
  old_opts.bpffs_dir = lab_->bpffs();
  old_opts.pin_version = old_ver;
  auto old_dp = Datapath::Open(old_opts);
  ASSERT_TRUE(old_dp.ok()) << old_dp.status();
  ASSERT_TRUE((*old_dp)->AttachSocketLb(lab_->cgroup()).ok());

  // A local TCP listener as the backend of one service, so a connection can
  // stay established across the migration.
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in la{};
  la.sin_family = AF_INET;
  la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t ll = sizeof(la);
  ASSERT_EQ(bind(listener.get(), reinterpret_cast<sockaddr*>(&la), sizeof(la)), 0);
  ASSERT_EQ(listen(listener.get(), 8), 0);
  ASSERT_EQ(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&la), &ll), 0);
  uint16_t local_port = ntohs(la.sin_port);
  // And one on ::1 behind an IPv6 ClusterIP (lb6_sock_revnat is carried too).
  UniqueFd listener6(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 la6{};
  la6.sin6_family = AF_INET6;
  la6.sin6_addr = in6addr_loopback;
  socklen_t ll6 = sizeof(la6);
  ASSERT_EQ(bind(listener6.get(), reinterpret_cast<sockaddr*>(&la6), sizeof(la6)), 0) << strerror(errno);
  ASSERT_EQ(listen(listener6.get(), 8), 0);
  ASSERT_EQ(getsockname(listener6.get(), reinterpret_cast<sockaddr*>(&la6), &ll6), 0);
  state_.services["default/echo6"] = MakeService("echo6", "fd00:96::81", {{"tcp", Protocol::kTcp, 80, 0}});
  state_.endpoint_slices["default/echo6-a"] =
      MakeSlice("echo6", {"::1"}, {{"tcp", Protocol::kTcp, ntohs(la6.sin6_port)}});

  state_.services["default/web"] = MakeService("web", "10.96.0.80", {{"http", Protocol::kTcp, 80, 0}});
  state_.endpoint_slices["default/web-a"] =
      MakeSlice("web", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  state_.services["default/echo"] = MakeService("echo", "10.96.0.81", {{"tcp", Protocol::kTcp, 80, 0}});
  state_.endpoint_slices["default/echo-a"] = MakeSlice("echo", {"127.0.0.1"}, {{"tcp", Protocol::kTcp, local_port}});
  state_.services["default/dns"] = MakeService("dns", "10.96.0.53", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/dns-a"] = MakeSlice("dns", {"10.0.0.13"}, {{"dns", Protocol::kUdp, 5353}});
  {
    ServiceMap old_map((*old_dp)->maps());
    DesiredBuilder b(node_);
    ASSERT_TRUE(old_map.ApplyDelta(b.Update(state_)).ok());
  }

  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in va{};
  va.sin_family = AF_INET;
  va.sin_port = htons(80);
  inet_pton(AF_INET, "10.96.0.81", &va.sin_addr);
  ASSERT_EQ(connect(client.get(), reinterpret_cast<sockaddr*>(&va), sizeof(va)), 0) << strerror(errno);
  UniqueFd server(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  UniqueFd client6(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 va6{};
  va6.sin6_family = AF_INET6;
  va6.sin6_port = htons(80);
  inet_pton(AF_INET6, "fd00:96::81", &va6.sin6_addr);
  ASSERT_EQ(connect(client6.get(), reinterpret_cast<sockaddr*>(&va6), sizeof(va6)), 0) << strerror(errno);
  UniqueFd server6(accept4(listener6.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server6);
  ConnectedUdp udp("10.96.0.53", 53);
  ASSERT_EQ(udp.Ask(), "10.0.0.13:5353");

  testing::ConnectLoop loop(*lab_, "10.96.0.80", 80);
  auto wait_for_progress = [&] { loop.WaitForProgress(3); };
  wait_for_progress();
  old_dp->reset();  // the older agent exits; its pins keep the datapath serving
  wait_for_progress();

  // The new generation, in the agent's order: open (fresh maps, connection
  // state carried over), program, take over the hooks, drop the old pins.
  DatapathOptions opts;
  opts.bpffs_dir = lab_->bpffs();
  auto dp = Datapath::Open(opts);
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = *std::move(dp);
  EXPECT_TRUE(dp_->migrating());
  EXPECT_EQ(dp_->migrating_from(), old_ver);
  map_ = std::make_unique<ServiceMap>(dp_->maps());
  ASSERT_TRUE(map_->Recover().ok());
  builder_.Update(state_);
  ASSERT_TRUE(map_->Apply(ComputeDesired(state_, node_)).ok());
  wait_for_progress();
  ASSERT_TRUE(dp_->AttachSocketLb(lab_->cgroup()).ok());
  ASSERT_TRUE(dp_->FinishMigration().ok());
  wait_for_progress();
  loop.Stop();
  EXPECT_GT(loop.ok(), 9);
  EXPECT_EQ(loop.failed(), 0) << loop.last_error();

  // The established TCP connection still flows and still shows the VIP.
  ASSERT_EQ(write(client.get(), "ping", 4), 4);
  char buf[8] = {};
  ASSERT_EQ(read(server.get(), buf, sizeof(buf)), 4);
  EXPECT_EQ(std::string(buf, 4), "ping");
  EXPECT_EQ(PeerOf(client.get()), "10.96.0.81:80");
  ASSERT_EQ(write(client6.get(), "pong", 4), 4);
  ASSERT_EQ(read(server6.get(), buf, sizeof(buf)), 4);
  EXPECT_EQ(std::string(buf, 4), "pong");
  EXPECT_EQ(PeerOf(client6.get()), "[fd00:96::81]:80");
  // The connected UDP socket too (its reverse NAT entry was carried over).
  EXPECT_EQ(udp.Ask(), "10.0.0.13:5353");

  // Nothing of the older layout is left, and each hook runs one program.
  for (const std::string& dir : {lab_->bpffs(), lab_->bpffs() + "/links"}) {
    DIR* d = opendir(dir.c_str());
    ASSERT_NE(d, nullptr);
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      EXPECT_FALSE(n.size() > 3 && n.compare(n.size() - 3, 3, "_" + old_ver) == 0) << dir << "/" << n;
    }
    closedir(d);
  }
  UniqueFd cg(open(lab_->cgroup().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  __u32 ids[4] = {}, count = 4;
  ASSERT_EQ(bpf_prog_query(cg.get(), BPF_CGROUP_INET4_CONNECT, 0, nullptr, ids, &count), 0);
  EXPECT_EQ(count, 1u);
  count = 4;
  ASSERT_EQ(bpf_prog_query(cg.get(), BPF_CGROUP_INET6_CONNECT, 0, nullptr, ids, &count), 0);
  EXPECT_EQ(count, 1u);
}

TEST_F(SockLbTest, ClusterIpTcpAndUdpFromAPodNetnsReachBackendsAndShowTheVip) {
  ASSERT_TRUE(lab_->AddPod()) << lab_->error();
  state_.services["default/web"] = MakeService("web", "10.96.0.10", {{"http", Protocol::kTcp, 80, 0}});
  state_.endpoint_slices["default/web-a"] =
      MakeSlice("web", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  state_.services["default/dns"] = MakeService("dns", "10.96.0.53", {{"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/dns-a"] = MakeSlice("dns", {"10.0.0.13"}, {{"dns", Protocol::kUdp, 5353}});
  Program();
  std::set<std::string> tcp;
  std::vector<std::string> peers, udp, from;
  // This process stays in the lab cgroup; the thread lives in the pod netns.
  std::thread pod([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    for (int i = 0; i < 20; ++i) {
      std::string peer;
      tcp.insert(TcpRequest("10.96.0.10", 80, &peer));
      peers.push_back(peer);
    }
    for (bool connected : {false, true}) {
      std::string f;
      udp.push_back(UdpRequest("10.96.0.53", 53, connected, &f));
      from.push_back(f);
    }
  });
  pod.join();
  EXPECT_EQ(tcp, (std::set<std::string>{"10.0.0.11:8080", "10.0.0.12:8080"}));
  for (const auto& p : peers) EXPECT_EQ(p, "10.96.0.10:80");
  ASSERT_EQ(udp.size(), 2u);
  for (size_t i = 0; i < udp.size(); ++i) {
    EXPECT_EQ(udp[i], "10.0.0.13:5353");
    EXPECT_EQ(from[i], "10.96.0.53:53");
  }
}

TEST_F(SockLbTest, RemovingABackendDeletesItsConntrackEntriesOnly) {
  map_.reset();
  dp_.reset();
  DatapathOptions opts;
  opts.bpffs_dir = lab_->bpffs();
  opts.load_tc = true;
  auto dp = Datapath::Open(opts);
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = *std::move(dp);
  map_ = std::make_unique<ServiceMap>(dp_->maps());
  Service np = MakeService("np", "10.96.0.30", {{"http", Protocol::kTcp, 80, 30080}});
  np.type = ServiceType::kNodePort;
  state_.services["default/np"] = np;
  state_.endpoint_slices["default/np-a"] =
      MakeSlice("np", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  // Backend ids by address, from the backends map.
  std::map<std::string, uint32_t> id_of;
  uint32_t key = 0, next = 0;
  bool first = true;
  while (bpf_map_get_next_key(dp_->maps().backends, first ? nullptr : &key, &next) == 0) {
    first = false;
    key = next;
    skiff_lb4_backend b{};
    ASSERT_EQ(bpf_map_lookup_elem(dp_->maps().backends, &key, &b), 0);
    id_of[Ipv4ToString(b.address)] = key;
  }
  ASSERT_EQ(id_of.size(), 2u);
  // Two tracked flows as tc would have left them, one per backend.
  auto flow = [&](uint16_t sport, const std::string& backend) {
    skiff_ct4_key k{};
    inet_pton(AF_INET, "192.168.50.2", &k.saddr);
    inet_pton(AF_INET, "192.168.50.1", &k.daddr);
    k.sport = htons(sport);
    k.dport = htons(30080);
    k.proto = IPPROTO_TCP;
    k.dir = SKIFF_CT_DIR_ORIG;
    skiff_ct4_value v{};
    inet_pton(AF_INET, backend.c_str(), &v.new_daddr);
    v.new_dport = htons(8080);
    v.backend_id = id_of.at(backend);
    EXPECT_EQ(bpf_map_update_elem(dp_->maps().ct, &k, &v, BPF_ANY), 0);
    return k;
  };
  skiff_ct4_key gone = flow(40001, "10.0.0.11"), kept = flow(40002, "10.0.0.12");
  state_.endpoint_slices["default/np-a"] = MakeSlice("np", {"10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  skiff_ct4_value v{};
  EXPECT_NE(bpf_map_lookup_elem(dp_->maps().ct, &gone, &v), 0) << "flow of the removed backend still tracked";
  EXPECT_EQ(bpf_map_lookup_elem(dp_->maps().ct, &kept, &v), 0) << "flow of a live backend was dropped";
}

TEST_F(SockLbTest, ServiceWithoutEndpointsRefusesAtOnce) {
  state_.services["default/empty"] = MakeService("empty", "10.96.0.20", {{"http", Protocol::kTcp, 80, 0},
                                                                          {"dns", Protocol::kUdp, 53, 0}});
  Program();
  auto t0 = std::chrono::steady_clock::now();
  int err = 0;
  std::string got = TcpRequest("10.96.0.20", 80, nullptr, &err);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(err, ECONNREFUSED) << got;
  EXPECT_LT(took, std::chrono::milliseconds(100));
  err = 0;
  got = UdpRequest("10.96.0.20", 53, false, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  err = 0;
  got = UdpRequest("10.96.0.20", 53, true, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  EXPECT_GE(map_->ReadCounters()["default/empty:http/TCP"].refused, 1u);

  // Endpoints arrive: the same address now connects.
  state_.endpoint_slices["default/empty-a"] = MakeSlice("empty", {"10.0.0.13"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  EXPECT_EQ(TcpRequest("10.96.0.20", 80), "10.0.0.13:8080");
}

TEST_F(SockLbTest, SessionAffinityPinsTheClientToOneBackend) {
  Service s = MakeService("sticky", "10.96.0.30", {{"http", Protocol::kTcp, 80, 0}});
  s.affinity_client_ip = true;
  s.affinity_timeout_s = 60;
  state_.services["default/sticky"] = s;
  state_.endpoint_slices["default/sticky-a"] =
      MakeSlice("sticky", {"10.0.0.11", "10.0.0.12", "10.0.0.13"}, {{"http", Protocol::kTcp, 8080}});
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) seen.insert(TcpRequest("10.96.0.30", 80));
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_TRUE(seen.begin()->rfind("10.0.0.1", 0) == 0) << *seen.begin();

  // The pinned backend leaves: the client moves to a remaining one.
  std::string pinned = seen.begin()->substr(0, seen.begin()->find(':'));
  std::vector<std::string> rest;
  for (std::string ip : {"10.0.0.11", "10.0.0.12", "10.0.0.13"})
    if (ip != pinned) rest.push_back(ip);
  state_.endpoint_slices["default/sticky-a"] = MakeSlice("sticky", rest, {{"http", Protocol::kTcp, 8080}});
  Program();
  seen.clear();
  for (int i = 0; i < 10; ++i) seen.insert(TcpRequest("10.96.0.30", 80));
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_NE(seen.begin()->substr(0, seen.begin()->find(':')), pinned);
}

TEST_F(SockLbTest, OneServiceWithSeveralPortsAndProtocols) {
  state_.services["default/multi"] = MakeService(
      "multi", "10.96.0.40",
      {{"http", Protocol::kTcp, 80, 0}, {"admin", Protocol::kTcp, 81, 0}, {"dns", Protocol::kUdp, 53, 0}});
  state_.endpoint_slices["default/multi-a"] = MakeSlice(
      "multi", {"10.0.0.12"},
      {{"http", Protocol::kTcp, 8080}, {"admin", Protocol::kTcp, 9090}, {"dns", Protocol::kUdp, 5353}});
  Program();
  EXPECT_EQ(TcpRequest("10.96.0.40", 80), "10.0.0.12:8080");
  EXPECT_EQ(TcpRequest("10.96.0.40", 81), "10.0.0.12:9090");
  EXPECT_EQ(UdpRequest("10.96.0.40", 53, false), "10.0.0.12:5353");
}

TEST_F(SockLbTest, TerminatingEndpointsServeOnlyWhenNoneIsReady) {
  state_.services["default/drain"] = MakeService("drain", "10.96.0.50", {{"http", Protocol::kTcp, 80, 0}});
  EndpointSlice es = MakeSlice("drain", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  es.endpoints[1].ready = false;
  es.endpoints[1].serving = true;
  es.endpoints[1].terminating = true;
  state_.endpoint_slices["default/drain-a"] = es;
  Program();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(TcpRequest("10.96.0.50", 80), "10.0.0.11:8080");
  es.endpoints[0].ready = false;
  es.endpoints[0].serving = false;
  es.endpoints[0].terminating = true;
  state_.endpoint_slices["default/drain-a"] = es;
  Program();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(TcpRequest("10.96.0.50", 80), "10.0.0.12:8080");
}

TEST_F(SockLbTest, InternalTrafficPolicyLocalUsesOnlyThisNodesEndpoints) {
  Service s = MakeService("local", "10.96.0.60", {{"http", Protocol::kTcp, 80, 0}});
  s.internal_policy_local = true;
  state_.services["default/local"] = s;
  EndpointSlice es = MakeSlice("local", {"10.0.0.11", "10.0.0.12"}, {{"http", Protocol::kTcp, 8080}});
  es.endpoints[0].node_name = "node-b";
  state_.endpoint_slices["default/local-a"] = es;
  Program();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(TcpRequest("10.96.0.60", 80), "10.0.0.12:8080");
}

TEST_F(SockLbTest, NonServiceTrafficIsLeftAlone) {
  Program();
  EXPECT_EQ(TcpRequest("10.0.0.11", 8080), "10.0.0.11:8080");
}

TEST_F(SockLbTest, ChurnOfTenThousandServicesNeverFailsAConnection) {
  // 10k services x 2 backends; services 0..3 point at the live lab backends,
  // the rest at addresses nobody connects to.
  auto backend_ip = [](int svc, int which) {
    return "10.1." + std::to_string((svc * 2 + which) / 250) + "." + std::to_string((svc * 2 + which) % 250 + 1);
  };
  const int kServices = 10000;
  for (int i = 0; i < kServices; ++i) {
    std::string name = "svc" + std::to_string(i);
    std::string vip = "10.96." + std::to_string(1 + i / 250) + "." + std::to_string(i % 250 + 1);
    state_.services["default/" + name] = MakeService(name, vip, {{"http", Protocol::kTcp, 80, 0}});
    std::vector<std::string> ips = i < 4 ? std::vector<std::string>{"10.0.0.11", "10.0.0.12"}
                                         : std::vector<std::string>{backend_ip(i, 0), backend_ip(i, 1)};
    state_.endpoint_slices["default/" + name + "-a"] = MakeSlice(name, ips, {{"http", Protocol::kTcp, 8080}});
  }
  auto t0 = std::chrono::steady_clock::now();
  Program();
  auto full = std::chrono::steady_clock::now() - t0;
  std::cout << "programmed 10000 services from empty in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(full).count() << " ms\n";

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string last_error;
  std::thread client([&] {
    if (!lab_->EnterNetnsThisThread()) return;
    int n = 0;
    while (!stop) {
      int i = n++ % 4;
      std::string vip = "10.96.1." + std::to_string(i + 1);
      std::string got = TcpRequest(vip, 80);
      if (got.rfind("10.0.0.1", 0) == 0) ++ok;
      else {
        ++failed;
        last_error = vip + " -> " + got;
      }
    }
  });
  std::mt19937 rng(42);
  const char* live[] = {"10.0.0.11", "10.0.0.12", "10.0.0.13"};
  uint64_t writes = 0, deletes = 0;
  auto c0 = std::chrono::steady_clock::now();
  for (int change = 0; change < 1000; ++change) {
    if (change % 10 == 0) {
      // Connections must really overlap the churn: every 10 changes wait
      // for the client to complete one more (bounded, in case it is stuck).
      int seen = ok.load() + failed.load();
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (ok.load() + failed.load() == seen && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
    }
    // Every fourth change hits a service the client is using.
    int i = change % 4 == 0 ? static_cast<int>(rng() % 4) : static_cast<int>(rng() % kServices);
    EndpointSlice& es = state_.endpoint_slices["default/svc" + std::to_string(i) + "-a"];
    std::vector<std::string> ips;
    if (i < 4) {
      int a = rng() % 3, b = (a + 1 + rng() % 2) % 3;
      ips = {live[a], live[b]};
      if (rng() % 3 == 0) ips.pop_back();  // sometimes a single backend
    } else {
      ips = {backend_ip(i, 0), "10.2." + std::to_string(rng() % 250) + "." + std::to_string(rng() % 250 + 1)};
    }
    es = MakeSlice("svc" + std::to_string(i), ips, {{"http", Protocol::kTcp, 8080}});
    ChangeSet changes;
    changes.slices.insert("default/svc" + std::to_string(i) + "-a");
    auto st = map_->ApplyDelta(builder_.Update(state_, changes));
    ASSERT_TRUE(st.ok()) << st.status();
    writes += st->map_writes;
    deletes += st->map_deletes;
  }
  auto churn = std::chrono::steady_clock::now() - c0;
  stop = true;
  client.join();
  std::cout << "1000 endpoint changes: " << writes << " map writes, " << deletes << " deletes, "
            << std::chrono::duration_cast<std::chrono::milliseconds>(churn).count() << " ms total (incl. diffing)\n";
  EXPECT_LE(writes + deletes, 1000u * 6) << "an endpoint change must touch a handful of entries";
  EXPECT_GE(ok.load(), 100);
  EXPECT_EQ(failed.load(), 0) << last_error;
}

// IPv6 (dual-stack) socket LB: the lab's veth carries ULA addresses inside
// the lab's namespaces only; the VIPs exist only in the lb6 maps.
class SockLb6Test : public SockLbTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: netns, cgroups, BPF";
    lab_ = std::make_unique<Lab>("s6");
    ASSERT_TRUE(lab_->ok()) << lab_->error();
    ASSERT_TRUE(lab_->AddIpv6()) << lab_->error();
    ASSERT_TRUE(lab_->AddBackendAddress(11)) << lab_->error();
    for (int n : {11, 12}) ASSERT_TRUE(lab_->AddBackendAddress6(n)) << lab_->error();
    ASSERT_TRUE(lab_->StartServers({8080, 5353})) << lab_->error();
    OpenDatapath();
  }
  // A dual-stack service as Kubernetes writes it: clusterIPs of both
  // families, one EndpointSlice per family.
  void DualStack(const std::string& name, const std::string& vip4, const std::string& vip6, Protocol proto,
                 int port, int target, bool with_endpoints) {
    Service s = MakeService(name, vip4, {{"p", proto, static_cast<uint16_t>(port), 0}});
    s.cluster_ips.push_back(vip6);
    state_.services["default/" + name] = s;
    if (!with_endpoints) return;
    state_.endpoint_slices["default/" + name + "-4"] =
        MakeSlice(name, {"10.0.0.11"}, {{"p", proto, static_cast<uint16_t>(target)}}, "4");
    state_.endpoint_slices["default/" + name + "-6"] =
        MakeSlice(name, {"fd00:5::11", "fd00:5::12"}, {{"p", proto, static_cast<uint16_t>(target)}}, "6");
  }
};

TEST_F(SockLb6Test, TcpConnectToAnIpv6ClusterIpReachesAnIpv6BackendAndPeerIsTheVip) {
  DualStack("web6", "10.96.0.60", "fd00:96::60", Protocol::kTcp, 80, 8080, true);
  Program();
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) {
    std::string peer;
    std::string got = TcpRequest("fd00:96::60", 80, &peer);
    ASSERT_TRUE(got == "[fd00:5::11]:8080" || got == "[fd00:5::12]:8080") << got;
    EXPECT_EQ(peer, "[fd00:96::60]:80");
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 2u) << "random selection should reach both IPv6 backends in 30 connects";
  // The IPv4 family of the same service is untouched.
  std::string peer;
  EXPECT_EQ(TcpRequest("10.96.0.60", 80, &peer), "10.0.0.11:8080");
  EXPECT_EQ(peer, "10.96.0.60:80");
  EXPECT_EQ(map_->ReadCounters()["default/web6:p/TCP"].connections, 31u);

  // Recover() reads the IPv6 entries back: a second ServiceMap on the same
  // maps finds nothing to write.
  ServiceMap again(dp_->maps());
  ASSERT_TRUE(again.Recover().ok());
  auto st = again.Apply(ComputeDesired(state_, node_));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->map_writes, 0u);
  EXPECT_EQ(st->map_deletes, 0u);

  // An IPv6 external IP of the service, connected to from the node.
  state_.services["default/web6"].external_ips = {"fd00:ee::60"};
  Program();
  std::string got = TcpRequest("fd00:ee::60", 80, &peer);
  EXPECT_TRUE(got == "[fd00:5::11]:8080" || got == "[fd00:5::12]:8080") << got;
  EXPECT_EQ(peer, "[fd00:ee::60]:80");

  // Removing the IPv6 slice leaves the IPv6 VIP refusing, the IPv4 one working.
  state_.endpoint_slices.erase("default/web6-6");
  Program();
  int err = 0;
  TcpRequest("fd00:96::60", 80, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED);
  EXPECT_EQ(TcpRequest("10.96.0.60", 80), "10.0.0.11:8080");
}

TEST_F(SockLb6Test, UnconnectedUdpSendmsg6IsTranslatedPerDatagramAndRecvmsg6ShowsTheVip) {
  DualStack("dns6", "10.96.0.63", "fd00:96::53", Protocol::kUdp, 53, 5353, true);
  Program();
  // One unconnected socket, many datagrams: each sendmsg picks a backend.
  sockaddr_in6 vip{};
  vip.sin6_family = AF_INET6;
  vip.sin6_port = htons(53);
  inet_pton(AF_INET6, "fd00:96::53", &vip.sin6_addr);
  UniqueFd s(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s);
  timeval tv{2, 0};
  setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) {
    ASSERT_EQ(sendto(s.get(), "q", 1, 0, reinterpret_cast<sockaddr*>(&vip), sizeof(vip)), 1) << strerror(errno);
    char buf[128];
    sockaddr_in6 from{};
    socklen_t fl = sizeof(from);
    ssize_t n = recvfrom(s.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &fl);
    ASSERT_GT(n, 0) << strerror(errno);
    std::string got(buf, n);
    ASSERT_TRUE(got == "[fd00:5::11]:5353" || got == "[fd00:5::12]:5353") << got;
    char fb[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &from.sin6_addr, fb, sizeof(fb));
    EXPECT_EQ(std::string(fb), "fd00:96::53");
    EXPECT_EQ(ntohs(from.sin6_port), 53);
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 2u) << "per-datagram selection should reach both IPv6 backends";
  std::string from;
  std::string got = UdpRequest("fd00:96::53", 53, /*connected=*/true, &from);
  EXPECT_TRUE(got == "[fd00:5::11]:5353" || got == "[fd00:5::12]:5353") << got;
  EXPECT_EQ(from, "[fd00:96::53]:53");
}

TEST_F(SockLb6Test, Ipv6ServiceWithoutEndpointsRefusesAtOnce) {
  DualStack("empty6", "10.96.0.64", "fd00:96::64", Protocol::kTcp, 80, 8080, false);
  Service u = MakeService("udp6", "fd00:96::65", {{"p", Protocol::kUdp, 53, 0}});
  state_.services["default/udp6"] = u;  // single-stack IPv6
  Program();
  auto t0 = std::chrono::steady_clock::now();
  int err = 0;
  std::string got = TcpRequest("fd00:96::64", 80, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  err = 0;
  got = UdpRequest("fd00:96::65", 53, false, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  err = 0;
  got = UdpRequest("fd00:96::65", 53, true, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED) << got;
  EXPECT_GE(map_->ReadCounters()["default/empty6:p/TCP"].refused, 1u);
  // A single-stack IPv6 service gets no IPv4 frontend at all.
  for (const auto& [fk, f] : ComputeDesired(state_, node_).frontends) {
    if (f.service_port.rfind("default/udp6:", 0) == 0) {
      EXPECT_TRUE(fk.v6);
    }
  }

  // IPv6 endpoints arrive: the same address now connects.
  state_.endpoint_slices["default/empty6-6"] =
      MakeSlice("empty6", {"fd00:5::12"}, {{"p", Protocol::kTcp, 8080}}, "6");
  Program();
  EXPECT_EQ(TcpRequest("fd00:96::64", 80), "[fd00:5::12]:8080");
}

TEST_F(SockLb6Test, DualStackSocketsToAnIpv4MappedClusterIpAreTranslatedAndShowTheVip) {
  DualStack("mapped", "10.96.0.66", "fd00:96::66", Protocol::kTcp, 80, 8080, true);
  DualStack("mdns", "10.96.0.67", "fd00:96::67", Protocol::kUdp, 53, 5353, true);
  Program();
  // An AF_INET6 socket speaking IPv4 (::ffff:a.b.c.d), as many runtimes do.
  std::string peer;
  EXPECT_EQ(TcpRequest("::ffff:10.96.0.66", 80, &peer), "10.0.0.11:8080");
  EXPECT_EQ(peer, "[::ffff:10.96.0.66]:80");
  for (bool connected : {false, true}) {
    std::string from;
    EXPECT_EQ(UdpRequest("::ffff:10.96.0.67", 53, connected, &from), "10.0.0.11:5353") << connected;
    EXPECT_EQ(from, "[::ffff:10.96.0.67]:53") << connected;
  }
}

TEST_F(SockLb6Test, SessionAffinityPinsAnIpv6ClientToOneIpv6Backend) {
  DualStack("sticky6", "10.96.0.68", "fd00:96::68", Protocol::kTcp, 80, 8080, true);
  state_.services["default/sticky6"].affinity_client_ip = true;
  state_.services["default/sticky6"].affinity_timeout_s = 60;
  Program();
  std::string first = TcpRequest("fd00:96::68", 80);
  ASSERT_TRUE(first == "[fd00:5::11]:8080" || first == "[fd00:5::12]:8080") << first;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(TcpRequest("fd00:96::68", 80), first);
  // The IPv4 family of the same service keeps its own entry (never an IPv6
  // backend id looked up as IPv4).
  for (int i = 0; i < 5; ++i) EXPECT_EQ(TcpRequest("10.96.0.68", 80), "10.0.0.11:8080");
  EXPECT_EQ(TcpRequest("fd00:96::68", 80), first);
  // The pinned backend leaves: the client moves to the other one and stays.
  state_.endpoint_slices["default/sticky6-6"] = MakeSlice(
      "sticky6", {first == "[fd00:5::11]:8080" ? "fd00:5::12" : "fd00:5::11"}, {{"p", Protocol::kTcp, 8080}}, "6");
  Program();
  std::string second = TcpRequest("fd00:96::68", 80);
  EXPECT_NE(second, first);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(TcpRequest("fd00:96::68", 80), second);
}

TEST_F(SockLb6Test, ConnectedUdp6SocketToARemovedIpv6BackendIsAborted) {
  DualStack("dnsx", "10.96.0.69", "fd00:96::69", Protocol::kUdp, 53, 5353, false);
  state_.endpoint_slices["default/dnsx-6"] = MakeSlice("dnsx", {"fd00:5::11"}, {{"p", Protocol::kUdp, 5353}}, "6");
  Program();
  ConnectedUdp moved("fd00:96::69", 53);
  ASSERT_EQ(moved.Ask(), "[fd00:5::11]:5353");
  ConnectedUdp direct("fd00:5::11", 5353);  // to the pod address itself: left alone
  ASSERT_EQ(direct.Ask(), "[fd00:5::11]:5353");
  state_.endpoint_slices["default/dnsx-6"] = MakeSlice("dnsx", {"fd00:5::12"}, {{"p", Protocol::kUdp, 5353}}, "6");
  Program();
  if (dp_->maps().udp_destroy_link < 0) GTEST_FAIL() << "sock_destroy object did not load on this kernel";
  EXPECT_EQ(moved.PendingError(), ECONNABORTED);
  EXPECT_EQ(direct.PendingError(), 0);
  EXPECT_EQ(direct.Ask(), "[fd00:5::11]:5353");
  ConnectedUdp again("fd00:96::69", 53);
  EXPECT_EQ(again.Ask(), "[fd00:5::12]:5353");
}

TEST_F(SockLb6Test, Ipv6ClusterIpTcpAndUdpFromAPodNetnsReachIpv6BackendsAndShowTheVip) {
  ASSERT_TRUE(lab_->AddPod()) << lab_->error();
  ASSERT_TRUE(lab_->AddPod6()) << lab_->error();
  DualStack("podweb", "10.96.0.70", "fd00:96::70", Protocol::kTcp, 80, 8080, true);
  DualStack("poddns", "10.96.0.71", "fd00:96::71", Protocol::kUdp, 53, 5353, true);
  Program();
  std::set<std::string> tcp;
  std::vector<std::string> peers, udp, from;
  // This process stays in the lab cgroup; the thread lives in the pod netns.
  std::thread pod([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    // Wait until the routed IPv6 path (pod -> node -> backends) is up:
    // neighbour discovery over fresh veths can take a few seconds.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      int err = 0;
      TcpRequest("fd00:5::11", 8080, nullptr, &err);
      if (err == 0 || std::chrono::steady_clock::now() > deadline) break;
    }
    for (int i = 0; i < 20; ++i) {
      std::string peer;
      tcp.insert(TcpRequest("fd00:96::70", 80, &peer));
      peers.push_back(peer);
    }
    for (bool connected : {false, true}) {
      std::string f;
      udp.push_back(UdpRequest("fd00:96::71", 53, connected, &f));
      from.push_back(f);
    }
  });
  pod.join();
  EXPECT_EQ(tcp, (std::set<std::string>{"[fd00:5::11]:8080", "[fd00:5::12]:8080"}));
  ASSERT_EQ(peers.size(), 20u);
  for (const auto& p : peers) EXPECT_EQ(p, "[fd00:96::70]:80");
  ASSERT_EQ(udp.size(), 2u);
  for (size_t i = 0; i < udp.size(); ++i) {
    EXPECT_TRUE(udp[i] == "[fd00:5::11]:5353" || udp[i] == "[fd00:5::12]:5353") << udp[i];
    EXPECT_EQ(from[i], "[fd00:96::71]:53");
  }
}

}  // namespace
}  // namespace skiff::proxy
