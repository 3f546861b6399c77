// skiff-proxy's API source (its own TLS + HTTP/2 + protobuf client) against
// a real skiff-control-plane (API server only, embedded store) on loopback:
// the first state goes out once both initial bursts are in, changes follow,
// a malformed Service gets its Warning event, a dropped connection resumes
// and sees what changed meanwhile, bearer tokens authenticate, an untrusted
// server is refused, and Run() stops within a second.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "skiff/client/config.h"
#include "skiff/client/dial.h"
#include "skiff/proxy/api_source.h"
#include "skiff/proxy/source.h"

namespace skiff::proxy {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string BuildDir() {
  if (const char* d = getenv("SKIFF_BUILD_DIR")) return d;
  return fs::canonical("/proc/self/exe").parent_path().parent_path().string();
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  return ntohs(sa.sin_port);
}

bool WaitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

// A loopback TCP relay in front of the API server whose connections the
// test can cut.
class Relay {
 public:
  explicit Relay(int target) : target_(target) {
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    socklen_t len = sizeof(sa);
    getsockname(listen_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    listen(listen_, 16);
    thread_ = std::thread([this] { Loop(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    close(listen_);
    for (auto& [a, b] : pairs_) {
      close(a);
      close(b);
    }
  }
  int port() const { return port_; }
  // Closes every relayed connection; new ones are refused while `paused`.
  void Cut(bool paused) {
    std::lock_guard l(mu_);
    cut_ = true;
    paused_ = paused;
  }
  void Resume() {
    std::lock_guard l(mu_);
    paused_ = false;
  }
  int accepted() {
    std::lock_guard l(mu_);
    return accepted_;
  }

 private:
  void Loop() {
    while (!stop_) {
      {
        std::lock_guard l(mu_);
        if (cut_) {
          for (auto& [a, b] : pairs_) {
            close(a);
            close(b);
          }
          pairs_.clear();
          cut_ = false;
        }
      }
      std::vector<pollfd> fds{{listen_, POLLIN, 0}};
      for (auto& [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        std::lock_guard l(mu_);
        if (c >= 0 && paused_) {
          close(c);
        } else if (c >= 0) {
          int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in sa{};
          sa.sin_family = AF_INET;
          sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          sa.sin_port = htons(target_);
          if (connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
            pairs_.push_back({c, s});
            ++accepted_;
          } else {
            close(c);
            close(s);
          }
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        auto& pair = pairs_[(i - 1) / 2];
        int from = fds[i].fd, to = from == pair.first ? pair.second : pair.first;
        char buf[65536];
        ssize_t n = read(from, buf, sizeof(buf));
        bool broken = n <= 0;
        for (ssize_t off = 0; !broken && off < n;) {
          ssize_t w = write(to, buf + off, n - off);
          if (w <= 0)
            broken = true;
          else
            off += w;
        }
        if (broken) {
          std::lock_guard l(mu_);
          cut_ = true;  // simplest: drop them all; the client reconnects
        }
      }
    }
  }
  int target_, listen_, port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  bool cut_ = false, paused_ = false;
  int accepted_ = 0;
  std::vector<std::pair<int, int>> pairs_;
};

class ApiSourceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A leftover of a crashed run whose process is gone.
    for (const auto& e : fs::directory_iterator("/tmp")) {
      std::string n = e.path().filename().string();
      if (n.rfind("skiff-proxy-api-test-", 0) != 0) continue;
      pid_t p = atoi(n.c_str() + strlen("skiff-proxy-api-test-"));
      if (p > 0 && kill(p, 0) != 0) fs::remove_all(e.path());
    }
    dir_ = "/tmp/skiff-proxy-api-test-" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/data");
    std::ofstream(dir_ + "/tokens.csv")
        << "proxy-token-" << getpid() << ",proxy-user,uid-proxy,system:masters\n";
    port_ = FreePort();
    int health = FreePort();
    std::string bin = BuildDir() + "/bin/skiff-control-plane";
    cp_ = fork();
    if (cp_ == 0) {
      setpgid(0, 0);
      int log = open((dir_ + "/cp.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<std::string> args = {bin,
                                       "--data-dir",
                                       dir_ + "/data",
                                       "--listen",
                                       "127.0.0.1:" + std::to_string(port_),
                                       "--health-listen",
                                       "127.0.0.1:" + std::to_string(health),
                                       "--components",
                                       "apiserver",
                                       "--advertise-address",
                                       "127.0.0.1",
                                       "--token-auth-file",
                                       dir_ + "/tokens.csv",
                                       "--bookmark-interval-ms",
                                       "200"};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    bool up = WaitUntil(
        [] {
          if (access((dir_ + "/data/admin.conf").c_str(), R_OK) != 0) return false;
          auto cfg = client::LoadClientConfig(dir_ + "/data/admin.conf");
          if (!cfg.ok()) return false;
          auto c = client::Dial(cfg->credentials);
          if (!c.ok()) return false;
          if (!(*c)->List("namespaces", "").ok()) return false;
          api_ = std::move(*c).release();
          return true;
        },
        std::chrono::seconds(60));
    if (!up) {
      std::ifstream in(dir_ + "/cp.log");
      std::stringstream ss;
      ss << in.rdbuf();
      FAIL() << "skiff-control-plane did not come up; log:\n" << ss.str();
    }
  }
  static void TearDownTestSuite() {
    delete api_;
    api_ = nullptr;
    if (cp_ > 0) {
      kill(-cp_, SIGKILL);
      kill(cp_, SIGKILL);
      waitpid(cp_, nullptr, 0);
    }
    fs::remove_all(dir_);
  }

  void SetUp() override {
    ASSERT_NE(api_, nullptr);
    ns_ = "t" + std::to_string(getpid()) + "-" + std::to_string(++counter_);
    client::Object o;
    o.mutable_namespace_()->mutable_metadata()->set_name(ns_);
    ASSERT_TRUE(api_->Create("namespaces", "", o).ok());
  }

  ApiSourceConfig Config(int port = 0) {
    auto cfg =
        LoadApiSourceConfig(dir_ + "/data/admin.conf", port ? "127.0.0.1:" + std::to_string(port) : "");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    return cfg.ok() ? *cfg : ApiSourceConfig{};
  }

  void CreateService(const std::string& name, int port, const std::string& protocol = "") {
    client::Object o;
    auto* s = o.mutable_service();
    s->mutable_metadata()->set_name(name);
    s->mutable_metadata()->set_namespace_(ns_);
    auto* p = s->mutable_spec()->add_ports();
    p->set_name("p");
    p->set_port(port);
    p->set_protocol(protocol);
    auto r = api_->Create("services", ns_, o);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  void CreateSlice(const std::string& name, const std::string& service, const std::vector<std::string>& ips) {
    client::Object o;
    auto* es = o.mutable_endpoint_slice();
    es->mutable_metadata()->set_name(name);
    es->mutable_metadata()->set_namespace_(ns_);
    (*es->mutable_metadata()->mutable_labels())["kubernetes.io/service-name"] = service;
    es->set_address_type("IPv4");
    auto* p = es->add_ports();
    p->set_name("p");
    p->set_port(8080);
    for (const auto& ip : ips) es->add_endpoints()->add_addresses(ip);
    auto r = api_->Create("endpointslices", ns_, o);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  // What the source delivered, applied as a StateSink should (the
  // StateStore's own representation is not this test's business).
  class Sink final : public StateSink {
   public:
    void Replace(ClusterState state) override {
      std::lock_guard l(mu_);
      state_ = std::move(state);
      ++replaces_;
    }
    void UpsertService(Service s) override {
      std::lock_guard l(mu_);
      std::string key = s.Key();
      state_.services[key] = std::move(s);
    }
    void DeleteService(const std::string& ns, const std::string& name) override {
      std::lock_guard l(mu_);
      state_.services.erase(ns + "/" + name);
    }
    void UpsertEndpointSlice(EndpointSlice es) override {
      std::lock_guard l(mu_);
      std::string key = es.Key();
      state_.endpoint_slices[key] = std::move(es);
    }
    void DeleteEndpointSlice(const std::string& ns, const std::string& name) override {
      std::lock_guard l(mu_);
      state_.endpoint_slices.erase(ns + "/" + name);
    }
    bool synced() {
      std::lock_guard l(mu_);
      return replaces_ > 0;
    }
    int replaces() {
      std::lock_guard l(mu_);
      return replaces_;
    }
    ClusterState Snapshot() {
      std::lock_guard l(mu_);
      return state_;
    }

   private:
    std::mutex mu_;
    ClusterState state_;
    int replaces_ = 0;
  };

  // The source runs on a thread of its own.
  struct Running {
    Sink store;
    std::atomic<bool> stop{false};
    std::unique_ptr<Source> source;
    std::thread thread;
    absl::Status result;
    ClusterState Snapshot() { return store.Snapshot(); }
    // Stops and returns how long Run() took to return.
    std::chrono::milliseconds Stop() {
      auto t0 = Clock::now();
      stop = true;
      if (thread.joinable()) thread.join();
      return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    }
    ~Running() { Stop(); }
  };
  std::unique_ptr<Running> Start(ApiSourceConfig cfg) {
    auto r = std::make_unique<Running>();
    r->source = MakeApiSource(std::move(cfg));
    Running* p = r.get();
    r->thread = std::thread([p] { p->result = p->source->Run(p->store, p->stop); });
    return r;
  }
  std::string Key(const std::string& name) { return ns_ + "/" + name; }

  static inline std::string dir_;
  static inline int port_ = 0;
  static inline pid_t cp_ = -1;
  static inline client::Client* api_ = nullptr;
  static inline int counter_ = 0;
  std::string ns_;
};

TEST_F(ApiSourceTest, FirstStateAfterBothInitialBurstsThenEveryChangeAndAWarningEventForAMalformedService) {
  CreateService("good", 80);
  CreateService("also", 81, "UDP");
  client::Object bad;
  auto* svc = bad.mutable_service();
  svc->mutable_metadata()->set_name("bad");
  svc->mutable_metadata()->set_namespace_(ns_);
  // The API server accepts SCTP; the proxy does not route it.
  auto* sctp = svc->mutable_spec()->add_ports();
  sctp->set_name("sctp");
  sctp->set_port(9);
  sctp->set_protocol("SCTP");
  auto created = api_->Create("services", ns_, bad);
  ASSERT_TRUE(created.ok()) << created.status();
  CreateSlice("good-1", "good", {"10.244.0.5", "10.244.0.6"});

  auto run = Start(Config());
  ASSERT_TRUE(WaitUntil([&] { return run->store.synced(); }, std::chrono::seconds(20)));
  ClusterState st = run->Snapshot();
  // The first Replace already holds everything of this namespace.
  ASSERT_EQ(st.services.count(Key("good")), 1u);
  ASSERT_EQ(st.services.count(Key("also")), 1u);
  ASSERT_EQ(st.services.count(Key("bad")), 1u);
  EXPECT_TRUE(st.services.at(Key("bad")).ports.empty());
  EXPECT_EQ(st.services.at(Key("also")).ports[0].protocol, Protocol::kUdp);
  EXPECT_FALSE(st.services.at(Key("good")).cluster_ips.empty());  // allocated by the API server
  ASSERT_EQ(st.endpoint_slices.count(Key("good-1")), 1u);
  EXPECT_EQ(st.endpoint_slices.at(Key("good-1")).endpoints.size(), 2u);

  std::string reason, message, component;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto events = api_->List("events", ns_);
        if (!events.ok()) return false;
        for (const auto& e : events->items())
          if (e.event().involved_object().name() == "bad") {
            reason = e.event().reason();
            message = e.event().message();
            component = e.event().source().component();
            EXPECT_EQ(e.event().involved_object().kind(), "Service");
            EXPECT_FALSE(e.event().involved_object().uid().empty());
            return true;
          }
        return false;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(reason, "InvalidServiceSpec");
  EXPECT_EQ(component, "skiff-proxy");
  EXPECT_NE(message.find("unsupported protocol SCTP"), std::string::npos) << message;

  // Live changes: a new Service, a slice update, a deletion.
  CreateService("later", 90);
  auto slice = api_->Get("endpointslices", ns_, "good-1");
  ASSERT_TRUE(slice.ok());
  slice->mutable_endpoint_slice()->add_endpoints()->add_addresses("10.244.0.7");
  ASSERT_TRUE(api_->Update("endpointslices", ns_, *slice).ok());
  ASSERT_TRUE(api_->Delete("services", ns_, "also").ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        ClusterState s = run->Snapshot();
        return s.services.count(Key("later")) && !s.services.count(Key("also")) &&
               s.endpoint_slices.count(Key("good-1")) &&
               s.endpoint_slices.at(Key("good-1")).endpoints.size() == 3;
      },
      std::chrono::seconds(10)));
  EXPECT_LT(run->Stop().count(), 1000);
  EXPECT_TRUE(run->result.ok()) << run->result;
}

TEST_F(ApiSourceTest, ADroppedConnectionResumesAndSeesWhatChangedMeanwhile) {
  CreateService("stays", 80);
  CreateService("goes", 81);
  Relay relay(port_);
  auto run = Start(Config(relay.port()));
  ASSERT_TRUE(WaitUntil([&] { return run->store.synced() && run->Snapshot().services.count(Key("goes")); },
                        std::chrono::seconds(20)));
  relay.Cut(/*paused=*/true);
  ASSERT_TRUE(api_->Delete("services", ns_, "goes").ok());
  CreateService("new", 82);
  relay.Resume();
  EXPECT_TRUE(WaitUntil(
      [&] {
        ClusterState s = run->Snapshot();
        return s.services.count(Key("stays")) && s.services.count(Key("new")) &&
               !s.services.count(Key("goes"));
      },
      std::chrono::seconds(20)));
  EXPECT_GE(relay.accepted(), 2);
  EXPECT_EQ(run->store.replaces(), 1);  // resumed from the last resourceVersion, not started over
  EXPECT_LT(run->Stop().count(), 1000);
}

// Away for longer than the API server's watch window (4096 events per
// resource): resuming is refused as too old (410 Gone), so the source
// watches from "" again and Replace()s: what was deleted meanwhile is gone.
TEST_F(ApiSourceTest, AwayLongerThanTheWatchWindowStartsOverAndDropsWhatWasDeleted) {
  for (int i = 0; i < 4; ++i) CreateService("busy-" + std::to_string(i), 80 + i);
  CreateService("deleted", 90);
  Relay relay(port_);
  auto run = Start(Config(relay.port()));
  ASSERT_TRUE(WaitUntil([&] { return run->store.synced() && run->Snapshot().services.count(Key("deleted")); },
                        std::chrono::seconds(20)));
  relay.Cut(/*paused=*/true);
  ASSERT_TRUE(api_->Delete("services", ns_, "deleted").ok());
  // 4 x 1030 label changes push the services window past the revision the
  // source would resume from.
  std::vector<std::thread> writers;
  std::atomic<int> failed{0};
  for (int i = 0; i < 4; ++i)
    writers.emplace_back([&, i] {
      for (int k = 0; k < 1030; ++k) {
        std::string patch = "{\"metadata\":{\"labels\":{\"k\":\"v" + std::to_string(k) + "\"}}}";
        if (!api_->Patch("services", ns_, "busy-" + std::to_string(i), patch).ok()) ++failed;
      }
    });
  for (auto& t : writers) t.join();
  ASSERT_EQ(failed.load(), 0);
  relay.Resume();
  EXPECT_TRUE(WaitUntil([&] { return run->store.replaces() == 2; }, std::chrono::seconds(20)));
  ClusterState s = run->Snapshot();
  EXPECT_EQ(s.services.count(Key("deleted")), 0u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(s.services.count(Key("busy-" + std::to_string(i))), 1u);
  EXPECT_LT(run->Stop().count(), 1000);
}

TEST_F(ApiSourceTest, ABearerTokenAuthenticatesAndAWrongOneOrAnUntrustedServerGetsNothing) {
  CreateService("tok", 80);
  ApiSourceConfig cfg = Config();
  cfg.credentials.client_cert_pem.clear();
  cfg.credentials.client_key_pem.clear();
  cfg.credentials.token = "proxy-token-" + std::to_string(getpid());
  auto run = Start(cfg);
  EXPECT_TRUE(WaitUntil([&] { return run->store.synced() && run->Snapshot().services.count(Key("tok")); },
                        std::chrono::seconds(20)));
  run->Stop();

  cfg.credentials.token = "wrong";
  auto denied = Start(cfg);
  // A CA that did not sign the server's certificate: the handshake fails.
  ApiSourceConfig untrusted = Config();
  untrusted.credentials.ca_cert_pem = untrusted.credentials.client_cert_pem;  // a certificate, but not the CA
  auto refused = Start(untrusted);
  // No CA at all: the system's roots, which do not know the cluster's CA.
  ApiSourceConfig no_ca = Config();
  no_ca.credentials.ca_cert_pem.clear();
  auto unknown = Start(no_ca);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  for (Running* r : {denied.get(), refused.get(), unknown.get()}) {
    EXPECT_FALSE(r->store.synced());
    EXPECT_LT(r->Stop().count(), 1000);
  }
}

TEST_F(ApiSourceTest, NoServerMeansRetriesAndStillStopsWithinASecond) {
  auto run = Start(Config(FreePort()));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_FALSE(run->store.synced());
  EXPECT_LT(run->Stop().count(), 1000);
  EXPECT_TRUE(run->result.ok());
}

}  // namespace
}  // namespace skiff::proxy
