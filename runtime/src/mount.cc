// The container's filesystem view: the spec's mounts on the bind-mounted
// rootfs, /dev with its standard nodes, pivot_root, masked and read-only
// paths. Prepare* runs in the runtime; the rest in the clone'd init and uses
// only syscalls on prepared strings.
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "plan.h"
#include "skiff/common/status.h"

namespace skiff::runtime {
namespace {

struct MountOpt {
  bool clear;
  unsigned long flag;
};

const std::map<std::string, MountOpt>& MountFlags() {
  static const std::map<std::string, MountOpt> kFlags = {
      {"ro", {false, MS_RDONLY}},         {"rw", {true, MS_RDONLY}},
      {"nosuid", {false, MS_NOSUID}},     {"suid", {true, MS_NOSUID}},
      {"nodev", {false, MS_NODEV}},       {"dev", {true, MS_NODEV}},
      {"noexec", {false, MS_NOEXEC}},     {"exec", {true, MS_NOEXEC}},
      {"sync", {false, MS_SYNCHRONOUS}},  {"async", {true, MS_SYNCHRONOUS}},
      {"dirsync", {false, MS_DIRSYNC}},   {"remount", {false, MS_REMOUNT}},
      {"mand", {false, MS_MANDLOCK}},     {"nomand", {true, MS_MANDLOCK}},
      {"atime", {true, MS_NOATIME}},      {"noatime", {false, MS_NOATIME}},
      {"diratime", {true, MS_NODIRATIME}}, {"nodiratime", {false, MS_NODIRATIME}},
      {"relatime", {false, MS_RELATIME}}, {"norelatime", {true, MS_RELATIME}},
      {"strictatime", {false, MS_STRICTATIME}}, {"nostrictatime", {true, MS_STRICTATIME}},
      {"bind", {false, MS_BIND}},         {"rbind", {false, MS_BIND | MS_REC}},
  };
  return kFlags;
}

const std::map<std::string, unsigned long>& PropagationFlags() {
  static const std::map<std::string, unsigned long> kProp = {
      {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
      {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
      {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
      {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
  };
  return kProp;
}

// --- child side -------------------------------------------------------------

// mkdir -p; the last component becomes a file when as_file.
int MakePath(const char* path, bool as_file) {
  // Mount points usually exist already: one syscall instead of a walk.
  // mknod(S_IFREG) creates an empty file and never opens what exists (a
  // fifo or device node at the mount point must not be opened).
  if (as_file) {
    if (mknod(path, S_IFREG | 0644, 0) == 0 || errno == EEXIST) return 0;
  } else if (mkdir(path, 0755) == 0 || errno == EEXIST) {
    return 0;
  }
  if (errno != ENOENT) return -errno;
  char buf[PATH_MAX];
  size_t n = strlen(path);
  if (n >= sizeof(buf)) return -ENAMETOOLONG;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i < n; i++) {
    if (buf[i] != '/') continue;
    buf[i] = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
    buf[i] = '/';
  }
  if (as_file) {
    if (mknod(buf, S_IFREG | 0644, 0) != 0 && errno != EEXIST) return -errno;
    return 0;
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
  return 0;
}

unsigned long StatvfsToMs(unsigned long f) {
  unsigned long m = 0;
  if (f & ST_RDONLY) m |= MS_RDONLY;
  if (f & ST_NOSUID) m |= MS_NOSUID;
  if (f & ST_NODEV) m |= MS_NODEV;
  if (f & ST_NOEXEC) m |= MS_NOEXEC;
  if (f & ST_NOATIME) m |= MS_NOATIME;
  if (f & ST_NODIRATIME) m |= MS_NODIRATIME;
  if (f & ST_RELATIME) m |= MS_RELATIME;
  return m;
}

// Bind remounts must repeat the flags the mount already has, or the kernel
// refuses to clear locked ones.
int RemountBind(const char* target, unsigned long flags) {
  struct statvfs sv;
  unsigned long keep = statvfs(target, &sv) == 0 ? StatvfsToMs(sv.f_flag) : 0;
  if (mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | keep | flags, nullptr) != 0) return -errno;
  return 0;
}

int DoMount(const PreparedMount& m, const char** what) {
  if (m.bind) {
    struct stat st;
    if (stat(m.source.c_str(), &st) != 0) {
      *what = "stat bind source";
      return -errno;
    }
    int rc = MakePath(m.target.c_str(), !S_ISDIR(st.st_mode));
    if (rc < 0) {
      *what = "create mount point";
      return rc;
    }
    if (mount(m.source.c_str(), m.target.c_str(), nullptr, MS_BIND | (m.flags & MS_REC), nullptr) != 0) {
      *what = "bind mount";
      return -errno;
    }
    unsigned long extra = m.flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
    if (extra) {
      rc = RemountBind(m.target.c_str(), extra);
      if (rc < 0) {
        *what = "remount bind";
        return rc;
      }
    }
  } else {
    int rc = MakePath(m.target.c_str(), false);
    if (rc < 0) {
      *what = "create mount point";
      return rc;
    }
    int mrc = mount(m.source.c_str(), m.target.c_str(), m.type.c_str(), m.flags, m.data.empty() ? nullptr : m.data.c_str());
    if (mrc != 0 && m.type == "cgroup2" && (errno == EPERM || errno == EBUSY)) {
      // Without a cgroup namespace the host's hierarchy is bind-mounted instead.
      mrc = mount("/sys/fs/cgroup", m.target.c_str(), nullptr, MS_BIND | MS_REC, nullptr);
      if (mrc == 0 && (m.flags & MS_RDONLY)) mrc = RemountBind(m.target.c_str(), MS_RDONLY);
    }
    if (mrc != 0) {
      *what = "mount";
      return -errno;
    }
  }
  if (m.propagation && mount(nullptr, m.target.c_str(), nullptr, m.propagation, nullptr) != 0) {
    *what = "set mount propagation";
    return -errno;
  }
  return 0;
}

}  // namespace

absl::Status PrepareMounts(const Spec& spec, InitPlan* plan) {
  bool dev_tmpfs = false;
  for (size_t i = 0; i < spec.mounts.size(); i++) {
    const Mount& m = spec.mounts[i];
    PreparedMount pm;
    pm.source = m.source;
    pm.type = m.type;
    pm.target = plan->rootfs + m.destination;
    std::string data;
    for (const std::string& o : m.options) {
      auto f = MountFlags().find(o);
      if (f != MountFlags().end()) {
        if (f->second.clear) pm.flags &= ~f->second.flag;
        else pm.flags |= f->second.flag;
        continue;
      }
      auto p = PropagationFlags().find(o);
      if (p != PropagationFlags().end()) {
        pm.propagation = p->second;
        continue;
      }
      if (o == "tmpcopyup" || o == "idmap" || o == "ridmap") continue;  // not supported; ignored like runc without them
      data += (data.empty() ? "" : ",") + o;
    }
    pm.data = data;
    pm.bind = m.type == "bind" || (pm.flags & MS_BIND);
    if (pm.bind && !m.source.empty() && m.source[0] != '/')
      return absl::InvalidArgumentError("mounts[" + std::to_string(i) + "].source: bind source must be absolute");
    if (m.type == "cgroup" || m.type == "cgroup2") {
      // v1 hierarchies are never given to containers. Without a cgroup
      // namespace a fresh cgroup2 mount would show the whole tree anyway, and
      // a bind of the host's mount is several times cheaper than mounting.
      pm.type = "cgroup2";
      if (!(plan->clone_flags & CLONE_NEWCGROUP) && !plan->cgroup2_mount.empty()) {
        pm.bind = true;
        pm.source = plan->cgroup2_mount;
        pm.flags |= MS_BIND | MS_REC;
        plan->mounts.push_back(std::move(pm));
        continue;
      }
    }
    if (m.destination == "/dev" && m.type == "tmpfs") pm.dev_tmpfs = dev_tmpfs = true;
    if (pm.source.empty()) pm.source = pm.type.empty() ? "none" : pm.type;
    plan->mounts.push_back(std::move(pm));
  }
  struct DefaultDev {
    const char* name;
    int major, minor;
  };
  static const DefaultDev kDefault[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
                                        {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
  if (dev_tmpfs) {
    for (const auto& d : kDefault) {
      PreparedDevice pd;
      pd.host_path = std::string("/dev/") + d.name;
      pd.target = plan->rootfs + "/dev/" + d.name;
      pd.mode = S_IFCHR | 0666;
      pd.dev = makedev(d.major, d.minor);
      plan->devices.push_back(pd);
    }
    const char* links[][2] = {{"/proc/self/fd", "/dev/fd"},    {"/proc/self/fd/0", "/dev/stdin"},
                              {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
                              {"pts/ptmx", "/dev/ptmx"}};
    for (auto& l : links) {
      plan->dev_symlinks.push_back(l[0]);
      plan->dev_symlinks.push_back(plan->rootfs + l[1]);
    }
  }
  if (spec.linux) {
    for (size_t i = 0; i < spec.linux->devices.size(); i++) {
      const Device& d = spec.linux->devices[i];
      PreparedDevice pd;
      if (d.path.empty() || d.path[0] != '/')
        return absl::InvalidArgumentError("linux.devices[" + std::to_string(i) + "].path: must be absolute");
      pd.target = plan->rootfs + d.path;
      mode_t type = d.type == "b" ? S_IFBLK : (d.type == "p" ? S_IFIFO : S_IFCHR);
      if (d.type != "b" && d.type != "c" && d.type != "u" && d.type != "p")
        return absl::InvalidArgumentError("linux.devices[" + std::to_string(i) + "].type: unknown \"" + d.type + "\"");
      pd.mode = type | (d.file_mode.value_or(0666) & 07777);
      pd.dev = makedev(d.major, d.minor);
      pd.uid = d.uid.value_or(0);
      pd.gid = d.gid.value_or(0);
      struct stat st;
      if (stat(d.path.c_str(), &st) == 0 && (st.st_mode & S_IFMT) == type && st.st_rdev == pd.dev) pd.host_path = d.path;
      plan->devices.push_back(pd);
    }
    plan->masked_paths = spec.linux->masked_paths;
    plan->readonly_paths = spec.linux->readonly_paths;
    for (auto& [key, value] : spec.linux->sysctl) {
      std::string path = "/proc/sys/";
      for (char c : key) path += c == '.' ? '/' : c;
      plan->sysctls.push_back({path, value});
    }
    if (!spec.linux->rootfs_propagation.empty())
      plan->rootfs_propagation = PropagationFlags().at(spec.linux->rootfs_propagation);
  }
  return absl::OkStatus();
}

int SetupRootfs(InitPlan* plan, const char** what, const char** obj) {
  unsigned long prop = plan->rootfs_propagation ? plan->rootfs_propagation : (MS_SLAVE | MS_REC);
  *obj = "/";
  // Keep host mount events flowing one way at most; shared would leak ours out.
  if (prop & MS_SHARED) prop = MS_SLAVE | MS_REC;
  if (mount(nullptr, "/", nullptr, prop, nullptr) != 0) {
    *what = "set propagation of /";
    return -errno;
  }
  *obj = plan->rootfs.c_str();
  if (mount(plan->rootfs.c_str(), plan->rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    *what = "bind mount rootfs";
    return -errno;
  }
  for (const PreparedMount& m : plan->mounts) {
    *obj = m.target.c_str();
    int rc = DoMount(m, what);
    if (rc < 0) return rc;
  }
  for (const PreparedDevice& d : plan->devices) {
    *obj = d.target.c_str();
    // mknod where allowed (as runc); in a user namespace only a bind works.
    bool bind = plan->new_userns && !d.host_path.empty();
    int rc = MakePath(d.target.c_str(), bind);
    if (rc < 0) {
      *what = "create device node";
      return rc;
    }
    if (bind) {
      // Bind mounts work in user namespaces too, where mknod does not.
      if (mount(d.host_path.c_str(), d.target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        *what = "bind device";
        return -errno;
      }
    } else {
      rmdir(d.target.c_str());
      unlink(d.target.c_str());
      if (mknod(d.target.c_str(), d.mode, d.dev) != 0) {
        *what = "mknod";
        return -errno;
      }
      // mknod honours the umask; the spec's mode is meant as is.
      if (chmod(d.target.c_str(), d.mode & 07777) != 0) {
        *what = "chmod device";
        return -errno;
      }
      if (chown(d.target.c_str(), d.uid, d.gid) != 0) {
        *what = "chown device";
        return -errno;
      }
    }
  }
  for (size_t i = 0; i + 1 < plan->dev_symlinks.size(); i += 2) {
    *obj = plan->dev_symlinks[i + 1].c_str();
    if (symlink(plan->dev_symlinks[i].c_str(), plan->dev_symlinks[i + 1].c_str()) != 0 && errno != EEXIST) {
      *what = "symlink";
      return -errno;
    }
  }
  return 0;
}

int FinishRootfs(InitPlan* plan, const char** what, const char** obj) {
  *obj = plan->rootfs.c_str();
  if (chdir(plan->rootfs.c_str()) != 0) {
    *what = "chdir to rootfs";
    return -errno;
  }
  if (syscall(SYS_pivot_root, ".", ".") != 0) {
    *what = "pivot_root";
    return -errno;
  }
  // The old root is now stacked under the new one at "."; detach it.
  if (mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    *what = "make old root slave";
    return -errno;
  }
  if (umount2(".", MNT_DETACH) != 0) {
    *what = "detach old root";
    return -errno;
  }
  if (chdir("/") != 0) {
    *what = "chdir /";
    return -errno;
  }
  for (const PreparedSysctl& s : plan->sysctls) {
    *obj = s.path.c_str();
    int fd = open(s.path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      *what = "open sysctl";
      return -errno;
    }
    ssize_t n = write(fd, s.value.data(), s.value.size());
    int err = errno;
    close(fd);
    if (n < 0) {
      *what = "write sysctl";
      return -err;
    }
  }
  for (const std::string& p : plan->readonly_paths) {
    *obj = p.c_str();
    if (mount(p.c_str(), p.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      if (errno == ENOENT) continue;
      *what = "bind readonly path";
      return -errno;
    }
    int rc = RemountBind(p.c_str(), MS_RDONLY | MS_REC);
    if (rc < 0) {
      *what = "remount readonly path";
      return rc;
    }
  }
  for (const std::string& p : plan->masked_paths) {
    *obj = p.c_str();
    struct stat st;
    if (stat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      *what = "stat masked path";
      return -errno;
    }
    int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", p.c_str(), "tmpfs", MS_RDONLY, nullptr)
                                 : mount("/dev/null", p.c_str(), nullptr, MS_BIND, nullptr);
    if (rc != 0) {
      *what = "mask path";
      return -errno;
    }
  }
  if (plan->rootfs_readonly) {
    *obj = "/";
    int rc = RemountBind("/", MS_RDONLY);
    if (rc < 0) {
      *what = "remount rootfs readonly";
      return rc;
    }
  }
  if (plan->rootfs_propagation) {
    *obj = "/";
    if (mount(nullptr, "/", nullptr, plan->rootfs_propagation, nullptr) != 0) {
      *what = "set rootfs propagation";
      return -errno;
    }
  }
  return 0;
}

}  // namespace skiff::runtime
