#include "lab.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace skiff::proxy::testing {

namespace {

bool WriteFile(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
  close(fd);
  return ok;
}

bool PidAlive(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

void KillCgroup(const std::string& dir) {
  for (int round = 0; round < 50; ++round) {
    std::ifstream in(dir + "/cgroup.procs");
    pid_t p;
    bool any = false;
    while (in >> p) {
      any = true;
      kill(p, SIGKILL);
    }
    if (!any) break;
    usleep(20000);
  }
  rmdir(dir.c_str());
}

std::string Addr(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf));
  return std::string(buf) + ":" + std::to_string(ntohs(a.sin_port));
}

// "ip:port" for IPv4, "[ip]:port" for IPv6.
std::string Addr(const sockaddr_storage& a) {
  if (a.ss_family != AF_INET6) return Addr(reinterpret_cast<const sockaddr_in&>(a));
  const auto& a6 = reinterpret_cast<const sockaddr_in6&>(a);
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &a6.sin6_addr, buf, sizeof(buf));
  return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a6.sin6_port));
}

// A socket address for "ip" (IPv4 or IPv6) and port.
socklen_t MakeAddr(const std::string& ip, int port, sockaddr_storage* out) {
  *out = {};
  if (ip.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, ip.c_str(), &a->sin6_addr);
    return sizeof(*a);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(out);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &a->sin_addr);
  return sizeof(*a);
}

}  // namespace

std::string Cgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype;
    rest >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, devno, root, mountpoint;
    head >> id >> parent >> devno >> root >> mountpoint;
    return mountpoint;
  }
  return "";
}

void Lab::CleanStale(const std::string& tag) {
  std::string prefix = "skiff-" + tag + "-";
  if (DIR* d = opendir("/run/netns")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind(prefix, 0) != 0) continue;
      pid_t pid = atoi(n.c_str() + prefix.size());
      if (pid > 0 && !PidAlive(pid)) {
        std::string cmd = "ip netns del " + n + " 2>/dev/null";
        if (system(cmd.c_str()) != 0) {
        }
      }
    }
    closedir(d);
  }
  std::string cg2 = Cgroup2Mount();
  if (!cg2.empty()) {
    if (DIR* d = opendir(cg2.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n.rfind(prefix, 0) != 0) continue;
        pid_t pid = atoi(n.c_str() + prefix.size());
        if (pid > 0 && !PidAlive(pid)) KillCgroup(cg2 + "/" + n);
      }
      closedir(d);
    }
  }
  if (DIR* d = opendir("/tmp")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind(prefix, 0) != 0) continue;
      pid_t pid = atoi(n.c_str() + prefix.size());
      if (pid > 0 && !PidAlive(pid)) {
        std::string p = "/tmp/" + n;
        umount2(p.c_str(), MNT_DETACH);
        rmdir(p.c_str());
      }
    }
    closedir(d);
  }
}

bool Lab::Sh(const std::string& cmd) {
  int rc = system((cmd + " 2>&1").c_str());
  if (rc != 0) {
    error_ = "command failed (" + std::to_string(rc) + "): " + cmd;
    return false;
  }
  return true;
}

