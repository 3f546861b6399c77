// The tc half of the datapath: tc_nodeport on the node's interfaces through
// libbpf's tc API (clsact qdisc + direct-action filter), replacing the
// filter in place on restart (BPF_TC_F_REPLACE) so the interface is never
// without the program.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>

#include <cstring>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/proxy/datapath.h"
#include "skiff_bpf/lb.h"
#include "tc_nodeport.skel.h"

namespace skiff::proxy {

namespace {
constexpr uint32_t kTcHandle = 0x5c1f;
constexpr uint32_t kTcPriority = 1;

absl::Status AttachOne(int ifindex, bpf_tc_attach_point point, int prog_fd, const std::string& what) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) return ErrnoError(-err, "create clsact qdisc for " + what);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) return ErrnoError(-err, "attach tc program " + what);
  return absl::OkStatus();
}
}  // namespace

absl::Status Datapath::LoadTc() {
  tc_ = tc_nodeport__open();
  if (!tc_) return LastErrnoError("open tc_nodeport BPF object");
  RETURN_IF_ERROR(SetPinPaths(tc_->obj));
  if (int err = tc_nodeport__load(tc_); err) return ErrnoError(-err, "load tc_nodeport BPF object");
  fds_.maglev = bpf_map__fd(tc_->maps.lb_maglev);
  fds_.ct = bpf_map__fd(tc_->maps.ct4);
  fds_.tc_config = bpf_map__fd(tc_->maps.tc_config);
  fds_.ct6 = bpf_map__fd(tc_->maps.ct6);
  fds_.tc_config6 = bpf_map__fd(tc_->maps.tc_config6);
  return absl::OkStatus();
}

void Datapath::DestroyTc() {
  if (tc_) tc_nodeport__destroy(tc_);
  tc_ = nullptr;
}

absl::Status Datapath::AttachTc(const std::string& ifname) {
  if (!tc_) return absl::FailedPreconditionError("tc datapath not loaded");
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (!ifindex) return LastErrnoError("interface " + ifname);
  RETURN_IF_ERROR(AttachOne(ifindex, BPF_TC_INGRESS, tc_ingress_fd(), ifname + " ingress"));
  RETURN_IF_ERROR(AttachOne(ifindex, BPF_TC_EGRESS, tc_egress_fd(), ifname + " egress"));
  log::Info("attached tc NodePort programs ", log::Field("interface", ifname));
  return absl::OkStatus();
}

absl::Status Datapath::SetTcConfig(uint32_t node_address_be) {
  if (fds_.tc_config < 0) return absl::FailedPreconditionError("tc datapath not loaded");
  skiff_tc_config cfg{};
  cfg.node_address = node_address_be;
  // Below the kernel's default ephemeral range (32768-60999), so SNAT ports
  // never collide with the node's own connections.
  cfg.snat_port_min = 20000;
  cfg.snat_port_max = 29999;
  cfg.ct_timeout_s = 3600;
  uint32_t zero = 0;
  if (bpf_map_update_elem(fds_.tc_config, &zero, &cfg, BPF_ANY) != 0) return LastErrnoError("update tc config");
  return absl::OkStatus();
}

absl::Status Datapath::SetTcConfig6(const std::array<uint32_t, 4>& node_address6) {
  if (fds_.tc_config6 < 0) return absl::FailedPreconditionError("tc datapath not loaded");
  skiff_tc_config6 cfg{};
  memcpy(cfg.node_address6, node_address6.data(), sizeof(cfg.node_address6));
  uint32_t zero = 0;
  if (bpf_map_update_elem(fds_.tc_config6, &zero, &cfg, BPF_ANY) != 0) return LastErrnoError("update tc config6");
  return absl::OkStatus();
}

absl::Status Datapath::DetachTc(const std::string& ifname) {
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (!ifindex) return LastErrnoError("interface " + ifname);
  for (bpf_tc_attach_point point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
    int err = bpf_tc_detach(&hook, &opts);
    if (err && err != -ENOENT && err != -EINVAL) return ErrnoError(-err, "detach tc program from " + ifname);
  }
  return absl::OkStatus();
}

int Datapath::tc_ingress_fd() const { return tc_ ? bpf_program__fd(tc_->progs.skiff_tc_ingress) : -1; }
int Datapath::tc_egress_fd() const { return tc_ ? bpf_program__fd(tc_->progs.skiff_tc_egress) : -1; }

}  // namespace skiff::proxy
