// Test fixtures: real etcd members (Debian's /usr/bin/etcd) and the embedded
// skiff::store on loopback, and in-process API servers on free ports.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "skiff/apiserver/etcd.h"
#include "skiff/apiserver/server.h"
#include "skiff/client/dial.h"
#include "skiff/store/server.h"
#include "skiff/store/store.h"

namespace skiff::apitest {

inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// /tmp/skiff-apitest-<pid>-<tag>; leftovers of dead pids are removed first.
inline std::string TestDir(const std::string& tag) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/tmp", ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("skiff-apitest-", 0) != 0) continue;
    int pid = atoi(n.c_str() + strlen("skiff-apitest-"));
    if (pid > 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
  }
  std::string d = absl::StrCat("/tmp/skiff-apitest-", getpid(), "-", tag);
  fs::remove_all(d, ec);
  fs::create_directories(d);
  return d;
}

class EtcdMember {
 public:
  EtcdMember(std::string name, std::string dir, int client_port, int peer_port)
      : name_(std::move(name)), dir_(std::move(dir)), client_port_(client_port), peer_port_(peer_port) {}
  ~EtcdMember() { Kill(); }
  void Start(const std::string& initial_cluster, const std::string& token) {
    std::string client = absl::StrCat("http://127.0.0.1:", client_port_);
    std::string peer = absl::StrCat("http://127.0.0.1:", peer_port_);
    std::vector<std::string> args = {"/usr/bin/etcd",
                                     "--name", name_,
                                     "--data-dir", dir_ + "/data",
                                     "--listen-client-urls", client,
                                     "--advertise-client-urls", client,
                                     "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer,
                                     "--initial-cluster", initial_cluster,
                                     "--initial-cluster-token", token,
                                     "--initial-cluster-state", "new",
                                     "--heartbeat-interval", "50",
                                     "--election-timeout", "500"};
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open((dir_ + "/etcd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      prctl_death();
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", client_port_); }
  std::string peer_url() const { return absl::StrCat("http://127.0.0.1:", peer_port_); }
  const std::string& name() const { return name_; }

 private:
  static void prctl_death();
  std::string name_, dir_;
  int client_port_, peer_port_;
  pid_t pid_ = -1;
};

}  // namespace skiff::apitest

#include <sys/prctl.h>
inline void skiff::apitest::EtcdMember::prctl_death() { prctl(PR_SET_PDEATHSIG, SIGKILL); }

namespace skiff::apitest {

// The storage an API server runs on: Debian's etcd (1 or 3 members) or the
// embedded store served on a unix socket.
class Backend {
 public:
  enum class Kind { kEtcd, kEtcdCluster, kEmbedded };
  static std::unique_ptr<Backend> Make(Kind kind, const std::string& tag) {
    auto b = std::unique_ptr<Backend>(new Backend());
    b->kind_ = kind;
    b->dir_ = TestDir(tag);
    if (kind == Kind::kEmbedded) {
      skiff::store::Options so;
      so.data_dir = b->dir_ + "/store";
      auto s = skiff::store::Store::Open(so);
      if (!s.ok()) return nullptr;
      b->store_ = std::move(*s);
      skiff::store::ServerOptions sso;
      std::string sock = b->dir_ + "/store.sock";
      sso.listen_client_urls = {"unix://" + sock};
      auto srv = skiff::store::Server::Start(b->store_.get(), sso);
      if (!srv.ok()) return nullptr;
      b->store_server_ = std::move(*srv);
      b->endpoints_ = {"unix://" + sock};
    } else {
      int n = kind == Kind::kEtcdCluster ? 3 : 1;
      std::string initial;
      for (int i = 0; i < n; ++i) {
        auto m = std::make_unique<EtcdMember>(absl::StrCat("m", i), absl::StrCat(b->dir_, "/m", i), FreePort(), FreePort());
        std::filesystem::create_directories(absl::StrCat(b->dir_, "/m", i));
        absl::StrAppend(&initial, i ? "," : "", m->name(), "=", m->peer_url());
        b->members_.push_back(std::move(m));
      }
      for (auto& m : b->members_) {
        m->Start(initial, absl::StrCat("skiff-apitest-", getpid(), "-", tag));
        b->endpoints_.push_back(m->url());
      }
    }
    // Wait for a quorum.
    auto c = skiff::apiserver::EtcdClient::Connect(b->endpoints_);
    if (!c.ok()) return nullptr;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if ((*c)->CurrentRevision().ok()) return b;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return nullptr;
  }
  ~Backend() {
    members_.clear();
    if (store_server_) store_server_->Shutdown();
    store_server_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const std::string& dir() const { return dir_; }
  EtcdMember* member(int i) { return members_[i].get(); }
  size_t members() const { return members_.size(); }

 private:
  Backend() = default;
  Kind kind_;
  std::string dir_;
  std::vector<std::unique_ptr<EtcdMember>> members_;
  std::unique_ptr<skiff::store::Store> store_;
  std::unique_ptr<skiff::store::Server> store_server_;
  std::vector<std::string> endpoints_;
};

// Serves `service` with plaintext gRPC on a free loopback port (a stand-in
// kubelet); *port gets the port (0 when it could not listen).
inline std::unique_ptr<grpc::Server> ServeOnLoopback(grpc::Service* service, int* port) {
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  b.RegisterService(service);
  return b.BuildAndStart();
}

inline skiff::apiserver::ServerOptions ServerOpts(const Backend& b, const std::string& data_dir) {
  skiff::apiserver::ServerOptions o;
  o.data_dir = data_dir;
  o.listen = "127.0.0.1:0";
  o.health_listen = "127.0.0.1:0";
  o.etcd_servers = b.endpoints();
  o.bookmark_interval_ms = 200;
  return o;
}

}  // namespace skiff::apitest
