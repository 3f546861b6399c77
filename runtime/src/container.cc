// Runtime: the OCI lifecycle (create, start, state, kill, delete, exec,
// wait) on top of the prepared init plan, the cgroup driver and the state
// directory <root>/<id>/{state.json,init,exec.fifo}.
//
// state.json (with the spec in it) is written once, before the init exists;
// the init's pid goes into a second, new file. Nothing is ever rewritten in
// place: on ext4, replacing a file by rename starts writeback of the new
// data at once, and removing it at delete then waits for that disk write
// (milliseconds on a busy disk, on every container start).
#include "skiff/runtime/container.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "device_filter.h"
#include "hooks.h"
#include "plan.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/runtime/cgroup.h"

namespace skiff::runtime {
namespace {

using nlohmann::json;

// What state.json records beyond the OCI state.
struct Record {
  std::string id;
  std::string oci_version;
  pid_t pid = 0;
  uint64_t pid_start = 0;
  std::string bundle, rootfs, created;
  std::string cgroup_path, cgroup_dir, cgroup_driver;
  std::map<std::string, std::string> annotations;
  bool default_seccomp = false;
  uint64_t oom_kills_at_start = 0;
  std::string config;  // the spec as JSON
};

std::string Now3339() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, ".%09ldZ", ts.tv_nsec);
  return buf;
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return LastErrnoError("create " + tmp);
  if (write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
    return LastErrnoError("write " + tmp);
  fd.reset();
  if (rename(tmp.c_str(), path.c_str()) != 0) return LastErrnoError("rename " + tmp);
  return absl::OkStatus();
}

// A file that did not exist, written once (O_EXCL): no rename, no rewrite.
absl::Status WriteNewFile(const std::string& path, const std::string& data) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return LastErrnoError("create " + path);
  if (write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
    return LastErrnoError("write " + path);
  return absl::OkStatus();
}

// <dir>/init: "<pid> <pid start time> <oom kills at start>\n", written once
// right after clone. Absent or partial: the init is not known (yet).
std::string InitRecord(const Record& r) {
  return std::to_string(r.pid) + " " + std::to_string(r.pid_start) + " " + std::to_string(r.oom_kills_at_start) + "\n";
}
void ReadInitRecord(const std::string& dir, Record* r) {
  UniqueFd fd(open((dir + "/init").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return;
  char buf[128];
  ssize_t n = read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0 || buf[n - 1] != '\n') return;
  buf[n] = 0;
  int pid = 0;
  unsigned long long start = 0, ooms = 0;
  if (sscanf(buf, "%d %llu %llu", &pid, &start, &ooms) != 3) return;
  r->pid = pid;
  r->pid_start = start;
  r->oom_kills_at_start = ooms;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return LastErrnoError("open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Field 22 of /proc/<pid>/stat; 0 when the process is gone or a zombie.
uint64_t ProcStartTime(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  char buf[1024];
  ssize_t n = read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return 0;
  buf[n] = 0;
  char* p = strrchr(buf, ')');
  if (!p) return 0;
  char state = 0;
  unsigned long long start = 0;
  // After ") ": state(3) ppid(4) ... starttime(22).
  if (sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &state,
             &start) != 2)
    return 0;
  if (state == 'Z' || state == 'X') return 0;
  return start;
}

std::string RecordJson(const Record& r, const char* phase) {
  json j = {{"id", r.id},
            {"ociVersion", r.oci_version},
            {"phase", phase},
            {"pid", r.pid},
            {"pidStartTime", r.pid_start},
            {"bundle", r.bundle},
            {"rootfs", r.rootfs},
            {"created", r.created},
            {"cgroupPath", r.cgroup_path},
            {"cgroupDir", r.cgroup_dir},
            {"cgroupDriver", r.cgroup_driver},
            {"annotations", r.annotations},
            {"defaultSeccomp", r.default_seccomp},
            {"oomKillsAtStart", r.oom_kills_at_start},
            {"config", r.config}};
  return j.dump();
}

absl::StatusOr<Record> ParseRecord(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("corrupt state.json");
  Record r;
  try {
    r.id = j.value("id", "");
    r.oci_version = j.value("ociVersion", "");
    r.pid = j.value("pid", 0);
    r.pid_start = j.value("pidStartTime", uint64_t{0});
    r.bundle = j.value("bundle", "");
    r.rootfs = j.value("rootfs", "");
    r.created = j.value("created", "");
    r.cgroup_path = j.value("cgroupPath", "");
    r.cgroup_dir = j.value("cgroupDir", "");
    r.cgroup_driver = j.value("cgroupDriver", "cgroupfs");
    r.annotations = j.value("annotations", std::map<std::string, std::string>{});
    r.default_seccomp = j.value("defaultSeccomp", false);
    r.oom_kills_at_start = j.value("oomKillsAtStart", uint64_t{0});
    r.config = j.value("config", "");
  } catch (const std::exception& e) {
    return absl::DataLossError(std::string("corrupt state.json: ") + e.what());
  }
  return r;
}

absl::Status ValidateId(const std::string& id) {
  // [A-Za-z0-9_+.-]+, without building a std::regex on every CLI start.
  bool ok = !id.empty() && id != "." && id != "..";
  for (char c : id)
    ok = ok && (isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '+' || c == '.' || c == '-');
  if (!ok) return absl::InvalidArgumentError("invalid container id \"" + id + "\"");
  return absl::OkStatus();
}

void RemoveTree(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      unlink((dir + "/" + n).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

int MoveAbove2(int fd) {
  if (fd > 2) return fd;
  int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return n;
}

pid_t Clone3(uint64_t flags, int* pidfd, int cgroup_fd) {
  struct clone_args args;
  memset(&args, 0, sizeof(args));
  args.flags = flags;
  if (flags & CLONE_PIDFD) args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  args.exit_signal = SIGCHLD;
  if (flags & CLONE_INTO_CGROUP) args.cgroup = static_cast<uint64_t>(cgroup_fd);
  return static_cast<pid_t>(syscall(SYS_clone3, &args, sizeof(args)));
}

// Waits until the process behind pidfd exits; false on timeout.
bool PollExit(int pidfd, int timeout_ms) {
  struct pollfd p = {pidfd, POLLIN, 0};
  for (;;) {
    int r = poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

ExitStatus FromSiginfo(const siginfo_t& si) {
  ExitStatus ex;
  ex.known = true;
  if (si.si_code == CLD_EXITED) {
    ex.exit_code = si.si_status;
  } else {
    ex.signal = si.si_status;
    ex.exit_code = 128 + si.si_status;
  }
  return ex;
}

// setns(CLONE_NEWPID) moves only this thread's future children
// (pid_for_children is per thread), so the runtime enters a pid namespace
// just around its clone and the child needs no helper process. Returns the
// thread's own namespace to give back to LeavePidNs.
absl::StatusOr<UniqueFd> EnterPidNsForChildren(int target_fd) {
  UniqueFd own(open("/proc/thread-self/ns/pid_for_children", O_RDONLY | O_CLOEXEC));
  if (!own) return LastErrnoError("open own pid namespace");
  if (setns(target_fd, CLONE_NEWPID) != 0) return LastErrnoError("join pid namespace");
  return own;
}
void LeavePidNs(const UniqueFd& own) {
  if (own && setns(own.get(), CLONE_NEWPID) != 0) {
    // Leaving this thread's children in the container would be worse than dying.
    log::Error("cannot restore pid namespace: ", strerror(errno));
    abort();
  }
}

}  // namespace

const char* ContainerStatusName(ContainerStatus s) {
  switch (s) {
    case ContainerStatus::kCreating: return "creating";
    case ContainerStatus::kCreated: return "created";
    case ContainerStatus::kRunning: return "running";
    case ContainerStatus::kStopped: return "stopped";
  }
  return "unknown";
}

std::string ContainerState::ToJson() const {
  json j = {{"ociVersion", oci_version}, {"id", id}, {"status", ContainerStatusName(status)}, {"pid", pid},
            {"bundle", bundle}};
  if (!annotations.empty()) j["annotations"] = annotations;
  j["created"] = created;
  return j.dump(2);
}

int ExitCodeFor(const absl::Status& s) { return s.ok() ? 0 : 1; }

// Per-process bookkeeping of inits this process cloned (so Wait can collect
// the real exit status).
struct Children {
  std::mutex mu;
  std::map<std::string, int> pidfds;  // id -> pidfd (owned)
  std::map<std::string, ExitStatus> reaped;
};
static Children& OwnChildren() {
  static Children* c = new Children;
  return *c;
}

Runtime::Runtime(RuntimeOptions options) : options_(std::move(options)) {}
Runtime::~Runtime() = default;

namespace {

struct Loaded {
  Record rec;
  ContainerStatus status;
  std::string dir;
};

absl::StatusOr<Loaded> Load(const RuntimeOptions& o, const std::string& id) {
  RETURN_IF_ERROR(ValidateId(id));
  Loaded l;
  l.dir = o.root_dir + "/" + id;
  auto text = ReadWholeFile(l.dir + "/state.json");
  if (!text.ok()) {
    if (access(l.dir.c_str(), F_OK) == 0) {
      // A create that died before its first write: only the directory.
      l.rec.id = id;
      l.status = ContainerStatus::kStopped;
      return l;
    }
    return absl::NotFoundError("container does not exist");
  }
  ASSIGN_OR_RETURN(l.rec, ParseRecord(*text));
  ReadInitRecord(l.dir, &l.rec);
  if (l.rec.pid <= 0 || ProcStartTime(l.rec.pid) != l.rec.pid_start) {
    l.status = ContainerStatus::kStopped;
  } else if (access((l.dir + "/exec.fifo").c_str(), F_OK) == 0) {
    l.status = ContainerStatus::kCreated;
  } else {
    l.status = ContainerStatus::kRunning;
  }
  return l;
}

ContainerState ToState(const Loaded& l) {
  ContainerState s;
  s.oci_version = l.rec.oci_version;
  s.id = l.rec.id;
  s.status = l.status;
  s.pid = l.status == ContainerStatus::kStopped ? 0 : l.rec.pid;
  s.bundle = l.rec.bundle;
  s.annotations = l.rec.annotations;
  s.created = l.rec.created;
  s.cgroup_path = l.rec.cgroup_dir;
  return s;
}

std::unique_ptr<CgroupManager> ManagerFor(const std::string& driver, const std::string& root) {
  if (driver == "systemd") return MakeSystemdManager(root);
  return MakeCgroupfsManager(root);
}

absl::StatusOr<Spec> StoredSpec(const Record& rec, const std::string& dir) {
  if (!rec.config.empty()) return ParseSpec(rec.config);
  // State written by an older skiff-runtime.
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(dir + "/config.json"));
  return ParseSpec(text);
}

absl::Status WriteIdMap(pid_t pid, const char* file, const std::vector<IdMapping>& maps) {
  std::string data;
  for (auto& m : maps)
    data += std::to_string(m.container_id) + " " + std::to_string(m.host_id) + " " + std::to_string(m.size) + "\n";
  std::string path = "/proc/" + std::to_string(pid) + "/" + file;
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return LastErrnoError("open " + path);
  if (write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
    return LastErrnoError("write " + path);
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> StdioFd(int fd) {
  int out = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : open("/dev/null", O_RDWR | O_CLOEXEC);
  if (out < 0) return LastErrnoError("stdio fd");
  return UniqueFd(MoveAbove2(out));
}

absl::StatusOr<UniqueFd> ConnectConsole(const std::string& path) {
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return LastErrnoError("socket");
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError("console socket path too long");
  memcpy(addr.sun_path, path.c_str(), path.size());
  if (connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return LastErrnoError("connect console socket " + path);
  return UniqueFd(MoveAbove2(s.release()));
}

absl::Status WriteOomScoreAdj(pid_t pid, int value) {
  std::string path = "/proc/" + std::to_string(pid) + "/oom_score_adj";
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  std::string v = std::to_string(value);
  if (!fd || write(fd.get(), v.data(), v.size()) != static_cast<ssize_t>(v.size()))
    return LastErrnoError("process.oomScoreAdj: write " + path);
  return absl::OkStatus();
}

// Device rules only when the spec has any (runc's spec denies all and lists
// none): default allow-list + spec rules + the spec's own device nodes.
absl::Status ApplyDeviceRules(int cgroup_fd, const Spec& spec, bool strict, std::vector<std::string>* warnings) {
  if (!spec.linux || !spec.linux->resources || spec.linux->resources->devices.empty()) return absl::OkStatus();
  std::vector<DeviceCgroupRule> rules = spec.linux->resources->devices;
  for (auto& r : DefaultDeviceRules()) rules.push_back(r);
  for (const Device& d : spec.linux->devices) {
    DeviceCgroupRule r;
    r.allow = true;
    r.type = d.type == "b" ? "b" : "c";
    r.major = d.major;
    r.minor = d.minor;
    r.access = "rwm";
    rules.push_back(r);
  }
  ASSIGN_OR_RETURN(auto prog, BuildDeviceProgram(rules));
  absl::Status st = AttachDeviceProgram(cgroup_fd, prog);
  if (!st.ok()) {
    if (strict) return st;
    warnings->push_back("linux.resources.devices (" + std::string(st.message()) + ")");
  }
  return absl::OkStatus();
}

// Hooks get the state on one line, as runc sends it.
std::string HookState(const ContainerState& st) { return json::parse(st.ToJson()).dump(); }

// Like runc: HOME from the container's /etc/passwd (or "/") unless set.
void AddHomeEnv(const std::string& rootfs, ProcessPlan* p) {
  for (const auto& e : p->env)
    if (e.rfind("HOME=", 0) == 0) return;
  std::string home = "/";
  std::ifstream in(rootfs + "/etc/passwd");
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ':');
    if (f.size() >= 6 && f[2] == std::to_string(p->uid)) {
      if (!f[5].empty()) home = f[5];
      break;
    }
  }
  p->env.push_back("HOME=" + home);
}

}  // namespace

absl::StatusOr<ContainerState> Runtime::Create(const CreateOptions& o) {
  RETURN_IF_ERROR(ValidateId(o.id));
  // --- everything that can fail without touching the system -------------
  std::string bundle = o.bundle_dir.empty() ? "." : o.bundle_dir;
  char real[PATH_MAX];
  if (!realpath(bundle.c_str(), real)) return LastErrnoError("bundle " + bundle);
  bundle = real;
  Spec spec;
  if (o.spec) {
    spec = *o.spec;
  } else {
    ASSIGN_OR_RETURN(spec, LoadSpec(bundle));
  }
  RETURN_IF_ERROR(ValidateSpec(spec, bundle));
  if (!o.netns_path.empty()) {
    if (!spec.linux) spec.linux.emplace();
    bool found = false;
    for (auto& ns : spec.linux->namespaces)
      if (ns.type == "network") ns.path = o.netns_path, found = true;
    if (!found) spec.linux->namespaces.push_back({"network", o.netns_path});
  }

  auto plan = std::make_unique<InitPlan>();
  int pid_join_fd = -1;
  plan->rootfs = spec.root.path[0] == '/' ? spec.root.path : bundle + "/" + spec.root.path;
  if (!realpath(plan->rootfs.c_str(), real)) return LastErrnoError("root.path " + plan->rootfs);
  plan->rootfs = real;
  plan->rootfs_readonly = spec.root.readonly;
  plan->hostname = spec.hostname;
  plan->domainname = spec.domainname;
  if (spec.linux) {
    for (size_t i = 0; i < spec.linux->namespaces.size(); i++) {
      const Namespace& ns = spec.linux->namespaces[i];
      ASSIGN_OR_RETURN(unsigned long flag, NamespaceFlag(ns.type));
      if (ns.path.empty()) {
        plan->clone_flags |= static_cast<int>(flag);
        continue;
      }
      int fd = open(ns.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return LastErrnoError("linux.namespaces[" + std::to_string(i) + "].path: open " + ns.path);
      fd = MoveAbove2(fd);
      plan->owned_fds.emplace_back(fd);
      if (flag == CLONE_NEWPID) {
        // Entered by the runtime around the clone (EnterPidNsForChildren).
        pid_join_fd = fd;
        continue;
      }
      InitPlan::JoinNs j{fd, static_cast<int>(flag)};
      // The user namespace goes first: the others are owned by it.
      if (flag == CLONE_NEWUSER) plan->join.insert(plan->join.begin(), j);
      else plan->join.push_back(j);
    }
  }
  plan->new_userns = plan->clone_flags & CLONE_NEWUSER;
  plan->new_mntns = plan->clone_flags & CLONE_NEWNS;
  if (!plan->new_mntns) return absl::InvalidArgumentError("linux.namespaces: a new mount namespace is required");
  if (!spec.hostname.empty() && !(plan->clone_flags & CLONE_NEWUTS))
    return absl::InvalidArgumentError("hostname: setting it needs a new uts namespace");
  ASSIGN_OR_RETURN(std::string cg_root, FindCgroup2Mount());
  plan->cgroup2_mount = cg_root;
  RETURN_IF_ERROR(PrepareMounts(spec, plan.get()));
  RETURN_IF_ERROR(PrepareProcess(*spec.process, &spec, o.default_seccomp, &plan->process));
  AddHomeEnv(plan->rootfs, &plan->process);
  if (spec.process->terminal && o.console_socket.empty())
    return absl::InvalidArgumentError("process.terminal: needs --console-socket");
  if (!spec.process->terminal && !o.console_socket.empty())
    return absl::InvalidArgumentError("--console-socket given but process.terminal is false");
  Hooks hooks = spec.hooks.value_or(Hooks{});
  plan->hooks_in_create = !hooks.create_runtime.empty() || !hooks.prestart.empty() || !hooks.create_container.empty();
  plan->start_hooks = hooks.start_container;
  for (Hook& h : plan->start_hooks) {
    if (h.args.empty()) h.args.push_back(h.path);
  }
  for (Hook& h : plan->start_hooks) {
    std::vector<char*> a, e;
    for (auto& s : h.args) a.push_back(s.data());
    a.push_back(nullptr);
    for (auto& s : h.env) e.push_back(s.data());
    e.push_back(nullptr);
    plan->start_hook_argv.push_back(std::move(a));
    plan->start_hook_envp.push_back(std::move(e));
  }
  std::string driver = options_.cgroup_driver == CgroupDriver::kSystemd ? "systemd" : "cgroupfs";
  std::string cg_path = !o.cgroup_path.empty() ? o.cgroup_path
                        : (spec.linux && !spec.linux->cgroups_path.empty())
                            ? spec.linux->cgroups_path
                            : (driver == "systemd" ? "system.slice:skiff:" + o.id : "skiff/" + o.id);
  auto cgm = ManagerFor(driver, cg_root);
  if (driver == "systemd") RETURN_IF_ERROR(TransientUnitFor(cg_path, 0, nullptr).status());
  for (int i = 0; i < 3; i++) {
    int fd = i == 0 ? o.stdio.in : i == 1 ? o.stdio.out : o.stdio.err;
    ASSIGN_OR_RETURN(UniqueFd f, StdioFd(fd));
    plan->process.stdio[i] = f.get();
    plan->owned_fds.push_back(std::move(f));
  }
  if (!o.console_socket.empty()) {
    ASSIGN_OR_RETURN(UniqueFd cs, ConnectConsole(o.console_socket));
    plan->process.console_socket = cs.get();
    plan->owned_fds.push_back(std::move(cs));
  }

  // --- from here on, undo everything on failure ---------------------------
  if (mkdir(options_.root_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    // mkdir -p for the root
    std::string cur;
    for (absl::string_view p : absl::StrSplit(options_.root_dir, '/', absl::SkipEmpty())) {
      cur += "/" + std::string(p);
      if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return LastErrnoError("mkdir " + cur);
    }
  }
  const std::string dir = options_.root_dir + "/" + o.id;
  if (mkdir(dir.c_str(), 0711) != 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError("container with id exists: " + o.id);
    return LastErrnoError("mkdir " + dir);
  }
  Record rec;
  rec.id = o.id;
  rec.oci_version = spec.oci_version;
  rec.bundle = bundle;
  rec.rootfs = plan->rootfs;
  rec.created = Now3339();
  rec.cgroup_path = cg_path;
  rec.cgroup_driver = driver;
  rec.annotations = spec.annotations;
  rec.default_seccomp = o.default_seccomp && !(spec.linux && spec.linux->seccomp);

  pid_t child = -1;
  UniqueFd pidfd;
  bool cgroup_made = false;
  bool committed = false;
  bool pid_file_written = false;
  auto cleanup = [&]() {
    if (committed) return;
    if (pid_file_written) unlink(o.pid_file.c_str());
    if (pidfd) {
      syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
      siginfo_t si;
      waitid(P_PIDFD, pidfd.get(), &si, WEXITED);
    }
    if (cgroup_made && !rec.cgroup_dir.empty()) {
      absl::Status st = cgm->Destroy(cg_path, rec.cgroup_dir);
      if (!st.ok()) log::Warn("create cleanup: ", st);
    }
    RemoveTree(dir);
  };
  struct Guard {
    std::function<void()> fn;
    ~Guard() { fn(); }
  } guard{cleanup};

  ASSIGN_OR_RETURN(rec.cgroup_dir, cgm->Prepare(cg_path));
  // Recorded before the cgroup exists so a `delete` after a crash here finds it.
  rec.config = SpecToJson(spec);
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/state.json", RecordJson(rec, "created")));
  cgroup_made = true;
  std::vector<std::string> warnings;
  const Resources no_limits;
  const Resources& res = spec.linux && spec.linux->resources ? *spec.linux->resources : no_limits;
  UniqueFd cg_fd;
  if (cgm->CreatesBeforeProcess()) {
    RETURN_IF_ERROR(cgm->Apply(rec.cgroup_dir, res, options_.strict_cgroups, &warnings));
    cg_fd.reset(open(rec.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg_fd) return LastErrnoError("open cgroup " + rec.cgroup_dir);
    RETURN_IF_ERROR(ApplyDeviceRules(cg_fd.get(), spec, options_.strict_cgroups, &warnings));
  }
  rec.oom_kills_at_start = CgroupOomKills(rec.cgroup_dir);

  plan->wait_for_start = !o.start_immediately;
  if (plan->wait_for_start) {
    if (mkfifo((dir + "/exec.fifo").c_str(), 0622) != 0) return LastErrnoError("mkfifo " + dir + "/exec.fifo");
  }
  UniqueFd dir_fd(MoveAbove2(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)));
  if (!dir_fd) return LastErrnoError("open " + dir);
  plan->state_dir_fd = dir_fd.get();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return LastErrnoError("socketpair");
  UniqueFd ours(MoveAbove2(sv[0])), theirs(MoveAbove2(sv[1]));
  plan->sync_fd = theirs.get();
  if (hooks.create_runtime.empty() && !hooks.prestart.empty()) hooks.create_runtime = hooks.prestart;
  FinalizeArgv(&plan->process);
  if (!plan->start_hooks.empty()) {
    // The init only learns its host pid with kSyncCommitted; it splices it in.
    ContainerState hs;
    hs.oci_version = rec.oci_version;
    hs.id = rec.id;
    hs.status = ContainerStatus::kCreated;
    hs.pid = 987654321;
    hs.bundle = bundle;
    hs.annotations = rec.annotations;
    hs.created = rec.created;
    std::string text = HookState(hs);
    size_t at = text.find("987654321");
    plan->start_hooks_state = text.substr(0, at);
    plan->start_hooks_state_suffix = text.substr(at + 9);
  }

  UniqueFd own_pidns;
  if (pid_join_fd >= 0) {
    auto own = EnterPidNsForChildren(pid_join_fd);
    if (!own.ok()) return absl::Status(own.status().code(), "linux.namespaces: " + std::string(own.status().message()));
    own_pidns = std::move(*own);
  }
  int raw_pidfd = -1;
  uint64_t flags = static_cast<uint64_t>(plan->clone_flags) | CLONE_PIDFD;
  bool into_cgroup = cg_fd.valid();
  child = Clone3(flags | (into_cgroup ? CLONE_INTO_CGROUP : 0), &raw_pidfd, cg_fd.get());
  if (child < 0 && into_cgroup && (errno == EINVAL || errno == ENOSYS || errno == E2BIG || errno == EOPNOTSUPP)) {
    into_cgroup = false;  // kernel without CLONE_INTO_CGROUP: move the init after
    child = Clone3(flags, &raw_pidfd, -1);
  }
  int clone_errno = errno;
  if (child == 0) {
    close(ours.get());
    RunInit(plan.get());
  }
  LeavePidNs(own_pidns);
  if (child < 0) return ErrnoError(clone_errno, "clone container init");
  pidfd.reset(raw_pidfd);
  theirs.reset();
  rec.pid = child;
  // The pid and its start time are fixed at clone: record them now, while
  // the init sets itself up on the other CPU.
  rec.pid_start = ProcStartTime(child);
  RETURN_IF_ERROR(WriteNewFile(dir + "/init", InitRecord(rec)));
  if (!o.pid_file.empty()) {
    RETURN_IF_ERROR(WriteFileAtomic(o.pid_file, std::to_string(child)));
    pid_file_written = true;
  }
  // From here: inside a user namespace the init could not raise it itself.
  if (plan->process.has_oom_score_adj) RETURN_IF_ERROR(WriteOomScoreAdj(child, plan->process.oom_score_adj));
  if (!into_cgroup) {
    RETURN_IF_ERROR(cgm->AddProcess(cg_path, rec.cgroup_dir, child, res));
    if (!cgm->CreatesBeforeProcess()) {
      RETURN_IF_ERROR(cgm->Apply(rec.cgroup_dir, res, options_.strict_cgroups, &warnings));
      UniqueFd dfd(open(rec.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dfd) return LastErrnoError("open cgroup " + rec.cgroup_dir);
      RETURN_IF_ERROR(ApplyDeviceRules(dfd.get(), spec, options_.strict_cgroups, &warnings));
    }
  }
  // Only once the init is in its cgroup with its oom_score_adj: after this
  // it may run the user program without waiting for us.
  {
    SyncMsg c;
    c.type = kSyncCommitted;
    c.value = child;
    if (send(ours.get(), &c, sizeof(c), MSG_NOSIGNAL) < 0) return LastErrnoError("sync with container init");
  }
  const Linux* lx = spec.linux ? &*spec.linux : nullptr;
  for (;;) {
    SyncMsg m;
    ssize_t n = recv(ours.get(), &m, sizeof(m), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(m)))
      return absl::InternalError("container init exited during setup");
    if (m.type == kSyncError) {
      m.msg[sizeof(m.msg) - 1] = 0;
      return absl::FailedPreconditionError(std::string("container init: ") + m.msg);
    }
    if (m.type == kSyncIdMapsNeeded) {
      RETURN_IF_ERROR(WriteIdMap(child, "uid_map", lx->uid_mappings));
      RETURN_IF_ERROR(WriteIdMap(child, "gid_map", lx->gid_mappings));
    } else if (m.type == kSyncHooksNeeded) {
      ContainerState st;
      st.oci_version = rec.oci_version;
      st.id = rec.id;
      st.status = ContainerStatus::kCreating;
      st.pid = child;
      st.bundle = bundle;
      st.annotations = rec.annotations;
      RETURN_IF_ERROR(RunHooks(hooks.create_runtime, HookState(st), "createRuntime"));
      RETURN_IF_ERROR(RunHooks(hooks.create_container, HookState(st), "createContainer"));
    } else if (m.type == kSyncReady) {
      break;
    }
    SyncMsg go;
    go.type = kSyncGo;
    if (send(ours.get(), &go, sizeof(go), MSG_NOSIGNAL) < 0) return LastErrnoError("sync with container init");
  }
  committed = true;
  for (auto& w : warnings) log::Warn("container ", o.id, ": cgroup limit not applied: ", w);

  ContainerState st;
  st.oci_version = rec.oci_version;
  st.id = o.id;
  st.status = o.start_immediately ? ContainerStatus::kRunning : ContainerStatus::kCreated;
  st.pid = child;
  st.bundle = bundle;
  st.annotations = rec.annotations;
  st.created = rec.created;
  st.cgroup_path = rec.cgroup_dir;
  st.warnings = std::move(warnings);
  {
    Children& ch = OwnChildren();
    std::lock_guard<std::mutex> l(ch.mu);
    auto it = ch.pidfds.find(o.id);
    if (it != ch.pidfds.end()) close(it->second);
    ch.pidfds[o.id] = pidfd.release();
    ch.reaped.erase(o.id);
  }
  if (o.start_immediately && !hooks.poststart.empty()) {
    absl::Status hs = RunHooks(hooks.poststart, HookState(st), "poststart");
    if (!hs.ok()) log::Warn("container ", o.id, ": ", hs);
  }
  return st;
}

absl::Status Runtime::Start(const std::string& id) {
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  if (l.status == ContainerStatus::kRunning)
    return absl::FailedPreconditionError("cannot start an already running container");
  if (l.status == ContainerStatus::kStopped)
    return absl::FailedPreconditionError("cannot start a container that has stopped");
  std::string fifo = l.dir + "/exec.fifo";
  UniqueFd fd(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return LastErrnoError("open " + fifo);
  char c = 0;
  for (int i = 0; i < 10000; i++) {
    ssize_t n = read(fd.get(), &c, 1);
    if (n == 1) break;
    if (n < 0 && errno != EAGAIN) return LastErrnoError("read " + fifo);
    if (ProcStartTime(l.rec.pid) != l.rec.pid_start) {
      // A short program may have taken its start, run and exited between the
      // read above and this check: its '0' is still in the fifo.
      if (read(fd.get(), &c, 1) == 1) break;
      return absl::FailedPreconditionError("container init exited before start");
    }
    struct pollfd p = {fd.get(), POLLIN, 0};
    poll(&p, 1, 10);
  }
  if (c != '0') return absl::DeadlineExceededError("container init did not answer start");
  unlink(fifo.c_str());
  auto spec = StoredSpec(l.rec, l.dir);
  if (spec.ok() && spec->hooks && !spec->hooks->poststart.empty()) {
    l.status = ContainerStatus::kRunning;
    absl::Status hs = RunHooks(spec->hooks->poststart, HookState(ToState(l)), "poststart");
    if (!hs.ok()) log::Warn("container ", id, ": ", hs);
  }
  return absl::OkStatus();
}

absl::StatusOr<ContainerState> Runtime::State(const std::string& id) {
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  return ToState(l);
}

absl::Status Runtime::Kill(const std::string& id, int signal, bool all) {
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  if (l.status == ContainerStatus::kStopped) return absl::FailedPreconditionError("container not running");
  if (all && !l.rec.cgroup_dir.empty()) {
    if (signal == SIGKILL) return KillCgroup(l.rec.cgroup_dir);
    ASSIGN_OR_RETURN(std::vector<pid_t> pids, CgroupPids(l.rec.cgroup_dir));
    for (pid_t p : pids) kill(p, signal);
    return absl::OkStatus();
  }
  UniqueFd pfd(static_cast<int>(syscall(SYS_pidfd_open, l.rec.pid, 0)));
  if (!pfd) return LastErrnoError("pidfd_open");
  // The pid could have been reused between Load and pidfd_open.
  if (ProcStartTime(l.rec.pid) != l.rec.pid_start) return absl::FailedPreconditionError("container not running");
  if (syscall(SYS_pidfd_send_signal, pfd.get(), signal, nullptr, 0) != 0) return LastErrnoError("kill");
  return absl::OkStatus();
}

absl::Status Runtime::Delete(const std::string& id, bool force) {
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  if (l.status == ContainerStatus::kRunning && !force)
    return absl::FailedPreconditionError("cannot delete container " + id + " that is not stopped: running");
  if (l.status != ContainerStatus::kStopped) {
    UniqueFd pfd(static_cast<int>(syscall(SYS_pidfd_open, l.rec.pid, 0)));
    if (!l.rec.cgroup_dir.empty() && access(l.rec.cgroup_dir.c_str(), F_OK) == 0) {
      RETURN_IF_ERROR(KillCgroup(l.rec.cgroup_dir));
    } else if (pfd) {
      syscall(SYS_pidfd_send_signal, pfd.get(), SIGKILL, nullptr, 0);
    }
    if (pfd && !PollExit(pfd.get(), 10000)) return absl::DeadlineExceededError("container " + id + " survives SIGKILL");
  }
  {
    Children& ch = OwnChildren();
    std::lock_guard<std::mutex> lk(ch.mu);
    auto it = ch.pidfds.find(id);
    if (it != ch.pidfds.end()) {
      siginfo_t si = {};
      if (waitid(P_PIDFD, it->second, &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0) {
        ExitStatus ex = FromSiginfo(si);
        ex.oom_killed = CgroupOomKills(l.rec.cgroup_dir) > l.rec.oom_kills_at_start;
        ch.reaped[id] = ex;
        close(it->second);
        ch.pidfds.erase(it);
      }
    }
  }
  if (!l.rec.cgroup_dir.empty()) {
    auto cgm = ManagerFor(l.rec.cgroup_driver, "");
    RETURN_IF_ERROR(cgm->Destroy(l.rec.cgroup_path, l.rec.cgroup_dir));
  }
  auto spec = StoredSpec(l.rec, l.dir);
  RemoveTree(l.dir);
  if (spec.ok() && spec->hooks && !spec->hooks->poststop.empty()) {
    l.status = ContainerStatus::kStopped;
    absl::Status hs = RunHooks(spec->hooks->poststop, HookState(ToState(l)), "poststop");
    if (!hs.ok()) log::Warn("container ", id, ": ", hs);
  }
  return absl::OkStatus();
}

absl::StatusOr<ExitStatus> Runtime::Wait(const std::string& id, int timeout_ms) {
  int pidfd = -1;
  {
    Children& ch = OwnChildren();
    std::lock_guard<std::mutex> l(ch.mu);
    auto r = ch.reaped.find(id);
    if (r != ch.reaped.end()) return r->second;
    auto it = ch.pidfds.find(id);
    if (it != ch.pidfds.end()) pidfd = it->second;
  }
  if (pidfd >= 0) {
    if (!PollExit(pidfd, timeout_ms)) return absl::DeadlineExceededError("container " + id + " still running");
    Children& ch = OwnChildren();
    std::lock_guard<std::mutex> l(ch.mu);
    auto r = ch.reaped.find(id);
    if (r != ch.reaped.end()) return r->second;
    siginfo_t si = {};
    if (waitid(P_PIDFD, pidfd, &si, WEXITED) != 0) return LastErrnoError("waitid container " + id);
    ExitStatus ex = FromSiginfo(si);
    auto st = Load(options_, id);
    if (st.ok()) ex.oom_killed = CgroupOomKills(st->rec.cgroup_dir) > st->rec.oom_kills_at_start;
    ch.reaped[id] = ex;
    close(pidfd);
    ch.pidfds.erase(id);
    return ex;
  }
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  ExitStatus ex;
  if (l.status == ContainerStatus::kStopped) return ex;
  UniqueFd pfd(static_cast<int>(syscall(SYS_pidfd_open, l.rec.pid, 0)));
  if (!pfd) return ex;
  if (!PollExit(pfd.get(), timeout_ms)) return absl::DeadlineExceededError("container " + id + " still running");
  siginfo_t si = {};
  if (waitid(P_PIDFD, pfd.get(), &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0) ex = FromSiginfo(si);
  ex.oom_killed = CgroupOomKills(l.rec.cgroup_dir) > l.rec.oom_kills_at_start;
  return ex;
}

absl::StatusOr<ExitStatus> Runtime::WaitPid(pid_t pid) {
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, 0) >= 0) break;
    if (errno != EINTR) return LastErrnoError("waitpid " + std::to_string(pid));
  }
  ExitStatus ex;
  ex.known = true;
  if (WIFEXITED(status)) {
    ex.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    ex.signal = WTERMSIG(status);
    ex.exit_code = 128 + ex.signal;
  }
  return ex;
}

absl::StatusOr<std::vector<ContainerState>> Runtime::List() {
  std::vector<ContainerState> out;
  DIR* d = opendir(options_.root_dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return LastErrnoError("open " + options_.root_dir);
  }
  std::vector<std::string> ids;
  while (struct dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") ids.push_back(n);
  }
  closedir(d);
  std::sort(ids.begin(), ids.end());
  for (const auto& id : ids) {
    auto l = Load(options_, id);
    if (l.ok()) out.push_back(ToState(*l));
  }
  return out;
}

absl::StatusOr<std::vector<pid_t>> Runtime::Pids(const std::string& id) {
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  if (l.rec.cgroup_dir.empty() || access(l.rec.cgroup_dir.c_str(), F_OK) != 0) return std::vector<pid_t>{};
  return CgroupPids(l.rec.cgroup_dir);
}

absl::StatusOr<pid_t> Runtime::Exec(const std::string& id, const ExecOptions& o) {
  ASSIGN_OR_RETURN(Loaded l, Load(options_, id));
  if (l.status == ContainerStatus::kStopped) return absl::FailedPreconditionError("cannot exec in a stopped container");
  ASSIGN_OR_RETURN(Spec spec, StoredSpec(l.rec, l.dir));
  auto p = std::make_unique<ProcessPlan>();
  RETURN_IF_ERROR(PrepareProcess(o.process, &spec, l.rec.default_seccomp, p.get()));
  AddHomeEnv(l.rec.rootfs, p.get());
  std::vector<UniqueFd> owned;
  for (int i = 0; i < 3; i++) {
    int fd = i == 0 ? o.stdio.in : i == 1 ? o.stdio.out : o.stdio.err;
    ASSIGN_OR_RETURN(UniqueFd f, StdioFd(fd));
    p->stdio[i] = f.get();
    owned.push_back(std::move(f));
  }
  if (o.process.terminal) {
    if (o.console_socket.empty()) return absl::InvalidArgumentError("process.terminal: needs --console-socket");
    ASSIGN_OR_RETURN(UniqueFd cs, ConnectConsole(o.console_socket));
    p->console_socket = cs.get();
    owned.push_back(std::move(cs));
  }
  // Namespaces of the init that differ from ours; user first, mount last so
  // paths keep resolving on the host until then.
  static const int kOrder[] = {CLONE_NEWUSER, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET,
                               CLONE_NEWPID,  CLONE_NEWCGROUP, CLONE_NEWNS};
  std::vector<InitPlan::JoinNs> join;
  for (int t : kOrder) {
    std::string theirs = "/proc/" + std::to_string(l.rec.pid) + "/ns/" + NamespaceProcName(t);
    std::string mine = std::string("/proc/self/ns/") + NamespaceProcName(t);
    struct stat a, b;
    if (stat(theirs.c_str(), &a) != 0) return LastErrnoError("stat " + theirs);
    if (stat(mine.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) continue;
    UniqueFd fd(MoveAbove2(open(theirs.c_str(), O_RDONLY | O_CLOEXEC)));
    if (!fd) return LastErrnoError("open " + theirs);
    join.push_back({fd.get(), t});
    owned.push_back(std::move(fd));
  }
  if (ProcStartTime(l.rec.pid) != l.rec.pid_start) return absl::FailedPreconditionError("container not running");
  UniqueFd cg_fd;
  if (!l.rec.cgroup_dir.empty()) cg_fd.reset(MoveAbove2(open(l.rec.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  FinalizeArgv(p.get());
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return LastErrnoError("socketpair");
  UniqueFd ours(MoveAbove2(sv[0])), theirs(MoveAbove2(sv[1]));
  // The pid namespace is entered by this thread for its children only
  // (pid_for_children is per thread), so the exec'ed process is our direct
  // child and no helper process is needed; it is restored right after.
  int pid_join = -1;
  for (auto it = join.begin(); it != join.end(); ++it)
    if (it->nstype == CLONE_NEWPID) {
      pid_join = it->fd;
      join.erase(it);
      break;
    }
  UniqueFd own_pidns;
  if (pid_join >= 0) {
    ASSIGN_OR_RETURN(own_pidns, EnterPidNsForChildren(pid_join));
  }
  int raw_pidfd = -1;
  uint64_t flags = CLONE_PIDFD | (cg_fd ? CLONE_INTO_CGROUP : 0);
  pid_t pid = Clone3(flags, &raw_pidfd, cg_fd.get());
  if (pid < 0 && cg_fd) pid = Clone3(CLONE_PIDFD, &raw_pidfd, -1);
  int clone_errno = errno;
  if (pid == 0) {
    close(ours.get());
    for (const auto& j : join) {
      if (setns(j.fd, j.nstype) != 0) {
        SyncMsg m;
        m.type = kSyncError;
        snprintf(m.msg, sizeof(m.msg), "join %s namespace: %s", NamespaceProcName(j.nstype), strerror(errno));
        send(theirs.get(), &m, sizeof(m), MSG_NOSIGNAL);
        _exit(127);
      }
    }
    RunExecProcess(p.get(), theirs.get());
  }
  LeavePidNs(own_pidns);
  if (pid < 0) return ErrnoError(clone_errno, "clone exec process");
  UniqueFd pidfd(raw_pidfd);
  theirs.reset();
  if (p->has_oom_score_adj) {
    absl::Status os = WriteOomScoreAdj(pid, p->oom_score_adj);
    if (!os.ok()) log::Warn("exec in ", id, ": ", os);
  }
  SyncMsg m;
  // EOF: execve succeeded (the socket was close-on-exec); a message: it failed.
  ssize_t n = recv(ours.get(), &m, sizeof(m), 0);
  if (n == static_cast<ssize_t>(sizeof(m)) && m.type == kSyncError) {
    waitpid(pid, nullptr, 0);
    m.msg[sizeof(m.msg) - 1] = 0;
    return absl::FailedPreconditionError(m.msg);
  }
  if (!o.pid_file.empty()) RETURN_IF_ERROR(WriteFileAtomic(o.pid_file, std::to_string(pid)));
  return pid;
}

}  // namespace skiff::runtime
