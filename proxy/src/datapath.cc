#include "skiff/proxy/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>

#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"
#include "skiff_bpf/lb.h"
#include "sock_destroy.skel.h"
#include "sock_lb.skel.h"

namespace skiff::proxy {

namespace {

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), fmt, args);
  std::string line(buf);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  // bpf_tc_hook_create on an existing clsact qdisc: expected, handled (EEXIST).
  if (line.find("Exclusivity flag on") != std::string::npos) level = LIBBPF_DEBUG;
  if (level == LIBBPF_WARN) log::Warn("libbpf: ", line);
  else if (level == LIBBPF_INFO)
    log::Debug("libbpf: ", line);
  return 0;
}

absl::Status EnsureBpffs(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + dir);
  struct statfs sfs;
  if (statfs(dir.c_str(), &sfs) != 0) return LastErrnoError("statfs " + dir);
  if (static_cast<unsigned long>(sfs.f_type) == BPF_FS_MAGIC) return absl::OkStatus();
  // Not on a bpffs: mount one, as kube-proxy replacements do when the host
  // has none at /sys/fs/bpf.
  if (mount("bpf", dir.c_str(), "bpf", 0, "mode=0700") != 0) return LastErrnoError("mount bpffs on " + dir);
  log::Info("mounted bpffs ", log::Field("dir", dir));
  return absl::OkStatus();
}

std::string PinName(const char* map_name) {
  return std::string("skiff_") + map_name + "_" + SKIFF_LB_PIN_VERSION;
}

absl::Status SetPinPaths(bpf_object* obj, const std::string& dir) {
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    const char* name = bpf_map__name(map);
    if (name[0] == '.') continue;  // .rodata/.bss of the object are private
    std::string path = dir + "/" + PinName(name);
    if (int err = bpf_map__set_pin_path(map, path.c_str()); err)
      return ErrnoError(-err, "set pin path " + path);
  }
  return absl::OkStatus();
}

