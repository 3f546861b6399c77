// A private little network for socket-LB tests: two network namespaces the
// test creates ("node", where clients and the agent run, and "backends"),
// a veth pair between them on 10.x addresses that exist only there, a cgroup
// v2 directory under the host's cgroup2 mount, and a private bpffs mount.
// Everything is removed in the destructor; leftovers of crashed runs (named
// with a dead pid) are removed first.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace skiff::proxy::testing {

class Lab {
 public:
  // `tag` keeps concurrent test binaries apart ("sl", "ag", ...).
  explicit Lab(const std::string& tag);
  ~Lab();
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

  // Adds 10.0.0.<last_octet>/24 on the backend side and starts a server
  // process there that answers TCP (accept, write "ip:port", close) and UDP
  // (reply "ip:port") on each of `ports` for every address added so far.
  bool AddBackendAddress(int last_octet);
  // IPv6 inside the lab only: fd00:5::1/64 on the node side of the veth,
  // fd00:5::2/64 on the backend side; AddBackendAddress6(n) adds fd00:5::<n>
  // (decimal digits, read as hex) for StartServers, which then also answers
  // there ("[ip]:port").
  bool AddIpv6();
  bool AddBackendAddress6(int last);
  bool StartServers(const std::vector<int>& ports);

  // A third namespace, "outside": a host beyond the node's external
  // interface (outside 192.168.50.2/24 <-> node 192.168.50.1/24). Turns on
  // forwarding in the node netns and routes the backends' replies to
  // 192.168.50.0/24 via the node.
  bool AddOutside();
  // The same namespace as a pod of this node instead: a default route via
  // the node. A thread that enters it (EnterOutsideThisThread) while the
  // process is in the lab cgroup is a pod's client: its own netns, under the
  // node's cgroup root where the socket LB is attached.
  bool AddPod();
  // After AddPod() and AddIpv6(): the pod also gets fd00:50::2/64 with a
  // default IPv6 route via the node (fd00:50::1); IPv6 forwarding on in the
  // node netns, the backends route fd00:50::/64 via the node.
  bool AddPod6();
  // Waits until no address of the lab's namespaces is tentative (DAD done).
  bool WaitIpv6Settled();
  bool EnterOutsideThisThread();
  std::string node_external_if() const { return "s" + tag_ + id_ + "x"; }
  std::string node_internal_if() const { return "s" + tag_ + id_ + "n"; }

  // Moves this process into the lab cgroup and this thread into the node
  // netns; Leave() undoes both.
  bool Enter();
  void Leave();
  // Moves only the calling thread into the node netns.
  bool EnterNetnsThisThread();

  const std::string& cgroup() const { return cgroup_; }
  const std::string& bpffs() const { return bpffs_; }
  const std::string& node_netns_path() const { return node_ns_path_; }
  const std::string& node_netns() const { return node_ns_; }

 private:
  bool Sh(const std::string& cmd);
  static void CleanStale(const std::string& tag);

  bool ok_ = false;
  std::string error_;
  std::string tag_;
  std::string id_;
  std::string outside_ns_;
  std::string node_ns_, backend_ns_, node_ns_path_, backend_ns_path_, backend_ifname_;
  std::string cgroup_, orig_cgroup_, bpffs_;
  std::vector<std::string> backend_ips_;
  pid_t server_pid_ = -1;
  int orig_netns_fd_ = -1;
  bool entered_ = false;
};

// Client helpers (run in the node netns). They return "ip:port" of the
// backend that answered, or "ERR:<errno name>".
std::string TcpRequest(const std::string& ip, int port, std::string* peer = nullptr, int* err = nullptr);
std::string UdpRequest(const std::string& ip, int port, bool connected, std::string* from = nullptr,
                       int* err = nullptr);

std::string Cgroup2Mount();

// TCP requests to ip:port in a loop from the lab's node netns (own thread),
// counting answers from a lab backend (10.0.0.1x) and anything else.
class ConnectLoop {
 public:
  ConnectLoop(Lab& lab, std::string ip, int port);
  ~ConnectLoop() { Stop(); }
  // Waits (at most 10 s) until `n` more requests have completed.
  void WaitForProgress(int n);
  void Stop();
  int ok() const { return ok_; }
  int failed() const { return failed_; }
  std::string last_error();

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, failed_{0};
  std::mutex mu_;
  std::string last_error_;
  std::thread thread_;
};

}  // namespace skiff::proxy::testing
