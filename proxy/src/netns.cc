#include "netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

namespace skiff::proxy {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && isdigit(s[i + 1]) && isdigit(s[i + 2]) && isdigit(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<UniqueFd> OtherNetworkNamespaces() {
  std::vector<UniqueFd> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  struct stat self {};
  if (stat("/proc/thread-self/ns/net", &self) == 0) seen.insert({self.st_dev, self.st_ino});
  auto consider = [&](const std::string& path) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return;
    struct stat st {};
    if (fstat(fd.get(), &st) != 0 || !seen.insert({st.st_dev, st.st_ino}).second) return;
    // A bind-mounted namespace of another type (mnt, uts, ...).
    if (ioctl(fd.get(), NS_GET_NSTYPE) != CLONE_NEWNET) return;
    out.push_back(std::move(fd));
  };
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (!isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
      consider(std::string("/proc/") + e->d_name + "/ns/net");
    }
    closedir(d);
  }
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 5, "nsfs ") != 0) continue;
    std::istringstream fields(line.substr(0, dash));
    std::string id, parent, devno, root, mount_point;
    if (fields >> id >> parent >> devno >> root >> mount_point) consider(Unescape(mount_point));
  }
  return out;
}

absl::Status InEachNetworkNamespace(const std::vector<UniqueFd>& namespaces, const std::function<absl::Status()>& fn) {
  if (namespaces.empty()) return absl::OkStatus();
  absl::Status result;
  // setns() moves only this helper thread; its namespace goes away with it.
  std::thread worker([&] {
    for (const UniqueFd& ns : namespaces) {
      if (setns(ns.get(), CLONE_NEWNET) != 0) continue;
      absl::Status st = fn();
      if (!st.ok() && result.ok()) result = st;
    }
  });
  worker.join();
  return result;
}

}  // namespace skiff::proxy
