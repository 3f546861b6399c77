// NodePort and external-IP load balancing for traffic that arrives from
// outside the node (tc ingress/egress on the node's interfaces), IPv4 and
// IPv6.
//
// A new flow to a frontend of scope EXT picks a backend with Maglev (the
// same flow hashes to the same backend on every node), or the remembered one
// under sessionAffinity. A local backend gets DNAT only; a remote one gets
// DNAT plus SNAT to the node address so its reply comes back here. Both
// directions are recorded in the LRU conntrack map (ct4) so later packets and
// replies are translated without another lookup. A frontend with no backend:
// NodePort packets go up the stack, where no socket listens on the port and
// the kernel answers with a TCP reset / ICMP port unreachable; external IPs
// are dropped.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/lb.h"
#include "lib/nat.h"
#include "skiff_bpf/lb.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_MAGLEV);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct skiff_lb_maglev);
} lb_maglev SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SKIFF_LB_MAX_CT);
  __type(key, struct skiff_ct4_key);
  __type(value, struct skiff_ct4_value);
} ct4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct skiff_tc_config);
} tc_config SEC(".maps");

// IPv6 (see lb.h): conntrack of the same shape with 16-byte addresses, and
// the node's IPv6 address for NodePort and SNAT.
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SKIFF_LB_MAX_CT);
  __type(key, struct skiff_ct6_key);
  __type(value, struct skiff_ct6_value);
} ct6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct skiff_tc_config6);
} tc_config6 SEC(".maps");

static __always_inline struct skiff_ct4_value* ct_lookup(const struct skiff_tuple4* t, __u8 dir, __u64 now,
                                                         __u32 timeout_s) {
  struct skiff_ct4_key k = {
      .saddr = t->saddr, .daddr = t->daddr, .sport = t->sport, .dport = t->dport, .proto = t->proto, .dir = dir};
  struct skiff_ct4_value* v = bpf_map_lookup_elem(&ct4, &k);
  if (!v) return 0;
  if (timeout_s && now - v->last_seen_ns > (__u64)timeout_s * 1000000000ULL) return 0;
  v->last_seen_ns = now;
  return v;
}

// After SNAT (or the reverse translation of a SNATed reply) the packet's
// source is a node address: the kernel would drop it as a martian if it
// were handed back to the stack, so send it out directly to the next hop.
static __always_inline int forward(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct iphdr* ip = data + SKIFF_ETH_HLEN;
  if ((void*)(ip + 1) > data_end) return TC_ACT_SHOT;
  struct bpf_fib_lookup fib = {};
  fib.family = 2; /* AF_INET */
  fib.tos = ip->tos;
  fib.l4_protocol = ip->protocol;
  fib.tot_len = bpf_ntohs(ip->tot_len);
  fib.ipv4_src = ip->saddr;
  fib.ipv4_dst = ip->daddr;
  fib.ifindex = skb->ingress_ifindex;
  int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
  if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
    return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
  return TC_ACT_OK;  // no route: let the stack decide
}

static __always_inline int apply(struct __sk_buff* skb, const struct skiff_tuple4* t, const struct skiff_ct4_value* v) {
  if (v->new_daddr && skiff_nat4(skb, t->proto, 0, t->daddr, v->new_daddr, t->dport, v->new_dport)) return -1;
  if (v->new_saddr && skiff_nat4(skb, t->proto, 1, t->saddr, v->new_saddr, t->sport, v->new_sport)) return -1;
  return 0;
}

static __always_inline __u32 select_backend(const struct skiff_lb4_service* svc, struct skiff_lb4_key* key,
                                            const struct skiff_tuple4* t, __u64 now) {
  __u32 id = 0;
  if (svc->flags & SKIFF_SVC_F_AFFINITY) id = lb_affinity_get(t->saddr, svc, now);
  if (!id) {
    __u32 h = skiff_hash4(t);
    __u32 sid = svc->service_id;
    struct skiff_lb_maglev* tbl = bpf_map_lookup_elem(&lb_maglev, &sid);
    if (tbl) {
      __u32 idx = h % SKIFF_MAGLEV_TABLE_SIZE;
      // Keep the bound check: clang lowers % to div/mul/sub, which the
      // verifier cannot bound on its own.
      barrier_var(idx);
      if (idx < SKIFF_MAGLEV_TABLE_SIZE) id = tbl->backend_ids[idx];
    }
    if (!id || !bpf_map_lookup_elem(&lb4_backends, &id)) id = lb4_slot_backend(key, svc->count, h);
  }
  if (id && (svc->flags & SKIFF_SVC_F_AFFINITY)) lb_affinity_put(t->saddr, svc, id, now);
  return id;
}

