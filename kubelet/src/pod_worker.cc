#include "pod_worker.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/controllers/objects.h"
#include "skiff/kubelet/cgroup_layout.h"
#include "skiff/kubelet/cri_log.h"
#include "skiff/kubelet/resources.h"
#include "skiff/podnet/podnet.h"
#include "volumes.h"

namespace skiff::kubelet {
namespace fs = std::filesystem;
using api::v1::Container;
using api::v1::Pod;

namespace {

constexpr int kMaxBackoffSeconds = 300;
constexpr int kBackoffResetSeconds = 600;

bool ProcessAlive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

std::string NowRfc3339() { return objects::Now(); }

// The lowest oom_score_adj this kubelet can give a child: anything without
// CAP_SYS_RESOURCE may not go below its own value (the kernel's
// oom_score_adj_min), so a Guaranteed pod gets at most that on such a host.
int OomScoreAdjFloor() {
  std::ifstream st("/proc/self/status");
  std::string line;
  while (std::getline(st, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    unsigned long long caps = std::strtoull(line.c_str() + 7, nullptr, 16);
    if (caps & (1ull << 24)) return -1000;  // CAP_SYS_RESOURCE
  }
  int own = 0;
  std::ifstream adj("/proc/self/oom_score_adj");
  adj >> own;
  return own;
}


// Connect with a timeout; a connected fd, or -1 with *why in Go's dialer words
// ("dial tcp IP:PORT: connect: connection refused", "... i/o timeout") as Kubernetes' probe events say.
int ConnectTimeout(const std::string& ip, int port, int timeout_ms, std::string* why = nullptr) {
  auto fail = [&](int fd, int err) {
    if (fd >= 0) close(fd);
    if (why != nullptr) {
      std::string e = err == ETIMEDOUT ? "i/o timeout" : absl::StrCat("connect: ", absl::AsciiStrToLower(strerror(err)));
      *why = absl::StrCat("dial tcp ", ip, ":", port, ": ", e);
    }
    return -1;
  };
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return fail(-1, errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc != 0 && errno != EINPROGRESS) return fail(fd, errno);
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    int n = poll(&p, 1, timeout_ms);
    if (n < 0) return fail(fd, errno);
    if (n == 0) return fail(fd, ETIMEDOUT);
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return fail(fd, errno);
    if (err != 0) return fail(fd, err);
  }
  return fd;
}

int ResolvePort(const Container& c, const std::string& port) {
  if (!port.empty() && std::all_of(port.begin(), port.end(), ::isdigit)) return std::atoi(port.c_str());
  for (const auto& p : c.ports()) {
    if (p.name() == port) return p.container_port();
  }
  return -1;
}

}  // namespace

PodWorker::PodWorker(Kubelet* k, const Pod& pod) : k_(k), uid_(pod.metadata().uid()), pod_(pod) {
  ident_.mutable_metadata()->set_name(pod.metadata().name());
  ident_.mutable_metadata()->set_namespace_(pod.metadata().namespace_());
  ident_.mutable_metadata()->set_uid(pod.metadata().uid());
  // Re-adopt: what the monitors recorded survives a kubelet restart.
  auto load = [&](const Container& c, bool init) {
    CState& s = State(c.name(), init);
    std::string dir = PodRunDir() + "/" + c.name();
    int max_attempt = -1;
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 6 && n.substr(n.size() - 6) == ".state") max_attempt = std::max(max_attempt, atoi(n.c_str()));
      }
      closedir(d);
    }
    if (max_attempt < 0) return;
    s.attempts = max_attempt + 1;
    auto cur = ReadRecordFile(dir + "/" + std::to_string(max_attempt) + ".state");
    if (cur.ok()) s.current = *cur;
    if (max_attempt > 0) {
      auto prev = ReadRecordFile(dir + "/" + std::to_string(max_attempt - 1) + ".state");
      if (prev.ok()) s.previous = *prev;
    }
    s.backoff_exp = std::min(max_attempt, 6);
    s.started = !c.has_startup_probe();
    if (s.current && !s.current->exited) {
      // Adopted running containers keep their readiness until a probe says otherwise.
      s.readiness.ok = !c.has_readiness_probe();
      s.startup.ok = s.started;
    }
  };
  for (const auto& c : pod.spec().init_containers()) load(c, true);
  for (const auto& c : pod.spec().containers()) load(c, false);
  bool any = false;
  for (auto& [n, s] : containers_) any |= s.attempts > 0;
  if (any) {
    admitted_ = true;  // it ran here before: it was admitted
    latency_recorded_ = true;
  }
  last_status_ = pod.status();
  start_time_ = pod.status().start_time();
  thread_ = std::thread([this] { Loop(); });
}

PodWorker::~PodWorker() { Stop(); }

void PodWorker::Stop() {
  stop_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PodWorker::Update(const Pod& pod) {
  // Handed to the worker thread, which alone replaces pod_ (under mu_, at
  // the start of a sync): it reads pod_ without the lock, others with it.
  std::lock_guard<std::mutex> l(mu_);
  pending_ = pod;
  has_pending_ = true;
  dirty_ = true;
  cv_.notify_all();
}

void PodWorker::MarkDeleted() {
  std::lock_guard<std::mutex> l(mu_);
  deleted_ = true;
  cv_.notify_all();
}

std::string PodWorker::ns_name() const {
  return ident_.metadata().namespace_() + "/" + ident_.metadata().name();
}

std::string PodWorker::PodRunDir() const { return k_->config().run_dir + "/pods/" + uid_; }
std::string PodWorker::PodRootDir() const { return k_->config().root_dir + "/pods/" + uid_; }
std::string PodWorker::ContainerId(const std::string& name, int attempt) const {
  return absl::StrCat(uid_, "-", name, "-", attempt);
}
std::string PodWorker::LogDir() const {
  return absl::StrCat(k_->config().log_dir, "/", ident_.metadata().namespace_(), "_", ident_.metadata().name(), "_",
                      uid_);
}

PodWorker::CState& PodWorker::State(const std::string& name, bool init) {
  // Readers (Locate, Count, Running) walk containers_ under mu_; the worker
  // thread is the only writer and takes mu_ for every change it makes.
  std::lock_guard<std::mutex> l(mu_);
  return StateLocked(name, init);
}

PodWorker::CState& PodWorker::StateLocked(const std::string& name, bool init) {
  CState& s = containers_[name];
  s.name = name;
  s.init = init;
  return s;
}

void PodWorker::Loop() {
  while (!stop_) {
    Sync();
    if (finished_) return;
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(k_->config().sync_seconds * 1000),
                 [&] { return stop_.load() || dirty_ || deleted_; });
    dirty_ = false;
  }
}

