#include "node_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "skiff/common/status.h"

namespace skiff::labtest {
namespace fs = std::filesystem;

std::string BuildDir() {
  const char* b = getenv("SKIFF_BUILD_DIR");
  return b ? b : "build";
}

std::string Cgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" - cgroup2 ") == std::string::npos) continue;
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    return mount_point;
  }
  return "";
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}

namespace {

bool Under(const std::string& path, const std::string& dir) {
  return path == dir || path.rfind(dir + "/", 0) == 0;
}

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

std::vector<std::string> FindNodeLeaks(const NodeScope& scope) {
  std::vector<std::string> leaks;
  // A directory that cannot be read (other than missing) is reported too, so
  // that a failed look never passes for a clean node.
  auto entries = [&](const std::string& dir, const std::string& what) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec))
      leaks.push_back(what + " " + it->path().string());
    if (ec && ec != std::errc::no_such_file_or_directory) leaks.push_back("cannot read " + dir + ": " + ec.message());
  };
  entries(scope.run_dir + "/netns", "netns");
  entries(scope.run_dir + "/pods", "pod dir");
  entries(scope.root_dir + "/pods", "pod dir");

  std::error_code ec;
  if (!scope.cgroup_root.empty() && fs::exists(scope.cgroup_root, ec)) {
    std::vector<fs::path> cgroups = {scope.cgroup_root};
    auto it = fs::recursive_directory_iterator(scope.cgroup_root, ec);
    for (; !ec && it != fs::end(it); it.increment(ec)) {
      std::error_code gone;
      if (!it->is_directory(gone)) continue;
      cgroups.push_back(it->path());
      if (it->path().filename().string().rfind("pod", 0) == 0) leaks.push_back("pod cgroup " + it->path().string());
    }
    // A cgroup removed while we walked: the node is still busy cleaning up.
    if (ec) leaks.push_back("cgroup tree of " + scope.cgroup_root + " changed while read: " + ec.message());
    for (const auto& cg : cgroups) {
      std::ifstream procs(cg / "cgroup.procs");
      pid_t pid;
      while (procs >> pid) leaks.push_back("process " + std::to_string(pid) + " in cgroup " + cg.string());
    }
  }

  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    mount_point = Unescape(mount_point);
    if (Under(mount_point, scope.run_dir) || Under(mount_point, scope.root_dir))
      leaks.push_back("mount " + mount_point);
  }

  for (auto it = fs::directory_iterator("/proc", ec); !ec && it != fs::end(it); it.increment(ec)) {
    std::string name = it->path().filename();
    if (name.empty() || !isdigit(name[0])) continue;
    pid_t pid = std::stoi(name);
    if (pid == getpid()) continue;
    bool excepted = false;
    for (pid_t p : scope.except) excepted |= p == pid;
    if (excepted) continue;
    std::string cmdline = Slurp("/proc/" + name + "/cmdline");
    if (cmdline.find(scope.run_dir) == std::string::npos) continue;
    for (auto& c : cmdline)
      if (c == '\0') c = ' ';
    leaks.push_back("process " + name + ": " + cmdline);
  }
  return leaks;
}

absl::StatusOr<std::unique_ptr<NodeCluster>> NodeCluster::Start(int hosts,
                                                                const std::vector<std::string>& control_plane_flags) {
  std::unique_ptr<NodeCluster> c(new NodeCluster());
  ASSIGN_OR_RETURN(c->lab_, skiff::lab::Lab::Create(hosts));
  const auto& h1 = c->lab_->host(1);
  // A busybox rootfs, image "local/busybox" for every kubelet (--rootfs-dir).
  c->images_ = h1.dir + "/images";
  std::string bb = c->images_ + "/busybox";
  fs::create_directories(bb + "/bin");
  for (const char* d : {"proc", "dev", "sys", "tmp", "etc"}) fs::create_directories(bb + "/" + d);
  fs::copy_file("/bin/busybox", bb + "/bin/busybox");
  for (const char* a : {"sh", "sleep", "echo", "cat", "httpd", "mkdir", "hostname", "wget", "true", "false"})
    fs::create_symlink("busybox", bb + "/bin/" + a);

  c->data_dir_ = h1.dir + "/cp";
  std::vector<std::string> argv = {BuildDir() + "/bin/skiff-control-plane",
                                   "--data-dir",
                                   c->data_dir_,
                                   "--listen",
                                   h1.address + ":6443",
                                   "--advertise-address",
                                   h1.address,
                                   "--health-listen",
                                   "127.0.0.1:6444"};
  argv.insert(argv.end(), control_plane_flags.begin(), control_plane_flags.end());
  ASSIGN_OR_RETURN(c->control_plane_, c->lab_->Start(1, argv, h1.dir + "/cp.log"));
  NodeCluster* raw = c.get();
  if (!WaitFor([&] { return fs::exists(raw->data_dir_ + "/admin.conf") && raw->Ctl({"get", "namespaces"}).exit_code == 0; },
               std::chrono::seconds(30)))
    return absl::DeadlineExceededError("control plane not serving:\n" + c->Logs(0));
  return c;
}