// ---- IPv6 -----------------------------------------------------------------
// The same flow handling as IPv4 on ct6, lb6_services and lb6_backends.

static __always_inline struct skiff_ct6_value* ct6_lookup(const struct skiff_tuple6* t, __u8 dir, __u64 now,
                                                          __u32 timeout_s) {
  struct skiff_ct6_key k = {.sport = t->sport, .dport = t->dport, .proto = t->proto, .dir = dir};
  skiff_addr6_copy(k.saddr, t->saddr);
  skiff_addr6_copy(k.daddr, t->daddr);
  struct skiff_ct6_value* v = bpf_map_lookup_elem(&ct6, &k);
  if (!v) return 0;
  if (timeout_s && now - v->last_seen_ns > (__u64)timeout_s * 1000000000ULL) return 0;
  v->last_seen_ns = now;
  return v;
}

static __always_inline int forward6(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct ipv6hdr* ip6 = data + SKIFF_ETH_HLEN;
  if ((void*)(ip6 + 1) > data_end) return TC_ACT_SHOT;
  struct bpf_fib_lookup fib = {};
  fib.family = 10; /* AF_INET6 */
  fib.l4_protocol = ip6->nexthdr;
  fib.tot_len = bpf_ntohs(ip6->payload_len) + 40;
  skiff_addr6_copy(fib.ipv6_src, ip6->saddr.in6_u.u6_addr32);
  skiff_addr6_copy(fib.ipv6_dst, ip6->daddr.in6_u.u6_addr32);
  fib.ifindex = skb->ingress_ifindex;
  int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
  if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
    return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
  return TC_ACT_OK;
}

static __always_inline int apply6(struct __sk_buff* skb, const struct skiff_tuple6* t,
                                  const struct skiff_ct6_value* v) {
  if (!skiff_addr6_zero(v->new_daddr) &&
      skiff_nat6(skb, t->proto, 0, t->daddr, v->new_daddr, t->dport, v->new_dport))
    return -1;
  if (!skiff_addr6_zero(v->new_saddr) &&
      skiff_nat6(skb, t->proto, 1, t->saddr, v->new_saddr, t->sport, v->new_sport))
    return -1;
  return 0;
}

static __always_inline __u64 affinity6_client(const struct skiff_tuple6* t) {
  __u64 folded = ((__u64)(t->saddr[0] ^ t->saddr[2]) << 32) | (t->saddr[1] ^ t->saddr[3]);
  return SKIFF_LB_AFFINITY_TC6 | (folded & (SKIFF_LB_AFFINITY_TC6 - 1));
}

static __always_inline __u32 select_backend6(const struct skiff_lb4_service* svc, struct skiff_lb6_key* key,
                                             const struct skiff_tuple6* t, __u64 now) {
  __u32 id = 0;
  __u64 client = affinity6_client(t);
  if (svc->flags & SKIFF_SVC_F_AFFINITY) {
    struct skiff_lb_affinity_key akey = {.client = client, .service_id = svc->service_id};
    struct skiff_lb_affinity_value* av = bpf_map_lookup_elem(&lb_affinity, &akey);
    if (av && now - av->last_used_ns <= (__u64)svc->affinity_timeout * 1000000000ULL &&
        bpf_map_lookup_elem(&lb6_backends, &av->backend_id))
      id = av->backend_id;
  }
  if (!id) {
    __u32 h = skiff_hash6(t);
    __u32 mkey = svc->service_id | SKIFF_MAGLEV_KEY_V6;
    struct skiff_lb_maglev* tbl = bpf_map_lookup_elem(&lb_maglev, &mkey);
    if (tbl) {
      __u32 idx = h % SKIFF_MAGLEV_TABLE_SIZE;
      barrier_var(idx);
      if (idx < SKIFF_MAGLEV_TABLE_SIZE) id = tbl->backend_ids[idx];
    }
    if (!id || !bpf_map_lookup_elem(&lb6_backends, &id)) {
      key->backend_slot = (__u16)(1 + h % svc->count);
      struct skiff_lb4_service* slot = bpf_map_lookup_elem(&lb6_services, key);
      key->backend_slot = 0;
      id = slot ? slot->backend_id : 0;
    }
  }
  if (id && (svc->flags & SKIFF_SVC_F_AFFINITY)) lb_affinity_put(client, svc, id, now);
  return id;
}