bool PodWorker::RestartWanted(const ContainerRecord& r) const {
  const std::string& p = pod_.spec().restart_policy();
  bool ok = r.exit_code == 0 && r.error.empty();
  if (p == "Never") return false;
  if (p == "OnFailure") return !ok;
  return true;  // Always (default)
}

void PodWorker::Refresh(CState& s) {
  if (!s.current || s.current->exited) return;
  std::string path = absl::StrCat(PodRunDir(), "/", s.name, "/", s.current->attempt, ".state");
  auto r = ReadRecordFile(path);
  if (r.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    s.current = *r;
  }
  if (!s.current->exited && !ProcessAlive(s.current->monitor_pid)) {
    r = ReadRecordFile(path);
    ContainerRecord rec = r.ok() ? *r : *s.current;
    if (!rec.exited) {
      // The monitor died (e.g. the machine's OOM killer): the container can no longer be observed.
      k_->engine().Kill(rec.id, SIGKILL, true).IgnoreError();
      rec.exited = true;
      rec.exit_code = 255;
      rec.error = "container monitor exited unexpectedly";
      rec.finished_at = NowRfc3339();
      WriteRecordFile(path, rec).IgnoreError();
    }
    std::lock_guard<std::mutex> l(mu_);
    s.current = rec;
  }
  if (s.current->exited) {
    std::lock_guard<std::mutex> l(mu_);
    s.liveness = s.readiness = s.startup = ProbeState{};
    s.started = false;
  }
}

bool PodWorker::Admit() {
  if (admitted_ || rejected_) return admitted_;
  int64_t want_cpu = PodRequestMilliCpu(pod_.spec()), want_mem = PodRequestMemory(pod_.spec());
  auto alloc_cpu = objects::ParseMilli(k_->allocatable("cpu"));
  auto alloc_mem = objects::ParseValue(k_->allocatable("memory"));
  int64_t ucpu = 0, umem = 0;
  int upods = 0;
  k_->UsedExcept(uid_, &ucpu, &umem, &upods);
  std::string reason, msg;
  if (alloc_cpu.ok() && want_cpu > 0 && ucpu + want_cpu > *alloc_cpu) {
    reason = "OutOfcpu";
    msg = absl::StrCat("Pod Node didn't have enough resource: cpu, requested: ", want_cpu, ", used: ", ucpu,
                       ", capacity: ", *alloc_cpu);
  } else if (alloc_mem.ok() && want_mem > 0 && umem + want_mem > *alloc_mem) {
    reason = "OutOfmemory";
    msg = absl::StrCat("Pod Node didn't have enough resource: memory, requested: ", want_mem, ", used: ", umem,
                       ", capacity: ", *alloc_mem);
  } else if (upods + 1 > k_->config().max_pods) {
    reason = "OutOfpods";
    msg = absl::StrCat("Node didn't have enough resource: pods, capacity: ", k_->config().max_pods);
  }
  if (!reason.empty()) {
    rejected_ = true;
    reject_reason_ = reason;
    reject_message_ = msg;
    k_->RecordEvent(ident_, "Warning", reason, msg);
    return false;
  }
  admitted_ = true;
  return true;
}

void PodWorker::Requests(int64_t* milli_cpu, int64_t* memory, int* pods) {
  std::lock_guard<std::mutex> l(mu_);
  *milli_cpu = *memory = 0;
  *pods = 0;
  if (!admitted_ || finished_) return;
  std::string phase = last_status_.phase();
  if (phase == "Succeeded" || phase == "Failed") return;
  *milli_cpu = PodRequestMilliCpu(pod_.spec());
  *memory = PodRequestMemory(pod_.spec());
  *pods = 1;
}

