// A per-test scratch directory: pid-unique, removed afterwards, and stale
// ones from crashed runs (whose pid is gone) removed first.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include "fs.h"

namespace skiff::image::testing {

inline void UnmountBelow(const std::string& dir) {
  auto info = ReadFile("/proc/self/mountinfo");
  if (!info.ok()) return;
  size_t pos = 0;
  std::vector<std::string> mounts;
  while (pos < info->size()) {
    size_t end = info->find('\n', pos);
    if (end == std::string::npos) end = info->size();
    std::string line = info->substr(pos, end - pos);
    pos = end + 1;
    // field 5 is the mount point
    size_t f = 0, i = 0;
    for (; i < 4 && f != std::string::npos; ++i) f = line.find(' ', f + 1);
    if (f == std::string::npos) continue;
    std::string mp = line.substr(f + 1, line.find(' ', f + 1) - f - 1);
    if (mp.rfind(dir, 0) == 0) mounts.push_back(mp);
  }
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
}

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    const std::string base = "/tmp";
    std::string lead = prefix + "-";
    if (DIR* d = ::opendir(base.c_str())) {
      while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n.rfind(lead, 0) != 0) continue;
        int pid = std::atoi(n.substr(lead.size()).c_str());
        if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
          UnmountBelow(base + "/" + n);
          (void)RemoveAll(base + "/" + n);
        }
      }
      ::closedir(d);
    }
    path_ = base + "/" + lead + std::to_string(::getpid()) + "-" + std::to_string(counter()++);
    UnmountBelow(path_);
    (void)RemoveAll(path_);
    (void)MkdirAll(path_);
  }
  ~ScratchDir() {
    UnmountBelow(path_);
    (void)RemoveAll(path_);
  }
  const std::string& path() const { return path_; }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string path_;
};

}  // namespace skiff::image::testing
