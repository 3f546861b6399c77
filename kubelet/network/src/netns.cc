#include "skiff/podnet/netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "skiff/common/log.h"
#include "skiff/common/status.h"

namespace skiff::podnet {
namespace {

// Runs fn with the calling thread in another network namespace (`enter`
// switches it there) and brings it back. Namespaces are per thread, so the
// process's other threads never notice. A thread that cannot get back would
// go on configuring the wrong namespace, so that ends the process.
absl::Status WithThreadNetns(const std::function<absl::Status()>& enter, const std::function<absl::Status()>& fn) {
  UniqueFd home(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home.valid()) return LastErrnoError("open own netns");
  absl::Status st = enter();
  if (!st.ok()) return st;
  if (fn) st = fn();
  if (setns(home.get(), CLONE_NEWNET) != 0) {
    log::Error("podnet: cannot return a thread to its network namespace: ", strerror(errno));
    std::abort();
  }
  return st;
}

}  // namespace

absl::Status CreateNetns(const std::string& path, const std::function<absl::Status()>& inside) {
  {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
    if (!fd.valid()) return LastErrnoError("create netns file " + path);
  }
  absl::Status result = WithThreadNetns(
      [&]() -> absl::Status {
        if (unshare(CLONE_NEWNET) != 0) return LastErrnoError("unshare(CLONE_NEWNET)");
        return absl::OkStatus();
      },
      [&]() -> absl::Status {
        if (mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
          return LastErrnoError("bind mount netns on " + path);
        }
        return inside ? inside() : absl::OkStatus();
      });
  if (!result.ok()) DeleteNetns(path).IgnoreError();
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

absl::Status EnterNetns(const std::string& path, const std::function<absl::Status()>& fn) {
  UniqueFd ns(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return LastErrnoError("open netns " + path);
  return WithThreadNetns(
      [&]() -> absl::Status {
        if (setns(ns.get(), CLONE_NEWNET) != 0) return LastErrnoError("setns " + path);
        return absl::OkStatus();
      },
      fn);
}

}  // namespace skiff::podnet