absl::Status PodWorker::EnsureSandbox() {
  if (sandbox_ready_) return absl::OkStatus();
  if (mkdir((k_->config().run_dir + "/pods").c_str(), 0755) != 0 && errno != EEXIST) {
    return LastErrnoError("mkdir pods run dir");
  }
  std::error_code ec;
  fs::create_directories(PodRunDir(), ec);
  fs::create_directories(PodRootDir() + "/bundles", ec);
  fs::create_directories(LogDir(), ec);
  if (ec) return absl::InternalError("create pod directories: " + ec.message());
  {
    std::ofstream meta(PodRunDir() + "/pod");
    meta << pod_.metadata().namespace_() << "\n" << pod_.metadata().name() << "\n";
  }
  if (pod_.spec().host_network()) {
    pod_ip_ = k_->NodeIp();
    netns_path_.clear();
  } else if (k_->network() != nullptr) {
    auto r = k_->network()->Setup(uid_);
    if (!r.ok()) return Annotate(r.status(), "set up pod network");
    pod_ip_ = r->ip;
    netns_path_ = r->netns_path;
    // hostPort: NODE:hostPort -> POD_IP:containerPort (Kubernetes defaults the protocol to TCP).
    std::vector<podnet::PortMapping> ports;
    for (const auto& c : pod_.spec().containers()) {
      for (const auto& p : c.ports()) {
        if (p.host_port() <= 0) continue;
        ports.push_back({p.protocol().empty() ? "TCP" : p.protocol(), static_cast<int>(p.host_port()),
                         static_cast<int>(p.container_port())});
      }
    }
    if (!ports.empty()) {
      absl::Status st = k_->network()->SetHostPorts(uid_, ports);
      if (!st.ok()) return Annotate(st, "set up hostPorts");
    }
  }
  // The pod-level cgroup (systemd: the pod's slice) with the pod's limits; container limits
  // that cannot be applied are reported by the runtime per container.
  {
    std::vector<std::string> not_applied;
    absl::Status st = CgroupLayout(k_->config(), k_->cgroup2_mount())
                          .CreatePod(ComputeQos(pod_.spec()), uid_, PodLimitsFor(pod_.spec(), 4096), &not_applied);
    if (!st.ok()) log::Warn("pod ", ns_name(), ": pod cgroup: ", st);
    if (!not_applied.empty())
      log::Info("pod ", ns_name(), ": pod cgroup limits not applied: ", absl::StrJoin(not_applied, "; "));
  }
  if (start_time_.empty()) start_time_ = NowRfc3339();
  sandbox_ready_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> PodWorker::BuildEnv(const Container& c, std::string* reason) {
  std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "HOSTNAME=" + pod_.metadata().name()};
  const std::string& ns = pod_.metadata().namespace_();
  auto lookup = [&](bool secret, const std::string& name, const std::string& key, bool optional,
                    std::string* out) -> absl::Status {
    auto obj = k_->api().Get(secret ? "secrets" : "configmaps", ns, name);
    if (!obj.ok()) {
      if (optional) return absl::NotFoundError("");
      *reason = "CreateContainerConfigError";
      return absl::NotFoundError(absl::StrCat(secret ? "secret" : "configmap", " \"", name, "\" not found"));
    }
    if (secret) {
      auto it = obj->secret().data().find(key);
      if (it != obj->secret().data().end()) {
        *out = it->second;
        return absl::OkStatus();
      }
    } else {
      auto it = obj->config_map().data().find(key);
      if (it != obj->config_map().data().end()) {
        *out = it->second;
        return absl::OkStatus();
      }
    }
    if (optional) return absl::NotFoundError("");
    *reason = "CreateContainerConfigError";
    return absl::NotFoundError(absl::StrCat("couldn't find key ", key, " in ", secret ? "Secret " : "ConfigMap ", ns,
                                            "/", name));
  };
  for (const auto& ef : c.env_from()) {
    bool secret = ef.has_secret_ref();
    const auto& ref = secret ? ef.secret_ref() : ef.config_map_ref();
    auto obj = k_->api().Get(secret ? "secrets" : "configmaps", ns, ref.name());
    if (!obj.ok()) {
      if (ref.optional()) continue;
      *reason = "CreateContainerConfigError";
      return absl::NotFoundError(absl::StrCat(secret ? "secret" : "configmap", " \"", ref.name(), "\" not found"));
    }
    if (secret) {
      for (const auto& [k, v] : obj->secret().data()) env.push_back(ef.prefix() + k + "=" + v);
    } else {
      for (const auto& [k, v] : obj->config_map().data()) env.push_back(ef.prefix() + k + "=" + v);
    }
  }
  for (const auto& e : c.env()) {
    std::string value = e.value();
    if (e.has_value_from()) {
      const auto& vf = e.value_from();
      absl::Status st;
      if (vf.has_config_map_key_ref()) {
        st = lookup(false, vf.config_map_key_ref().name(), vf.config_map_key_ref().key(),
                    vf.config_map_key_ref().optional(), &value);
      } else if (vf.has_secret_key_ref()) {
        st = lookup(true, vf.secret_key_ref().name(), vf.secret_key_ref().key(), vf.secret_key_ref().optional(),
                    &value);
      } else if (vf.has_field_ref()) {
        const std::string& f = vf.field_ref().field_path();
        if (f == "metadata.name") value = pod_.metadata().name();
        else if (f == "metadata.namespace") value = ns;
        else if (f == "metadata.uid") value = uid_;
        else if (f == "spec.nodeName") value = k_->config().node_name;
        else if (f == "status.podIP") value = pod_ip_;
        else if (f == "status.hostIP") value = k_->NodeIp();
        else if (f == "spec.serviceAccountName") value = pod_.spec().service_account_name();
      }
      if (!st.ok()) {
        if (st.message().empty()) continue;  // optional and absent
        return st;
      }
    }
    env.push_back(e.name() + "=" + value);
  }
  return env;
}

absl::StatusOr<std::string> PodWorker::ResolveRootfs(const Container& c, CState& s, bool* read_only,
                                                     std::vector<std::string>* entrypoint,
                                                     std::vector<std::string>* cmd) {
  const std::string& image = c.image();
  const std::string& dir = k_->config().rootfs_dir;
  *read_only = true;
  std::vector<std::string> candidates;
  if (image.rfind("local/", 0) == 0) candidates.push_back(image.substr(6));
  candidates.push_back(image);
  if (auto colon = image.rfind(':'); colon != std::string::npos && image.find('/', colon) == std::string::npos) {
    candidates.push_back(image.substr(0, colon));
  }
  if (!dir.empty()) {
    for (const auto& n : candidates) {
      std::error_code ec;
      if (!n.empty() && fs::is_directory(dir + "/" + n, ec)) return dir + "/" + n;
    }
  }
  if (image.rfind("local/", 0) == 0) {
    return absl::NotFoundError(absl::StrCat("local image ", image, " not found under --rootfs-dir \"", dir, "\""));
  }
  return ResolveImageRootfs(k_, c, absl::StrCat(PodRootDir(), "/bundles/", ContainerId(c.name(), s.attempts)),
                            read_only, entrypoint, cmd, &s.image_mounted);
}

