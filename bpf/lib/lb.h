/* Header-only service lookup and backend selection shared by the socket LB
 * and the tc programs. Include after lb_maps.h. */
#ifndef SKIFF_BPF_LIB_LB_H_
#define SKIFF_BPF_LIB_LB_H_

#include "lib/lb_maps.h"

static __always_inline struct skiff_lb4_service* lb4_lookup_service(struct skiff_lb4_key* key) {
  key->backend_slot = 0;
  return bpf_map_lookup_elem(&lb4_services, key);
}

static __always_inline void lb_count(__u32 service_id, __u64 connections, __u64 packets, __u64 bytes,
                                     __u64 refused) {
  struct skiff_lb_counters* c = bpf_map_lookup_elem(&lb_counters, &service_id);
  if (!c) {
    /* The first event of a service creates its entry, so programming 10k
     * services writes no counters at all; the agent deletes the entry when
     * the service id is released, so a reused id starts from zero. */
    struct skiff_lb_counters zero = {};
    bpf_map_update_elem(&lb_counters, &service_id, &zero, BPF_NOEXIST);
    c = bpf_map_lookup_elem(&lb_counters, &service_id);
    if (!c) return;
  }
  /* per-CPU values: plain adds are enough */
  c->connections += connections;
  c->packets += packets;
  c->bytes += bytes;
  c->refused += refused;
}

/* Backend id in slot 1 + (hash % count) of the service; 0 when the slot is
 * missing (never expected: the agent keeps slots 1..count valid). */
static __always_inline __u32 lb4_slot_backend(struct skiff_lb4_key* key, __u16 count, __u32 hash) {
  key->backend_slot = (__u16)(1 + hash % count);
  struct skiff_lb4_service* slot = bpf_map_lookup_elem(&lb4_services, key);
  key->backend_slot = 0;
  return slot ? slot->backend_id : 0;
}

/* sessionAffinity ClientIP: the remembered backend if it is still alive and
 * the entry is younger than the timeout; 0 otherwise. A backend leaving the
 * service loses its backends-map entry (ids are per service), so a stale
 * affinity never points at a removed endpoint. */
static __always_inline __u32 lb_affinity_get(__u64 client, const struct skiff_lb4_service* svc, __u64 now) {
  struct skiff_lb_affinity_key akey = {.client = client, .service_id = svc->service_id};
  struct skiff_lb_affinity_value* av = bpf_map_lookup_elem(&lb_affinity, &akey);
  if (!av) return 0;
  if (now - av->last_used_ns > (__u64)svc->affinity_timeout * 1000000000ULL) return 0;
  if (!bpf_map_lookup_elem(&lb4_backends, &av->backend_id)) return 0;
  return av->backend_id;
}

static __always_inline void lb_affinity_put(__u64 client, const struct skiff_lb4_service* svc, __u32 backend_id,
                                            __u64 now) {
  struct skiff_lb_affinity_key akey = {.client = client, .service_id = svc->service_id};
  struct skiff_lb_affinity_value av = {.last_used_ns = now, .backend_id = backend_id};
  bpf_map_update_elem(&lb_affinity, &akey, &av, BPF_ANY);
}

#endif
