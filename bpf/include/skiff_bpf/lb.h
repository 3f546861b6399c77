/* The one definition of every service load-balancing map key and value,
 * shared by the BPF programs (sock_lb.bpf.c, tc_nodeport.bpf.c) and the C++
 * agent (skiff::proxy). Fixed-width types, explicit padding, and static
 * assertions on size and offsets: if a field moves, both sides stop building.
 *
 * Pinned map names carry a layout version (SKIFF_LB_PIN_VERSION); a change to
 * any struct below must bump it so a new agent creates fresh maps instead of
 * reusing pinned ones with the old layout.
 */
#ifndef SKIFF_BPF_LB_H_
#define SKIFF_BPF_LB_H_

#ifdef __bpf__
/* vmlinux.h supplies __u32, __be32 and friends */
#else
#include <linux/types.h>
#endif

#define SKIFF_LB_PIN_VERSION "v1"

/* Map capacities. Service entries count one per (frontend, slot): a service
 * port with N backends takes N + 1 entries. */
#define SKIFF_LB_MAX_SERVICE_ENTRIES 524288
#define SKIFF_LB_MAX_BACKENDS 262144
#define SKIFF_LB_MAX_SOCK_REVNAT 262144
#define SKIFF_LB_MAX_AFFINITY 262144
#define SKIFF_LB_MAX_COUNTERS 131072
#define SKIFF_LB_MAX_MAGLEV 4096
#define SKIFF_LB_MAX_CT 262144
#define SKIFF_LB_MAX_DOOMED 65536
/* Maglev lookup table size: a prime, >= 100 x backends for services up to
 * 163 backends. */
#define SKIFF_MAGLEV_TABLE_SIZE 16381

/* skiff_lb4_key.scope: which datapath a frontend belongs to. Socket LB
 * (ClusterIP, NodePort and external IPs as seen from the node itself) uses the
 * internal backend set (internalTrafficPolicy); tc (traffic that arrives from
 * outside the node) uses the external set (externalTrafficPolicy). */
#define SKIFF_LB_SCOPE_SOCK 0
#define SKIFF_LB_SCOPE_EXT 1

/* skiff_lb4_service.flags (slot 0 only) */
#define SKIFF_SVC_F_AFFINITY 0x1  /* sessionAffinity: ClientIP */
#define SKIFF_SVC_F_NODEPORT 0x2  /* frontend address 0 = any node address */
#define SKIFF_SVC_F_LOCAL 0x4     /* externalTrafficPolicy Local: no SNAT */

/* skiff_lb4_backend.flags */
#define SKIFF_BE_F_LOCAL 0x1       /* backend runs on this node */
#define SKIFF_BE_F_TERMINATING 0x2 /* serving but terminating (fallback set) */

/* services map: (frontend, slot) -> entry.
 * Slot 0 describes the service frontend (count, flags, id); slots 1..count
 * each name one backend. Readers pick slot 1 + rand % count. The agent keeps
 * every slot in 1..count valid at all times: it writes new slots before
 * raising count and lowers count before deleting slots. */
struct skiff_lb4_key {
  __be32 address;      /* frontend IPv4, network order; 0 = any node IP */
  __be16 dport;        /* frontend port, network order */
  __u16 backend_slot;  /* 0 = service entry, 1.. = backend slots */
  __u8 proto;          /* IPPROTO_TCP / IPPROTO_UDP */
  __u8 scope;          /* SKIFF_LB_SCOPE_* */
  __u8 pad[2];
};

struct skiff_lb4_service {
  __u32 backend_id;       /* slot > 0: key into the backends map */
  __u16 count;            /* slot 0: number of backend slots (0 = refuse) */
  __u16 flags;            /* slot 0: SKIFF_SVC_F_* */
  __u32 service_id;       /* affinity, counters, maglev, reverse NAT */
  __u32 affinity_timeout; /* slot 0: seconds, when SKIFF_SVC_F_AFFINITY */
};

/* backends map: backend id -> address */
struct skiff_lb4_backend {
  __be32 address;
  __be16 port;
  __u8 proto;
  __u8 flags; /* SKIFF_BE_F_* */
};

/* sock reverse-NAT map (LRU): what getpeername()/recvmsg() must show for a
 * socket that was translated at connect()/sendmsg(). */
struct skiff_lb4_sock_key {
  __u64 cookie;   /* bpf_get_socket_cookie */
  __be32 address; /* backend address */
  __be16 port;    /* backend port */
  __u16 pad;
};