absl::Status PodWorker::StartContainer(const Container& c, CState& s) {
  std::string reason;
  auto env = BuildEnv(c, &reason);
  if (!env.ok()) {
    s.waiting_reason = reason.empty() ? "CreateContainerConfigError" : reason;
    s.waiting_message = std::string(env.status().message());
    return env.status();
  }
  bool ro = true;
  std::vector<std::string> entrypoint, cmd;
  // Kubernetes' image pull back-off: ErrImagePull on a failed pull, then ImagePullBackOff
  // until the next attempt (10 s, doubling to 300 s).
  if (absl::Now() < s.pull_retry_at) {
    s.waiting_reason = "ImagePullBackOff";
    s.waiting_message = absl::StrCat("Back-off pulling image \"", c.image(), "\"");
    if (warned_[c.name()] != s.waiting_message) {
      warned_[c.name()] = s.waiting_message;
      k_->RecordEvent(ident_, "Normal", "BackOff", s.waiting_message);
      k_->RecordEvent(ident_, "Warning", "Failed", "Error: ImagePullBackOff");
    }
    return absl::UnavailableError(s.waiting_message);
  }
  auto rootfs = ResolveRootfs(c, s, &ro, &entrypoint, &cmd);
  if (!rootfs.ok()) {
    ++s.pull_failures;
    s.pull_retry_at = absl::Now() + absl::Seconds(std::min(kMaxBackoffSeconds, 10 << std::min(s.pull_failures - 1, 5)));
    s.waiting_reason = "ErrImagePull";
    s.waiting_message = std::string(rootfs.status().message());
    std::string failed = absl::StrCat("Failed to pull image \"", c.image(), "\": ", rootfs.status().message());
    if (warned_[c.name()] != failed) {
      warned_[c.name()] = failed;
      k_->RecordEvent(ident_, "Warning", "Failed", failed);
      k_->RecordEvent(ident_, "Warning", "Failed", "Error: ErrImagePull");
    }
    return rootfs.status();
  }
  s.pull_failures = 0;
  s.pull_retry_at = absl::InfinitePast();
  std::vector<std::string> args;
  if (!c.command().empty()) {
    args.assign(c.command().begin(), c.command().end());
    args.insert(args.end(), c.args().begin(), c.args().end());
  } else if (!entrypoint.empty()) {
    args = entrypoint;
    if (!c.args().empty()) args.insert(args.end(), c.args().begin(), c.args().end());
    else args.insert(args.end(), cmd.begin(), cmd.end());
  } else if (!c.args().empty()) {
    args.assign(c.args().begin(), c.args().end());
  } else {
    args = cmd;
  }
  if (args.empty()) {
    s.waiting_reason = "CreateContainerConfigError";
    s.waiting_message = "no command specified";
    return absl::InvalidArgumentError(s.waiting_message);
  }
  ContainerSpec spec;
  int attempt = s.attempts;
  spec.id = ContainerId(c.name(), attempt);
  spec.bundle_dir = absl::StrCat(PodRootDir(), "/bundles/", spec.id);
  spec.rootfs = *rootfs;
  spec.rootfs_read_only = ro;
  spec.args = args;
  spec.env = *env;
  spec.cwd = c.working_dir().empty() ? "/" : c.working_dir();
  const auto& psc = pod_.spec().security_context();
  const auto& csc = c.security_context();
  if (csc.has_run_as_user()) spec.uid = csc.run_as_user();
  else if (psc.has_run_as_user()) spec.uid = psc.run_as_user();
  if (csc.has_run_as_group()) spec.gid = csc.run_as_group();
  else if (psc.has_run_as_group()) spec.gid = psc.run_as_group();
  spec.privileged = csc.has_privileged() && csc.privileged();
  spec.hostname = pod_.spec().hostname().empty() ? pod_.metadata().name() : pod_.spec().hostname();
  spec.netns_path = netns_path_;
  QosClass qos = ComputeQos(pod_.spec());
  spec.cgroup_path = CgroupLayout(k_->config(), k_->cgroup2_mount()).ContainerCgroupsPath(qos, uid_, spec.id);
  ContainerLimits lim = LimitsFor(c);
  spec.cpu_shares = lim.cpu_shares;
  spec.cpu_quota_us = lim.cpu_quota_us;
  spec.memory_limit = lim.memory_bytes;
  spec.pids_limit = 4096;
  auto capacity = objects::ParseValue(k_->capacity("memory"));
  int adj = OomScoreAdj(qos, c, capacity.ok() ? *capacity : 0);
  static const int floor = OomScoreAdjFloor();
  if (adj < floor) {
    if (!warned_.count("oom_score_adj")) {
      warned_["oom_score_adj"] = "1";
      k_->RecordEvent(ident_, "Warning", "OomScoreAdjNotApplied",
                      absl::StrCat("oom_score_adj ", adj, " needs CAP_SYS_RESOURCE; using ", floor));
    }
    adj = floor;
  }
  spec.oom_score_adj = adj;
  for (const auto& vm : c.volume_mounts()) {
    auto it = volume_mounts_.find(vm.name());
    if (it == volume_mounts_.end()) {
      s.waiting_reason = "CreateContainerConfigError";
      s.waiting_message = absl::StrCat("volume \"", vm.name(), "\" not found in the pod");
      return absl::InvalidArgumentError(s.waiting_message);
    }
    MountSpec m = it->second;
    m.destination = vm.mount_path();
    if (!vm.sub_path().empty() && !m.tmpfs) m.source += "/" + vm.sub_path();
    m.read_only = m.read_only || vm.read_only();
    spec.mounts.push_back(m);
  }
  if (auto sa = volume_mounts_.find(kServiceAccountVolume); sa != volume_mounts_.end()) {
    bool taken = false;
    for (const auto& vm : c.volume_mounts()) taken |= vm.mount_path() == kServiceAccountMountPath;
    if (!taken) {
      MountSpec m = sa->second;
      m.destination = kServiceAccountMountPath;
      spec.mounts.push_back(m);
    }
  }
  std::error_code ec;
  std::string cdir = PodRunDir() + "/" + c.name();
  fs::create_directories(cdir, ec);
  fs::create_directories(LogDir() + "/" + c.name(), ec);
  LaunchPaths paths;
  paths.attempt = attempt;
  paths.record = absl::StrCat(cdir, "/", attempt, ".state");
  paths.log = absl::StrCat(LogDir(), "/", c.name(), "/", attempt, ".log");
  // Only the newest two attempts keep their logs (kubectl logs --previous).
  if (attempt >= 2) {
    std::string old = absl::StrCat(LogDir(), "/", c.name(), "/", attempt - 2, ".log");
    for (const auto& f : LogFilesOldestFirst(old)) unlink(f.c_str());
    fs::remove_all(absl::StrCat(PodRootDir(), "/bundles/", ContainerId(c.name(), attempt - 2)), ec);
    unlink(absl::StrCat(cdir, "/", attempt - 2, ".state").c_str());
  }
  absl::Status st = k_->engine().Launch(spec, paths);
  auto rec = ReadRecordFile(paths.record);
  if (!rec.ok()) {
    ContainerRecord r;
    r.id = spec.id;
    r.attempt = attempt;
    r.exited = true;
    r.exit_code = 128;
    r.error = std::string(st.ok() ? rec.status().message() : st.message());
    r.finished_at = NowRfc3339();
    WriteRecordFile(paths.record, r).IgnoreError();
    rec = r;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    s.attempts = attempt + 1;
    if (s.current) s.previous = s.current;
    s.current = *rec;
    s.waiting_reason.clear();
    s.waiting_message.clear();
    s.started = !c.has_startup_probe();
  }
  if (!st.ok()) {
    k_->RecordEvent(ident_, "Warning", "Failed", absl::StrCat("Error: ", st.message()));
    return st;
  }
  if (!s.current->warnings.empty() && !warned_.count("cgroup")) {
    warned_["cgroup"] = s.current->warnings;
    k_->RecordEvent(ident_, "Warning", "ResourceLimitsNotApplied",
                    absl::StrCat("cgroup v2 limits not applied on this node: ", s.current->warnings));
  }
  k_->RecordEvent(ident_, "Normal", "Started", absl::StrCat("Started container ", c.name()));
  return absl::OkStatus();
}

