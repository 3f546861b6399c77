#include "skiff/kubelet/kubelet.h"

#include <ifaddrs.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <net/if.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "pod_worker.h"
#include "skiff/common/log.h"
#include "skiff/common/status.h"
#include "skiff/controllers/objects.h"
#include "skiff/kubelet/resources.h"
#include "skiff/podnet/podnet.h"
#include "skiff/runtime/cgroup.h"
#ifdef SKIFF_KUBELET_HAVE_IMAGE
#include "skiff/image/store.h"
#endif

namespace skiff::kubelet {
namespace fs = std::filesystem;
using api::v1::Node;
using api::v1::Pod;

namespace {

constexpr char kLeaseNamespace[] = "kube-node-lease";
constexpr char kKubeletVersion[] = "v1.30.0-skiff";

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string OsImage() {
  std::ifstream in("/etc/os-release");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      std::string v = line.substr(12);
      if (v.size() >= 2 && v.front() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
  }
  return "Linux";
}

int64_t MemTotalBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemTotal:") return kb * 1024;
  }
  return 0;
}

std::string FirstIpv4() {
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return "";
  std::string out;
  for (ifaddrs* i = ifa; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if (i->ifa_flags & IFF_LOOPBACK) continue;
    std::string name = i->ifa_name;
    if (name.rfind("sk", 0) == 0 && name.size() == 10) continue;  // our pod veths
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
    out = buf;
    break;
  }
  freeifaddrs(ifa);
  return out;
}

}  // namespace

Kubelet::Kubelet(Config config, std::shared_ptr<client::Client> client)
    : config_(std::move(config)), client_(std::move(client)) {
  if (config_.monitor_path.empty()) {
    std::error_code ec;
    auto self = fs::read_symlink("/proc/self/exe", ec);
    config_.monitor_path = (self.parent_path() / "skiff-monitor").string();
  }
  engine_ = std::make_unique<ContainerEngine>(config_.run_dir + "/runtime", config_.monitor_path,
                                              config_.cgroup_driver == "systemd");
}

Kubelet::~Kubelet() {
  Stop();
#ifdef SKIFF_KUBELET_HAVE_IMAGE
  delete static_cast<image::Store*>(image_store_);
#endif
}

bool Kubelet::Alive() const {
  if (stopping_) return false;
  // A round of the lease loop makes at most a few API calls of 60 s deadline each.
  int64_t tick = lease_loop_tick_.load();
  return tick == 0 || absl::ToUnixSeconds(absl::Now()) - tick < 200;
}

bool Kubelet::Healthy() const {
  return !stopping_ && absl::ToUnixSeconds(absl::Now()) - last_lease_ok_.load() < 4 * config_.lease_seconds;
}

std::string Kubelet::allocatable(const std::string& key) {
  auto it = allocatable_.find(key);
  return it == allocatable_.end() ? "" : it->second;
}

std::string Kubelet::capacity(const std::string& key) {
  auto it = capacity_.find(key);
  return it == capacity_.end() ? "" : it->second;
}

void Kubelet::UsedExcept(const std::string& uid, int64_t* cpu, int64_t* mem, int* pods) {
  *cpu = *mem = 0;
  *pods = 0;
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [u, w] : workers_) {
    if (u == uid) continue;
    int64_t c, m;
    int p;
    w->Requests(&c, &m, &p);
    *cpu += c;
    *mem += m;
    *pods += p;
  }
}

