// The smallest program of the BPF pipeline: a tc classifier that counts the
// packets it sees by EtherType and passes IPv4, drops everything else. It
// proves that vmlinux.h, clang -target bpf, the skeleton and the test harness
// fit together; the service datapath builds on the same pipeline.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "skiff_bpf/probe.h"

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SKIFF_PROBE_SLOTS);
  __type(key, __u32);
  __type(value, struct skiff_probe_count);
} probe_counts SEC(".maps");

SEC("tc")
int probe_classify(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > data_end) return SKIFF_PROBE_SHOT;

  __u32 slot = eth->h_proto == bpf_htons(0x0800) ? SKIFF_PROBE_SLOT_IPV4 : SKIFF_PROBE_SLOT_OTHER;
  struct skiff_probe_count* c = bpf_map_lookup_elem(&probe_counts, &slot);
  if (c) {
    __sync_fetch_and_add(&c->packets, 1);
    __sync_fetch_and_add(&c->bytes, skb->len);
  }
  return slot == SKIFF_PROBE_SLOT_IPV4 ? SKIFF_PROBE_OK : SKIFF_PROBE_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