Lab::Lab(const std::string& tag) : tag_(tag) {
  CleanStale(tag);
  std::string id = std::to_string(getpid());
  id_ = id;
  node_ns_ = "skiff-" + tag + "-" + id + "-n";
  backend_ns_ = "skiff-" + tag + "-" + id + "-b";
  node_ns_path_ = "/run/netns/" + node_ns_;
  backend_ns_path_ = "/run/netns/" + backend_ns_;
  std::string va = "s" + tag + id + "n", vb = "s" + tag + id + "b";
  if (!Sh("ip netns add " + node_ns_) || !Sh("ip netns add " + backend_ns_) ||
      !Sh("ip -n " + node_ns_ + " link set lo up") || !Sh("ip -n " + backend_ns_ + " link set lo up") ||
      !Sh("ip -n " + node_ns_ + " link add " + va + " type veth peer name " + vb + " netns " + backend_ns_) ||
      !Sh("ip -n " + node_ns_ + " addr add 10.0.0.1/24 dev " + va) ||
      !Sh("ip -n " + node_ns_ + " link set " + va + " up") || !Sh("ip -n " + backend_ns_ + " link set " + vb + " up"))
    return;
  backend_ifname_ = vb;
  std::string cg2 = Cgroup2Mount();
  if (cg2.empty()) {
    error_ = "no cgroup2 mount";
    return;
  }
  cgroup_ = cg2 + "/skiff-" + tag + "-" + id;
  if (mkdir(cgroup_.c_str(), 0755) != 0 && errno != EEXIST) {
    error_ = "mkdir " + cgroup_ + ": " + strerror(errno);
    return;
  }
  {
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("0::", 0) == 0) orig_cgroup_ = cg2 + line.substr(3);
  }
  bpffs_ = "/tmp/skiff-" + tag + "-" + id + "-bpffs";
  if (mkdir(bpffs_.c_str(), 0700) != 0 && errno != EEXIST) {
    error_ = "mkdir " + bpffs_;
    return;
  }
  if (mount("bpf", bpffs_.c_str(), "bpf", 0, "mode=0700") != 0) {
    error_ = "mount bpffs: " + std::string(strerror(errno));
    return;
  }
  ok_ = true;
}

Lab::~Lab() {
  Leave();
  if (server_pid_ > 0) {
    kill(server_pid_, SIGKILL);
    waitpid(server_pid_, nullptr, 0);
  }
  if (!cgroup_.empty()) KillCgroup(cgroup_);
  if (!bpffs_.empty()) {
    umount2(bpffs_.c_str(), MNT_DETACH);
    rmdir(bpffs_.c_str());
  }
  // Deleting the namespaces removes the veth pair and every address/route.
  if (system(("ip netns del " + node_ns_ + " 2>/dev/null").c_str()) != 0) {
  }
  if (system(("ip netns del " + backend_ns_ + " 2>/dev/null").c_str()) != 0) {
  }
  if (!outside_ns_.empty() && system(("ip netns del " + outside_ns_ + " 2>/dev/null").c_str()) != 0) {
  }
}

bool Lab::AddOutside() {
  outside_ns_ = "skiff-" + tag_ + "-" + id_ + "-o";
  std::string x = node_external_if(), o = "s" + tag_ + id_ + "o";
  return Sh("ip netns add " + outside_ns_) && Sh("ip -n " + outside_ns_ + " link set lo up") &&
         Sh("ip -n " + node_ns_ + " link add " + x + " type veth peer name " + o + " netns " + outside_ns_) &&
         Sh("ip -n " + node_ns_ + " addr add 192.168.50.1/24 dev " + x) &&
         Sh("ip -n " + outside_ns_ + " addr add 192.168.50.2/24 dev " + o) &&
         Sh("ip -n " + node_ns_ + " link set " + x + " up") && Sh("ip -n " + outside_ns_ + " link set " + o + " up") &&
         Sh("ip -n " + backend_ns_ + " route add 192.168.50.0/24 via 10.0.0.1") &&
         Sh("nsenter --net=" + node_ns_path_ + " sysctl -q -w net.ipv4.ip_forward=1");
}

bool Lab::AddPod() {
  return AddOutside() && Sh("ip -n " + outside_ns_ + " route add default via 192.168.50.1");
}

bool Lab::AddPod6() {
  std::string x = node_external_if(), o = "s" + tag_ + id_ + "o";
  return Sh("ip -n " + node_ns_ + " addr add fd00:50::1/64 dev " + x + " nodad") &&
         Sh("ip -n " + outside_ns_ + " addr add fd00:50::2/64 dev " + o + " nodad") &&
         Sh("ip -n " + outside_ns_ + " -6 route add default via fd00:50::1") &&
         Sh("ip -n " + backend_ns_ + " -6 route add fd00:50::/64 via fd00:5::1") &&
         Sh("nsenter --net=" + node_ns_path_ + " sysctl -q -w net.ipv6.conf.all.forwarding=1") &&
         WaitIpv6Settled();
}

