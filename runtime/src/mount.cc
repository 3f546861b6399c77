// The container's filesystem view: the spec's mounts on the bind-mounted
// rootfs, /dev with its standard nodes, pivot_root, masked and read-only
// paths. Prepare* runs in the runtime; the rest in the clone'd init and uses
// only syscalls on prepared strings.
#include <fcntl.h>
#include <linux/openat2.h>
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

// Opens `dest` (a container path) below root_fd the way the container will
// see it: symlinks and ".." resolve as if root_fd were "/", so a link in the
// image cannot point a mount outside the rootfs. Missing components are
// created (the last one a file when as_file). Returns an O_PATH fd or -errno.
int OpenInRoot(int root_fd, const char* dest, bool as_file) {
  struct open_how how = {};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  while (*dest == '/') dest++;
  if (!*dest) return static_cast<int>(syscall(SYS_openat2, root_fd, ".", &how, sizeof(how)));
  // Mount points usually exist: one syscall.
  int fd = static_cast<int>(syscall(SYS_openat2, root_fd, dest, &how, sizeof(how)));
  if (fd >= 0 || errno != ENOENT) return fd >= 0 ? fd : -errno;
  char buf[PATH_MAX];
  size_t n = strlen(dest);
  if (n >= sizeof(buf)) return -ENAMETOOLONG;
  memcpy(buf, dest, n + 1);
  // Walk the prefixes, each resolved from the root again, creating what is
  // missing in the directory its parent prefix resolved to.
  int parent = static_cast<int>(syscall(SYS_openat2, root_fd, ".", &how, sizeof(how)));
  if (parent < 0) return -errno;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    bool last = buf[i] == 0;
    char saved = buf[i];
    buf[i] = 0;
    const char* name = buf + start;
    if (*name && strcmp(name, ".") != 0) {
      int next = static_cast<int>(syscall(SYS_openat2, root_fd, buf, &how, sizeof(how)));
      if (next < 0 && errno == ENOENT) {
        if (strcmp(name, "..") == 0) {
          close(parent);
          return -ENOENT;
        }
        int rc = last && as_file ? mknodat(parent, name, S_IFREG | 0644, 0) : mkdirat(parent, name, 0755);
        // EEXIST here: a dangling symlink; resolving it again fails below.
        if (rc != 0 && errno != EEXIST) {
          int err = errno;
          close(parent);
          return -err;
        }
        next = static_cast<int>(syscall(SYS_openat2, root_fd, buf, &how, sizeof(how)));
      }
      if (next < 0) {
        int err = errno;
        close(parent);
        return -err;
      }
      close(parent);
      parent = next;
    }
    buf[i] = saved;
    start = i + 1;
  }
  return parent;
}

// The host path of an fd from OpenInRoot, checked to be inside the rootfs.
int FdPath(int fd, const std::string& rootfs, char* out, size_t len) {
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, out, len - 1);
  if (n < 0) return -errno;
  if (static_cast<size_t>(n) >= len - 1) return -ENAMETOOLONG;
  out[n] = 0;
  size_t r = rootfs.size();
  if (rootfs == "/") return 0;
  if (strncmp(out, rootfs.c_str(), r) != 0 || (out[r] != 0 && out[r] != '/')) return -EXDEV;
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

