#include "skiff/proxy/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <vector>

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

// Maps and links every layout version pins (RemovePins, migration).
constexpr const char* kMapNames[] = {"lb4_services", "lb4_backends", "lb_affinity",     "lb_counters",
                                     "lb4_sock_revnat", "lb_maglev", "ct4",   "tc_config",
                                     "lb4_doomed", "lb6_services", "lb6_backends", "lb6_sock_revnat", "lb6_doomed",
                                     "ct6", "tc_config6"};
constexpr const char* kLinkNames[] = {"skiff_sock4_connect",     "skiff_sock4_sendmsg",     "skiff_sock4_recvmsg",
                                      "skiff_sock4_getpeername", "skiff_sock6_connect",     "skiff_sock6_sendmsg",
                                      "skiff_sock6_recvmsg",     "skiff_sock6_getpeername"};
// Connection state that survives a layout change when its record did not
// change: socket reverse NAT (getpeername/recvmsg of established sockets)
// and tc conntrack (established NodePort flows). Affinity and counters are
// keyed by service ids, which the new generation allocates afresh.
constexpr const char* kCarriedState[] = {"lb4_sock_revnat", "lb6_sock_revnat", "ct4", "ct6"};

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
  dp->version_ = options.pin_version;
  RETURN_IF_ERROR(dp->FindOlderLayout());
  dp->sock_ = sock_lb__open();
  if (!dp->sock_) return LastErrnoError("open sock_lb BPF object");
  RETURN_IF_ERROR(dp->SetPinPaths(dp->sock_->obj));
  if (int err = sock_lb__load(dp->sock_); err) return ErrnoError(-err, "load sock_lb BPF object");
  dp->fds_.services = bpf_map__fd(dp->sock_->maps.lb4_services);
  dp->fds_.backends = bpf_map__fd(dp->sock_->maps.lb4_backends);
  dp->fds_.affinity = bpf_map__fd(dp->sock_->maps.lb_affinity);
  dp->fds_.counters = bpf_map__fd(dp->sock_->maps.lb_counters);
  dp->fds_.sock_revnat = bpf_map__fd(dp->sock_->maps.lb4_sock_revnat);
  dp->fds_.services6 = bpf_map__fd(dp->sock_->maps.lb6_services);
  dp->fds_.backends6 = bpf_map__fd(dp->sock_->maps.lb6_backends);
  dp->fds_.sock_revnat6 = bpf_map__fd(dp->sock_->maps.lb6_sock_revnat);
  if (options.load_tc) RETURN_IF_ERROR(dp->LoadTc());
  if (auto st = dp->LoadSockDestroy(); !st.ok())
    log::Warn("connected UDP sockets of removed backends will not be destroyed: ", st);
  if (dp->migrating()) RETURN_IF_ERROR(dp->CopyCompatibleState());
  return dp;
}

std::string Datapath::PinName(const char* map, const std::string& version) const {
  return dir_ + "/skiff_" + map + "_" + version;
}

absl::Status Datapath::SetPinPaths(bpf_object* obj) {
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    const char* name = bpf_map__name(map);
    if (name[0] == '.') continue;  // .rodata/.bss of the object are private
    std::string path = PinName(name, version_);
    if (int err = bpf_map__set_pin_path(map, path.c_str()); err) return ErrnoError(-err, "set pin path " + path);
  }
  return absl::OkStatus();
}

// Another generation's layout: a pinned services map (the one map every
// generation has) under a version other than ours, and none under ours.
absl::Status Datapath::FindOlderLayout() {
  if (access(PinName("lb4_services", version_).c_str(), F_OK) == 0) return absl::OkStatus();
  DIR* d = opendir(dir_.c_str());
  if (!d) return LastErrnoError("open " + dir_);
  const std::string prefix = "skiff_lb4_services_";
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) == 0 && name.size() > prefix.size()) old_version_ = name.substr(prefix.size());
  }
  closedir(d);
  if (migrating())
    log::Info("pinned maps of another layout found, migrating ", log::Field("from", old_version_), " ",
              log::Field("to", version_));
  return absl::OkStatus();
}

