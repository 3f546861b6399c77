// The OCI runtime-spec configuration (config.json) as plain C++ values.
//
// A Spec is what skiff-runtime reads from a bundle's config.json, and what an
// in-process caller (the kubelet) may build directly and hand to
// Runtime::Create through CreateOptions::spec. Only the Linux parts of the
// spec are modelled. Field names follow the JSON names in snake_case.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skiff::runtime {

struct User {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::optional<uint32_t> umask;
  std::vector<uint32_t> additional_gids;
};

struct Capabilities {
  // Names as in the spec: "CAP_KILL", ...
  std::vector<std::string> bounding, effective, inheritable, permitted, ambient;
};

struct Rlimit {
  std::string type;  // "RLIMIT_NOFILE"
  uint64_t hard = 0;
  uint64_t soft = 0;
};

struct Process {
  bool terminal = false;
  User user;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd = "/";
  std::optional<Capabilities> capabilities;
  std::vector<Rlimit> rlimits;
  bool no_new_privileges = false;
  std::optional<int> oom_score_adj;
};

struct Root {
  std::string path = "rootfs";  // relative to the bundle directory, or absolute
  bool readonly = false;
};

struct Mount {
  std::string destination;
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

struct Hook {
  std::string path;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::optional<int> timeout;  // seconds
};

struct Hooks {
  std::vector<Hook> prestart;  // deprecated by the spec; run with createRuntime
  std::vector<Hook> create_runtime, create_container, start_container, poststart, poststop;
};

struct IdMapping {
  uint32_t container_id = 0;
  uint32_t host_id = 0;
  uint32_t size = 0;
};

struct Namespace {
  std::string type;  // pid, network, mount, ipc, uts, user, cgroup, time
  std::string path;  // empty: create a new one; otherwise join this one
};

struct Device {
  std::string path;
  std::string type;  // c, b, u, p
  int64_t major = 0, minor = 0;
  std::optional<uint32_t> file_mode;
  std::optional<uint32_t> uid, gid;
};

struct DeviceCgroupRule {
  bool allow = false;
  std::string type;  // a, c, b
  std::optional<int64_t> major, minor;
  std::string access;  // rwm
};

struct MemoryResources {
  std::optional<int64_t> limit, reservation, swap;
};
struct CpuResources {
  std::optional<uint64_t> shares;
  std::optional<int64_t> quota;
  std::optional<uint64_t> period;
  std::string cpus, mems;
};
struct ThrottleDevice {
  int64_t major = 0, minor = 0;
  uint64_t rate = 0;
};
struct WeightDevice {
  int64_t major = 0, minor = 0;
  std::optional<uint16_t> weight;
};
struct BlockIoResources {
  std::optional<uint16_t> weight;
  std::vector<WeightDevice> weight_device;
  std::vector<ThrottleDevice> throttle_read_bps, throttle_write_bps, throttle_read_iops,
      throttle_write_iops;
};
struct HugepageLimit {
  std::string page_size;  // "2MB"
  uint64_t limit = 0;
};
struct Resources {
  std::optional<MemoryResources> memory;
  std::optional<CpuResources> cpu;
  std::optional<int64_t> pids_limit;
  std::optional<BlockIoResources> block_io;
  std::vector<HugepageLimit> hugepage_limits;
  std::vector<DeviceCgroupRule> devices;
  std::map<std::string, std::string> unified;
};

struct SeccompArg {
  uint32_t index = 0;
  uint64_t value = 0, value_two = 0;
  std::string op;  // SCMP_CMP_EQ, ...
};
struct SeccompSyscall {
  std::vector<std::string> names;
  std::string action;  // SCMP_ACT_ERRNO, ...
  std::optional<uint32_t> errno_ret;
  std::vector<SeccompArg> args;
};
struct Seccomp {
  std::string default_action = "SCMP_ACT_ALLOW";
  std::optional<uint32_t> default_errno_ret;
  std::vector<std::string> architectures;
  std::vector<std::string> flags;
  std::vector<SeccompSyscall> syscalls;
};

struct Linux {
  std::vector<IdMapping> uid_mappings, gid_mappings;
  std::map<std::string, std::string> sysctl;
  std::optional<Resources> resources;
  std::string cgroups_path;
  std::vector<Namespace> namespaces;
  std::vector<Device> devices;
  std::optional<Seccomp> seccomp;
  std::string rootfs_propagation;
  std::vector<std::string> masked_paths, readonly_paths;
};

struct Spec {
  std::string oci_version = "1.0.2";
  std::optional<Process> process;
  Root root;
  std::string hostname, domainname;
  std::vector<Mount> mounts;
  std::optional<Hooks> hooks;
  std::map<std::string, std::string> annotations;
  std::optional<Linux> linux;
};

// Parses config.json text. Errors name the offending field
// ("linux.namespaces[2].type: unknown namespace type \"bogus\"").
absl::StatusOr<Spec> ParseSpec(const std::string& json_text);
// Reads and parses <bundle_dir>/config.json.
absl::StatusOr<Spec> LoadSpec(const std::string& bundle_dir);
// Serializes back to config.json form (used for the copy kept in the state dir).
std::string SpecToJson(const Spec& spec);
// Semantic checks that need no kernel: known namespace types and
// capabilities, absolute paths, id maps that go with a user namespace, a
// rootfs that exists (resolved against bundle_dir). Errors name the field.
absl::Status ValidateSpec(const Spec& spec, const std::string& bundle_dir);

// A seccomp profile equivalent to Kubernetes' RuntimeDefault (containerd's
// default): allow-list of the ordinary syscalls, everything else EPERM.
Seccomp RuntimeDefaultSeccomp();

}  // namespace skiff::runtime
