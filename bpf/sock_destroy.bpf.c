// Connected UDP sockets that still point at a removed backend.
//
// Socket LB translates a connected UDP socket once, at connect(); when that
// backend leaves the service the socket would keep sending to it forever
// (the classic complaint about DNS over connected UDP with socket LB). The
// agent fills lb4_doomed (lb6_doomed) with the backends it removed and runs this
// iterator over the UDP sockets of its network namespace: a socket that the
// LB translated (its cookie + peer is in lb4_sock_revnat) and whose peer is
// doomed is destroyed with bpf_sock_destroy(). The application sees
// ECONNABORTED on its next call and reconnects, which picks a live backend.
//
// A separate object from sock_lb: bpf_sock_destroy needs kernel 6.5, and on
// an older kernel only this object fails to load.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "lib/sock_maps.h"
#include "skiff_bpf/lb.h"

#define SKIFF_AF_INET 2
#define SKIFF_AF_INET6 10
#define SKIFF_IPPROTO_UDP 17

extern int bpf_sock_destroy(struct sock_common* sk) __ksym;

// Backends removed by the last programming pass: (address, port, proto) with
// flags 0 -> 1. Filled and emptied by the agent around one iterator run.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_DOOMED);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct skiff_lb4_backend);
  __type(value, __u8);
} lb4_doomed SEC(".maps");

// The same for IPv6 backends (flags 0), matched against lb6_sock_revnat.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_DOOMED);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct skiff_lb6_backend);
  __type(value, __u8);
} lb6_doomed SEC(".maps");

static __always_inline int udp6_destroy(struct sock* sk) {
  struct skiff_lb6_backend key = {
      .port = sk->__sk_common.skc_dport,
      .proto = SKIFF_IPPROTO_UDP,
  };
  key.address[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
  key.address[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
  key.address[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
  key.address[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
  if (!key.port || !bpf_map_lookup_elem(&lb6_doomed, &key)) return 0;
  struct skiff_lb6_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(sk),
      .address = {key.address[0], key.address[1], key.address[2], key.address[3]},
      .port = key.port,
  };
  if (!bpf_map_lookup_elem(&lb6_sock_revnat, &rkey)) return 0;
  bpf_sock_destroy((struct sock_common*)sk);
  return 0;
}

SEC("iter/udp")
int skiff_udp_destroy(struct bpf_iter__udp* ctx) {
  struct udp_sock* udp = ctx->udp_sk;
  if (!udp) return 0;
  struct sock* sk = (struct sock*)udp;
  if (sk->__sk_common.skc_family == SKIFF_AF_INET6) return udp6_destroy(sk);
  if (sk->__sk_common.skc_family != SKIFF_AF_INET) return 0;
  struct skiff_lb4_backend key = {
      .address = sk->__sk_common.skc_daddr,
      .port = sk->__sk_common.skc_dport,
      .proto = SKIFF_IPPROTO_UDP,
  };
  if (!key.address || !bpf_map_lookup_elem(&lb4_doomed, &key)) return 0;
  struct skiff_lb4_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(sk),
      .address = key.address,
      .port = key.port,
  };
  // Only sockets the LB translated; a socket connected to the pod address
  // directly is the application's business.
  if (!bpf_map_lookup_elem(&lb4_sock_revnat, &rkey)) return 0;
  bpf_sock_destroy((struct sock_common*)sk);
  return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
