// tc_nodeport in the kernel with bpf_prog_test_run_opts on a table of packet
// fixtures: input packet, program (ingress/egress), expected verdict and
// expected output packet (byte for byte, checksums included). The cases run
// in order because conntrack state carries from one to the next.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "skiff_bpf/lb.h"
#include "tc_nodeport.skel.h"

namespace {

constexpr int kOk = 0, kShot = 2;
constexpr uint8_t kTcp = 6, kUdp = 17;

struct Pkt {
  uint8_t proto = kTcp;
  std::string src, dst;
  uint16_t sport = 0, dport = 0;
  uint16_t ethertype = 0x0800;
};

uint32_t Ip(const std::string& s) {
  in_addr a;
  inet_pton(AF_INET, s.c_str(), &a);
  return a.s_addr;
}

uint16_t Csum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::vector<uint8_t> Build6(const Pkt& k);

std::vector<uint8_t> Build(const Pkt& k) {
  if (k.src.find(':') != std::string::npos) return Build6(k);
  const char payload[] = "skiff-fixture";
  size_t l4len = (k.proto == kTcp ? 20 : 8) + sizeof(payload);
  std::vector<uint8_t> f(14 + 20 + l4len, 0);
  memset(f.data(), 0x02, 6);
  memset(f.data() + 6, 0x04, 6);
  f[12] = k.ethertype >> 8;
  f[13] = k.ethertype & 0xff;
  if (k.ethertype != 0x0800) return f;
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  uint16_t tot = htons(20 + l4len);
  memcpy(ip + 2, &tot, 2);
  ip[8] = 64;
  ip[9] = k.proto;
  uint32_t s = Ip(k.src), d = Ip(k.dst);
  memcpy(ip + 12, &s, 4);
  memcpy(ip + 16, &d, 4);
  uint16_t ipc = htons(Csum(ip, 20));
  memcpy(ip + 10, &ipc, 2);
  uint8_t* l4 = ip + 20;
  uint16_t sp = htons(k.sport), dp = htons(k.dport);
  memcpy(l4, &sp, 2);
  memcpy(l4 + 2, &dp, 2);
  size_t hl = k.proto == kTcp ? 20 : 8;
  if (k.proto == kTcp) {
    l4[12] = 5 << 4;
    l4[13] = 0x02;  // SYN
    l4[14] = 0xff;
    l4[15] = 0xff;
  } else {
    uint16_t ul = htons(l4len);
    memcpy(l4 + 4, &ul, 2);
  }
  memcpy(l4 + hl, payload, sizeof(payload));
  // pseudo header sum
  uint32_t sum = 0;
  sum += (ntohl(s) >> 16) + (ntohl(s) & 0xffff) + (ntohl(d) >> 16) + (ntohl(d) & 0xffff);
  sum += k.proto + l4len;
  uint16_t c = htons(Csum(l4, l4len, sum));
  memcpy(l4 + (k.proto == kTcp ? 16 : 6), &c, 2);
  return f;
}

// IPv6 + TCP/UDP, no extension headers (or `nexthdr` set to something else
// to check that such packets are left alone).
std::vector<uint8_t> Build6(const Pkt& k) {
  const char payload[] = "skiff-fixture";
  size_t l4len = (k.proto == kTcp ? 20 : 8) + sizeof(payload);
  std::vector<uint8_t> f(14 + 40 + l4len, 0);
  memset(f.data(), 0x02, 6);
  memset(f.data() + 6, 0x04, 6);
  f[12] = 0x86;
  f[13] = 0xdd;
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x60;
  uint16_t plen = htons(l4len);
  memcpy(ip + 4, &plen, 2);
  ip[6] = k.ethertype == 0x86dd ? 0 /* hop-by-hop header */ : k.proto;
  ip[7] = 64;
  inet_pton(AF_INET6, k.src.c_str(), ip + 8);
  inet_pton(AF_INET6, k.dst.c_str(), ip + 24);
  uint8_t* l4 = ip + 40;
  uint16_t sp = htons(k.sport), dp = htons(k.dport);
  memcpy(l4, &sp, 2);
  memcpy(l4 + 2, &dp, 2);
  size_t hl = k.proto == kTcp ? 20 : 8;
  if (k.proto == kTcp) {
    l4[12] = 5 << 4;
    l4[13] = 0x02;  // SYN
    l4[14] = 0xff;
    l4[15] = 0xff;
  } else {
    uint16_t ul = htons(l4len);
    memcpy(l4 + 4, &ul, 2);
  }
  memcpy(l4 + hl, payload, sizeof(payload));
  uint32_t sum = 0;
  for (int i = 8; i < 40; i += 2) sum += (ip[i] << 8) | ip[i + 1];  // both addresses
  sum += k.proto + l4len;
  uint16_t c = htons(Csum(l4, l4len, sum));
  memcpy(l4 + (k.proto == kTcp ? 16 : 6), &c, 2);
  return f;
}

uint16_t SourcePort(const std::vector<uint8_t>& f) {
  size_t off = f[12] == 0x86 ? 54 : 34;
  return (f[off] << 8) | f[off + 1];
}

struct SkelDeleter {
  void operator()(tc_nodeport* p) const { tc_nodeport__destroy(p); }
};

class TcNodePort : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to load BPF programs";
    // A fresh network namespace without routes: the program's FIB lookups
    // find nothing, so forwarded packets come back with TC_ACT_OK instead of
    // being redirected by this machine's own routes.
    orig_netns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(orig_netns_, 0);
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << strerror(errno);
    skel_.reset(tc_nodeport__open_and_load());
    ASSERT_TRUE(skel_) << "tc_nodeport__open_and_load failed (verifier?)";
    skiff_tc_config cfg{};
    cfg.node_address = Ip("192.168.50.1");
    cfg.snat_port_min = 40000;
    cfg.snat_port_max = 40009;
    cfg.ct_timeout_s = 600;
    uint32_t zero = 0;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.tc_config), &zero, &cfg, BPF_ANY), 0);
    // NodePort 30080 -> local backend; 30081 -> remote (Maglev table);
    // 30082 -> no backend; UDP 30053 -> remote; external IP 203.0.113.10:80
    // -> no backend; external IP 203.0.113.11:80 (eTP Local) -> local.
    Frontend(0, 30080, kTcp, 1, SKIFF_SVC_F_NODEPORT, {1});
    Frontend(0, 30081, kTcp, 2, SKIFF_SVC_F_NODEPORT, {2});
    Frontend(0, 30082, kTcp, 3, SKIFF_SVC_F_NODEPORT, {});
    Frontend(0, 30053, kUdp, 4, SKIFF_SVC_F_NODEPORT, {3});
    Frontend(Ip("203.0.113.10"), 80, kTcp, 5, 0, {});
    Frontend(Ip("203.0.113.11"), 80, kTcp, 6, SKIFF_SVC_F_LOCAL, {4});
    Backend(1, "10.244.1.5", 8080, kTcp, SKIFF_BE_F_LOCAL);
    Backend(2, "10.244.2.9", 8080, kTcp, 0);
    Backend(3, "10.244.2.9", 5353, kUdp, 0);
    Backend(4, "10.244.1.6", 8080, kTcp, SKIFF_BE_F_LOCAL);
    auto table = std::make_unique<skiff_lb_maglev>();
    for (auto& id : table->backend_ids) id = 2;
    uint32_t sid = 2;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb_maglev), &sid, table.get(), BPF_ANY), 0);
  }
  void Frontend(uint32_t addr, uint16_t port, uint8_t proto, uint32_t sid, uint16_t flags,
                std::vector<uint32_t> backends) {
    skiff_lb4_key k{};
    k.address = addr;
    k.dport = htons(port);
    k.proto = proto;
    k.scope = SKIFF_LB_SCOPE_EXT;
    skiff_lb4_service v{};
    v.count = backends.size();
    v.flags = flags;
    v.service_id = sid;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb4_services), &k, &v, BPF_ANY), 0);
    for (size_t i = 0; i < backends.size(); ++i) {
      k.backend_slot = i + 1;
      skiff_lb4_service s{};
      s.backend_id = backends[i];
      s.service_id = sid;
      ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb4_services), &k, &s, BPF_ANY), 0);
    }
  }
  void Backend(uint32_t id, const std::string& ip, uint16_t port, uint8_t proto, uint8_t flags) {
    skiff_lb4_backend b{};
    b.address = Ip(ip);
    b.port = htons(port);
    b.proto = proto;
    b.flags = flags;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb4_backends), &id, &b, BPF_ANY), 0);
  }
  void Frontend6(const std::string& addr, uint16_t port, uint8_t proto, uint32_t sid, uint16_t flags,
                 std::vector<uint32_t> backends) {
    skiff_lb6_key k{};
    if (!addr.empty()) inet_pton(AF_INET6, addr.c_str(), k.address);
    k.dport = htons(port);
    k.proto = proto;
    k.scope = SKIFF_LB_SCOPE_EXT;
    skiff_lb4_service v{};
    v.count = backends.size();
    v.flags = flags;
    v.service_id = sid;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb6_services), &k, &v, BPF_ANY), 0);
    for (size_t i = 0; i < backends.size(); ++i) {
      k.backend_slot = i + 1;
      skiff_lb4_service slot{};
      slot.backend_id = backends[i];
      slot.service_id = sid;
      ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb6_services), &k, &slot, BPF_ANY), 0);
    }
  }
  void Backend6(uint32_t id, const std::string& ip, uint16_t port, uint8_t proto, uint8_t flags) {
    skiff_lb6_backend b{};
    inet_pton(AF_INET6, ip.c_str(), b.address);
    b.port = htons(port);
    b.proto = proto;
    b.flags = flags;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb6_backends), &id, &b, BPF_ANY), 0);
  }
  int Run(bool ingress, std::vector<uint8_t> in, std::vector<uint8_t>* out) {
    out->assign(in.size() + 64, 0);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_out = out->data(),
                .data_size_in = static_cast<__u32>(in.size()), .data_size_out = static_cast<__u32>(out->size()),
                .repeat = 1);
    int fd = bpf_program__fd(ingress ? skel_->progs.skiff_tc_ingress : skel_->progs.skiff_tc_egress);
    EXPECT_EQ(bpf_prog_test_run_opts(fd, &opts), 0);
    out->resize(opts.data_size_out);
    return static_cast<int>(opts.retval);
  }

  void TearDown() override {
    skel_.reset();
    if (orig_netns_ >= 0) {
      setns(orig_netns_, CLONE_NEWNET);
      close(orig_netns_);
    }
  }

  std::unique_ptr<tc_nodeport, SkelDeleter> skel_;
  int orig_netns_ = -1;
};

