#include "caps.h"

#include "skiff/common/status.h"

#include <linux/capability.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

namespace skiff::runtime {

int CapFromName(const std::string& name) {
  cap_value_t v;
  if (cap_from_name(name.c_str(), &v) != 0) return -1;
  return static_cast<int>(v);
}

int RlimitFromName(const std::string& name) {
  static const std::map<std::string, int> kLimits = {
      {"RLIMIT_AS", RLIMIT_AS},           {"RLIMIT_CORE", RLIMIT_CORE},
      {"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_DATA", RLIMIT_DATA},
      {"RLIMIT_FSIZE", RLIMIT_FSIZE},     {"RLIMIT_LOCKS", RLIMIT_LOCKS},
      {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
      {"RLIMIT_NICE", RLIMIT_NICE},       {"RLIMIT_NOFILE", RLIMIT_NOFILE},
      {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_RSS", RLIMIT_RSS},
      {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},   {"RLIMIT_RTTIME", RLIMIT_RTTIME},
      {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING}, {"RLIMIT_STACK", RLIMIT_STACK},
  };
  auto it = kLimits.find(name);
  return it == kLimits.end() ? -1 : it->second;
}

int LastCap() {
  static int last = [] {
    int v = CAP_LAST_CAP;
    if (FILE* f = fopen("/proc/sys/kernel/cap_last_cap", "re")) {
      if (fscanf(f, "%d", &v) != 1) v = CAP_LAST_CAP;
      fclose(f);
    }
    return v;
  }();
  return last;
}

absl::StatusOr<CapMasks> CapMasksFor(const Capabilities& caps) {
  CapMasks m;
  auto fill = [](const std::vector<std::string>& names, uint64_t* mask, const char* set) -> absl::Status {
    for (const auto& n : names) {
      int v = CapFromName(n);
      if (v < 0) return absl::InvalidArgumentError(std::string("process.capabilities.") + set +
                                                   ": unknown capability \"" + n + "\"");
      // Capabilities the running kernel does not know are ignored, as runc does.
      if (v > LastCap()) continue;
      *mask |= 1ull << v;
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(fill(caps.bounding, &m.bounding, "bounding"));
  RETURN_IF_ERROR(fill(caps.effective, &m.effective, "effective"));
  RETURN_IF_ERROR(fill(caps.inheritable, &m.inheritable, "inheritable"));
  RETURN_IF_ERROR(fill(caps.permitted, &m.permitted, "permitted"));
  RETURN_IF_ERROR(fill(caps.ambient, &m.ambient, "ambient"));
  return m;
}

int ApplyBounding(const CapMasks& m, int last_cap, const char** what) {
  for (int c = 0; c <= last_cap; c++) {
    if (m.bounding & (1ull << c)) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) {
      *what = "drop bounding capability";
      return -errno;
    }
  }
  return 0;
}

int ApplyCapSets(const CapMasks& m, int last_cap, const char** what) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof(data));
  for (int i = 0; i < 2; i++) {
    data[i].effective = static_cast<uint32_t>(m.effective >> (32 * i));
    data[i].permitted = static_cast<uint32_t>(m.permitted >> (32 * i));
    data[i].inheritable = static_cast<uint32_t>(m.inheritable >> (32 * i));
  }
  if (syscall(SYS_capset, &hdr, data) != 0) {
    *what = "capset";
    return -errno;
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    *what = "clear ambient capabilities";
    return -errno;
  }
  for (int c = 0; c <= last_cap; c++) {
    if (!(m.ambient & (1ull << c))) continue;
    // Raising an ambient cap that is not both permitted and inheritable fails
    // with EPERM; runc ignores that case, and so do we.
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0 && errno != EPERM && errno != EINVAL) {
      *what = "raise ambient capability";
      return -errno;
    }
  }
  return 0;
}

}  // namespace skiff::runtime