NodeCluster::~NodeCluster() {
  // Kubelets first (their pods stay; the lab's removal kills and unmounts them).
  for (auto& [host, k] : kubelets_) k.Signal(SIGTERM);
  for (auto& [host, k] : kubelets_) k.Wait();
}

absl::Status NodeCluster::StartKubelet(int host, const std::vector<std::string>& flags) {
  const auto& h = lab_->host(host);
  std::string cgroup = h.cgroup.substr(Cgroup2Mount().size());
  std::vector<std::string> argv = {BuildDir() + "/bin/skiff-kubelet",
                                   "--kubeconfig", data_dir_ + "/admin.conf",
                                   "--node-name", h.name,
                                   "--root-dir", h.dir + "/root",
                                   "--run-dir", h.dir + "/run",
                                   "--log-dir", h.dir + "/log",
                                   "--cgroup-root", cgroup + "/kubepods",
                                   "--pod-cidr", "10.244." + std::to_string(host) + ".0/24",
                                   "--node-ip", h.address,
                                   "--rootfs-dir", images_,
                                   "--listen", h.address + ":10250",
                                   "--healthz-listen", "127.0.0.1:10248",
                                   "--pod-manifest-path", ""};
  argv.insert(argv.end(), flags.begin(), flags.end());
  ASSIGN_OR_RETURN(kubelets_[host], lab_->Start(host, argv, h.dir + "/kubelet.log"));
  if (!WaitFor([&] { return Ctl({"get", "node", h.name}).exit_code == 0; }, std::chrono::seconds(30)))
    return absl::DeadlineExceededError("node " + h.name + " not registered:\n" + Logs(host));
  return absl::OkStatus();
}

void NodeCluster::StopKubelet(int host) {
  auto it = kubelets_.find(host);
  if (it == kubelets_.end()) return;
  it->second.Signal(SIGTERM);
  it->second.Wait();
  kubelets_.erase(it);
}

pid_t NodeCluster::kubelet_pid(int host) const {
  auto it = kubelets_.find(host);
  return it == kubelets_.end() ? -1 : it->second.pid();
}

skiff::lab::CommandResult NodeCluster::Ctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {BuildDir() + "/bin/skiffctl", "--kubeconfig", data_dir_ + "/admin.conf"};
  argv.insert(argv.end(), args.begin(), args.end());
  return lab_->Run(1, argv);
}

skiff::lab::CommandResult NodeCluster::Apply(const std::string& yaml) const {
  std::string file = lab_->host(1).dir + "/apply-" + std::to_string(++applied_) + ".yaml";
  std::ofstream(file) << yaml;
  return Ctl({"apply", "-f", file});
}

NodeScope NodeCluster::Scope(int host) const {
  const auto& h = lab_->host(host);
  NodeScope s;
  s.run_dir = h.dir + "/run";
  s.root_dir = h.dir + "/root";
  s.cgroup_root = h.cgroup + "/kubepods";
  if (pid_t p = kubelet_pid(host); p > 0) s.except.push_back(p);
  return s;
}

std::string NodeCluster::Logs(int host) const {
  auto tail = [](const std::string& s) { return s.size() > 6000 ? s.substr(s.size() - 6000) : s; };
  if (host == 0) return "--- control plane\n" + tail(Slurp(lab_->host(1).dir + "/cp.log"));
  return "--- kubelet h" + std::to_string(host) + "\n" + tail(Slurp(lab_->host(host).dir + "/kubelet.log"));
}

}  // namespace skiff::labtest
