// Socket-level service load balancing (cgroup sock_addr hooks).
//
// connect4 / sendmsg4 rewrite a service frontend (ClusterIP:port, a node
// address:NodePort, an external IP:port) to one backend, once per connect()
// or per sendmsg() of an unconnected UDP socket; established flows then cost
// nothing per packet. getpeername4 / recvmsg4 undo the rewrite so the
// application only ever sees the service address.
//
// A service with no backend refuses at once: the program sets the syscall's
// return value to -ECONNREFUSED with bpf_set_retval() and returns 0 ("reject").
// The cgroup program runner keeps an error retval set by the program instead
// of its default -EPERM, so connect()/sendmsg() fail with ECONNREFUSED and no
// packet leaves the socket.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/lb.h"
#include "lib/sock_maps.h"
#include "skiff_bpf/lb.h"

#define SKIFF_ECONNREFUSED 111
#define SKIFF_IPPROTO_TCP 6
#define SKIFF_IPPROTO_UDP 17

#define SOCK_ALLOW 1
#define SOCK_REJECT 0

// Picks the backend of the IPv4 frontend in `key` (see sock4_key). Returns
// SOCK_ALLOW with *out = the backend (NULL: not a service), or SOCK_REJECT
// with retval set when the service has no backend.
static __always_inline int sock4_pick(struct bpf_sock_addr* ctx, struct skiff_lb4_key* key,
                                      struct skiff_lb4_backend** out, __u32* out_service_id) {
  *out = 0;
  struct skiff_lb4_service* svc = lb4_lookup_service(key);
  if (!svc) return SOCK_ALLOW;
  __u32 service_id = svc->service_id;
  __u16 count = svc->count;
  if (count == 0) {
    lb_count(service_id, 0, 0, 0, 1);
    bpf_set_retval(-SKIFF_ECONNREFUSED);
    return SOCK_REJECT;
  }

  __u64 now = 0;
  __u64 client = 0;
  __u32 backend_id = 0;
  int affinity = svc->flags & SKIFF_SVC_F_AFFINITY;
  if (affinity) {
    now = bpf_ktime_get_ns();
    // The client of a socket is its network namespace (one pod, one IP).
    client = bpf_get_netns_cookie(ctx);
    backend_id = lb_affinity_get(client, svc, now);
  }
  if (!backend_id) backend_id = lb4_slot_backend(key, count, bpf_get_prandom_u32());
  struct skiff_lb4_backend* be = backend_id ? bpf_map_lookup_elem(&lb4_backends, &backend_id) : 0;
  if (!be) {
    lb_count(service_id, 0, 0, 0, 1);
    bpf_set_retval(-SKIFF_ECONNREFUSED);
    return SOCK_REJECT;
  }
  if (affinity) lb_affinity_put(client, svc, backend_id, now);
  lb_count(service_id, 1, 0, 0, 0);
  *out = be;
  *out_service_id = service_id;
  return SOCK_ALLOW;
}

static __always_inline struct skiff_lb4_key sock4_key(__be32 address, __u32 port, __u32 proto) {
  struct skiff_lb4_key key = {
      .address = address,
      .dport = (__be16)port,
      .proto = (__u8)proto,
      .scope = SKIFF_LB_SCOPE_SOCK,
  };
  return key;
}

// Returns SOCK_ALLOW after translating (or leaving alone a non-service
// destination), SOCK_REJECT with retval set when the service has no backend.
static __always_inline int sock4_forward(struct bpf_sock_addr* ctx) {
  __u32 proto = ctx->protocol;
  if (proto != SKIFF_IPPROTO_TCP && proto != SKIFF_IPPROTO_UDP) return SOCK_ALLOW;

  struct skiff_lb4_key key = sock4_key(ctx->user_ip4, ctx->user_port, proto);
  struct skiff_lb4_backend* be;
  __u32 service_id = 0;
  if (sock4_pick(ctx, &key, &be, &service_id) == SOCK_REJECT) return SOCK_REJECT;
  if (!be) return SOCK_ALLOW;

  struct skiff_lb4_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(ctx),
      .address = be->address,
      .port = be->port,
  };
  struct skiff_lb4_sock_value rval = {
      .address = key.address,
      .port = key.dport,
      .service_id = service_id,
  };
  bpf_map_update_elem(&lb4_sock_revnat, &rkey, &rval, BPF_ANY);

  ctx->user_ip4 = be->address;
  ctx->user_port = be->port;
  return SOCK_ALLOW;
}

