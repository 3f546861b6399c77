/* Header-only IPv4 + TCP/UDP header access and NAT rewrites for tc
 * programs. Only option-less IPv4 headers are handled (ihl == 5); anything
 * else is left to the kernel. */
#ifndef SKIFF_BPF_LIB_NAT_H_
#define SKIFF_BPF_LIB_NAT_H_

#define SKIFF_ETH_HLEN 14
#define SKIFF_IP_OFF SKIFF_ETH_HLEN
#define SKIFF_IP_CSUM_OFF (SKIFF_IP_OFF + 10)
#define SKIFF_IP_SADDR_OFF (SKIFF_IP_OFF + 12)
#define SKIFF_IP_DADDR_OFF (SKIFF_IP_OFF + 16)
#define SKIFF_L4_OFF (SKIFF_IP_OFF + 20)
#define SKIFF_L4_SPORT_OFF (SKIFF_L4_OFF + 0)
#define SKIFF_L4_DPORT_OFF (SKIFF_L4_OFF + 2)
#define SKIFF_TCP_CSUM_OFF (SKIFF_L4_OFF + 16)
#define SKIFF_UDP_CSUM_OFF (SKIFF_L4_OFF + 6)
#define SKIFF_IPPROTO_TCP 6
#define SKIFF_IPPROTO_UDP 17

struct skiff_tuple4 {
  __be32 saddr;
  __be32 daddr;
  __be16 sport;
  __be16 dport;
  __u8 proto;
};

/* 0 on success: an IPv4 TCP/UDP packet with a plain 20-byte header. */
static __always_inline int skiff_parse4(struct __sk_buff* skb, struct skiff_tuple4* t) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > data_end) return -1;
  if (eth->h_proto != bpf_htons(0x0800)) return -1;
  struct iphdr* ip = (void*)(eth + 1);
  if ((void*)(ip + 1) > data_end) return -1;
  if (ip->ihl != 5) return -1;
  if (ip->frag_off & bpf_htons(0x3fff)) return -1; /* fragments: not ours */
  if (ip->protocol != SKIFF_IPPROTO_TCP && ip->protocol != SKIFF_IPPROTO_UDP) return -1;
  __be16* ports = (void*)(ip + 1);
  if ((void*)(ports + 2) > data_end) return -1;
  t->saddr = ip->saddr;
  t->daddr = ip->daddr;
  t->sport = ports[0];
  t->dport = ports[1];
  t->proto = ip->protocol;
  return 0;
}

/* Rewrites one address (source or destination) and its port, fixing the IP
 * and the TCP/UDP (pseudo-header) checksums incrementally. */
static __always_inline int skiff_nat4(struct __sk_buff* skb, __u8 proto, int is_source, __be32 old_addr,
                                      __be32 new_addr, __be16 old_port, __be16 new_port) {
  int csum_off = proto == SKIFF_IPPROTO_TCP ? SKIFF_TCP_CSUM_OFF : SKIFF_UDP_CSUM_OFF;
  __u64 l4flags = proto == SKIFF_IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
  int addr_off = is_source ? SKIFF_IP_SADDR_OFF : SKIFF_IP_DADDR_OFF;
  int port_off = is_source ? SKIFF_L4_SPORT_OFF : SKIFF_L4_DPORT_OFF;
  if (old_addr != new_addr) {
    if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, l4flags | BPF_F_PSEUDO_HDR | 4)) return -1;
    if (bpf_l3_csum_replace(skb, SKIFF_IP_CSUM_OFF, old_addr, new_addr, 4)) return -1;
    if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0)) return -1;
  }
  if (old_port != new_port) {
    if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4flags | 2)) return -1;
    if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0)) return -1;
  }
  return 0;
}

static __always_inline __u32 skiff_hash4(const struct skiff_tuple4* t) {
  __u32 h = t->saddr * 2654435761u;
  h ^= (t->daddr + 0x9e3779b9u) * 2246822519u;
  h ^= (((__u32)t->sport << 16) | t->dport) * 3266489917u;
  h ^= t->proto;
  h ^= h >> 15;
  h *= 668265263u;
  h ^= h >> 13;
  return h;
}

/* IPv6: a fixed 40-byte header followed directly by TCP or UDP; extension
 * headers and fragments are left to the kernel. No IP checksum; the L4
 * checksum covers the addresses through the pseudo header. */
