#include "skiff/podnet/netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <thread>

#include "skiff/common/status.h"

namespace skiff::podnet {

absl::Status CreateNetns(const std::string& path) {
  {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
    if (!fd.valid()) return LastErrnoError("create netns file " + path);
  }
  absl::Status result;
  // unshare(CLONE_NEWNET) moves only the calling thread; this thread ends
  // right after pinning the namespace, so no other thread ever sees it.
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      result = LastErrnoError("unshare(CLONE_NEWNET)");
      return;
    }
    if (mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      result = LastErrnoError("bind mount netns on " + path);
    }
  });
  t.join();
  if (!result.ok()) unlink(path.c_str());
  return result;
}

bool IsNetns(const std::string& path) {
  struct statfs fs{};
  if (statfs(path.c_str(), &fs) != 0) return false;
  return fs.f_type == NSFS_MAGIC;
}

absl::Status DeleteNetns(const std::string& path) {
  if (umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return LastErrnoError("unmount netns " + path);
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + path);
  return absl::OkStatus();
}

absl::Status RunInNetns(const std::string& path, const std::function<absl::Status()>& fn) {
  UniqueFd ns(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return LastErrnoError("open netns " + path);
  absl::Status result;
  std::thread t([&] {
    if (setns(ns.get(), CLONE_NEWNET) != 0) {
      result = LastErrnoError("setns " + path);
      return;
    }
    result = fn();
  });
  t.join();
  return result;
}

}  // namespace skiff::podnet