// The fresh veths' link-local addresses go through duplicate address
// detection (about a second); until then neighbour discovery on them does
// not work and the first packets of a flow are lost. Wait for it to end.
bool Lab::WaitIpv6Settled() {
  for (int i = 0; i < 100; ++i) {
    bool settled = true;
    for (const std::string& ns : {node_ns_, backend_ns_, outside_ns_}) {
      if (ns.empty()) continue;
      settled = settled && Sh("! ip -n " + ns + " -6 addr show tentative | grep -q inet6");
    }
    if (settled) return true;
    usleep(50000);
  }
  error_ = "IPv6 addresses still tentative after 5 s";
  return false;
}

bool Lab::EnterOutsideThisThread() {
  int fd = open(("/run/netns/" + outside_ns_).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = setns(fd, CLONE_NEWNET) == 0;
  close(fd);
  return ok;
}

bool Lab::AddIpv6() {
  // ULA addresses on the lab's veth pair only (nodad: usable at once).
  return Sh("ip -n " + node_ns_ + " addr add fd00:5::1/64 dev " + node_internal_if() + " nodad") &&
         Sh("ip -n " + backend_ns_ + " addr add fd00:5::2/64 dev " + backend_ifname_ + " nodad");
}

bool Lab::AddBackendAddress6(int last) {
  std::string ip = "fd00:5::" + std::to_string(last);
  if (!Sh("ip -n " + backend_ns_ + " addr add " + ip + "/64 dev " + backend_ifname_ + " nodad")) return false;
  backend_ips_.push_back(ip);
  return true;
}

bool Lab::AddBackendAddress(int last_octet) {
  std::string ip = "10.0.0." + std::to_string(last_octet);
  if (!Sh("ip -n " + backend_ns_ + " addr add " + ip + "/24 dev " + backend_ifname_)) return false;
  backend_ips_.push_back(ip);
  return true;
}

bool Lab::StartServers(const std::vector<int>& ports) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return false;
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(ready[0]);
    int nsfd = open(backend_ns_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) _exit(1);
    std::vector<pollfd> fds;
    std::vector<int> kinds;  // 0 tcp, 1 udp
    for (const std::string& ip : backend_ips_) {
      for (int port : ports) {
        sockaddr_storage a;
        socklen_t alen = MakeAddr(ip, port, &a);
        for (int kind = 0; kind < 2; ++kind) {
          int s = socket(a.ss_family, kind ? SOCK_DGRAM : SOCK_STREAM, 0);
          int one = 1;
          setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
          // IP_FREEBIND: the address may still be tentative right after it is added.
          setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
          if (bind(s, reinterpret_cast<sockaddr*>(&a), alen) != 0) _exit(2);
          if (!kind && listen(s, 1024) != 0) _exit(3);
          fds.push_back({s, POLLIN, 0});
          kinds.push_back(kind);
        }
      }
    }
    if (write(ready[1], "x", 1) != 1) _exit(4);
    while (true) {
      if (poll(fds.data(), fds.size(), -1) < 0) continue;
      for (size_t i = 0; i < fds.size(); ++i) {
        if (!(fds[i].revents & POLLIN)) continue;
        sockaddr_storage self{};
        socklen_t sl = sizeof(self);
        getsockname(fds[i].fd, reinterpret_cast<sockaddr*>(&self), &sl);
        std::string me = Addr(self);
        int self_port = self.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6&>(self).sin6_port)
                                                    : ntohs(reinterpret_cast<sockaddr_in&>(self).sin_port);
        if (kinds[i] == 0) {
          sockaddr_storage peer{};
          socklen_t pl = sizeof(peer);
          int c = accept4(fds[i].fd, reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_CLOEXEC);
          // Ports 7000-7099 answer with the client's address instead (for
          // tests of client-address preservation).
          if (self_port / 100 == 70) me = Addr(peer);
          if (c >= 0) {
            if (send(c, me.data(), me.size(), MSG_NOSIGNAL) < 0) {
            }
            close(c);
          }
        } else {
          char buf[512];
          sockaddr_storage from{};
          socklen_t fl = sizeof(from);
          ssize_t n = recvfrom(fds[i].fd, buf, sizeof(buf), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fl);
          if (n >= 0) sendto(fds[i].fd, me.data(), me.size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
        }
      }
    }
  }
  close(ready[1]);
  server_pid_ = pid;
  char c;
  bool ok = read(ready[0], &c, 1) == 1;
  close(ready[0]);
  if (!ok) error_ = "backend server did not start";
  return ok;
}