#define SKIFF_IP6_OFF SKIFF_ETH_HLEN
#define SKIFF_IP6_SADDR_OFF (SKIFF_IP6_OFF + 8)
#define SKIFF_IP6_DADDR_OFF (SKIFF_IP6_OFF + 24)
#define SKIFF_L4_6_OFF (SKIFF_IP6_OFF + 40)
#define SKIFF_L4_6_SPORT_OFF (SKIFF_L4_6_OFF + 0)
#define SKIFF_L4_6_DPORT_OFF (SKIFF_L4_6_OFF + 2)
#define SKIFF_TCP6_CSUM_OFF (SKIFF_L4_6_OFF + 16)
#define SKIFF_UDP6_CSUM_OFF (SKIFF_L4_6_OFF + 6)

struct skiff_tuple6 {
  __be32 saddr[4];
  __be32 daddr[4];
  __be16 sport;
  __be16 dport;
  __u8 proto;
};

static __always_inline int skiff_addr6_eq(const __be32* a, const __be32* b) {
  return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline int skiff_addr6_zero(const __be32* a) { return !(a[0] | a[1] | a[2] | a[3]); }

static __always_inline void skiff_addr6_copy(__be32* dst, const __be32* src) {
  dst[0] = src[0];
  dst[1] = src[1];
  dst[2] = src[2];
  dst[3] = src[3];
}

/* 0 on success: an IPv6 TCP/UDP packet without extension headers. */
static __always_inline int skiff_parse6(struct __sk_buff* skb, struct skiff_tuple6* t) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > data_end) return -1;
  if (eth->h_proto != bpf_htons(0x86DD)) return -1;
  struct ipv6hdr* ip6 = (void*)(eth + 1);
  if ((void*)(ip6 + 1) > data_end) return -1;
  if (ip6->nexthdr != SKIFF_IPPROTO_TCP && ip6->nexthdr != SKIFF_IPPROTO_UDP) return -1;
  __be16* ports = (void*)(ip6 + 1);
  if ((void*)(ports + 2) > data_end) return -1;
  skiff_addr6_copy(t->saddr, ip6->saddr.in6_u.u6_addr32);
  skiff_addr6_copy(t->daddr, ip6->daddr.in6_u.u6_addr32);
  t->sport = ports[0];
  t->dport = ports[1];
  t->proto = ip6->nexthdr;
  return 0;
}

/* The IPv6 counterpart of skiff_nat4: the 16-byte address change goes into
 * the L4 checksum as one precomputed difference. */
static __always_inline int skiff_nat6(struct __sk_buff* skb, __u8 proto, int is_source, const __be32* old_addr,
                                      const __be32* new_addr, __be16 old_port, __be16 new_port) {
  int csum_off = proto == SKIFF_IPPROTO_TCP ? SKIFF_TCP6_CSUM_OFF : SKIFF_UDP6_CSUM_OFF;
  __u64 l4flags = proto == SKIFF_IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
  int addr_off = is_source ? SKIFF_IP6_SADDR_OFF : SKIFF_IP6_DADDR_OFF;
  int port_off = is_source ? SKIFF_L4_6_SPORT_OFF : SKIFF_L4_6_DPORT_OFF;
  if (!skiff_addr6_eq(old_addr, new_addr)) {
    __be32 from[4], to[4];
    skiff_addr6_copy(from, old_addr);
    skiff_addr6_copy(to, new_addr);
    __s64 diff = bpf_csum_diff(from, sizeof(from), to, sizeof(to), 0);
    if (diff < 0) return -1;
    if (bpf_l4_csum_replace(skb, csum_off, 0, (__u64)diff, l4flags | BPF_F_PSEUDO_HDR)) return -1;
    if (bpf_skb_store_bytes(skb, addr_off, to, sizeof(to), 0)) return -1;
  }
  if (old_port != new_port) {
    if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4flags | 2)) return -1;
    if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0)) return -1;
  }
  return 0;
}

static __always_inline __u32 skiff_hash6(const struct skiff_tuple6* t) {
  struct skiff_tuple4 folded = {
      .saddr = t->saddr[0] ^ t->saddr[1] ^ t->saddr[2] ^ t->saddr[3],
      .daddr = t->daddr[0] ^ t->daddr[1] ^ t->daddr[2] ^ t->daddr[3],
      .sport = t->sport,
      .dport = t->dport,
      .proto = t->proto,
  };
  return skiff_hash4(&folded);
}

#endif