Node Kubelet::BuildNodeStatus(const Node& base) {
  Node n = base;
  n.set_api_version("v1");
  n.set_kind("Node");
  auto* md = n.mutable_metadata();
  md->set_name(config_.node_name);
  (*md->mutable_labels())["kubernetes.io/hostname"] = config_.node_name;
  (*md->mutable_labels())["kubernetes.io/os"] = "linux";
  (*md->mutable_labels())["kubernetes.io/arch"] = "amd64";
  auto* st = n.mutable_status();
  int64_t cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int64_t mem = MemTotalBytes();
  struct statvfs vfs{};
  int64_t disk = 0;
  std::error_code ec;
  fs::create_directories(config_.root_dir, ec);
  if (statvfs(config_.root_dir.c_str(), &vfs) == 0) disk = static_cast<int64_t>(vfs.f_blocks) * vfs.f_frsize;
  auto& cap = *st->mutable_capacity();
  cap["cpu"] = std::to_string(cpus);
  cap["memory"] = absl::StrCat(mem / 1024, "Ki");
  cap["pods"] = std::to_string(config_.max_pods);
  cap["ephemeral-storage"] = absl::StrCat(disk / 1024, "Ki");
  auto& al = *st->mutable_allocatable();
  al["cpu"] = std::to_string(cpus);
  // Allocatable keeps the hard eviction threshold back (memory.available<100Mi, nodefs.available<10%).
  al["memory"] = absl::StrCat(std::max<int64_t>(0, mem - 100 * 1024 * 1024) / 1024, "Ki");
  al["pods"] = std::to_string(config_.max_pods);
  al["ephemeral-storage"] = std::to_string(disk - disk / 10);
  allocatable_.clear();
  for (const auto& [k, v] : al) allocatable_[k] = v;
  capacity_.clear();
  for (const auto& [k, v] : cap) capacity_[k] = v;
  st->clear_addresses();
  auto* a = st->add_addresses();
  a->set_type("InternalIP");
  a->set_address(node_ip_);
  a = st->add_addresses();
  a->set_type("Hostname");
  a->set_address(config_.node_name);
  struct utsname u{};
  uname(&u);
  auto* ni = st->mutable_node_info();
  ni->set_machine_id(ReadFirstLine("/etc/machine-id"));
  ni->set_boot_id(ReadFirstLine("/proc/sys/kernel/random/boot_id"));
  ni->set_system_uuid(ni->machine_id());
  ni->set_kernel_version(u.release);
  ni->set_os_image(OsImage());
  ni->set_container_runtime_version("skiff://0.1.0");
  ni->set_kubelet_version(kKubeletVersion);
  ni->set_kube_proxy_version(kKubeletVersion);
  ni->set_operating_system("linux");
  ni->set_architecture("amd64");
  int port = 10250;
  if (auto colon = config_.listen.rfind(':'); colon != std::string::npos) port = atoi(config_.listen.c_str() + colon + 1);
  st->mutable_daemon_endpoints()->mutable_kubelet_endpoint()->set_port(port);
  std::string now = objects::Now();
  auto cond = [&](const char* type, const char* status, const char* reason, const char* msg) {
    objects::SetCondition(st->mutable_conditions(), type, status, reason, msg);
    for (auto& c : *st->mutable_conditions()) {
      if (c.type() == type) c.set_last_heartbeat_time(now);
    }
  };
  if (memory_pressure_) {
    cond("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available");
  } else {
    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available");
  }
  if (disk_pressure_) {
    cond("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure");
  } else {
    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure");
  }
  cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available");
  cond("Ready", "True", "KubeletReady", "kubelet is posting ready status");
  return n;
}

absl::Status Kubelet::RegisterNode() {
  auto existing = client_->Get("nodes", "", config_.node_name);
  if (existing.ok()) {
    Node n = BuildNodeStatus(existing->node());
    if (n.spec().pod_cidr().empty() && !config_.pod_cidr.empty()) {
      Node spec_update = existing->node();
      spec_update.mutable_spec()->set_pod_cidr(config_.pod_cidr);
      spec_update.mutable_spec()->clear_pod_cidrs();
      spec_update.mutable_spec()->add_pod_cidrs(config_.pod_cidr);
      auto r = client_->Update("nodes", "", objects::Wrap(spec_update));
      if (r.ok()) *n.mutable_spec() = r->node().spec();
    }
    n.mutable_metadata()->clear_resource_version();
    auto r = client_->UpdateStatus("nodes", "", objects::Wrap(n));
    if (!r.ok()) return Annotate(r.status(), "update node status");
    return absl::OkStatus();
  }
  if (!absl::IsNotFound(existing.status())) return Annotate(existing.status(), "get node");
  Node n = BuildNodeStatus(Node());
  if (!config_.pod_cidr.empty()) {
    n.mutable_spec()->set_pod_cidr(config_.pod_cidr);
    n.mutable_spec()->add_pod_cidrs(config_.pod_cidr);
  }
  auto created = client_->Create("nodes", "", objects::Wrap(n));
  if (!created.ok() && !absl::IsAlreadyExists(created.status())) return Annotate(created.status(), "register node");
  if (created.ok()) {
    // Status is a subresource: make sure it is stored even if Create dropped it.
    Node s = created->node();
    *s.mutable_status() = n.status();
    s.mutable_metadata()->clear_resource_version();
    client_->UpdateStatus("nodes", "", objects::Wrap(s)).IgnoreError();
  }
  log::Info("registered node ", log::Field("node", config_.node_name), " ", log::Field("ip", node_ip_));
  return absl::OkStatus();
}