bool Lab::EnterNetnsThisThread() {
  int fd = open(node_ns_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = setns(fd, CLONE_NEWNET) == 0;
  close(fd);
  return ok;
}

bool Lab::Enter() {
  if (entered_) return true;
  orig_netns_fd_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig_netns_fd_ < 0 || !EnterNetnsThisThread()) return false;
  if (!WriteFile(cgroup_ + "/cgroup.procs", std::to_string(getpid()))) {
    error_ = "join cgroup " + cgroup_ + ": " + strerror(errno);
    setns(orig_netns_fd_, CLONE_NEWNET);
    return false;
  }
  entered_ = true;
  return true;
}

void Lab::Leave() {
  if (!entered_) return;
  if (!orig_cgroup_.empty()) WriteFile(orig_cgroup_ + "/cgroup.procs", std::to_string(getpid()));
  setns(orig_netns_fd_, CLONE_NEWNET);
  close(orig_netns_fd_);
  orig_netns_fd_ = -1;
  entered_ = false;
}

std::string TcpRequest(const std::string& ip, int port, std::string* peer, int* err) {
  sockaddr_storage a;
  socklen_t alen = MakeAddr(ip, port, &a);
  int s = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(s, reinterpret_cast<sockaddr*>(&a), alen) != 0) {
    int e = errno;
    if (err) *err = e;
    close(s);
    return std::string("ERR:") + strerrorname_np(e);
  }
  if (peer) {
    sockaddr_storage p{};
    socklen_t pl = sizeof(p);
    getpeername(s, reinterpret_cast<sockaddr*>(&p), &pl);
    *peer = Addr(p);
  }
  char buf[128];
  std::string out;
  ssize_t n;
  while ((n = read(s, buf, sizeof(buf))) > 0) out.append(buf, n);
  if (n < 0) {
    int e = errno;
    if (err) *err = e;
    out = std::string("ERR:") + strerrorname_np(e);
  }
  close(s);
  return out;
}

std::string UdpRequest(const std::string& ip, int port, bool connected, std::string* from, int* err) {
  sockaddr_storage a;
  socklen_t alen = MakeAddr(ip, port, &a);
  int s = socket(a.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  auto fail = [&](int e) {
    if (err) *err = e;
    close(s);
    return std::string("ERR:") + strerrorname_np(e);
  };
  if (connected) {
    if (connect(s, reinterpret_cast<sockaddr*>(&a), alen) != 0) return fail(errno);
    if (send(s, "q", 1, 0) != 1) return fail(errno);
  } else if (sendto(s, "q", 1, 0, reinterpret_cast<sockaddr*>(&a), alen) != 1) {
    return fail(errno);
  }
  char buf[128];
  sockaddr_storage f{};
  socklen_t fl = sizeof(f);
  ssize_t n = recvfrom(s, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&f), &fl);
  if (n < 0) return fail(errno);
  if (from) *from = Addr(f);
  close(s);
  return std::string(buf, n);
}

ConnectLoop::ConnectLoop(Lab& lab, std::string ip, int port) {
  thread_ = std::thread([this, &lab, ip, port] {
    if (!lab.EnterNetnsThisThread()) return;
    while (!stop_) {
      std::string got = TcpRequest(ip, port);
      if (got.rfind("10.0.0.1", 0) == 0) {
        ++ok_;
      } else {
        std::lock_guard lock(mu_);
        last_error_ = got;
        ++failed_;
      }
    }
  });
}

void ConnectLoop::WaitForProgress(int n) {
  int seen = ok_ + failed_;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (ok_ + failed_ < seen + n && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
}

void ConnectLoop::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::string ConnectLoop::last_error() {
  std::lock_guard lock(mu_);
  return last_error_;
}

}  // namespace skiff::proxy::testing
