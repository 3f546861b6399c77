// Device access in cgroup v2 is a BPF_PROG_TYPE_CGROUP_DEVICE program on the
// cgroup. We assemble it by hand (a short linear list of rule checks, no
// loops), load it with bpf(2) and attach it with BPF_F_ALLOW_MULTI.
#include "device_filter.h"

#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "skiff/common/status.h"
#include "skiff/common/unique_fd.h"

namespace skiff::runtime {
namespace {

bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i;
  memset(&i, 0, sizeof(i));
  i.code = code;
  i.dst_reg = dst;
  i.src_reg = src;
  i.off = off;
  i.imm = imm;
  return i;
}

}  // namespace

std::vector<DeviceCgroupRule> DefaultDeviceRules() {
  auto allow = [](const char* type, std::optional<int64_t> maj, std::optional<int64_t> min, const char* access) {
    DeviceCgroupRule r;
    r.allow = true;
    r.type = type;
    r.major = maj;
    r.minor = min;
    r.access = access;
    return r;
  };
  // What runc allows on top of the spec: mknod of anything, the standard
  // nodes, ptys, tun.
  return {allow("c", std::nullopt, std::nullopt, "m"), allow("b", std::nullopt, std::nullopt, "m"),
          allow("c", 1, 3, "rwm"),  allow("c", 1, 5, "rwm"), allow("c", 1, 7, "rwm"), allow("c", 1, 8, "rwm"),
          allow("c", 1, 9, "rwm"),  allow("c", 5, 0, "rwm"), allow("c", 5, 1, "rwm"), allow("c", 5, 2, "rwm"),
          allow("c", 136, std::nullopt, "rwm"), allow("c", 10, 200, "rwm")};
}

absl::StatusOr<std::vector<bpf_insn>> BuildDeviceProgram(const std::vector<DeviceCgroupRule>& rules) {
  std::vector<bpf_insn> p;
  // Every check loads its field from the context (r1) into r0 afresh. Were
  // the fields kept in registers, each comparison would teach the verifier
  // a constant on one path and not the other, so the states at the next
  // rule would differ and it would walk every path (~0.5 ms per load); with
  // only r1 live between rules, the states match and it prunes.
  auto load = [](std::vector<bpf_insn>* body, int16_t off) {
    body->push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, 0, 1, off, 0));
  };
  // Later rules override earlier ones (OCI), so check them last-first and
  // let the first match decide.
  for (auto it = rules.rbegin(); it != rules.rend(); ++it) {
    const DeviceCgroupRule& r = *it;
    std::vector<bpf_insn> body;  // jumps with off = -1 are patched to "next rule"
    if (!r.type.empty() && r.type != "a") {
      int t = r.type == "b" ? BPF_DEVCG_DEV_BLOCK : r.type == "c" ? BPF_DEVCG_DEV_CHAR : -1;
      if (t < 0) return absl::InvalidArgumentError("linux.resources.devices: unknown type \"" + r.type + "\"");
      load(&body, 0);
      body.push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, 0xFFFF));
      body.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 0, 0, -1, t));
    }
    int mask = 0;
    for (char c : r.access.empty() ? std::string("rwm") : r.access) {
      if (c == 'r') mask |= BPF_DEVCG_ACC_READ;
      else if (c == 'w') mask |= BPF_DEVCG_ACC_WRITE;
      else if (c == 'm') mask |= BPF_DEVCG_ACC_MKNOD;
      else return absl::InvalidArgumentError("linux.resources.devices: unknown access \"" + r.access + "\"");
    }
    if (mask != (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD)) {
      // The rule covers the request only if every requested bit is in mask.
      load(&body, 0);
      body.push_back(Insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 0, 16));
      body.push_back(Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0, ~mask));
      body.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 0, 0, -1, 0));
    }
    if (r.major && *r.major >= 0) {
      load(&body, 4);
      body.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 0, 0, -1, static_cast<int32_t>(*r.major)));
    }
    if (r.minor && *r.minor >= 0) {
      load(&body, 8);
      body.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, 0, 0, -1, static_cast<int32_t>(*r.minor)));
    }
    body.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, r.allow ? 1 : 0));
    body.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    bool conditional = false;
    for (size_t i = 0; i < body.size(); i++)
      if (body[i].off == -1) {
        body[i].off = static_cast<int16_t>(body.size() - i - 1);
        conditional = true;
      }
    p.insert(p.end(), body.begin(), body.end());
    // A rule matching everything decides alone; the verifier rejects
    // unreachable instructions after it.
    if (!conditional) return p;
  }
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0));
  p.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  return p;
}

absl::Status AttachDeviceProgram(int cgroup_fd, const std::vector<bpf_insn>& prog) {
  static char license[] = "GPL";
  char log[4096] = {};
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  a.insns = reinterpret_cast<uint64_t>(prog.data());
  a.insn_cnt = static_cast<uint32_t>(prog.size());
  a.license = reinterpret_cast<uint64_t>(license);
  UniqueFd fd(static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a))));
  if (!fd) {
    int err = errno;
    // Once more with the verifier's log, only to explain the failure.
    a.log_buf = reinterpret_cast<uint64_t>(log);
    a.log_size = sizeof(log);
    a.log_level = 1;
    UniqueFd again(static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a))));
    return ErrnoError(err, std::string("load device cgroup program: ") + log);
  }
  memset(&a, 0, sizeof(a));
  a.target_fd = static_cast<uint32_t>(cgroup_fd);
  a.attach_bpf_fd = static_cast<uint32_t>(fd.get());
  a.attach_type = BPF_CGROUP_DEVICE;
  a.attach_flags = BPF_F_ALLOW_MULTI;
  if (syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof(a)) != 0) return LastErrnoError("attach device cgroup program");
  return absl::OkStatus();
}

}  // namespace skiff::runtime