static __always_inline void sock4_reverse(struct bpf_sock_addr* ctx) {
  struct skiff_lb4_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(ctx),
      .address = ctx->user_ip4,
      .port = (__be16)ctx->user_port,
  };
  struct skiff_lb4_sock_value* rval = bpf_map_lookup_elem(&lb4_sock_revnat, &rkey);
  if (!rval) return;
  ctx->user_ip4 = rval->address;
  ctx->user_port = rval->port;
}

SEC("cgroup/connect4")
int skiff_sock4_connect(struct bpf_sock_addr* ctx) { return sock4_forward(ctx); }

SEC("cgroup/sendmsg4")
int skiff_sock4_sendmsg(struct bpf_sock_addr* ctx) { return sock4_forward(ctx); }

SEC("cgroup/recvmsg4")
int skiff_sock4_recvmsg(struct bpf_sock_addr* ctx) {
  sock4_reverse(ctx);
  return SOCK_ALLOW;
}

SEC("cgroup/getpeername4")
int skiff_sock4_getpeername(struct bpf_sock_addr* ctx) {
  sock4_reverse(ctx);
  return SOCK_ALLOW;
}

// IPv6: the same logic on the lb6_* maps (16-byte addresses, lib/lb_maps.h).

// An IPv6 socket to an IPv4-mapped address (::ffff:a.b.c.d, a dual-stack
// socket talking IPv4): the IPv4 service and backends, written back mapped;
// the reverse entry goes to lb6_sock_revnat, where sock6_reverse finds it.
static __always_inline int sock6_forward_mapped(struct bpf_sock_addr* ctx, __u32 proto) {
  struct skiff_lb4_key key = sock4_key(ctx->user_ip6[3], ctx->user_port, proto);
  struct skiff_lb4_backend* be;
  __u32 service_id = 0;
  if (sock4_pick(ctx, &key, &be, &service_id) == SOCK_REJECT) return SOCK_REJECT;
  if (!be) return SOCK_ALLOW;
  __be32 mapped = bpf_htonl(0xffff);
  struct skiff_lb6_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(ctx),
      .address = {0, 0, mapped, be->address},
      .port = be->port,
  };
  struct skiff_lb6_sock_value rval = {
      .address = {0, 0, mapped, key.address},
      .port = key.dport,
      .service_id = service_id,
  };
  bpf_map_update_elem(&lb6_sock_revnat, &rkey, &rval, BPF_ANY);
  ctx->user_ip6[3] = be->address;
  ctx->user_port = be->port;
  return SOCK_ALLOW;
}

