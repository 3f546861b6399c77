// cgroup v2: finding the mount, translating OCI resources to files, the
// cgroupfs driver (direct file writes: no libcgroup, whose v2 support adds a
// config layer we do not need), and helpers to kill and list a cgroup.
#include "skiff/runtime/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_split.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::runtime {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return LastErrnoError("read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteFile(const std::string& path, const std::string& value) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | O_TRUNC));
  if (!fd) return LastErrnoError("open " + path);
  if (write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    return LastErrnoError("write \"" + value + "\" to " + path);
  return absl::OkStatus();
}

std::set<std::string> Controllers(const std::string& file) {
  std::set<std::string> out;
  auto text = ReadFile(file);
  if (!text.ok()) return out;
  for (absl::string_view c : absl::StrSplit(*text, absl::ByAnyChar(" \n"), absl::SkipEmpty()))
    out.insert(std::string(c));
  return out;
}

std::string Max(int64_t v) { return v < 0 ? "max" : std::to_string(v); }

// mkdir -p for the part of `path` below `root`, enabling every controller the
// parent offers in each directory's cgroup.subtree_control on the way (never
// at the mount root: that is the machine's, not ours).
absl::Status MakeCgroupDirsOnce(const std::string& root, const std::string& rel) {
  std::string cur = root;
  std::vector<std::string> parts = absl::StrSplit(rel, '/', absl::SkipEmpty());
  for (size_t i = 0; i < parts.size(); i++) {
    if (parts[i] == "..") return absl::InvalidArgumentError("cgroup path \"" + rel + "\" escapes the hierarchy");
    std::string parent = cur;
    cur += "/" + parts[i];
    if (parent != root) {
      std::set<std::string> have = Controllers(parent + "/cgroup.controllers");
      std::set<std::string> on = Controllers(parent + "/cgroup.subtree_control");
      std::string want;
      for (const auto& c : have)
        if (!on.count(c)) want += (want.empty() ? "+" : " +") + c;
      if (!want.empty()) {
        absl::Status st = WriteFile(parent + "/cgroup.subtree_control", want);
        if (!st.ok()) log::Warn("cgroup: cannot enable controllers ", want, " in ", parent, ": ", st);
      }
    }
    if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return LastErrnoError("mkdir cgroup " + cur);
  }
  return absl::OkStatus();
}

absl::Status MakeCgroupDirs(const std::string& root, const std::string& rel) {
  // A shared parent (e.g. <root>/skiff) may be removed by another runtime's
  // cleanup, which rmdirs it once empty, between our mkdir of it and of the
  // child: then the child's mkdir fails with ENOENT and we start over.
  for (int attempt = 0;; ++attempt) {
    absl::Status st = MakeCgroupDirsOnce(root, rel);
    if (st.ok() || attempt == 9 || !absl::IsNotFound(st)) return st;
  }
}