static __noinline int ingress6(struct __sk_buff* skb) {
  struct skiff_tuple6 t;
  if (skiff_parse6(skb, &t)) return TC_ACT_OK;
  __u32 zero = 0;
  struct skiff_tc_config* cfg = bpf_map_lookup_elem(&tc_config, &zero);
  struct skiff_tc_config6* cfg6 = bpf_map_lookup_elem(&tc_config6, &zero);
  if (!cfg || !cfg6) return TC_ACT_OK;
  __u64 now = bpf_ktime_get_ns();

  struct skiff_ct6_value* v = ct6_lookup(&t, SKIFF_CT_DIR_REPLY, now, cfg->ct_timeout_s);
  if (!v) v = ct6_lookup(&t, SKIFF_CT_DIR_ORIG, now, cfg->ct_timeout_s);
  if (v) {
    lb_count(v->service_id, 0, 1, skb->len, 0);
    int snat = !skiff_addr6_zero(v->new_saddr);
    if (apply6(skb, &t, v)) return TC_ACT_SHOT;
    return snat ? forward6(skb) : TC_ACT_OK;
  }

  struct skiff_lb6_key key = {.dport = t.dport, .proto = t.proto, .scope = SKIFF_LB_SCOPE_EXT};
  skiff_addr6_copy(key.address, t.daddr);
  struct skiff_lb4_service* svc = bpf_map_lookup_elem(&lb6_services, &key);
  if (!svc) {
    if (skiff_addr6_zero(cfg6->node_address6) || !skiff_addr6_eq(t.daddr, cfg6->node_address6)) return TC_ACT_OK;
    key.address[0] = key.address[1] = key.address[2] = key.address[3] = 0;  // NodePort: any node address
    svc = bpf_map_lookup_elem(&lb6_services, &key);
    if (!svc) return TC_ACT_OK;
  }
  int nodeport = skiff_addr6_zero(key.address);
  if (svc->count == 0) {
    lb_count(svc->service_id, 0, 1, skb->len, 1);
    return nodeport ? TC_ACT_OK : TC_ACT_SHOT;
  }
  __u32 backend_id = select_backend6(svc, &key, &t, now);
  struct skiff_lb6_backend* be = backend_id ? bpf_map_lookup_elem(&lb6_backends, &backend_id) : 0;
  if (!be) {
    lb_count(svc->service_id, 0, 1, skb->len, 1);
    return TC_ACT_SHOT;
  }
  int local = (be->flags & SKIFF_BE_F_LOCAL) || (svc->flags & SKIFF_SVC_F_LOCAL);
  // Without a node IPv6 address a remote backend cannot be reached (no
  // address to SNAT to).
  if (!local && skiff_addr6_zero(cfg6->node_address6)) {
    lb_count(svc->service_id, 0, 1, skb->len, 1);
    return TC_ACT_SHOT;
  }

  struct skiff_ct6_value orig = {
      .new_dport = be->port,
      .service_id = svc->service_id,
      .backend_id = backend_id,
      .flags = be->flags,
      .last_seen_ns = now,
  };
  skiff_addr6_copy(orig.new_daddr, be->address);
  struct skiff_ct6_key rk = {.sport = be->port, .proto = t.proto, .dir = SKIFF_CT_DIR_REPLY};
  skiff_addr6_copy(rk.saddr, be->address);
  struct skiff_ct6_value rv = {
      .new_sport = t.dport,
      .service_id = svc->service_id,
      .backend_id = backend_id,
      .flags = be->flags,
      .last_seen_ns = now,
  };
  skiff_addr6_copy(rv.new_saddr, t.daddr);
  if (local) {
    skiff_addr6_copy(rk.daddr, t.saddr);
    rk.dport = t.sport;
    if (bpf_map_update_elem(&ct6, &rk, &rv, BPF_ANY)) return TC_ACT_SHOT;
  } else {
    skiff_addr6_copy(rk.daddr, cfg6->node_address6);
    skiff_addr6_copy(rv.new_daddr, t.saddr);
    rv.new_dport = t.sport;
    __u32 range = (__u32)cfg->snat_port_max - cfg->snat_port_min + 1;
    if (range == 0 || cfg->snat_port_max < cfg->snat_port_min) return TC_ACT_SHOT;
    __u32 h = skiff_hash6(&t);
    int found = 0;
    for (int i = 0; i < 8; i++) {
      __u16 port = (__u16)(cfg->snat_port_min + (h + i * 7919u) % range);
      rk.dport = bpf_htons(port);
      if (bpf_map_update_elem(&ct6, &rk, &rv, BPF_NOEXIST) == 0) {
        found = 1;
        break;
      }
    }
    if (!found) {
      lb_count(svc->service_id, 0, 1, skb->len, 1);
      return TC_ACT_SHOT;
    }
    skiff_addr6_copy(orig.new_saddr, cfg6->node_address6);
    orig.new_sport = rk.dport;
  }
  struct skiff_ct6_key ok = {.sport = t.sport, .dport = t.dport, .proto = t.proto, .dir = SKIFF_CT_DIR_ORIG};
  skiff_addr6_copy(ok.saddr, t.saddr);
  skiff_addr6_copy(ok.daddr, t.daddr);
  if (bpf_map_update_elem(&ct6, &ok, &orig, BPF_ANY)) return TC_ACT_SHOT;
  lb_count(svc->service_id, 1, 1, skb->len, 0);
  if (apply6(skb, &t, &orig)) return TC_ACT_SHOT;
  return local ? TC_ACT_OK : forward6(skb);
}