struct Fixture {
  const char* name;
  bool ingress;
  Pkt in;
  int verdict;
  Pkt out;
  bool snat = false;  // output source port is an allocated SNAT port (checked against the range)
};

TEST_F(TcNodePort, TranslatesNodePortAndExternalIpTrafficAndReplies) {
  const std::string client = "198.51.100.7", node = "192.168.50.1";
  uint16_t snat_tcp = 0, snat_udp = 0;
  std::vector<Fixture> fixtures = {
      {"nodeport to a local backend: DNAT only", true, {kTcp, client, node, 5555, 30080}, kOk,
       {kTcp, client, "10.244.1.5", 5555, 8080}},
      {"second packet of the same flow", true, {kTcp, client, node, 5555, 30080}, kOk,
       {kTcp, client, "10.244.1.5", 5555, 8080}},
      {"local backend reply on egress: source restored", false, {kTcp, "10.244.1.5", client, 8080, 5555}, kOk,
       {kTcp, node, client, 30080, 5555}},
      {"nodeport to a remote backend: DNAT + SNAT", true, {kTcp, client, node, 5556, 30081}, kOk,
       {kTcp, node, "10.244.2.9", 0, 8080}, true},
      {"nodeport without backend: up the stack for a kernel RST", true, {kTcp, client, node, 5557, 30082}, kOk,
       {kTcp, client, node, 5557, 30082}},
      {"UDP nodeport to a remote backend", true, {kUdp, client, node, 6000, 30053}, kOk,
       {kUdp, node, "10.244.2.9", 0, 5353}, true},
      {"external IP without backend is dropped", true, {kTcp, client, "203.0.113.10", 5558, 80}, kShot,
       {kTcp, client, "203.0.113.10", 5558, 80}},
      {"externalTrafficPolicy Local: client address preserved", true, {kTcp, client, "203.0.113.11", 5559, 80},
       kOk, {kTcp, client, "10.244.1.6", 5559, 8080}},
      {"not a service port", true, {kTcp, client, node, 5560, 22}, kOk, {kTcp, client, node, 5560, 22}},
      {"not IPv4", true, {kTcp, client, node, 1, 2, 0x86dd}, kOk, {kTcp, client, node, 1, 2, 0x86dd}},
  };
  for (Fixture& f : fixtures) {
    SCOPED_TRACE(f.name);
    std::vector<uint8_t> out;
    EXPECT_EQ(Run(f.ingress, Build(f.in), &out), f.verdict);
    if (f.verdict == kShot) continue;
    Pkt want = f.out;
    if (f.snat) {
      uint16_t p = SourcePort(out);
      EXPECT_GE(p, 40000);
      EXPECT_LE(p, 40009);
      want.sport = p;
      (f.in.proto == kTcp ? snat_tcp : snat_udp) = p;
    }
    EXPECT_EQ(out, Build(want));
  }
  ASSERT_NE(snat_tcp, 0);
  // Replies of remote backends come back to the SNAT port on ingress.
  std::vector<Fixture> replies = {
      {"remote backend reply: reverse DNAT + SNAT", true, {kTcp, "10.244.2.9", node, 8080, snat_tcp}, kOk,
       {kTcp, node, client, 30081, 5556}},
      {"remote UDP reply", true, {kUdp, "10.244.2.9", node, 5353, snat_udp}, kOk, {kUdp, node, client, 30053, 6000}},
      {"unknown reply is left alone", true, {kTcp, "10.244.2.9", node, 8080, 40010}, kOk,
       {kTcp, "10.244.2.9", node, 8080, 40010}},
  };
  for (Fixture& f : replies) {
    SCOPED_TRACE(f.name);
    std::vector<uint8_t> out;
    EXPECT_EQ(Run(f.ingress, Build(f.in), &out), f.verdict);
    EXPECT_EQ(out, Build(f.out));
  }
}