void PodWorker::KillContainer(CState& s, int64_t grace, const Container* spec) {
  if (!s.current || s.current->exited) return;
  const std::string id = s.current->id;
  auto deadline = absl::Now() + absl::Seconds(grace);
  if (spec && spec->has_lifecycle() && spec->lifecycle().has_pre_stop()) {
    const auto& h = spec->lifecycle().pre_stop();
    if (h.has_exec()) {
      std::vector<std::string> cmd(h.exec().command().begin(), h.exec().command().end());
      k_->engine().ExecSync(id, cmd, {}, static_cast<int>(std::max<int64_t>(grace, 1) * 1000)).IgnoreError();
    } else if (h.has_http_get()) {
      api::v1::Probe p;
      *p.mutable_http_get() = h.http_get();
      p.set_timeout_seconds(static_cast<int>(std::max<int64_t>(grace, 1)));
      std::string why;
      bool errored = false;
      Probe(*spec, s, p, &why, &errored);
    }
  }
  k_->engine().Kill(id, grace > 0 ? SIGTERM : SIGKILL, false).IgnoreError();
  while (absl::Now() < deadline) {
    Refresh(s);
    if (s.current->exited) return;
    absl::SleepFor(absl::Milliseconds(50));
  }
  k_->engine().Kill(id, SIGKILL, true).IgnoreError();
  for (int i = 0; i < 100; ++i) {
    Refresh(s);
    if (s.current->exited) return;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

bool PodWorker::Probe(const Container& c, CState& s, const api::v1::Probe& p, std::string* why, bool* errored) {
  int timeout_ms = (p.timeout_seconds() > 0 ? p.timeout_seconds() : 1) * 1000;
  if (p.has_exec()) {
    if (!s.current) return false;
    std::vector<std::string> cmd(p.exec().command().begin(), p.exec().command().end());
    auto r = k_->engine().ExecSync(s.current->id, cmd, {}, timeout_ms);
    return r.ok() && !r->timed_out && r->exit_code == 0;
  }
  std::string host = pod_ip_;
  if (p.has_tcp_socket()) {
    int port = ResolvePort(c, p.tcp_socket().port());
    if (!p.tcp_socket().host().empty()) host = p.tcp_socket().host();
    if (port <= 0) {
      *errored = true;
      *why = absl::StrCat("port ", p.tcp_socket().port(), " not found");
      return false;
    }
    int fd = ConnectTimeout(host, port, timeout_ms, why);
    if (fd < 0) return false;
    close(fd);
    return true;
  }
  if (p.has_http_get()) {
    const auto& h = p.http_get();
    int port = ResolvePort(c, h.port());
    if (!h.host().empty()) host = h.host();
    if (port <= 0) {
      *errored = true;
      *why = absl::StrCat("port ", h.port(), " not found");
      return false;
    }
    std::string url = absl::StrCat(absl::AsciiStrToLower(h.scheme().empty() ? "HTTP" : h.scheme()), "://", host, ":",
                                   port, h.path().empty() ? "/" : h.path());
    int fd = ConnectTimeout(host, port, timeout_ms, why);
    if (fd < 0) {
      *why = absl::StrCat("Get \"", url, "\": ", *why);
      return false;
    }
    std::string req = absl::StrCat("GET ", h.path().empty() ? "/" : h.path(), " HTTP/1.1\r\nHost: ", host, ":", port,
                                   "\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\nConnection: close\r\n");
    for (const auto& hd : h.http_headers()) req += hd.name() + ": " + hd.value() + "\r\n";
    req += "\r\n";
    bool ok = false;
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      pollfd pf{fd, POLLIN, 0};
      if (poll(&pf, 1, timeout_ms) == 1) {
        char buf[64] = {};
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n >= 12 && strncmp(buf, "HTTP/1.", 7) == 0) {
          int code = atoi(buf + 9);
          ok = code >= 200 && code < 400;
          if (!ok) *why = absl::StrCat("HTTP probe failed with statuscode: ", code);
        }
      }
    }
    close(fd);
    return ok;
  }
  return true;
}