static __always_inline int sock6_forward(struct bpf_sock_addr* ctx) {
  __u32 proto = ctx->protocol;
  if (proto != SKIFF_IPPROTO_TCP && proto != SKIFF_IPPROTO_UDP) return SOCK_ALLOW;
  if (ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == bpf_htonl(0xffff))
    return sock6_forward_mapped(ctx, proto);

  struct skiff_lb6_key key = {
      .address = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]},
      .dport = (__be16)ctx->user_port,
      .proto = (__u8)proto,
      .scope = SKIFF_LB_SCOPE_SOCK,
  };
  struct skiff_lb4_service* svc = bpf_map_lookup_elem(&lb6_services, &key);
  if (!svc) return SOCK_ALLOW;
  __u32 service_id = svc->service_id;
  __u16 count = svc->count;
  if (count == 0) {
    lb_count(service_id, 0, 0, 0, 1);
    bpf_set_retval(-SKIFF_ECONNREFUSED);
    return SOCK_REJECT;
  }

  __u64 now = 0;
  __u64 client = 0;
  __u32 backend_id = 0;
  struct skiff_lb6_backend* be = 0;
  int affinity = svc->flags & SKIFF_SVC_F_AFFINITY;
  if (affinity) {
    now = bpf_ktime_get_ns();
    client = bpf_get_netns_cookie(ctx) | SKIFF_LB_AFFINITY_V6;
    struct skiff_lb_affinity_key akey = {.client = client, .service_id = service_id};
    struct skiff_lb_affinity_value* av = bpf_map_lookup_elem(&lb_affinity, &akey);
    if (av && now - av->last_used_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
      backend_id = av->backend_id;
      be = bpf_map_lookup_elem(&lb6_backends, &backend_id);
    }
  }
  if (!be) {
    key.backend_slot = (__u16)(1 + bpf_get_prandom_u32() % count);
    struct skiff_lb4_service* slot = bpf_map_lookup_elem(&lb6_services, &key);
    key.backend_slot = 0;
    backend_id = slot ? slot->backend_id : 0;
    be = backend_id ? bpf_map_lookup_elem(&lb6_backends, &backend_id) : 0;
  }
  if (!be) {
    lb_count(service_id, 0, 0, 0, 1);
    bpf_set_retval(-SKIFF_ECONNREFUSED);
    return SOCK_REJECT;
  }
  if (affinity) {
    struct skiff_lb_affinity_key akey = {.client = client, .service_id = service_id};
    struct skiff_lb_affinity_value av = {.last_used_ns = now, .backend_id = backend_id};
    bpf_map_update_elem(&lb_affinity, &akey, &av, BPF_ANY);
  }

  struct skiff_lb6_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(ctx),
      .address = {be->address[0], be->address[1], be->address[2], be->address[3]},
      .port = be->port,
  };
  struct skiff_lb6_sock_value rval = {
      .address = {key.address[0], key.address[1], key.address[2], key.address[3]},
      .port = key.dport,
      .service_id = service_id,
  };
  bpf_map_update_elem(&lb6_sock_revnat, &rkey, &rval, BPF_ANY);

  ctx->user_ip6[0] = be->address[0];
  ctx->user_ip6[1] = be->address[1];
  ctx->user_ip6[2] = be->address[2];
  ctx->user_ip6[3] = be->address[3];
  ctx->user_port = be->port;
  lb_count(service_id, 1, 0, 0, 0);
  return SOCK_ALLOW;
}

static __always_inline void sock6_reverse(struct bpf_sock_addr* ctx) {
  struct skiff_lb6_sock_key rkey = {
      .cookie = bpf_get_socket_cookie(ctx),
      .address = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]},
      .port = (__be16)ctx->user_port,
  };
  struct skiff_lb6_sock_value* rval = bpf_map_lookup_elem(&lb6_sock_revnat, &rkey);
  if (!rval) {
    // sendmsg() of an IPv6 UDP socket to a mapped address runs the IPv4
    // hook (udp_sendmsg), which recorded the translation in lb4_sock_revnat.
    if (rkey.address[0] != 0 || rkey.address[1] != 0 || rkey.address[2] != bpf_htonl(0xffff)) return;
    struct skiff_lb4_sock_key k4 = {.cookie = rkey.cookie, .address = rkey.address[3], .port = rkey.port};
    struct skiff_lb4_sock_value* v4 = bpf_map_lookup_elem(&lb4_sock_revnat, &k4);
    if (!v4) return;
    ctx->user_ip6[3] = v4->address;
    ctx->user_port = v4->port;
    return;
  }
  ctx->user_ip6[0] = rval->address[0];
  ctx->user_ip6[1] = rval->address[1];
  ctx->user_ip6[2] = rval->address[2];
  ctx->user_ip6[3] = rval->address[3];
  ctx->user_port = rval->port;
}

SEC("cgroup/connect6")
int skiff_sock6_connect(struct bpf_sock_addr* ctx) { return sock6_forward(ctx); }

SEC("cgroup/sendmsg6")
int skiff_sock6_sendmsg(struct bpf_sock_addr* ctx) { return sock6_forward(ctx); }

SEC("cgroup/recvmsg6")
int skiff_sock6_recvmsg(struct bpf_sock_addr* ctx) {
  sock6_reverse(ctx);
  return SOCK_ALLOW;
}

SEC("cgroup/getpeername6")
int skiff_sock6_getpeername(struct bpf_sock_addr* ctx) {
  sock6_reverse(ctx);
  return SOCK_ALLOW;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