class CgroupfsManager : public CgroupManager {
 public:
  explicit CgroupfsManager(std::string root) : CgroupManager(std::move(root)) {}
  const char* name() const override { return "cgroupfs"; }
  bool CreatesBeforeProcess() const override { return true; }
  absl::StatusOr<std::string> Prepare(const std::string& path) override {
    if (path.find(':') != std::string::npos)
      return absl::InvalidArgumentError("linux.cgroupsPath: \"" + path +
                                        "\" is in systemd form (slice:prefix:name); use the systemd driver");
    RETURN_IF_ERROR(MakeCgroupDirs(root_, path));
    std::string dir = root_;
    for (absl::string_view p : absl::StrSplit(path, '/', absl::SkipEmpty())) dir += "/" + std::string(p);
    return dir;
  }
  absl::Status AddProcess(const std::string&, const std::string& dir, pid_t pid, const Resources&) override {
    return WriteFile(dir + "/cgroup.procs", std::to_string(pid));
  }
  absl::Status Destroy(const std::string&, const std::string& dir) override {
    if (access(dir.c_str(), F_OK) != 0) return absl::OkStatus();
    RETURN_IF_ERROR(KillCgroup(dir));
    // rmdir fails with EBUSY until the killed tasks are fully gone.
    for (int i = 0; i < 200; i++) {
      if (rmdir(dir.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
      if (errno != EBUSY) return LastErrnoError("rmdir " + dir);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return LastErrnoError("rmdir " + dir);
  }
};

}  // namespace

absl::StatusOr<std::string> FindCgroup2Mount(const std::string& mountinfo) {
  std::ifstream in(mountinfo);
  if (!in) return LastErrnoError("open " + mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    // "<id> <parent> <maj:min> <root> <mountpoint> <opts> [optional...] - <fstype> <source> <superopts>"
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::vector<std::string> pre = absl::StrSplit(line.substr(0, sep), ' ');
    std::vector<std::string> post = absl::StrSplit(line.substr(sep + 3), ' ');
    if (pre.size() < 5 || post.empty() || post[0] != "cgroup2") continue;
    // Mount points escape spaces as \040.
    std::string mp;
    for (size_t i = 0; i < pre[4].size(); i++) {
      if (pre[4][i] == '\\' && i + 3 < pre[4].size()) {
        mp += static_cast<char>(std::stoi(pre[4].substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        mp += pre[4][i];
      }
    }
    return mp;
  }
  return absl::NotFoundError("no cgroup2 mount in " + mountinfo);
}

absl::StatusOr<std::vector<CgroupWrite>> ResourcesToWrites(const Resources& r) {
  std::vector<CgroupWrite> w;
  if (r.memory) {
    if (r.memory->limit) w.push_back({"memory", "memory.max", Max(*r.memory->limit)});
    if (r.memory->reservation) w.push_back({"memory", "memory.low", Max(*r.memory->reservation)});
    if (r.memory->swap) {
      // OCI's swap is memory+swap (v1 memsw); v2's swap.max is swap alone.
      int64_t swap = *r.memory->swap;
      if (swap < 0) {
        w.push_back({"memory", "memory.swap.max", "max"});
      } else {
        int64_t limit = r.memory->limit.value_or(-1);
        if (limit < 0 || swap < limit)
          return absl::InvalidArgumentError("linux.resources.memory.swap: must be >= memory.limit");
        w.push_back({"memory", "memory.swap.max", std::to_string(swap - limit)});
      }
    }
  }
  if (r.cpu) {
    if (r.cpu->shares && *r.cpu->shares > 0) {
      uint64_t s = std::clamp<uint64_t>(*r.cpu->shares, 2, 262144);
      w.push_back({"cpu", "cpu.weight", std::to_string(1 + ((s - 2) * 9999) / 262142)});
    }
    if (r.cpu->quota || r.cpu->period) {
      int64_t q = r.cpu->quota.value_or(-1);
      uint64_t p = r.cpu->period.value_or(100000);
      w.push_back({"cpu", "cpu.max", (q <= 0 ? std::string("max") : std::to_string(q)) + " " + std::to_string(p)});
    }
    if (!r.cpu->cpus.empty()) w.push_back({"cpuset", "cpuset.cpus", r.cpu->cpus});
    if (!r.cpu->mems.empty()) w.push_back({"cpuset", "cpuset.mems", r.cpu->mems});
  }
  if (r.pids_limit) w.push_back({"pids", "pids.max", *r.pids_limit <= 0 ? "max" : std::to_string(*r.pids_limit)});
  if (r.block_io) {
    const BlockIoResources& b = *r.block_io;
    auto conv = [](uint16_t wt) { return std::to_string(1 + (std::clamp<int>(wt, 10, 1000) - 10) * 9999 / 990); };
    if (b.weight) w.push_back({"io", "io.weight", "default " + conv(*b.weight)});
    for (auto& d : b.weight_device)
      if (d.weight)
        w.push_back({"io", "io.weight", std::to_string(d.major) + ":" + std::to_string(d.minor) + " " + conv(*d.weight)});
    auto thr = [&](const std::vector<ThrottleDevice>& v, const char* key) {
      for (auto& t : v)
        w.push_back({"io", "io.max",
                     std::to_string(t.major) + ":" + std::to_string(t.minor) + " " + key + "=" +
                         (t.rate == 0 ? std::string("max") : std::to_string(t.rate))});
    };
    thr(b.throttle_read_bps, "rbps");
    thr(b.throttle_write_bps, "wbps");
    thr(b.throttle_read_iops, "riops");
    thr(b.throttle_write_iops, "wiops");
  }
  for (auto& h : r.hugepage_limits) w.push_back({"hugetlb", "hugetlb." + h.page_size + ".max", std::to_string(h.limit)});
  for (auto& [key, value] : r.unified) {
    if (key.find('/') != std::string::npos || key.find('.') == std::string::npos)
      return absl::InvalidArgumentError("linux.resources.unified." + key + ": not a cgroup file name");
    std::string ctrl = key.substr(0, key.find('.'));
    w.push_back({ctrl == "cgroup" ? "" : ctrl, key, value});
  }
  return w;
}

absl::Status CgroupManager::Apply(const std::string& dir, const Resources& r, bool strict,
                                  std::vector<std::string>* not_applied) {
  ASSIGN_OR_RETURN(std::vector<CgroupWrite> writes, ResourcesToWrites(r));
  std::set<std::string> avail = Controllers(dir + "/cgroup.controllers");
  for (const CgroupWrite& w : writes) {
    if (!w.controller.empty() && !avail.count(w.controller)) {
      std::string what = w.file + "=" + w.value + " (controller " + w.controller + " not available in " + dir + ")";
      if (strict) return absl::FailedPreconditionError("cannot apply " + what);
      not_applied->push_back(what);
      continue;
    }
    RETURN_IF_ERROR(WriteFile(dir + "/" + w.file, w.value));
  }
  return absl::OkStatus();
}

absl::Status KillCgroup(const std::string& dir) {
  if (WriteFile(dir + "/cgroup.kill", "1").ok()) return absl::OkStatus();
  // Kernels before 5.14: SIGKILL each task until the cgroup is empty.
  for (int round = 0; round < 100; round++) {
    ASSIGN_OR_RETURN(std::vector<pid_t> pids, CgroupPids(dir));
    if (pids.empty()) return absl::OkStatus();
    for (pid_t p : pids) kill(p, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return absl::DeadlineExceededError("processes in " + dir + " survive SIGKILL");
}

absl::StatusOr<std::vector<pid_t>> CgroupPids(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/cgroup.procs"));
  std::vector<pid_t> pids;
  for (absl::string_view s : absl::StrSplit(text, '\n', absl::SkipEmpty())) pids.push_back(std::stoi(std::string(s)));
  return pids;
}

uint64_t CgroupOomKills(const std::string& dir) {
  auto text = ReadFile(dir + "/memory.events");
  if (!text.ok()) return 0;
  std::istringstream in(*text);
  std::string key;
  uint64_t v;
  while (in >> key >> v)
    if (key == "oom_kill") return v;
  return 0;
}

OomBaseline OomKillsBaseline(const std::string& dir) {
  return {CgroupOomKills(dir), CgroupOomKills(dir.substr(0, dir.find_last_of('/')))};
}

bool OomKilledSince(const std::string& dir, const OomBaseline& base) {
  if (access(dir.c_str(), F_OK) == 0) return CgroupOomKills(dir) > base.own;
  std::string parent = dir.substr(0, dir.find_last_of('/'));
  return access(parent.c_str(), F_OK) == 0 && CgroupOomKills(parent) > base.parent;
}

std::unique_ptr<CgroupManager> MakeCgroupfsManager(std::string root) {
  return std::make_unique<CgroupfsManager>(std::move(root));
}

}  // namespace skiff::runtime