static __noinline int egress6(struct __sk_buff* skb) {
  struct skiff_tuple6 t;
  if (skiff_parse6(skb, &t)) return TC_ACT_OK;
  __u32 zero = 0;
  struct skiff_tc_config* cfg = bpf_map_lookup_elem(&tc_config, &zero);
  if (!cfg) return TC_ACT_OK;
  struct skiff_ct6_value* v = ct6_lookup(&t, SKIFF_CT_DIR_REPLY, bpf_ktime_get_ns(), cfg->ct_timeout_s);
  if (!v || !skiff_addr6_zero(v->new_daddr)) return TC_ACT_OK;
  lb_count(v->service_id, 0, 1, skb->len, 0);
  return apply6(skb, &t, v) ? TC_ACT_SHOT : TC_ACT_OK;
}

static __noinline int ingress4(struct __sk_buff* skb) {
  struct skiff_tuple4 t;
  if (skiff_parse4(skb, &t)) return TC_ACT_OK;
  __u32 zero = 0;
  struct skiff_tc_config* cfg = bpf_map_lookup_elem(&tc_config, &zero);
  if (!cfg) return TC_ACT_OK;
  __u64 now = bpf_ktime_get_ns();

  // A reply from a remote backend to our SNAT address, or a later packet of
  // a known flow.
  struct skiff_ct4_value* v = ct_lookup(&t, SKIFF_CT_DIR_REPLY, now, cfg->ct_timeout_s);
  if (!v) v = ct_lookup(&t, SKIFF_CT_DIR_ORIG, now, cfg->ct_timeout_s);
  if (v) {
    lb_count(v->service_id, 0, 1, skb->len, 0);
    if (apply(skb, &t, v)) return TC_ACT_SHOT;
    return v->new_saddr ? forward(skb) : TC_ACT_OK;
  }

  struct skiff_lb4_key key = {.address = t.daddr, .dport = t.dport, .proto = t.proto, .scope = SKIFF_LB_SCOPE_EXT};
  struct skiff_lb4_service* svc = lb4_lookup_service(&key);
  if (!svc) {
    if (t.daddr != cfg->node_address) return TC_ACT_OK;
    key.address = 0;  // NodePort: any node address
    svc = lb4_lookup_service(&key);
    if (!svc) return TC_ACT_OK;
  }
  if (svc->count == 0) {
    lb_count(svc->service_id, 0, 1, skb->len, 1);
    return key.address == 0 ? TC_ACT_OK : TC_ACT_SHOT;
  }
  __u32 backend_id = select_backend(svc, &key, &t, now);
  struct skiff_lb4_backend* be = backend_id ? bpf_map_lookup_elem(&lb4_backends, &backend_id) : 0;
  if (!be) {
    lb_count(svc->service_id, 0, 1, skb->len, 1);
    return TC_ACT_SHOT;
  }

  struct skiff_ct4_value orig = {
      .new_daddr = be->address,
      .new_dport = be->port,
      .service_id = svc->service_id,
      .backend_id = backend_id,
      .flags = be->flags,
      .last_seen_ns = now,
  };
  struct skiff_ct4_key rk = {.saddr = be->address, .dport = t.sport, .sport = be->port, .proto = t.proto,
                             .dir = SKIFF_CT_DIR_REPLY};
  struct skiff_ct4_value rv = {
      .new_saddr = t.daddr,
      .new_sport = t.dport,
      .service_id = svc->service_id,
      .backend_id = backend_id,
      .flags = be->flags,
      .last_seen_ns = now,
  };
  int local = (be->flags & SKIFF_BE_F_LOCAL) || (svc->flags & SKIFF_SVC_F_LOCAL);
  if (local) {
    // DNAT only: the reply leaves through egress from the backend's address
    // to the client; egress restores the frontend as its source.
    rk.daddr = t.saddr;
    rk.dport = t.sport;
    if (bpf_map_update_elem(&ct4, &rk, &rv, BPF_ANY)) return TC_ACT_SHOT;
  } else {
    // DNAT + SNAT to node_address:port; the reply arrives on ingress
    // addressed to that port.
    rk.daddr = cfg->node_address;
    rv.new_daddr = t.saddr;
    rv.new_dport = t.sport;
    __u32 range = (__u32)cfg->snat_port_max - cfg->snat_port_min + 1;
    if (range == 0 || cfg->snat_port_max < cfg->snat_port_min) return TC_ACT_SHOT;
    __u32 h = skiff_hash4(&t);
    int found = 0;
    for (int i = 0; i < 8; i++) {
      __u16 port = (__u16)(cfg->snat_port_min + (h + i * 7919u) % range);
      rk.dport = bpf_htons(port);
      if (bpf_map_update_elem(&ct4, &rk, &rv, BPF_NOEXIST) == 0) {
        found = 1;
        break;
      }
    }
    if (!found) {
      lb_count(svc->service_id, 0, 1, skb->len, 1);
      return TC_ACT_SHOT;
    }
    orig.new_saddr = cfg->node_address;
    orig.new_sport = rk.dport;
  }
  struct skiff_ct4_key ok = {
      .saddr = t.saddr, .daddr = t.daddr, .sport = t.sport, .dport = t.dport, .proto = t.proto,
      .dir = SKIFF_CT_DIR_ORIG};
  if (bpf_map_update_elem(&ct4, &ok, &orig, BPF_ANY)) return TC_ACT_SHOT;
  lb_count(svc->service_id, 1, 1, skb->len, 0);
  if (apply(skb, &t, &orig)) return TC_ACT_SHOT;
  return local ? TC_ACT_OK : forward(skb);
}