absl::Status Kubelet::EnsurePodCidr() {
  if (!config_.pod_cidr.empty()) {
    pod_cidr_ = config_.pod_cidr;
    return absl::OkStatus();
  }
  for (int i = 0; i < 600 && !stopping_; ++i) {
    auto n = client_->Get("nodes", "", config_.node_name);
    if (n.ok() && !n->node().spec().pod_cidr().empty()) {
      pod_cidr_ = n->node().spec().pod_cidr();
      return absl::OkStatus();
    }
    if (i % 20 == 0) log::Info("waiting for Node.spec.podCIDR of ", config_.node_name);
    absl::SleepFor(absl::Milliseconds(500));
  }
  return absl::DeadlineExceededError("node has no podCIDR (set --pod-cidr or let the controller assign one)");
}

absl::Status Kubelet::Start() {
  if (config_.node_name.empty()) {
    char h[256] = {};
    gethostname(h, sizeof(h) - 1);
    config_.node_name = h;
  }
  node_ip_ = config_.node_ip.empty() ? FirstIpv4() : config_.node_ip;
  std::error_code ec;
  for (const auto& d : {config_.root_dir, config_.run_dir, config_.run_dir + "/pods", config_.log_dir}) {
    fs::create_directories(d, ec);
    if (ec) return absl::InternalError("create " + d + ": " + ec.message());
  }
  auto cg = runtime::FindCgroup2Mount();
  if (cg.ok()) cgroup2_ = *cg;
  else log::Warn("no cgroup2 mount: ", cg.status());
#ifdef SKIFF_KUBELET_HAVE_IMAGE
  {
    std::string root = config_.image_root.empty() ? config_.root_dir + "/images" : config_.image_root;
    auto store = image::Store::Open(root, {});
    if (store.ok()) image_store_ = store->release();
    else log::Warn("image store unavailable: ", store.status());
  }
#endif
  // Like the kubelet: keep trying to register while the API server is not
  // there yet (it restarts together with us on a package upgrade).
  for (absl::Duration wait = absl::Milliseconds(200);; wait = std::min(wait * 2, absl::Seconds(5))) {
    absl::Status st = RegisterNode();
    if (st.ok()) break;
    if (stopping_ || absl::IsInvalidArgument(st) || absl::IsPermissionDenied(st) || absl::IsUnauthenticated(st))
      return st;
    log::Warn("unable to register node with the API server, retrying: ", st);
    absl::SleepFor(wait);
  }
  last_lease_ok_ = absl::ToUnixSeconds(absl::Now());
  if (config_.enable_pod_network) {
    RETURN_IF_ERROR(EnsurePodCidr());
    podnet::PodNetworkOptions o;
    o.run_dir = config_.run_dir;
    o.state_dir = config_.root_dir;
    o.pod_cidr = pod_cidr_;
    o.service_cidr = config_.service_cidr;
    o.cluster_cidr = config_.cluster_cidr;
    ASSIGN_OR_RETURN(network_, podnet::PodNetwork::Open(o));
  }
  // First list: adopt what we have, clean up what is no longer ours.
  client::ListOptions lo;
  lo.field_selector = "spec.nodeName=" + config_.node_name;
  auto list = client_->List("pods", "", lo);
  for (absl::Duration wait = absl::Milliseconds(200); !list.ok() && absl::IsUnavailable(list.status()) && !stopping_;
       wait = std::min(wait * 2, absl::Seconds(5))) {
    log::Warn("list pods, retrying: ", list.status());
    absl::SleepFor(wait);
    list = client_->List("pods", "", lo);
  }
  if (!list.ok()) return list.status();
  std::vector<Pod> pods;
  for (const auto& o : list->items()) pods.push_back(o.pod());
  ReconcileList(pods);
  std::string rv = list->resource_version();
  threads_.emplace_back([this] { LeaseLoop(); });
  if (!config_.manifest_dir.empty()) threads_.emplace_back([this] { StaticPodLoop(); });
  if (config_.eviction_interval_seconds > 0) threads_.emplace_back([this] { EvictionLoop(); });
  if (network_) threads_.emplace_back([this] { NodeLoop(); });
  threads_.emplace_back([this, rv, lo] {
    // Watch from the last revision seen; whenever there is none (the first
    // watch failed, or one ended), List and reconcile first: the deletions
    // made while we could not watch (e.g. our pods evicted while this node was
    // cut off) are only learnt from a List.
    std::string from = rv;
    while (!stopping_) {
      if (from.empty()) {
        auto l2 = client_->List("pods", "", lo);
        if (!l2.ok()) {
          log::Warn("list pods: ", l2.status());
          std::unique_lock<std::mutex> l(mu_);
          cv_.wait_for(l, std::chrono::seconds(1), [&] { return stopping_.load(); });
          continue;
        }
        std::vector<Pod> ps;
        for (const auto& o : l2->items()) ps.push_back(o.pod());
        ReconcileList(ps);
        from = l2->resource_version();
      }
      client::ListOptions wo;
      wo.field_selector = "spec.nodeName=" + config_.node_name;
      wo.resource_version = from;
      auto w = client_->Watch("pods", "", wo);
      if (!w.ok()) {
        log::Warn("watch pods: ", w.status());
        from.clear();
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, std::chrono::seconds(1), [&] { return stopping_.load(); });
        continue;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        pod_watch_ = std::move(*w);
      }
      if (stopping_) break;
      client::WatchStream* ws = pod_watch_.get();
      while (!stopping_) {
        auto ev = ws->Next();
        if (!ev.ok()) {
          if (!stopping_) log::Info("pod watch ended: ", ev.status());
          break;
        }
        if (ev->type() == "BOOKMARK") {
          from = objects::Meta(ev->object()).resource_version();
          continue;
        }
        if (ev->type() == "ERROR") break;
        from = objects::Meta(ev->object()).resource_version();
        HandlePod(ev->type(), ev->object().pod());
        ReapWorkers();
      }
      // Relist before watching again, to learn about deletions we may have missed.
      from.clear();
    }
  });
  threads_.emplace_back([this] {
    while (!stopping_) {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::seconds(1), [&] { return stopping_.load(); });
      l.unlock();
      ReapWorkers();
    }
  });
  return absl::OkStatus();
}