struct LinkSpec {
  bpf_program* prog;
  bpf_attach_type type;
  const char* pin;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Datapath>> Datapath::Open(const DatapathOptions& options) {
  static bool print_set = [] {
    libbpf_set_print(LibbpfPrint);
    return true;
  }();
  (void)print_set;
  RETURN_IF_ERROR(EnsureBpffs(options.bpffs_dir));
  std::string links = options.bpffs_dir + "/links";
  if (mkdir(links.c_str(), 0700) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + links);

  std::unique_ptr<Datapath> dp(new Datapath());
  dp->dir_ = options.bpffs_dir;
  dp->sock_ = sock_lb__open();
  if (!dp->sock_) return LastErrnoError("open sock_lb BPF object");
  RETURN_IF_ERROR(SetPinPaths(dp->sock_->obj, options.bpffs_dir));
  if (int err = sock_lb__load(dp->sock_); err) return ErrnoError(-err, "load sock_lb BPF object");
  dp->fds_.services = bpf_map__fd(dp->sock_->maps.lb4_services);
  dp->fds_.backends = bpf_map__fd(dp->sock_->maps.lb4_backends);
  dp->fds_.affinity = bpf_map__fd(dp->sock_->maps.lb_affinity);
  dp->fds_.counters = bpf_map__fd(dp->sock_->maps.lb_counters);
  dp->fds_.sock_revnat = bpf_map__fd(dp->sock_->maps.lb4_sock_revnat);
  if (options.load_tc) RETURN_IF_ERROR(dp->LoadTc());
  if (auto st = dp->LoadSockDestroy(); !st.ok())
    log::Warn("connected UDP sockets of removed backends will not be destroyed: ", st);
  return dp;
}

absl::Status Datapath::LoadSockDestroy() {
  destroy_ = sock_destroy__open();
  if (!destroy_) return LastErrnoError("open sock_destroy BPF object");
  RETURN_IF_ERROR(SetPinPaths(destroy_->obj, dir_));
  if (int err = sock_destroy__load(destroy_); err) return ErrnoError(-err, "load sock_destroy BPF object");
  // An iterator link is not attached to anything: each bpf_iter_create() on
  // it walks the UDP sockets of the calling thread's network namespace.
  destroy_link_ = bpf_program__attach_iter(destroy_->progs.skiff_udp_destroy, nullptr);
  if (!destroy_link_) return LastErrnoError("create UDP socket iterator");
  fds_.doomed = bpf_map__fd(destroy_->maps.lb4_doomed);
  fds_.udp_destroy_link = bpf_link__fd(destroy_link_);
  return absl::OkStatus();
}

Datapath::~Datapath() {
  if (destroy_link_) bpf_link__destroy(destroy_link_);
  if (destroy_) sock_destroy__destroy(destroy_);
  DestroyTc();
  if (sock_) sock_lb__destroy(sock_);
}

absl::Status Datapath::AttachSocketLb(const std::string& cgroup_path) {
  UniqueFd cg(open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg) return LastErrnoError("open cgroup " + cgroup_path);
  struct stat cg_st;
  if (fstat(cg.get(), &cg_st) != 0) return LastErrnoError("stat cgroup " + cgroup_path);

  const LinkSpec specs[] = {
      {sock_->progs.skiff_sock4_connect, BPF_CGROUP_INET4_CONNECT, "skiff_sock4_connect"},
      {sock_->progs.skiff_sock4_sendmsg, BPF_CGROUP_UDP4_SENDMSG, "skiff_sock4_sendmsg"},
      {sock_->progs.skiff_sock4_recvmsg, BPF_CGROUP_UDP4_RECVMSG, "skiff_sock4_recvmsg"},
      {sock_->progs.skiff_sock4_getpeername, BPF_CGROUP_INET4_GETPEERNAME, "skiff_sock4_getpeername"},
  };
  for (const LinkSpec& s : specs) {
    std::string pin = dir_ + "/links/" + s.pin + "_" + SKIFF_LB_PIN_VERSION;
    int prog_fd = bpf_program__fd(s.prog);
    UniqueFd old(bpf_obj_get(pin.c_str()));
    if (old) {
      bpf_link_info info;
      memset(&info, 0, sizeof(info));
      __u32 len = sizeof(info);
      bool same_cgroup = bpf_obj_get_info_by_fd(old.get(), &info, &len) == 0 &&
                         info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cg_st.st_ino;
      if (same_cgroup) {
        // Atomic replacement: the hook never runs without a program.
        if (bpf_link_update(old.get(), prog_fd, nullptr) != 0) return LastErrnoError("bpf_link_update " + pin);
        log::Info("replaced program on pinned link ", log::Field("link", pin));
        continue;
      }
      log::Info("pinned link points elsewhere, re-attaching ", log::Field("link", pin));
      unlink(pin.c_str());
    }
    UniqueFd link(bpf_link_create(prog_fd, cg.get(), s.type, nullptr));
    if (!link) return LastErrnoError(std::string("attach ") + s.pin + " to " + cgroup_path);
    if (bpf_obj_pin(link.get(), pin.c_str()) != 0) return LastErrnoError("pin link " + pin);
    log::Info("attached ", log::Field("program", s.pin), " ", log::Field("cgroup", cgroup_path));
  }
  return absl::OkStatus();
}

absl::Status Datapath::RemovePins(const std::string& bpffs_dir) {
  for (const char* l : {"skiff_sock4_connect", "skiff_sock4_sendmsg", "skiff_sock4_recvmsg", "skiff_sock4_getpeername"}) {
    std::string pin = bpffs_dir + "/links/" + l + "_" + SKIFF_LB_PIN_VERSION;
    if (unlink(pin.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + pin);
  }
  for (const char* m : {"lb4_services", "lb4_backends", "lb_affinity", "lb_counters", "lb4_sock_revnat",
                        "lb_maglev", "ct4", "tc_config", "lb4_doomed"}) {
    std::string pin = bpffs_dir + "/" + PinName(m);
    if (unlink(pin.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + pin);
  }
  std::string links = bpffs_dir + "/links";
  rmdir(links.c_str());
  return absl::OkStatus();
}

}  // namespace skiff::proxy