static __noinline int egress4(struct __sk_buff* skb) {
  struct skiff_tuple4 t;
  if (skiff_parse4(skb, &t)) return TC_ACT_OK;
  __u32 zero = 0;
  struct skiff_tc_config* cfg = bpf_map_lookup_elem(&tc_config, &zero);
  if (!cfg) return TC_ACT_OK;
  // Replies of local backends (DNAT-only flows) leave here.
  struct skiff_ct4_value* v = ct_lookup(&t, SKIFF_CT_DIR_REPLY, bpf_ktime_get_ns(), cfg->ct_timeout_s);
  if (!v || v->new_daddr) return TC_ACT_OK;
  lb_count(v->service_id, 0, 1, skb->len, 0);
  return apply(skb, &t, v) ? TC_ACT_SHOT : TC_ACT_OK;
}

// Each family's path is a subprogram with a stack frame of its own (the
// verifier limits the combined frames of a call chain to 512 bytes).
static __always_inline int is_ipv6(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  return (void*)(eth + 1) <= data_end && eth->h_proto == bpf_htons(0x86DD);
}

SEC("tc")
int skiff_tc_ingress(struct __sk_buff* skb) { return is_ipv6(skb) ? ingress6(skb) : ingress4(skb); }

SEC("tc")
int skiff_tc_egress(struct __sk_buff* skb) { return is_ipv6(skb) ? egress6(skb) : egress4(skb); }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