struct skiff_lb4_sock_value {
  __be32 address; /* service frontend address */
  __be16 port;    /* service frontend port */
  __u16 pad;
  __u32 service_id;
};

/* affinity map (LRU): (client, service) -> backend. The client is the netns
 * cookie for socket LB and the source IPv4 for tc. */
struct skiff_lb_affinity_key {
  __u64 client;
  __u32 service_id;
  __u32 pad;
};

struct skiff_lb_affinity_value {
  __u64 last_used_ns; /* bpf_ktime_get_ns */
  __u32 backend_id;
  __u32 pad;
};

/* maglev map: service id -> lookup table of backend ids */
struct skiff_lb_maglev {
  __u32 backend_ids[SKIFF_MAGLEV_TABLE_SIZE];
};

/* counters map (per-CPU hash): service id -> counters */
struct skiff_lb_counters {
  __u64 connections; /* socket LB translations, tc new flows */
  __u64 packets;     /* tc packets */
  __u64 bytes;       /* tc bytes */
  __u64 refused;     /* no backend */
};

/* tc conntrack/NAT (LRU). One entry per direction:
 *  SKIFF_CT_DIR_ORIG: key = client -> frontend tuple as received,
 *                     value = the backend and SNAT choice;
 *  SKIFF_CT_DIR_REPLY: key = the reply tuple as it arrives (backend -> node
 *                     or backend -> client), value = what to restore. */
#define SKIFF_CT_DIR_ORIG 0
#define SKIFF_CT_DIR_REPLY 1

struct skiff_ct4_key {
  __be32 saddr;
  __be32 daddr;
  __be16 sport;
  __be16 dport;
  __u8 proto;
  __u8 dir;
  __u8 pad[2];
};

struct skiff_ct4_value {
  __be32 new_saddr; /* address to put in the source (0 = keep) */
  __be32 new_daddr; /* address to put in the destination */
  __be16 new_sport;
  __be16 new_dport;
  __u32 service_id;
  __u32 backend_id;
  __u32 flags;     /* SKIFF_BE_F_* of the backend */
  __u64 last_seen_ns;
};

/* tc config (array, 1 entry): the node address used for SNAT */
struct skiff_tc_config {
  __be32 node_address;
  __u16 snat_port_min; /* host order */
  __u16 snat_port_max;
  __u32 ct_timeout_s;
  __u32 pad;
};


/* IPv6 socket LB (cgroup/connect6, sendmsg6, recvmsg6, getpeername6). Maps
 * of their own with 16-byte addresses, so the IPv4 maps and their lookups
 * stay as they were. Addresses are four 32-bit words in network order, the
 * shape of bpf_sock_addr.user_ip6. The services map value is the IPv4 one
 * (struct skiff_lb4_service); service ids, backend ids, affinity and
 * counters share one id space with IPv4. IPv6 frontends are socket-LB only
 * (scope SKIFF_LB_SCOPE_SOCK) and, for tc, EXT. */
struct skiff_lb6_key {
  __be32 address[4];   /* frontend IPv6 */
  __be16 dport;        /* network order */
  __u16 backend_slot;  /* 0 = service entry, 1.. = backend slots */
  __u8 proto;
  __u8 scope;          /* SKIFF_LB_SCOPE_* */
  __u8 pad[2];
};

struct skiff_lb6_backend {
  __be32 address[4];
  __be16 port;
  __u8 proto;
  __u8 flags; /* SKIFF_BE_F_* */
};

struct skiff_lb6_sock_key {
  __u64 cookie;      /* bpf_get_socket_cookie */
  __be32 address[4]; /* backend address */
  __be16 port;       /* backend port */
  __u16 pad;
  __u32 pad2;
};

struct skiff_lb6_sock_value {
  __be32 address[4]; /* service frontend address */
  __be16 port;
  __u16 pad;
  __u32 service_id;
};

/* Affinity client of an IPv6 socket: its netns cookie with this bit set, so
 * the two families of one dual-stack service never share an entry. */
#define SKIFF_LB_AFFINITY_V6 (1ULL << 63)
/* Affinity client of an IPv6 packet at tc: its source address folded to 62
 * bits with this bit set (tc IPv4 clients are the plain source address). */
#define SKIFF_LB_AFFINITY_TC6 (1ULL << 62)

/* Maglev tables of IPv6 EXT frontends: key service id | this bit, so a
 * dual-stack service port (one service id) has one table per family. */
#define SKIFF_MAGLEV_KEY_V6 0x80000000u

