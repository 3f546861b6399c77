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

#endif
