/* Maps of the socket-level datapath shared by the objects that use them
 * (sock_lb: written at connect/sendmsg, read at getpeername/recvmsg;
 * sock_destroy: tells a translated socket from a direct one). Pinned like
 * every LB map, so both objects open the same instance. */
#ifndef SKIFF_BPF_LIB_SOCK_MAPS_H_
#define SKIFF_BPF_LIB_SOCK_MAPS_H_

#include "skiff_bpf/lb.h"

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SKIFF_LB_MAX_SOCK_REVNAT);
  __type(key, struct skiff_lb4_sock_key);
  __type(value, struct skiff_lb4_sock_value);
} lb4_sock_revnat SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SKIFF_LB_MAX_SOCK_REVNAT);
  __type(key, struct skiff_lb6_sock_key);
  __type(value, struct skiff_lb6_sock_value);
} lb6_sock_revnat SEC(".maps");

#endif
