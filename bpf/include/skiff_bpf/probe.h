// Shared between probe.bpf.c and its C++ test: the one definition of the
// probe's map value. Fixed-width types, explicit size checks.
#ifndef SKIFF_BPF_PROBE_H_
#define SKIFF_BPF_PROBE_H_

#ifdef __bpf__
/* vmlinux.h supplies __u64 and friends */
#else
#include <linux/types.h>
#endif

#define SKIFF_PROBE_SLOTS 2
#define SKIFF_PROBE_SLOT_IPV4 0
#define SKIFF_PROBE_SLOT_OTHER 1
#define SKIFF_PROBE_OK 0    /* TC_ACT_OK */
#define SKIFF_PROBE_SHOT 2  /* TC_ACT_SHOT */

struct skiff_probe_count {
  __u64 packets;
  __u64 bytes;
};

#ifdef __cplusplus
#define SKIFF_BPF_STATIC_ASSERT static_assert
#else
#define SKIFF_BPF_STATIC_ASSERT _Static_assert
#endif

SKIFF_BPF_STATIC_ASSERT(sizeof(struct skiff_probe_count) == 16, "skiff_probe_count size");

#endif