absl::Status Datapath::CopyCompatibleState() {
  for (const char* name : kCarriedState) {
    UniqueFd old(bpf_obj_get(PinName(name, old_version_).c_str()));
    UniqueFd cur(bpf_obj_get(PinName(name, version_).c_str()));
    if (!old || !cur) continue;  // not in that generation, or not loaded now
    bpf_map_info oi{}, ci{};
    __u32 ol = sizeof(oi), cl = sizeof(ci);
    if (bpf_obj_get_info_by_fd(old.get(), &oi, &ol) != 0 || bpf_obj_get_info_by_fd(cur.get(), &ci, &cl) != 0)
      return LastErrnoError(std::string("map info of ") + name);
    if (oi.key_size != ci.key_size || oi.value_size != ci.value_size || oi.type != ci.type) {
      log::Warn("layout of a state map changed, not carried over ", log::Field("map", name));
      continue;
    }
    std::vector<uint8_t> key(oi.key_size), next(oi.key_size), value(oi.value_size);
    bool first = true;
    long long copied = 0;
    while (bpf_map_get_next_key(old.get(), first ? nullptr : key.data(), next.data()) == 0) {
      first = false;
      key = next;
      if (bpf_map_lookup_elem(old.get(), key.data(), value.data()) != 0) continue;  // gone meanwhile
      if (bpf_map_update_elem(cur.get(), key.data(), value.data(), BPF_NOEXIST) == 0) ++copied;
    }
    log::Info("carried connection state over ", log::Field("map", name), " ", log::Field("entries", copied));
  }
  return absl::OkStatus();
}

absl::Status Datapath::FinishMigration() {
  if (!migrating()) return absl::OkStatus();
  RETURN_IF_ERROR(RemovePins(dir_, old_version_));
  log::Info("migration done, removed the older layout's pins ", log::Field("version", old_version_));
  old_version_.clear();
  return absl::OkStatus();
}

absl::Status Datapath::LoadSockDestroy() {
  destroy_ = sock_destroy__open();
  if (!destroy_) return LastErrnoError("open sock_destroy BPF object");
  RETURN_IF_ERROR(SetPinPaths(destroy_->obj));
  if (int err = sock_destroy__load(destroy_); err) return ErrnoError(-err, "load sock_destroy BPF object");
  // An iterator link is not attached to anything: each bpf_iter_create() on
  // it walks the UDP sockets of the calling thread's network namespace.
  destroy_link_ = bpf_program__attach_iter(destroy_->progs.skiff_udp_destroy, nullptr);
  if (!destroy_link_) return LastErrnoError("create UDP socket iterator");
  fds_.doomed = bpf_map__fd(destroy_->maps.lb4_doomed);
  fds_.doomed6 = bpf_map__fd(destroy_->maps.lb6_doomed);
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
      {sock_->progs.skiff_sock6_connect, BPF_CGROUP_INET6_CONNECT, "skiff_sock6_connect"},
      {sock_->progs.skiff_sock6_sendmsg, BPF_CGROUP_UDP6_SENDMSG, "skiff_sock6_sendmsg"},
      {sock_->progs.skiff_sock6_recvmsg, BPF_CGROUP_UDP6_RECVMSG, "skiff_sock6_recvmsg"},
      {sock_->progs.skiff_sock6_getpeername, BPF_CGROUP_INET6_GETPEERNAME, "skiff_sock6_getpeername"},
  };
  for (const LinkSpec& s : specs) {
    std::string pin = dir_ + "/links/" + s.pin + "_" + version_;
    int prog_fd = bpf_program__fd(s.prog);
    UniqueFd old(bpf_obj_get(pin.c_str()));
    if (!old && migrating()) {
      // The older generation's link: swap our program in atomically and pin
      // the link under our name; its old pin goes with FinishMigration().
      std::string old_pin = dir_ + "/links/" + s.pin + "_" + old_version_;
      old = UniqueFd(bpf_obj_get(old_pin.c_str()));
      if (old && bpf_obj_pin(old.get(), pin.c_str()) != 0) return LastErrnoError("re-pin link " + old_pin);
    }
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

absl::Status Datapath::RemovePins(const std::string& bpffs_dir, const std::string& version) {
  for (const char* l : kLinkNames) {
    std::string pin = bpffs_dir + "/links/" + l + "_" + version;
    if (unlink(pin.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + pin);
  }
  for (const char* m : kMapNames) {
    std::string pin = bpffs_dir + "/skiff_" + m + "_" + version;
    if (unlink(pin.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + pin);
  }
  std::string links = bpffs_dir + "/links";
  rmdir(links.c_str());  // fails while another version still has links: fine
  return absl::OkStatus();
}

}  // namespace skiff::proxy