void PodWorker::RunProbes(const Container& c, CState& s) {
  if (!s.current || s.current->exited) return;
  absl::Time now = absl::Now();
  absl::Time started = objects::ParseTime(s.current->started_at);
  auto due = [&](const api::v1::Probe& p, ProbeState& ps) {
    if (now < started + absl::Seconds(p.initial_delay_seconds())) return false;
    if (now < ps.next) return false;
    ps.next = now + absl::Seconds(p.period_seconds() > 0 ? p.period_seconds() : 10);
    return true;
  };
  auto run = [&](const api::v1::Probe& p, ProbeState& ps, const char* kind) {
    std::string why;
    bool errored = false;
    bool ok = Probe(c, s, p, &why, &errored);
    int success_threshold = p.success_threshold() > 0 ? p.success_threshold() : 1;
    int failure_threshold = p.failure_threshold() > 0 ? p.failure_threshold() : 3;
    if (ok) {
      ps.failures = 0;
      if (++ps.successes >= success_threshold) ps.ok = true;
    } else {
      ps.successes = 0;
      ++ps.failures;
      // Kubernetes' words: "<kind> probe failed: <output>" or "<kind> probe errored: <error>".
      k_->RecordEvent(ident_, "Warning", "Unhealthy",
                      why.empty() ? absl::StrCat(kind, " probe failed")
                                  : absl::StrCat(kind, errored ? " probe errored: " : " probe failed: ", why));
      if (ps.failures >= failure_threshold) ps.ok = false;
    }
    return ps.failures >= failure_threshold;
  };
  if (c.has_startup_probe() && !s.started) {
    if (due(c.startup_probe(), s.startup)) {
      bool failed = run(c.startup_probe(), s.startup, "Startup");
      if (s.startup.ok) s.started = true;
      if (failed) {
        k_->RecordEvent(ident_, "Normal", "Killing",
                        absl::StrCat("Container ", c.name(), " failed startup probe, will be restarted"));
        KillContainer(s, pod_.spec().has_termination_grace_period_seconds() ? pod_.spec().termination_grace_period_seconds() : 30, &c);
      }
    }
    return;
  }
  s.started = true;
  if (c.has_liveness_probe() && due(c.liveness_probe(), s.liveness)) {
    if (run(c.liveness_probe(), s.liveness, "Liveness")) {
      k_->RecordEvent(ident_, "Normal", "Killing",
                      absl::StrCat("Container ", c.name(), " failed liveness probe, will be restarted"));
      int64_t grace = pod_.spec().has_termination_grace_period_seconds() ? pod_.spec().termination_grace_period_seconds() : 30;
      if (c.liveness_probe().has_termination_grace_period_seconds()) grace = c.liveness_probe().termination_grace_period_seconds();
      KillContainer(s, grace, &c);
      return;
    }
  }
  if (c.has_readiness_probe()) {
    if (due(c.readiness_probe(), s.readiness)) run(c.readiness_probe(), s.readiness, "Readiness");
  } else {
    s.readiness.ok = true;
  }
}