int DoMount(const PreparedMount& m, int root_fd, const std::string& rootfs, const char** what) {
  bool as_file = false;
  if (m.bind) {
    struct stat st;
    if (stat(m.source.c_str(), &st) != 0) {
      *what = "stat bind source";
      return -errno;
    }
    as_file = !S_ISDIR(st.st_mode);
  }
  int fd = OpenInRoot(root_fd, m.dest.c_str(), as_file);
  if (fd < 0) {
    *what = "resolve mount point inside the rootfs";
    return fd;
  }
  // The mount goes on the fd's own path (/proc/self/fd/N follows the very
  // dentry we resolved); later steps use the resolved host path, now a
  // mount point of ours.
  char proc_fd[64], target[PATH_MAX];
  snprintf(proc_fd, sizeof(proc_fd), "/proc/self/fd/%d", fd);
  int rc = FdPath(fd, rootfs, target, sizeof(target));
  if (rc < 0) {
    close(fd);
    *what = "resolve mount point inside the rootfs";
    return rc;
  }
  if (m.bind) {
    rc = mount(m.source.c_str(), proc_fd, nullptr, MS_BIND | (m.flags & MS_REC), nullptr);
    int err = errno;
    close(fd);
    if (rc != 0) {
      *what = "bind mount";
      return -err;
    }
    unsigned long extra = m.flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
    if (extra) {
      rc = RemountBind(target, extra);
      if (rc < 0) {
        *what = "remount bind";
        return rc;
      }
    }
  } else {
    int mrc = mount(m.source.c_str(), proc_fd, m.type.c_str(), m.flags, m.data.empty() ? nullptr : m.data.c_str());
    int err = errno;
    close(fd);
    if (mrc != 0 && m.type == "cgroup2" && (err == EPERM || err == EBUSY)) {
      // Without a cgroup namespace the host's hierarchy is bind-mounted instead.
      mrc = mount("/sys/fs/cgroup", target, nullptr, MS_BIND | MS_REC, nullptr);
      err = errno;
      if (mrc == 0 && (m.flags & MS_RDONLY)) {
        mrc = RemountBind(target, MS_RDONLY);
        err = -mrc;
      }
    }
    if (mrc != 0) {
      *what = "mount";
      return -err;
    }
  }
  if (m.propagation && mount(nullptr, target, nullptr, m.propagation, nullptr) != 0) {
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
    pm.dest = m.destination;
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
      pd.dest = std::string("/dev/") + d.name;
      pd.target = plan->rootfs + pd.dest;
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
      pd.dest = d.path;
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

namespace {

int SetupDevice(const PreparedDevice& d, int parent, const char* name, bool bind, const char** what) {
  if (bind) {
    // Bind mounts work in user namespaces too, where mknod does not.
    if (mknodat(parent, name, S_IFREG | 0644, 0) != 0 && errno != EEXIST) {
      *what = "create device node";
      return -errno;
    }
    int fd = openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      *what = "open device node";
      return -errno;
    }
    char proc_fd[64];
    snprintf(proc_fd, sizeof(proc_fd), "/proc/self/fd/%d", fd);
    int rc = mount(d.host_path.c_str(), proc_fd, nullptr, MS_BIND, nullptr);
    int err = errno;
    close(fd);
    if (rc != 0) {
      *what = "bind device";
      return -err;
    }
    return 0;
  }
  if (unlinkat(parent, name, 0) != 0 && errno == EISDIR) unlinkat(parent, name, AT_REMOVEDIR);
  if (mknodat(parent, name, d.mode, d.dev) != 0) {
    *what = "mknod";
    return -errno;
  }
  // mknod honours the umask; the spec's mode is meant as is.
  if (fchmodat(parent, name, d.mode & 07777, 0) != 0) {
    *what = "chmod device";
    return -errno;
  }
  if (fchownat(parent, name, d.uid, d.gid, AT_SYMLINK_NOFOLLOW) != 0) {
    *what = "chown device";
    return -errno;
  }
  return 0;
}

// Spec mounts, then device nodes, every destination resolved inside the
// rootfs (OpenInRoot).
int SetupMountsAndDevices(InitPlan* plan, int root_fd, const char** what, const char** obj) {
  for (const PreparedMount& m : plan->mounts) {
    *obj = m.target.c_str();
    int rc = DoMount(m, root_fd, plan->rootfs, what);
    if (rc < 0) return rc;
  }
  // Nodes usually share their directory (/dev): its fd is kept for the next.
  char dir[PATH_MAX], last_dir[PATH_MAX] = "";
  int parent = -1;
  int rc = 0;
  for (const PreparedDevice& d : plan->devices) {
    *obj = d.target.c_str();
    size_t n = d.dest.size();
    size_t slash = d.dest.rfind('/');
    if (n >= sizeof(dir) || slash == std::string::npos || slash + 1 == n) {
      *what = "device path";
      rc = -EINVAL;
      break;
    }
    memcpy(dir, d.dest.data(), slash);
    dir[slash] = 0;
    if (parent < 0 || strcmp(dir, last_dir) != 0) {
      if (parent >= 0) close(parent);
      parent = OpenInRoot(root_fd, dir, false);
      if (parent < 0) {
        rc = parent;
        *what = "resolve device directory inside the rootfs";
        break;
      }
      memcpy(last_dir, dir, slash + 1);
    }
    // mknod where allowed (as runc); in a user namespace only a bind works.
    rc = SetupDevice(d, parent, d.dest.c_str() + slash + 1, plan->new_userns && !d.host_path.empty(), what);
    if (rc < 0) break;
  }
  if (parent >= 0) close(parent);
  return rc;
}

}  // namespace

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
  int root_fd = open(plan->rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) {
    *what = "open rootfs";
    return -errno;
  }
  int rc = SetupMountsAndDevices(plan, root_fd, what, obj);
  close(root_fd);
  if (rc < 0) return rc;
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
