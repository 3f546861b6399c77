// NodePort and external-IP load balancing for traffic that arrives from
// outside the node (tc ingress/egress on the node's interfaces).
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

SEC("tc")
int skiff_tc_ingress(struct __sk_buff* skb) {
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

SEC("tc")
int skiff_tc_egress(struct __sk_buff* skb) {
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