void PodWorker::Sync() {
  Pod pod;
  bool deleted;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (has_pending_) {
      pod_ = std::move(pending_);
      pending_.Clear();
      has_pending_ = false;
    }
    pod = pod_;
    deleted = deleted_;
  }
  if (deleted || !pod.metadata().deletion_timestamp().empty()) {
    int64_t grace = 30;
    if (pod.spec().has_termination_grace_period_seconds()) grace = pod.spec().termination_grace_period_seconds();
    if (pod.metadata().has_deletion_grace_period_seconds()) grace = pod.metadata().deletion_grace_period_seconds();
    if (deleted) grace = std::min<int64_t>(grace, 2);
    Terminate(grace);
    return;
  }
  std::string evict;
  {
    std::lock_guard<std::mutex> l(mu_);
    evict = evicted_ ? "" : evict_message_;
  }
  if (!evict.empty()) {
    for (auto& [name, s] : containers_) {
      Refresh(s);
      KillContainer(s, 0, nullptr);
    }
    Cleanup();
    k_->RecordEvent(pod, "Warning", "Evicted", evict);
    {
      std::lock_guard<std::mutex> l(mu_);
      evicted_ = true;
      admitted_ = false;  // Admit() now says no: nothing is started again
      rejected_ = true;
      reject_reason_ = "Evicted";
      reject_message_ = evict;
      sandbox_ready_ = false;
    }
    PushStatus();
    return;
  }
  if (!Admit()) {
    PushStatus();
    return;
  }
  if (absl::Status st = EnsureSandbox(); !st.ok()) {
    if (!warned_.count("sandbox")) {
      warned_["sandbox"] = std::string(st.message());
      k_->RecordEvent(ident_, "Warning", "FailedCreatePodSandBox", std::string(st.message()));
    }
    log::Warn("pod sandbox ", ns_name(), ": ", st);
    PushStatus();
    return;
  }
  // Volumes: first time, then configMap/secret contents every 10 s.
  if (absl::Now() - volumes_refreshed_ > absl::Seconds(10)) {
    std::string reason;
    absl::Status st = PrepareVolumes(&volume_mounts_, &reason);
    if (!st.ok()) {
      if (warned_["volume"] != st.message()) {
        warned_["volume"] = std::string(st.message());
        k_->RecordEvent(ident_, "Warning", "FailedMount", std::string(st.message()));
      }
      for (const auto& c : pod.spec().containers()) {
        CState& s = State(c.name(), false);
        if (!s.current) s.waiting_reason = "ContainerCreating", s.waiting_message = std::string(st.message());
      }
      PushStatus();
      return;
    }
    volumes_refreshed_ = absl::Now();
  }
  const std::string policy = pod.spec().restart_policy().empty() ? "Always" : pod.spec().restart_policy();
  auto start_or_backoff = [&](const Container& c, CState& s) {
    absl::Time now = absl::Now();
    if (s.current && s.current->exited) {
      absl::Time started = objects::ParseTime(s.current->started_at);
      absl::Time finished = objects::ParseTime(s.current->finished_at);
      if (started != absl::InfinitePast() && finished - started >= absl::Seconds(kBackoffResetSeconds)) s.backoff_exp = 0;
      int delay = s.backoff_exp == 0 ? 0 : std::min(kMaxBackoffSeconds, 10 << std::min(s.backoff_exp - 1, 5));
      if (finished != absl::InfinitePast() && now < finished + absl::Seconds(delay)) {
        s.waiting_reason = "CrashLoopBackOff";
        s.waiting_message = absl::StrCat("back-off ", delay, "s restarting failed container=", c.name(), " pod=",
                                         pod.metadata().name(), "_", pod.metadata().namespace_(), "(", uid_, ")");
        return;
      }
      if (s.image_mounted) {
        UnmountImageRootfs(k_, absl::StrCat(PodRootDir(), "/bundles/", s.current->id));
        s.image_mounted = false;
      }
      k_->engine().Remove(s.current->id).IgnoreError();
      ++s.backoff_exp;
    }
    absl::Status st = StartContainer(c, s);
    if (!st.ok()) {
      log::Warn("start container ", ns_name(), "/", c.name(), ": ", st);
      bool image = s.waiting_reason == "ErrImagePull" || s.waiting_reason == "ImagePullBackOff";  // own events
      if (!image && !s.waiting_reason.empty() && warned_[c.name()] != s.waiting_message) {
        warned_[c.name()] = s.waiting_message;
        k_->RecordEvent(ident_, "Warning", "Failed", absl::StrCat("Error: ", s.waiting_message));
      }
    }
  };
  // Init containers, strictly in order.
  bool init_done = true;
  for (const auto& c : pod.spec().init_containers()) {
    CState& s = State(c.name(), true);
    Refresh(s);
    if (s.current && s.current->exited && s.current->exit_code == 0 && s.current->error.empty()) continue;
    init_done = false;
    if (s.current && !s.current->exited) break;
    if (s.current && s.current->exited && policy == "Never") break;  // the pod failed
    start_or_backoff(c, s);
    break;
  }
  if (init_done) {
    for (const auto& c : pod.spec().containers()) {
      CState& s = State(c.name(), false);
      Refresh(s);
      if (s.current && !s.current->exited) {
        s.waiting_reason.clear();
        RunProbes(c, s);
        Refresh(s);
        continue;
      }
      if (s.current && s.current->exited && !RestartWanted(*s.current)) continue;
      start_or_backoff(c, s);
    }
  } else {
    for (const auto& c : pod.spec().containers()) {
      CState& s = State(c.name(), false);
      if (!s.current) s.waiting_reason = "PodInitializing", s.waiting_message.clear();
    }
  }
  PushStatus();
}

// Called with mu_ held.
PodFacts PodWorker::Facts() {
  PodFacts f;
  f.restart_policy = pod_.spec().restart_policy().empty() ? "Always" : pod_.spec().restart_policy();
  f.pod_ip = pod_ip_;
  f.host_ip = k_->NodeIp();
  f.start_time = start_time_;
  f.qos_class = QosClassName(ComputeQos(pod_.spec()));
  f.terminating = !pod_.metadata().deletion_timestamp().empty();
  auto view = [&](const Container& c, bool init) {
    CState& s = StateLocked(c.name(), init);
    ContainerView v;
    v.name = c.name();
    v.image = c.image();
    v.current = s.current;
    v.previous = s.previous;
    v.restart_count = std::max(0, s.attempts - 1);
    v.waiting_reason = s.waiting_reason;
    v.waiting_message = s.waiting_message;
    bool running = s.current && !s.current->exited;
    v.started = running && s.started;
    v.ready = running && s.started && (!c.has_readiness_probe() || s.readiness.ok);
    if (init) v.ready = s.current && s.current->exited && s.current->exit_code == 0;
    return v;
  };
  for (const auto& c : pod_.spec().init_containers()) f.init_containers.push_back(view(c, true));
  for (const auto& c : pod_.spec().containers()) f.containers.push_back(view(c, false));
  return f;
}

void PodWorker::PushStatus(bool force) {
  Pod::Status st;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (rejected_) {
      st.set_phase("Failed");
      st.set_reason(reject_reason_);
      st.set_message(reject_message_);
      st.set_host_ip(k_->NodeIp());
      st.set_start_time(start_time_.empty() ? NowRfc3339() : start_time_);
    } else {
      st = ComputePodStatus(Facts(), last_status_);
    }
  }
  std::string key = st.SerializeAsString();
  if (!force && key == last_pushed_) return;
  if (!latency_recorded_ && st.phase() == "Running") {
    bool all_running = true;
    for (const auto& cs : st.container_statuses()) all_running &= cs.state().has_running();
    if (all_running) {
      latency_recorded_ = true;
      k_->ObserveStartLatency(absl::ToDoubleSeconds(absl::Now() - first_seen_));
    }
  }
  Pod copy;
  {
    std::lock_guard<std::mutex> l(mu_);
    copy = pod_;
  }
  copy.mutable_metadata()->clear_resource_version();
  *copy.mutable_status() = st;
  auto r = k_->api().UpdateStatus("pods", copy.metadata().namespace_(), objects::Wrap(copy));
  if (!r.ok()) {
    log::Warn("update status of pod ", ns_name(), ": ", r.status());
    if (absl::IsNotFound(r.status())) MarkDeleted();
    return;
  }
  std::lock_guard<std::mutex> l(mu_);
  last_pushed_ = key;
  last_status_ = st;
}

