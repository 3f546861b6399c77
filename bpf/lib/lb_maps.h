/* The service load-balancing maps, defined once for every BPF object that
 * uses them (sock_lb, tc_nodeport). The agent sets each map's pin path to
 * <bpffs-dir>/skiff_<name>_<SKIFF_LB_PIN_VERSION> before load, so all
 * objects and all agent generations share the same pinned instances. */
#ifndef SKIFF_BPF_LIB_LB_MAPS_H_
#define SKIFF_BPF_LIB_LB_MAPS_H_

#include "skiff_bpf/lb.h"

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_SERVICE_ENTRIES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct skiff_lb4_key);
  __type(value, struct skiff_lb4_service);
} lb4_services SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_BACKENDS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct skiff_lb4_backend);
} lb4_backends SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SKIFF_LB_MAX_AFFINITY);
  __type(key, struct skiff_lb_affinity_key);
  __type(value, struct skiff_lb_affinity_value);
} lb_affinity SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, SKIFF_LB_MAX_COUNTERS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct skiff_lb_counters);
} lb_counters SEC(".maps");

/* IPv6 frontends and backends: socket LB (sock_lb) and tc (tc_nodeport). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_SERVICE_ENTRIES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct skiff_lb6_key);
  __type(value, struct skiff_lb4_service);
} lb6_services SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SKIFF_LB_MAX_BACKENDS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct skiff_lb6_backend);
} lb6_backends SEC(".maps");

#endif
