// Loading, pinning and attaching the service datapath (bpf/sock_lb.bpf.c and
// bpf/tc_nodeport.bpf.c) with libbpf.
//
// Maps are pinned as <bpffs-dir>/skiff_<map>_v1 and reused by the next agent;
// cgroup programs are attached through bpf_links pinned as
// <bpffs-dir>/links/skiff_<hook>_v1, which a new agent updates in place
// (bpf_link_update), so the hooks are never detached across a restart.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skiff_bpf/lb.h"

struct sock_lb;
struct tc_nodeport;
struct sock_destroy;
struct bpf_link;
struct bpf_object;

namespace skiff::proxy {

// Descriptors of the shared maps (owned by the Datapath).
struct LbMapFds {
  int services = -1;
  int backends = -1;
  int affinity = -1;
  int counters = -1;
  int sock_revnat = -1;
  // IPv6 socket LB (lb6_* maps of sock_lb); -1 in a ServiceMap built
  // without them (IPv6 frontends are then refused by Apply()).
  int services6 = -1;
  int backends6 = -1;
  int sock_revnat6 = -1;
  int maglev = -1;   // -1 unless the tc object is loaded
  int ct = -1;       // -1 unless the tc object is loaded
  int tc_config = -1;
  int ct6 = -1;      // IPv6 tc conntrack; -1 unless the tc object is loaded
  int tc_config6 = -1;
  // Connected-UDP socket destruction (bpf/sock_destroy.bpf.c); -1 when the
  // kernel cannot load it (bpf_sock_destroy needs 6.5).
  int doomed = -1;
  int doomed6 = -1;
  int udp_destroy_link = -1;
};

struct DatapathOptions {
  std::string bpffs_dir = "/sys/fs/bpf/skiff";
  bool load_tc = false;  // also load tc_nodeport (NodePort/external IPs)
  // Layout version in pinned names; only tests set another one (to play an
  // agent generation with an older layout).
  std::string pin_version = SKIFF_LB_PIN_VERSION;
};

class Datapath {
 public:
  // Mounts a bpffs on bpffs_dir when it is not on one, opens the objects with
  // every map's pin path set, and loads them (reusing compatible pinned maps).
  static absl::StatusOr<std::unique_ptr<Datapath>> Open(const DatapathOptions& options);
  ~Datapath();

  // Attaches (or atomically replaces, via the pinned links) the socket LB
  // programs at the cgroup v2 directory `cgroup_path`. During a migration the
  // older generation's links are taken over (bpf_link_update, then re-pinned
  // under this version), so the hooks never run without a program; call it
  // only once the new maps are programmed.
  absl::Status AttachSocketLb(const std::string& cgroup_path);

  // Layout migration. Open() notices pins of another layout version in
  // bpffs_dir. The new maps start empty (the agent reprograms services and
  // backends from the desired state); connection state whose layout did not
  // change (socket reverse NAT, tc conntrack) is copied over, so established
  // flows keep their translation. FinishMigration() removes the old pins
  // after AttachSocketLb() took over the hooks.
  bool migrating() const { return !old_version_.empty(); }
  const std::string& migrating_from() const { return old_version_; }
  absl::Status FinishMigration();

  // tc ingress + egress on interface `ifname` of the current netns.
  absl::Status AttachTc(const std::string& ifname);
  absl::Status SetTcConfig(uint32_t node_address_be);
  // The node's IPv6 address for IPv6 NodePorts and SNAT (network order).
  absl::Status SetTcConfig6(const std::array<uint32_t, 4>& node_address6);

  // Removes the pinned links (detaching the programs) and the pinned maps
  // of layout `version`.
  static absl::Status RemovePins(const std::string& bpffs_dir, const std::string& version = SKIFF_LB_PIN_VERSION);
  // Removes skiff's tc filters (ingress and egress) from `ifname`.
  static absl::Status DetachTc(const std::string& ifname);

  const LbMapFds& maps() const { return fds_; }
  int tc_ingress_fd() const;
  int tc_egress_fd() const;

 private:
  Datapath() = default;
  absl::Status LoadTc();
  absl::Status LoadSockDestroy();
  absl::Status SetPinPaths(struct bpf_object* obj);
  std::string PinName(const char* map, const std::string& version) const;
  absl::Status FindOlderLayout();
  absl::Status CopyCompatibleState();
  std::string version_;
  std::string old_version_;
  void DestroyTc();
  std::string dir_;
  sock_lb* sock_ = nullptr;
  tc_nodeport* tc_ = nullptr;
  sock_destroy* destroy_ = nullptr;
  bpf_link* destroy_link_ = nullptr;
  LbMapFds fds_;
};

}  // namespace skiff::proxy