void Kubelet::Stop() {
  if (stopping_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (pod_watch_) pod_watch_->Cancel();
    if (node_watch_) node_watch_->Cancel();
    cv_.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  std::map<std::string, std::unique_ptr<PodWorker>> workers;
  {
    std::lock_guard<std::mutex> l(mu_);
    workers.swap(workers_);
  }
  for (auto& [u, w] : workers) w->Stop();
}

void Kubelet::HandlePod(const std::string& type, const Pod& pod) {
  const std::string& uid = pod.metadata().uid();
  std::lock_guard<std::mutex> l(mu_);
  auto it = workers_.find(uid);
  if (type == "DELETED") {
    if (it != workers_.end()) it->second->MarkDeleted();
    return;
  }
  if (it != workers_.end()) {
    it->second->Update(pod);
    return;
  }
  if (pod.spec().node_name() != config_.node_name) return;
  // A pod that already finished and whose leftovers are gone needs no worker.
  workers_[uid] = std::make_unique<PodWorker>(this, pod);
}

void Kubelet::ReconcileList(const std::vector<Pod>& pods) {
  std::set<std::string> live;
  for (const auto& p : pods) {
    live.insert(p.metadata().uid());
    HandlePod("ADDED", p);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [u, w] : workers_) {
      if (!live.count(u)) w->MarkDeleted();
    }
  }
  CleanupOrphans(live);
}

