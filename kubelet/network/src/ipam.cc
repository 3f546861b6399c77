#include "skiff/podnet/ipam.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::podnet {
namespace {

absl::Status MkdirAll(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      cur = path.substr(0, i);
      if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + cur);
    }
  }
  return absl::OkStatus();
}

// A claim or cursor: a symlink (its target is the value) or, as written by
// earlier versions, a small regular file.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  char link[512];
  ssize_t ln = readlink(path.c_str(), link, sizeof(link));
  if (ln >= 0) return std::string(link, ln);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return LastErrnoError("open " + path);
  char buf[512];
  ssize_t n = read(fd.get(), buf, sizeof(buf));
  if (n < 0) return LastErrnoError("read " + path);
  return std::string(buf, n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ipam>> Ipam::Open(const std::string& dir, const std::string& cidr) {
  ASSIGN_OR_RETURN(Ipv4Cidr c, ParseCidr(cidr));
  if (c.prefix > 30) return absl::InvalidArgumentError(absl::StrCat("podCIDR ", cidr, " is too small"));
  std::unique_ptr<Ipam> ipam(new Ipam(dir, c));
  RETURN_IF_ERROR(MkdirAll(dir));
  RETURN_IF_ERROR(ipam->Load());
  return ipam;
}

uint32_t Ipam::Capacity() const { return cidr_.Size() - 3; }

absl::Status Ipam::Load() {
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return LastErrnoError("opendir " + dir_);
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) names.emplace_back(e->d_name);
  closedir(d);
  for (const std::string& name : names) {
    if (name == "." || name == "..") continue;
    std::string path = dir_ + "/" + name;
    if (name.rfind(".tmp-", 0) == 0) {  // an interrupted allocation: never published
      unlink(path.c_str());
      continue;
    }
    if (name == "last") {
      auto t = ReadSmallFile(path);
      if (t.ok()) {
        auto ip = ParseIpv4(std::string(absl::StripAsciiWhitespace(*t)));
        if (ip.ok()) last_ = *ip;
      }
      continue;
    }
    auto ip = ParseIpv4(name);
    if (!ip.ok() || !cidr_.Contains(*ip)) continue;
    ASSIGN_OR_RETURN(std::string owner, ReadSmallFile(path));
    if (owner.empty()) {
      unlink(path.c_str());
      continue;
    }
    auto [it, inserted] = by_owner_.emplace(owner, *ip);
    if (!inserted) {
      // Two addresses for one owner cannot come from Allocate; keep the first.
      unlink(path.c_str());
      continue;
    }
    used_.insert(*ip);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> Ipam::Allocate(const std::string& owner) {
  if (owner.empty() || owner.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad IPAM owner \"", owner, "\""));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = by_owner_.find(owner); it != by_owner_.end()) return it->second;
  const uint32_t first = cidr_.network + 2, last = cidr_.Broadcast() - 1;
  const uint32_t n = last - first + 1;
  uint32_t start = (last_ >= first && last_ <= last) ? last_ - first + 1 : 0;
  // A claim is a symlink named after the address whose target is the owner:
  // symlink(2) creates it complete and fails with EEXIST when the address is
  // taken, so one call claims an address atomically, even against another
  // allocator sharing the directory.
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t ip = first + (start + i) % n;
    if (used_.count(ip)) continue;
    std::string path = dir_ + "/" + FormatIpv4(ip);
    if (symlink(owner.c_str(), path.c_str()) != 0) {
      if (errno == EEXIST) continue;
      return LastErrnoError("claim " + path);
    }
    used_.insert(ip);
    by_owner_[owner] = ip;
    last_ = ip;
    // The round-robin cursor; losing it costs nothing but reuse order.
    std::string lastp = dir_ + "/last", lastt = dir_ + "/.tmp-last";
    unlink(lastt.c_str());
    if (symlink(FormatIpv4(ip).c_str(), lastt.c_str()) == 0) rename(lastt.c_str(), lastp.c_str());
    return ip;
  }
  return absl::ResourceExhaustedError(absl::StrCat("no free address in podCIDR ", cidr_.ToString()));
}

absl::Status Ipam::ReleaseLocked(const std::string& owner) {
  auto it = by_owner_.find(owner);
  if (it == by_owner_.end()) return absl::OkStatus();
  std::string path = dir_ + "/" + FormatIpv4(it->second);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return LastErrnoError("unlink " + path);
  used_.erase(it->second);
  by_owner_.erase(it);
  return absl::OkStatus();
}

absl::Status Ipam::Release(const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  return ReleaseLocked(owner);
}

absl::StatusOr<int> Ipam::ReleaseAllExcept(const std::set<std::string>& keep) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> drop;
  for (const auto& [owner, ip] : by_owner_) {
    if (!keep.count(owner)) drop.push_back(owner);
  }
  for (const auto& o : drop) RETURN_IF_ERROR(ReleaseLocked(o));
  return static_cast<int>(drop.size());
}

std::map<std::string, uint32_t> Ipam::Allocations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_owner_;
}

}  // namespace skiff::podnet
