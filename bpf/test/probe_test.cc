// Runs the pipeline's probe program in the kernel with bpf_prog_test_run_opts
// on two packet fixtures and checks verdicts and the shared map.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <memory>

#include "gtest/gtest.h"
#include "probe.skel.h"
#include "skiff_bpf/probe.h"

namespace {

struct SkelDeleter {
  void operator()(probe* p) const { probe__destroy(p); }
};

std::array<unsigned char, 64> Frame(uint16_t ethertype) {
  std::array<unsigned char, 64> f{};
  std::memset(f.data(), 0xaa, 12);  // dst + src MAC
  f[12] = ethertype >> 8;
  f[13] = ethertype & 0xff;
  return f;
}

TEST(BpfPipeline, ProbeClassifiesPacketsInTheKernel) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to load BPF programs";
  std::unique_ptr<probe, SkelDeleter> skel(probe__open_and_load());
  ASSERT_TRUE(skel) << "probe__open_and_load failed (verifier or permissions)";

  struct Case {
    uint16_t ethertype;
    int verdict;
  };
  const Case cases[] = {{0x0800, SKIFF_PROBE_OK}, {0x86dd, SKIFF_PROBE_SHOT}, {0x0800, SKIFF_PROBE_OK}};
  for (const Case& c : cases) {
    auto pkt = Frame(c.ethertype);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt.data(), .data_size_in = static_cast<__u32>(pkt.size()),
                .repeat = 1);
    ASSERT_EQ(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.probe_classify), &opts), 0);
    EXPECT_EQ(static_cast<int>(opts.retval), c.verdict) << "ethertype " << std::hex << c.ethertype;
  }

  int map_fd = bpf_map__fd(skel->maps.probe_counts);
  __u32 key = SKIFF_PROBE_SLOT_IPV4;
  skiff_probe_count v{};
  ASSERT_EQ(bpf_map_lookup_elem(map_fd, &key, &v), 0);
  EXPECT_EQ(v.packets, 2u);
  EXPECT_EQ(v.bytes, 128u);
  key = SKIFF_PROBE_SLOT_OTHER;
  ASSERT_EQ(bpf_map_lookup_elem(map_fd, &key, &v), 0);
  EXPECT_EQ(v.packets, 1u);
}

}  // namespace