void Kubelet::CleanupOrphans(const std::set<std::string>& live) {
  // Pods that ran here but are gone from the API (deleted while we were down):
  // give each a worker marked deleted, which kills and cleans up everything.
  std::string dir = config_.run_dir + "/pods";
  std::vector<std::string> orphans;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == ".." || live.count(n)) continue;
      orphans.push_back(n);
    }
    closedir(d);
  }
  if (network_) {
    for (const auto& u : network_->KnownPods()) {
      if (!live.count(u) && std::find(orphans.begin(), orphans.end(), u) == orphans.end()) orphans.push_back(u);
    }
  }
  for (const auto& uid : orphans) {
    std::lock_guard<std::mutex> l(mu_);
    if (workers_.count(uid)) continue;
    Pod ghost;
    ghost.mutable_metadata()->set_uid(uid);
    std::ifstream meta(dir + "/" + uid + "/pod");
    std::string ns, name;
    std::getline(meta, ns);
    std::getline(meta, name);
    ghost.mutable_metadata()->set_namespace_(ns);
    ghost.mutable_metadata()->set_name(name);
    // Container names come from the run dir, so the worker can find their records.
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir + "/" + uid, ec)) {
      if (e.is_directory()) ghost.mutable_spec()->add_containers()->set_name(e.path().filename());
    }
    auto w = std::make_unique<PodWorker>(this, ghost);
    w->MarkDeleted();
    workers_[uid] = std::move(w);
    log::Info("cleaning up orphaned pod ", log::Field("uid", uid));
  }
}

void Kubelet::ReapWorkers() {
  std::vector<std::unique_ptr<PodWorker>> done;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second->finished()) {
        done.push_back(std::move(it->second));
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : done) w->Stop();
}

void Kubelet::LeaseLoop() {
  api::v1::Lease lease;
  absl::Time last_status = absl::Now();
  while (!stopping_) {
    lease_loop_tick_ = absl::ToUnixSeconds(absl::Now());
    std::string now = objects::NowMicro();
    auto got = client_->Get("leases", kLeaseNamespace, config_.node_name);
    absl::Status st;
    if (got.ok()) {
      lease = got->lease();
      lease.mutable_spec()->set_holder_identity(config_.node_name);
      lease.mutable_spec()->set_renew_time(now);
      lease.mutable_spec()->set_lease_duration_seconds(config_.lease_duration_seconds);
      st = client_->Update("leases", kLeaseNamespace, objects::Wrap(lease)).status();
    } else if (absl::IsNotFound(got.status())) {
      lease = api::v1::Lease();
      lease.set_api_version("coordination.k8s.io/v1");
      lease.set_kind("Lease");
      lease.mutable_metadata()->set_name(config_.node_name);
      lease.mutable_metadata()->set_namespace_(kLeaseNamespace);
      lease.mutable_spec()->set_holder_identity(config_.node_name);
      lease.mutable_spec()->set_lease_duration_seconds(config_.lease_duration_seconds);
      lease.mutable_spec()->set_acquire_time(now);
      lease.mutable_spec()->set_renew_time(now);
      st = client_->Create("leases", kLeaseNamespace, objects::Wrap(lease)).status();
    } else {
      st = got.status();
    }
    if (st.ok()) last_lease_ok_ = absl::ToUnixSeconds(absl::Now());
    else log::Warn("renew lease: ", st);
    // Like the kubelet's node status loop: besides the periodic report, post
    // at once when the API's copy says other than Ready=True while we run
    // (the node lifecycle controller set Unknown while we were cut off).
    bool api_not_ready = false;
    if (st.ok()) {
      auto node = client_->Get("nodes", "", config_.node_name);
      if (node.ok()) {
        for (const auto& c : node->node().status().conditions()) {
          if (c.type() == "Ready" && c.status() != "True") api_not_ready = true;
        }
      }
    }
    if (node_status_dirty_.exchange(false) || api_not_ready ||
        absl::Now() - last_status >= absl::Seconds(config_.node_status_seconds)) {
      RegisterNode().IgnoreError();
      last_status = absl::Now();
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(config_.lease_seconds),
                 [&] { return stopping_.load() || node_status_dirty_.load(); });
  }
}

