#include "seccomp_filter.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>

#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::runtime {
namespace {

absl::StatusOr<uint32_t> ActionFor(const std::string& name, std::optional<uint32_t> errno_ret,
                                   const std::string& field) {
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(errno_ret.value_or(EPERM));
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(errno_ret.value_or(EPERM));
  return absl::InvalidArgumentError(field + ": unsupported seccomp action \"" + name + "\"");
}

absl::StatusOr<scmp_compare> OpFor(const std::string& op, const std::string& field) {
  static const std::map<std::string, scmp_compare> kOps = {
      {"SCMP_CMP_NE", SCMP_CMP_NE}, {"SCMP_CMP_LT", SCMP_CMP_LT}, {"SCMP_CMP_LE", SCMP_CMP_LE},
      {"SCMP_CMP_EQ", SCMP_CMP_EQ}, {"SCMP_CMP_GE", SCMP_CMP_GE}, {"SCMP_CMP_GT", SCMP_CMP_GT},
      {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
  auto it = kOps.find(op);
  if (it == kOps.end()) return absl::InvalidArgumentError(field + ": unknown seccomp operator \"" + op + "\"");
  return it->second;
}

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

absl::StatusOr<SeccompProgram> Compile(const Seccomp& p) {
  ASSIGN_OR_RETURN(uint32_t def, ActionFor(p.default_action, p.default_errno_ret, "linux.seccomp.defaultAction"));
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(def));
  if (!ctx) return absl::InternalError("seccomp_init failed");
  for (size_t i = 0; i < p.architectures.size(); i++) {
    std::string a = p.architectures[i];
    if (a.rfind("SCMP_ARCH_", 0) == 0) a = a.substr(10);
    std::transform(a.begin(), a.end(), a.begin(), [](unsigned char c) { return std::tolower(c); });
    uint32_t arch = seccomp_arch_resolve_name(a.c_str());
    if (arch == 0)
      return absl::InvalidArgumentError("linux.seccomp.architectures[" + std::to_string(i) +
                                        "]: unknown architecture \"" + p.architectures[i] + "\"");
    int rc = seccomp_arch_add(ctx.get(), arch);
    if (rc != 0 && rc != -EEXIST) return ErrnoError(-rc, "seccomp_arch_add " + p.architectures[i]);
  }
  SeccompProgram out;
  for (size_t i = 0; i < p.flags.size(); i++) {
    const std::string& f = p.flags[i];
    if (f == "SECCOMP_FILTER_FLAG_TSYNC") out.flags |= SECCOMP_FILTER_FLAG_TSYNC;
    else if (f == "SECCOMP_FILTER_FLAG_LOG") out.flags |= SECCOMP_FILTER_FLAG_LOG;
    else if (f == "SECCOMP_FILTER_FLAG_SPEC_ALLOW") out.flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    else
      return absl::InvalidArgumentError("linux.seccomp.flags[" + std::to_string(i) + "]: unknown flag \"" + f + "\"");
  }
  for (size_t i = 0; i < p.syscalls.size(); i++) {
    const SeccompSyscall& s = p.syscalls[i];
    std::string field = "linux.seccomp.syscalls[" + std::to_string(i) + "]";
    ASSIGN_OR_RETURN(uint32_t act, ActionFor(s.action, s.errno_ret, field + ".action"));
    if (act == def) continue;  // libseccomp rejects rules equal to the default
    std::vector<scmp_arg_cmp> cmps;
    for (size_t k = 0; k < s.args.size(); k++) {
      ASSIGN_OR_RETURN(scmp_compare op, OpFor(s.args[k].op, field + ".args[" + std::to_string(k) + "].op"));
      if (s.args[k].index > 5) return absl::InvalidArgumentError(field + ".args[" + std::to_string(k) + "].index: must be 0..5");
      cmps.push_back(scmp_arg_cmp{s.args[k].index, op, s.args[k].value, s.args[k].value_two});
    }
    for (const std::string& name : s.names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      // Names this kernel/arch does not have are skipped, as runc and crun do.
      if (nr == __NR_SCMP_ERROR) continue;
      int rc = seccomp_rule_add_array(ctx.get(), act, nr, cmps.size(), cmps.data());
      if (rc != 0) return ErrnoError(-rc, field + ": seccomp rule for " + name);
    }
  }
  UniqueFd mem(memfd_create("seccomp-bpf", MFD_CLOEXEC));
  if (!mem) return LastErrnoError("memfd_create");
  int rc = seccomp_export_bpf(ctx.get(), mem.get());
  if (rc != 0) return ErrnoError(-rc, "seccomp_export_bpf");
  off_t size = lseek(mem.get(), 0, SEEK_END);
  if (size < 0 || size % sizeof(sock_filter) != 0) return absl::InternalError("seccomp export: bad size");
  out.filter.resize(size / sizeof(sock_filter));
  if (pread(mem.get(), out.filter.data(), size, 0) != size) return LastErrnoError("read seccomp program");
  return out;
}

std::string CacheKey(const Seccomp& p) {
  std::string k = p.default_action + "|" + std::to_string(p.default_errno_ret.value_or(0)) + "|";
  for (auto& a : p.architectures) k += a + ",";
  k += "|";
  for (auto& f : p.flags) k += f + ",";
  for (auto& s : p.syscalls) {
    k += "|" + s.action + ":" + std::to_string(s.errno_ret.value_or(0)) + ":";
    for (auto& n : s.names) k += n + ",";
    for (auto& a : s.args)
      k += "(" + std::to_string(a.index) + a.op + std::to_string(a.value) + "," + std::to_string(a.value_two) + ")";
  }
  return k;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SeccompProgram>> CompileSeccomp(const Seccomp& profile) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const SeccompProgram>> cache;
  std::string key = CacheKey(profile);
  {
    std::lock_guard<std::mutex> l(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  ASSIGN_OR_RETURN(SeccompProgram prog, Compile(profile));
  auto sp = std::make_shared<const SeccompProgram>(std::move(prog));
  std::lock_guard<std::mutex> l(mu);
  if (cache.size() > 64) cache.clear();
  cache[key] = sp;
  return sp;
}

int InstallSeccomp(const SeccompProgram& prog) {
  struct sock_fprog fprog;
  fprog.len = static_cast<unsigned short>(prog.filter.size());
  fprog.filter = const_cast<struct sock_filter*>(prog.filter.data());
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, prog.flags, &fprog) != 0) return -errno;
  return 0;
}

}  // namespace skiff::runtime