void PodWorker::Terminate(int64_t grace) {
  Pod pod;
  bool deleted;
  {
    std::lock_guard<std::mutex> l(mu_);
    pod = pod_;
    deleted = deleted_;
  }
  log::Info("killing pod ", ns_name(), " grace=", grace);
  // Stop every running container at once, each with the full grace period.
  std::vector<std::thread> killers;
  for (const auto& c : pod.spec().containers()) {
    CState& s = State(c.name(), false);
    Refresh(s);
    if (s.current && !s.current->exited) {
      k_->RecordEvent(ident_, "Normal", "Killing", absl::StrCat("Stopping container ", c.name()));
      killers.emplace_back([this, &s, &c, grace] { KillContainer(s, grace, &c); });
    }
  }
  for (const auto& c : pod.spec().init_containers()) {
    CState& s = State(c.name(), true);
    Refresh(s);
    if (s.current && !s.current->exited) killers.emplace_back([this, &s, grace] { KillContainer(s, grace, nullptr); });
  }
  for (auto& t : killers) t.join();
  if (!deleted) PushStatus();
  Cleanup();
  if (!deleted) {
    client::DeleteOptions opts;
    opts.grace_period_seconds = 0;
    opts.precondition_uid = uid_;
    auto r = k_->api().Delete("pods", pod.metadata().namespace_(), pod.metadata().name(), opts);
    // A failed uid precondition means our object is already gone (and the
    // name reused, e.g. by a recreated mirror pod): nothing left to delete.
    if (!r.ok() && !absl::IsNotFound(r.status()) && !absl::IsAborted(r.status()) &&
        !absl::IsFailedPrecondition(r.status())) {
      log::Warn("delete pod ", ns_name(), ": ", r.status());
      return;  // retried on the next sync
    }
  }
  finished_ = true;
}

void PodWorker::Cleanup() {
  for (auto& [name, s] : containers_) {
    if (!s.current) continue;
    for (int a = std::max(0, s.attempts - 2); a < s.attempts; ++a) {
      std::string id = ContainerId(name, a);
      k_->engine().Remove(id).IgnoreError();
      UnmountImageRootfs(k_, absl::StrCat(PodRootDir(), "/bundles/", id));
    }
  }
  CleanupVolumes(PodRootDir());
  if (k_->network() != nullptr) {
    absl::Status st = k_->network()->Teardown(uid_);
    if (!st.ok()) log::Warn("tear down network of pod ", ns_name(), ": ", st);
  }
  if (absl::Status st = CgroupLayout(k_->config(), k_->cgroup2_mount()).RemovePod(ComputeQos(pod_.spec()), uid_);
      !st.ok())
    log::Warn("remove the cgroup of pod ", ns_name(), ": ", st);
  std::error_code ec;
  fs::remove_all(PodRootDir(), ec);
  fs::remove_all(PodRunDir(), ec);
  fs::remove_all(LogDir(), ec);
}

absl::StatusOr<ContainerLocation> PodWorker::Locate(const std::string& container) {
  std::lock_guard<std::mutex> l(mu_);
  std::string name = container;
  if (name.empty()) {
    if (pod_.spec().containers().empty()) return absl::NotFoundError("pod has no containers");
    name = pod_.spec().containers(0).name();
  }
  auto it = containers_.find(name);
  if (it == containers_.end() || !it->second.current) {
    return absl::NotFoundError(absl::StrCat("container \"", name, "\" in pod \"", pod_.metadata().name(),
                                            "\" is waiting to start"));
  }
  const CState& s = it->second;
  ContainerLocation loc;
  loc.container_id = s.current->id;
  loc.running = !s.current->exited;
  loc.log_path = absl::StrCat(LogDir(), "/", name, "/", s.current->attempt, ".log");
  if (s.current->attempt > 0) loc.previous_log_path = absl::StrCat(LogDir(), "/", name, "/", s.current->attempt - 1, ".log");
  loc.netns_path = netns_path_;
  loc.pod_ip = pod_ip_;
  return loc;
}

void PodWorker::Running(std::vector<RunningContainer>* out) {
  std::lock_guard<std::mutex> l(mu_);
  CgroupLayout layout(k_->config(), k_->cgroup2_mount());
  QosClass qos = ComputeQos(pod_.spec());
  for (auto& [name, s] : containers_) {
    if (!s.current || s.current->exited || s.init) continue;
    RunningContainer r;
    r.ns = pod_.metadata().namespace_();
    r.pod = pod_.metadata().name();
    r.container = name;
    r.id = s.current->id;
    r.cgroup_dir = layout.ContainerDir(qos, uid_, r.id);
    out->push_back(std::move(r));
  }
}

bool PodWorker::ForEviction(EvictionFacts* f) {
  std::lock_guard<std::mutex> l(mu_);
  if (!admitted_ || rejected_ || deleted_ || finished_ || !evict_message_.empty()) return false;
  if (!pod_.metadata().deletion_timestamp().empty()) return false;
  const std::string& phase = last_status_.phase();
  if (phase == "Succeeded" || phase == "Failed") return false;
  f->qos = ComputeQos(pod_.spec());
  f->start_time = start_time_;
  return true;
}

void PodWorker::Evict(const std::string& message) {
  std::lock_guard<std::mutex> l(mu_);
  evict_message_ = message;
  dirty_ = true;
  cv_.notify_all();
}

void PodWorker::Count(int* pods, int* containers) {
  std::lock_guard<std::mutex> l(mu_);
  int n = 0;
  for (auto& [name, s] : containers_) n += s.current && !s.current->exited;
  if (n > 0) ++*pods;
  *containers += n;
}

}  // namespace skiff::kubelet