void Kubelet::NodeLoop() {
  // Routes to every other node's podCIDR via its InternalIP.
  while (!stopping_) {
    auto list = client_->List("nodes", "");
    if (!list.ok()) {
      absl::SleepFor(absl::Seconds(1));
      continue;
    }
    std::map<std::string, std::map<std::string, std::string>> by_node;
    auto sync = [&] {
      std::map<std::string, std::string> routes;
      for (const auto& [name, r] : by_node) routes.insert(r.begin(), r.end());
      absl::Status st = network_->SyncNodeRoutes(routes);
      if (!st.ok()) log::Warn("sync node routes: ", st);
    };
    auto record = [&](const Node& n) {
      std::map<std::string, std::string> r;
      if (n.metadata().name() != config_.node_name && !n.spec().pod_cidr().empty()) {
        for (const auto& a : n.status().addresses()) {
          if (a.type() == "InternalIP" && !a.address().empty()) {
            r[n.spec().pod_cidr()] = a.address();
            break;
          }
        }
      }
      by_node[n.metadata().name()] = r;
    };
    for (const auto& o : list->items()) record(o.node());
    sync();
    client::ListOptions wo;
    wo.resource_version = list->resource_version();
    auto w = client_->Watch("nodes", "", wo);
    if (!w.ok()) {
      absl::SleepFor(absl::Seconds(1));
      continue;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      node_watch_ = std::move(*w);
    }
    if (stopping_) break;
    while (!stopping_) {
      auto ev = node_watch_->Next();
      if (!ev.ok() || ev->type() == "ERROR") break;
      if (ev->type() == "BOOKMARK") continue;
      if (ev->type() == "DELETED") by_node.erase(ev->object().node().metadata().name());
      else record(ev->object().node());
      sync();
    }
  }
}

void Kubelet::RecordEvent(const Pod& pod, const std::string& type, const std::string& reason,
                          const std::string& message) {
  if (pod.metadata().name().empty()) return;
  api::v1::Event e;
  e.set_api_version("v1");
  e.set_kind("Event");
  char suffix[32];
  snprintf(suffix, sizeof(suffix), "%llx", static_cast<unsigned long long>(absl::ToUnixNanos(absl::Now())));
  e.mutable_metadata()->set_name(pod.metadata().name() + "." + suffix);
  e.mutable_metadata()->set_namespace_(pod.metadata().namespace_());
  auto* io = e.mutable_involved_object();
  io->set_kind("Pod");
  io->set_api_version("v1");
  io->set_name(pod.metadata().name());
  io->set_namespace_(pod.metadata().namespace_());
  io->set_uid(pod.metadata().uid());
  e.set_reason(reason);
  e.set_message(message);
  e.set_type(type);
  e.mutable_source()->set_component("kubelet");
  e.mutable_source()->set_host(config_.node_name);
  e.set_first_timestamp(objects::Now());
  e.set_last_timestamp(e.first_timestamp());
  e.set_count(1);
  e.set_reporting_component("kubelet");
  e.set_reporting_instance(config_.node_name);
  auto r = client_->Create("events", pod.metadata().namespace_(), objects::Wrap(e));
  if (!r.ok()) log::Debug("record event: ", r.status());
  log::Info("event ", log::Field("pod", pod.metadata().namespace_() + "/" + pod.metadata().name()), " ",
            log::Field("type", type), " ", log::Field("reason", reason), " ", log::Field("message", message));
}

void Kubelet::ObserveStartLatency(double seconds) {
  std::lock_guard<std::mutex> l(metrics_mu_);
  start_latency_.push_back(seconds);
}

KubeletMetrics Kubelet::Metrics() {
  KubeletMetrics m;
  {
    std::lock_guard<std::mutex> l(metrics_mu_);
    m.start_latency_seconds = start_latency_;
  }
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [u, w] : workers_) w->Count(&m.running_pods, &m.running_containers);
  return m;
}

std::vector<RunningContainer> Kubelet::RunningContainers() {
  std::vector<RunningContainer> out;
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [u, w] : workers_) w->Running(&out);
  return out;
}

absl::StatusOr<ContainerLocation> Kubelet::Locate(const std::string& ns, const std::string& pod,
                                                  const std::string& container) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [u, w] : workers_) {
    if (w->ns_name() == ns + "/" + pod) return w->Locate(container);
  }
  return absl::NotFoundError(absl::StrCat("pods \"", pod, "\" not found on node ", config_.node_name));
}

}  // namespace skiff::kubelet