// IPv6 from outside the node: the same cases on lb6_services/lb6_backends,
// ct6 and the node's IPv6 address in tc_config6.
TEST_F(TcNodePort, TranslatesIpv6NodePortAndExternalIpTrafficAndReplies) {
  const std::string client = "2001:db8:7::7", node = "fd00:50::1";
  skiff_tc_config6 cfg6{};
  inet_pton(AF_INET6, node.c_str(), cfg6.node_address6);
  uint32_t zero = 0;
  ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.tc_config6), &zero, &cfg6, BPF_ANY), 0);
  Frontend6("", 30080, kTcp, 11, SKIFF_SVC_F_NODEPORT, {11});
  Frontend6("", 30081, kTcp, 12, SKIFF_SVC_F_NODEPORT, {12});
  Frontend6("", 30082, kTcp, 13, SKIFF_SVC_F_NODEPORT, {});
  Frontend6("", 30053, kUdp, 14, SKIFF_SVC_F_NODEPORT, {13});
  Frontend6("2001:db8:10::10", 80, kTcp, 15, 0, {});
  Frontend6("2001:db8:10::11", 80, kTcp, 16, SKIFF_SVC_F_LOCAL, {14});
  Backend6(11, "fd00:244:1::5", 8080, kTcp, SKIFF_BE_F_LOCAL);
  Backend6(12, "fd00:244:2::9", 8080, kTcp, 0);
  Backend6(13, "fd00:244:2::9", 5353, kUdp, 0);
  Backend6(14, "fd00:244:1::6", 8080, kTcp, SKIFF_BE_F_LOCAL);
  // The IPv6 Maglev table of service 12 (key with the IPv6 bit).
  auto table = std::make_unique<skiff_lb_maglev>();
  for (auto& id : table->backend_ids) id = 12;
  uint32_t mkey = 12 | SKIFF_MAGLEV_KEY_V6;
  ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(skel_->maps.lb_maglev), &mkey, table.get(), BPF_ANY), 0);

  uint16_t snat_tcp = 0, snat_udp = 0;
  std::vector<Fixture> fixtures = {
      {"nodeport to a local backend: DNAT only", true, {kTcp, client, node, 5555, 30080}, kOk,
       {kTcp, client, "fd00:244:1::5", 5555, 8080}},
      {"second packet of the same flow", true, {kTcp, client, node, 5555, 30080}, kOk,
       {kTcp, client, "fd00:244:1::5", 5555, 8080}},
      {"local backend reply on egress: source restored", false, {kTcp, "fd00:244:1::5", client, 8080, 5555}, kOk,
       {kTcp, node, client, 30080, 5555}},
      {"nodeport to a remote backend: DNAT + SNAT", true, {kTcp, client, node, 5556, 30081}, kOk,
       {kTcp, node, "fd00:244:2::9", 0, 8080}, true},
      {"nodeport without backend: up the stack for a kernel RST", true, {kTcp, client, node, 5557, 30082}, kOk,
       {kTcp, client, node, 5557, 30082}},
      {"UDP nodeport to a remote backend", true, {kUdp, client, node, 6000, 30053}, kOk,
       {kUdp, node, "fd00:244:2::9", 0, 5353}, true},
      {"external IP without backend is dropped", true, {kTcp, client, "2001:db8:10::10", 5558, 80}, kShot,
       {kTcp, client, "2001:db8:10::10", 5558, 80}},
      {"externalTrafficPolicy Local: client address preserved", true,
       {kTcp, client, "2001:db8:10::11", 5559, 80}, kOk, {kTcp, client, "fd00:244:1::6", 5559, 8080}},
      {"not a service port", true, {kTcp, client, node, 5560, 22}, kOk, {kTcp, client, node, 5560, 22}},
      {"extension header: left to the kernel", true, {kTcp, client, node, 5561, 30080, 0x86dd}, kOk,
       {kTcp, client, node, 5561, 30080, 0x86dd}},
      {"another node address is not a NodePort", true, {kTcp, client, "fd00:50::2", 5562, 30080}, kOk,
       {kTcp, client, "fd00:50::2", 5562, 30080}},
  };
  for (Fixture& f : fixtures) {
    SCOPED_TRACE(f.name);
    std::vector<uint8_t> out;
    EXPECT_EQ(Run(f.ingress, Build(f.in), &out), f.verdict);
    if (f.verdict == kShot) continue;
    Pkt want = f.out;
    if (f.snat) {
      uint16_t p = SourcePort(out);
      EXPECT_GE(p, 40000);
      EXPECT_LE(p, 40009);
      want.sport = p;
      (f.in.proto == kTcp ? snat_tcp : snat_udp) = p;
    }
    EXPECT_EQ(out, Build(want));
  }
  ASSERT_NE(snat_tcp, 0);
  ASSERT_NE(snat_udp, 0);
  std::vector<Fixture> replies = {
      {"remote backend reply: reverse DNAT + SNAT", true, {kTcp, "fd00:244:2::9", node, 8080, snat_tcp}, kOk,
       {kTcp, node, client, 30081, 5556}},
      {"remote UDP reply", true, {kUdp, "fd00:244:2::9", node, 5353, snat_udp}, kOk,
       {kUdp, node, client, 30053, 6000}},
      {"unknown reply is left alone", true, {kTcp, "fd00:244:2::9", node, 8080, 40010}, kOk,
       {kTcp, "fd00:244:2::9", node, 8080, 40010}},
  };
  for (Fixture& f : replies) {
    SCOPED_TRACE(f.name);
    std::vector<uint8_t> out;
    EXPECT_EQ(Run(f.ingress, Build(f.in), &out), f.verdict);
    EXPECT_EQ(out, Build(f.out));
  }
  // The flows are in ct6, not ct4.
  skiff_ct6_key k{}, next{};
  int flows6 = 0;
  bool first = true;
  while (bpf_map_get_next_key(bpf_map__fd(skel_->maps.ct6), first ? nullptr : &k, &next) == 0) {
    first = false;
    k = next;
    ++flows6;
  }
  EXPECT_GE(flows6, 8);
}

TEST_F(TcNodePort, SnatPortsRunOutCleanly) {
  // 10 SNAT ports, up to 8 probes per flow: new flows eventually fail with a
  // drop, never with a reused port.
  std::set<uint16_t> used;
  int dropped = 0;
  for (int i = 0; i < 40; ++i) {
    std::vector<uint8_t> out;
    int v = Run(true, Build({kTcp, "198.51.100.8", "192.168.50.1", static_cast<uint16_t>(7000 + i), 30081}), &out);
    if (v == kShot) {
      ++dropped;
      continue;
    }
    uint16_t p = SourcePort(out);
    EXPECT_TRUE(used.insert(p).second) << "SNAT port reused: " << p;
  }
  EXPECT_LE(used.size(), 10u);
  EXPECT_GT(dropped, 0);
}

}  // namespace