/* tc for IPv6: NodePort and external IPs from outside the node. Conntrack
 * (ct6, LRU) has the shape of ct4 with 16-byte addresses; the node's IPv6
 * address for NodePort and SNAT is in tc_config6 (all zero = no IPv6
 * NodePort; external IPs still work with a local backend). New maps, so
 * the IPv4 layouts (and their pinned instances) stay as they were. */
struct skiff_ct6_key {
  __be32 saddr[4];
  __be32 daddr[4];
  __be16 sport;
  __be16 dport;
  __u8 proto;
  __u8 dir; /* SKIFF_CT_DIR_* */
  __u8 pad[2];
};

struct skiff_ct6_value {
  __be32 new_saddr[4]; /* all zero = keep */
  __be32 new_daddr[4]; /* all zero = keep */
  __be16 new_sport;
  __be16 new_dport;
  __u32 service_id;
  __u32 backend_id;
  __u32 flags; /* SKIFF_BE_F_* of the backend */
  __u64 last_seen_ns;
};

struct skiff_tc_config6 {
  __be32 node_address6[4];
};

/* One list of drop/error reasons shared by BPF and userspace. */
#define SKIFF_DROP_NONE 0
#define SKIFF_DROP_NO_BACKEND 1
#define SKIFF_DROP_BACKEND_MISSING 2
#define SKIFF_DROP_NO_SNAT_PORT 3
#define SKIFF_DROP_MALFORMED 4

#ifdef __cplusplus
#define SKIFF_BPF_STATIC_ASSERT static_assert
#else
#define SKIFF_BPF_STATIC_ASSERT _Static_assert
#endif

#define SKIFF_OFFSETOF(t, m) __builtin_offsetof(t, m)

SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb4_key) == 12, "skiff_lb4_key size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_key, dport) == 4, "skiff_lb4_key.dport");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_key, backend_slot) == 6, "skiff_lb4_key.backend_slot");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_key, proto) == 8, "skiff_lb4_key.proto");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_key, scope) == 9, "skiff_lb4_key.scope");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb4_service) == 16, "skiff_lb4_service size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_service, count) == 4, "skiff_lb4_service.count");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_service, service_id) == 8, "skiff_lb4_service.service_id");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb4_backend) == 8, "skiff_lb4_backend size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_backend, port) == 4, "skiff_lb4_backend.port");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb4_sock_key) == 16, "skiff_lb4_sock_key size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb4_sock_key, address) == 8, "skiff_lb4_sock_key.address");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb4_sock_value) == 12, "skiff_lb4_sock_value size");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb_affinity_key) == 16, "skiff_lb_affinity_key size");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb_affinity_value) == 16, "skiff_lb_affinity_value size");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb_maglev) == 4 * SKIFF_MAGLEV_TABLE_SIZE, "skiff_lb_maglev size");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb_counters) == 32, "skiff_lb_counters size");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_ct4_key) == 16, "skiff_ct4_key size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct4_key, proto) == 12, "skiff_ct4_key.proto");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_ct4_value) == 32, "skiff_ct4_value size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct4_value, last_seen_ns) == 24, "skiff_ct4_value.last_seen_ns");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_tc_config) == 16, "skiff_tc_config size");

SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb6_key) == 24, "skiff_lb6_key size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_key, dport) == 16, "skiff_lb6_key.dport");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_key, backend_slot) == 18, "skiff_lb6_key.backend_slot");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_key, proto) == 20, "skiff_lb6_key.proto");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_key, scope) == 21, "skiff_lb6_key.scope");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb6_backend) == 20, "skiff_lb6_backend size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_backend, port) == 16, "skiff_lb6_backend.port");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb6_sock_key) == 32, "skiff_lb6_sock_key size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_sock_key, address) == 8, "skiff_lb6_sock_key.address");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_sock_key, port) == 24, "skiff_lb6_sock_key.port");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_lb6_sock_value) == 24, "skiff_lb6_sock_value size");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_ct6_key) == 40, "skiff_ct6_key size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct6_key, sport) == 32, "skiff_ct6_key.sport");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct6_key, proto) == 36, "skiff_ct6_key.proto");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_ct6_value) == 56, "skiff_ct6_value size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct6_value, new_sport) == 32, "skiff_ct6_value.new_sport");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct6_value, backend_id) == 40, "skiff_ct6_value.backend_id");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_ct6_value, last_seen_ns) == 48, "skiff_ct6_value.last_seen_ns");
SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_tc_config6) == 16, "skiff_tc_config6 size");
SKIFF_BPF_STATIC_ASSERT(SKIFF_OFFSETOF(struct skiff_lb6_sock_value, service_id) == 20, "skiff_lb6_sock_value.service_id");

#endif
