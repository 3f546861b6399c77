// skiff-proxy as a process: --from-file input, bad input skipped, the
// unreachable service route in the node netns, /healthz and /metrics, and a
// kill -9 + restart under continuous TCP and UDP traffic with no failure.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lab.h"
#include "skiff/common/unique_fd.h"
#include "skiff/proxy/datapath.h"
#include "skiff/proxy/desired.h"
#include "skiff/proxy/service_map.h"
#include "skiff/proxy/source.h"

namespace skiff::proxy {
namespace {

using testing::Lab;
using testing::TcpRequest;
using testing::UdpRequest;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string HttpGet(const std::string& path, int* code, int port = 10249) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  *code = 0;
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(s);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  if (write(s, req.data(), req.size()) < 0) {
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(s, buf, sizeof(buf))) > 0) out.append(buf, n);
  close(s);
  if (out.size() > 12) *code = atoi(out.c_str() + 9);
  auto body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

const char* kServices = R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: zero-port, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 0, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: sctp, namespace: default}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: s, port: 80, protocol: SCTP}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: after, namespace: default}
spec:
  clusterIP: 10.96.0.13
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.0.0.11]
  conditions: {ready: true}
  nodeName: node-a
- addresses: [10.0.0.12]
  conditions: {ready: true}
  nodeName: node-b
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: after-abc
  namespace: default
  labels: {kubernetes.io/service-name: after}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.12]
)";

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: netns, cgroups, BPF";
    lab_ = std::make_unique<Lab>("ag");
    ASSERT_TRUE(lab_->ok()) << lab_->error();
    for (int o : {11, 12}) ASSERT_TRUE(lab_->AddBackendAddress(o)) << lab_->error();
    ASSERT_TRUE(lab_->AddIpv6()) << lab_->error();
    ASSERT_TRUE(lab_->AddBackendAddress6(11)) << lab_->error();
    ASSERT_TRUE(lab_->StartServers({8080, 5353, 7070})) << lab_->error();
    std::string id = std::to_string(getpid());
    file_ = "/tmp/skiff-ag-" + id + "-services.yaml";
    log_ = "/tmp/skiff-ag-" + id + "-proxy.log";
    std::ofstream(file_) << kServices;
    // Test binaries live in <build>/tests, programs in <build>/bin.
    const char* bd = getenv("SKIFF_BUILD_DIR");
    if (bd) {
      binary_ = std::string(bd) + "/bin/skiff-proxy";
    } else {
      char self[4096];
      ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
      ASSERT_GT(n, 0);
      std::string dir(self, n);
      dir = dir.substr(0, dir.rfind('/'));
      binary_ = dir + "/../bin/skiff-proxy";
    }
    ASSERT_EQ(access(binary_.c_str(), X_OK), 0) << binary_;
    ASSERT_TRUE(lab_->Enter()) << lab_->error();
  }
  void TearDown() override {
    StopAgent(SIGKILL);
    if (lab_) lab_->Leave();
    if (::testing::Test::HasFailure()) std::cerr << "--- skiff-proxy log ---\n" << ReadAll(log_);
    unlink(file_.c_str());
    unlink(log_.c_str());
    lab_.reset();
  }
  void StartAgent(std::vector<std::string> extra = {}, std::vector<std::string> env = {}) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (std::string& e : env) putenv(e.data());
      int fd = open(lab_->node_netns_path().c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) _exit(120);
      int logfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      dup2(logfd, 2);
      std::vector<std::string> args = {binary_,        "--from-file",  file_,
                                       "--bpffs-dir",   lab_->bpffs(),  "--cgroup-root",
                                       lab_->cgroup(),  "--node-name",  "node-a",
                                       "--metrics-bind-address", "127.0.0.1:10249"};
      // --server replaces the file source.
      if (std::find(extra.begin(), extra.end(), "--server") != extra.end()) args.erase(args.begin() + 1, args.begin() + 3);
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary_.c_str(), argv.data());
      _exit(121);
    }
    agent_ = pid;
  }
  bool WaitHealthy() {
    for (int i = 0; i < 200; ++i) {
      int code;
      HttpGet("/healthz", &code);
      if (code == 200) return true;
      int status;
      if (waitpid(agent_, &status, WNOHANG) == agent_) {
        agent_ = -1;
        return false;
      }
      usleep(25000);
    }
    return false;
  }
  void StopAgent(int sig) {
    if (agent_ <= 0) return;
    kill(agent_, sig);
    waitpid(agent_, nullptr, 0);
    agent_ = -1;
  }

  std::unique_ptr<Lab> lab_;
  std::string file_, log_, binary_;
  pid_t agent_ = -1;
};

TEST_F(AgentTest, ProgramsServicesFromFileSkipsBadInputAndAddsTheServiceRoute) {
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  std::string got = TcpRequest("10.96.0.10", 80);
  EXPECT_TRUE(got == "10.0.0.11:8080" || got == "10.0.0.12:8080") << got;
  got = UdpRequest("10.96.0.10", 53, false);
  EXPECT_TRUE(got == "10.0.0.11:5353" || got == "10.0.0.12:5353") << got;
  // The service after the bad ones is programmed all the same.
  EXPECT_EQ(TcpRequest("10.96.0.13", 80), "10.0.0.12:8080");
  std::string log = ReadAll(log_);
  EXPECT_NE(log.find("invalid port"), std::string::npos) << log;
  EXPECT_NE(log.find("unsupported protocol"), std::string::npos) << log;
  // A service IP without a service hits the unreachable route: fails at once.
  int err = 0;
  auto t0 = std::chrono::steady_clock::now();
  TcpRequest("10.96.0.11", 80, nullptr, &err);
  EXPECT_TRUE(err == EHOSTUNREACH || err == ENETUNREACH) << strerror(err);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  int code;
  std::string metrics = HttpGet("/metrics", &code);
  EXPECT_EQ(code, 200);
  EXPECT_NE(metrics.find("skiff_service_connections_total{service_port=\"default/web:http/TCP\"} 1"),
            std::string::npos)
      << metrics;
  // No gRPC, protobuf or OpenSSL in skiff-proxy (the API source has a lean
  // client of its own).
  std::string maps = ReadAll("/proc/" + std::to_string(agent_) + "/maps");
  ASSERT_NE(maps.find("skiff-proxy"), std::string::npos) << maps;
  for (const char* lib : {"libgrpc", "libprotobuf", "libssl", "libcrypto"})
    EXPECT_EQ(maps.find(lib), std::string::npos) << lib << " is mapped:\n" << maps;
}

// --server with a kubeconfig that is not there fails at once, with the
// reason.
TEST_F(AgentTest, ServerModeWithAMissingKubeconfigFailsAtOnce) {
  std::string missing = "/tmp/skiff-ag-" + std::to_string(getpid()) + "-no-kubeconfig";
  unlink(missing.c_str());
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int logfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    dup2(logfd, 2);
    std::vector<std::string> args = {binary_, "--server", "127.0.0.1:1", "--kubeconfig", missing,
                                     "--metrics-bind-address", "off", "--healthz-bind-address", "off"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary_.c_str(), argv.data());
    _exit(121);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::string log = ReadAll(log_);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status << "\n" << log;
  EXPECT_NE(log.find("--kubeconfig: "), std::string::npos) << log;
}

// Runs a program in the node netns (a fork of this thread, which is in it)
// and returns its exit status; output goes to `log`.
int RunInLab(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char* kApiServices = R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [%s]
  conditions: {ready: true}
)";

// --server, the mode nodes run: skiff-proxy itself (no other program) takes
// Services and EndpointSlices from a real API server over TLS with the
// kubeconfig's client certificate, programs them, follows a change, never
// maps gRPC, protobuf or OpenSSL, and after kill -9 a new agent reconciles
// the pinned maps with what changed in the API meanwhile.
TEST_F(AgentTest, ServerModeProgramsServicesFromARealApiServerWithoutGrpcProtobufOrOpenSsl) {
  std::string bin_dir = binary_.substr(0, binary_.rfind('/'));
  std::string cp_bin = bin_dir + "/skiff-control-plane", ctl = bin_dir + "/skiffctl";
  ASSERT_EQ(access(cp_bin.c_str(), X_OK), 0) << cp_bin;
  ASSERT_EQ(access(ctl.c_str(), X_OK), 0) << ctl;
  std::string dir = "/tmp/skiff-ag-" + std::to_string(getpid()) + "-cp";
  std::string cp_log = dir + ".log", kubeconfig = dir + "/admin.conf", objects = dir + ".yaml";
  std::filesystem::remove_all(dir);
  // The control plane runs in the node netns (forked from this thread), on
  // its loopback.
  pid_t cp = fork();
  ASSERT_GE(cp, 0);
  if (cp == 0) {
    int fd = open(cp_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(cp_bin.c_str(), cp_bin.c_str(), "--data-dir", dir.c_str(), "--listen", "127.0.0.1:16443", "--health-listen",
          "127.0.0.1:16444", "--components", "apiserver", "--advertise-address", "127.0.0.1", nullptr);
    _exit(127);
  }
  struct Cleanup {
    pid_t cp;
    std::vector<std::string> paths;
    ~Cleanup() {
      kill(cp, SIGKILL);
      waitpid(cp, nullptr, 0);
      for (const auto& p : paths) std::filesystem::remove_all(p);
    }
  } cleanup{cp, {dir, cp_log, objects}};
  auto apply = [&](const char* address) {
    char buf[2048];
    snprintf(buf, sizeof(buf), kApiServices, address);
    std::ofstream(objects) << buf;
    return RunInLab({ctl, "--kubeconfig", kubeconfig, "apply", "-f", objects}, cp_log);
  };
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    up = access(kubeconfig.c_str(), R_OK) == 0 && apply("10.0.0.11") == 0;
    if (!up) usleep(100000);
  }
  ASSERT_TRUE(up) << ReadAll(cp_log);

  StartAgent({"--server", "127.0.0.1:16443", "--kubeconfig", kubeconfig});
  ASSERT_TRUE(WaitHealthy()) << ReadAll(log_);
  EXPECT_EQ(TcpRequest("10.96.0.10", 80), "10.0.0.11:8080");
  // The backend moves: the watch brings the change.
  ASSERT_EQ(apply("10.0.0.12"), 0) << ReadAll(cp_log);
  std::string got;
  for (int i = 0; i < 200 && got != "10.0.0.12:8080"; ++i) {
    got = TcpRequest("10.96.0.10", 80);
    if (got != "10.0.0.12:8080") usleep(25000);
  }
  EXPECT_EQ(got, "10.0.0.12:8080");
  std::string pid = std::to_string(agent_);
  std::error_code ec;
  EXPECT_EQ(std::filesystem::read_symlink("/proc/" + pid + "/exe", ec).filename(), "skiff-proxy");
  std::string maps = ReadAll("/proc/" + pid + "/maps");
  ASSERT_NE(maps.find("skiff-proxy"), std::string::npos) << maps;
  for (const char* lib : {"libgrpc", "libprotobuf", "libssl", "libcrypto"})
    EXPECT_EQ(maps.find(lib), std::string::npos) << lib << " is mapped:\n" << maps;
  EXPECT_NE(maps.find("libmbedtls"), std::string::npos) << maps;
  EXPECT_NE(ReadAll(log_).find("api source synced"), std::string::npos) << ReadAll(log_);
  // kill -9, a change while no agent runs, a new agent: it reconciles the
  // pinned maps against the API before it reports healthy.
  StopAgent(SIGKILL);
  EXPECT_EQ(TcpRequest("10.96.0.10", 80), "10.0.0.12:8080");  // the pinned datapath keeps serving
  ASSERT_EQ(apply("10.0.0.11"), 0) << ReadAll(cp_log);
  StartAgent({"--server", "127.0.0.1:16443", "--kubeconfig", kubeconfig});
  ASSERT_TRUE(WaitHealthy()) << ReadAll(log_);
  EXPECT_EQ(TcpRequest("10.96.0.10", 80), "10.0.0.11:8080");
}

TEST_F(AgentTest, ABadListenAddressFailsTheStartBeforeAnythingIsAttached) {
  StartAgent({"--metrics-bind-address", "127.0.0.1:notaport"});
  int status = 0;
  ASSERT_EQ(waitpid(agent_, &status, 0), agent_);
  agent_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(ReadAll(log_).find("listen address needs host:port"), std::string::npos) << ReadAll(log_);
  EXPECT_NE(access((lab_->bpffs() + "/skiff_lb4_services_" SKIFF_LB_PIN_VERSION).c_str(), F_OK), 0);
}

// systemd: READY=1 once the first programming pass is in the maps (a
// service answers by then), then WATCHDOG=1 pings at half WatchdogSec.
TEST_F(AgentTest, NotifiesSystemdReadyAfterTheFirstProgrammingPassAndPingsTheWatchdog) {
  std::string path = "/tmp/skiff-ag-" + std::to_string(getpid()) + "-notify";
  unlink(path.c_str());
  UniqueFd sock(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(bind(sock.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  timeval tv{0, 200000};
  setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  StartAgent({}, {"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=400000"});
  bool ready = false;
  int pings = 0;
  std::string served;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pings < 2 && std::chrono::steady_clock::now() < deadline) {
    char buf[256];
    ssize_t n = recv(sock.get(), buf, sizeof(buf) - 1, 0);
    if (n <= 0) continue;
    std::string msg(buf, n);
    if (msg.find("READY=1") != std::string::npos && !ready) {
      ready = true;
      served = TcpRequest("10.96.0.13", 80);
    }
    if (msg.find("WATCHDOG=1") != std::string::npos) {
      EXPECT_TRUE(ready) << "watchdog ping before READY=1";
      ++pings;
    }
  }
  unlink(path.c_str());
  EXPECT_TRUE(ready);
  EXPECT_EQ(served, "10.0.0.12:8080");
  EXPECT_GE(pings, 2);
}

// A dual-stack Service and its IPv6 EndpointSlice from --from-file: the agent
// programs the IPv6 ClusterIP, and a restarted agent (kill -9) keeps serving it.
const char* kDualStack = R"(
---
apiVersion: v1
kind: Service
metadata: {name: ds, namespace: default}
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20, "fd00:96::20"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ds-v6
  namespace: default
  labels: {kubernetes.io/service-name: ds}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: ["fd00:5::11"]
  nodeName: node-a
)";

// IPv6-primary dual-stack service with endpoints of both families: both
// VIPs are programmed, each to its own family's backend.
const char* kDualStackV6First = R"(
---
apiVersion: v1
kind: Service
metadata: {name: ds2, namespace: default}
spec:
  clusterIP: "fd00:96::21"
  clusterIPs: ["fd00:96::21", 10.96.0.21]
  ipFamilies: [IPv6, IPv4]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ds2-v6, namespace: default, labels: {kubernetes.io/service-name: ds2}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: ["fd00:5::11"], nodeName: node-a}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ds2-v4, namespace: default, labels: {kubernetes.io/service-name: ds2}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.0.0.12], nodeName: node-a}]
)";

TEST_F(AgentTest, DualStackServiceFromFileServesItsIpv6ClusterIpAcrossARestartAndRoutesTheIpv6Cidr) {
  std::ofstream(file_) << kServices << kDualStack << kDualStackV6First;
  const std::vector<std::string> cidrs = {"--service-cluster-ip-range", "10.96.0.0/12,fd00:96::/108"};
  StartAgent(cidrs);
  ASSERT_TRUE(WaitHealthy());
  // An IPv6 service IP without a service hits the IPv6 unreachable route
  // (EHOSTUNREACH; without the route it would be ENETUNREACH).
  int unreach = 0;
  TcpRequest("fd00:96::99", 80, nullptr, &unreach);
  EXPECT_EQ(unreach, EHOSTUNREACH) << strerror(unreach);
  std::string peer;
  EXPECT_EQ(TcpRequest("fd00:96::20", 80, &peer), "[fd00:5::11]:8080");
  EXPECT_EQ(peer, "[fd00:96::20]:80");
  // ipFamilies [IPv6, IPv4]: both VIPs, each to its family's endpoint.
  EXPECT_EQ(TcpRequest("fd00:96::21", 80, &peer), "[fd00:5::11]:8080");
  EXPECT_EQ(peer, "[fd00:96::21]:80");
  EXPECT_EQ(TcpRequest("10.96.0.21", 80, &peer), "10.0.0.12:8080");
  EXPECT_EQ(peer, "10.96.0.21:80");
  std::string from;
  EXPECT_EQ(UdpRequest("fd00:96::20", 53, false, &from), "[fd00:5::11]:5353");
  EXPECT_EQ(from, "[fd00:96::20]:53");
  // No IPv4 slice: the IPv4 ClusterIP of the same service refuses.
  int err = 0;
  TcpRequest("10.96.0.20", 80, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED);
  StopAgent(SIGKILL);
  // The pinned maps keep serving while no agent runs, and a new agent
  // recovers the IPv6 entries.
  EXPECT_EQ(TcpRequest("fd00:96::20", 80), "[fd00:5::11]:8080");
  StartAgent(cidrs);
  ASSERT_TRUE(WaitHealthy());
  EXPECT_EQ(TcpRequest("fd00:96::20", 80), "[fd00:5::11]:8080");
  std::string log = ReadAll(log_);
  EXPECT_NE(log.find("recovered pinned service maps"), std::string::npos) << log;
}

TEST_F(AgentTest, FileEditsApplyOnlyTheDifference) {
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  int code;
  auto writes = [&] {
    std::string m = HttpGet("/metrics", &code);
    auto p = m.find("\nskiff_proxy_map_writes_total ");
    return p == std::string::npos ? -1.0 : atof(m.c_str() + p + 30);
  };
  double before = writes();
  ASSERT_GT(before, 0);
  // Add 10.0.0.11 to service "after".
  std::string text = kServices;
  text.replace(text.rfind("- addresses: [10.0.0.12]"), std::string("- addresses: [10.0.0.12]").size(),
               "- addresses: [10.0.0.12]\n- addresses: [10.0.0.11]");
  std::ofstream(file_ + ".tmp") << text;
  ASSERT_EQ(rename((file_ + ".tmp").c_str(), file_.c_str()), 0);
  bool seen11 = false;
  for (int i = 0; i < 100 && !seen11; ++i) {
    seen11 = TcpRequest("10.96.0.13", 80) == "10.0.0.11:8080";
    usleep(20000);
  }
  EXPECT_TRUE(seen11);
  double after = writes();
  // One backend entry, one slot, one service entry.
  EXPECT_LE(after - before, 3) << before << " -> " << after;
}

TEST_F(AgentTest, KillNineAndRestartUnderTcpAndUdpTrafficLosesNothing) {
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  std::atomic<bool> stop{false};
  std::atomic<int> tcp_ok{0}, tcp_fail{0}, udp_ok{0}, udp_fail{0};
  std::string last_tcp_error, last_udp_error;
  auto tcp = std::thread([&] {
    if (!lab_->EnterNetnsThisThread()) return;
    while (!stop) {
      std::string got = TcpRequest("10.96.0.10", 80);
      if (got == "10.0.0.11:8080" || got == "10.0.0.12:8080") ++tcp_ok;
      else {
        ++tcp_fail;
        last_tcp_error = got;
      }
    }
  });
  auto udp = std::thread([&] {
    if (!lab_->EnterNetnsThisThread()) return;
    while (!stop) {
      std::string got = UdpRequest("10.96.0.10", 53, false);
      if (got == "10.0.0.11:5353" || got == "10.0.0.12:5353") ++udp_ok;
      else {
        ++udp_fail;
        last_udp_error = got;
      }
    }
  });
  std::string link = lab_->bpffs() + "/links/skiff_sock4_connect_v1";
  auto prog_id = [&] {
    int fd = bpf_obj_get(link.c_str());
    bpf_link_info info{};
    __u32 len = sizeof(info);
    int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
    close(fd);
    return rc == 0 ? info.prog_id : 0u;
  };
  __u32 first = prog_id();
  usleep(300000);
  StopAgent(SIGKILL);
  usleep(300000);  // traffic keeps flowing with no agent at all
  StartAgent();
  bool healthy = WaitHealthy();
  usleep(300000);
  stop = true;
  tcp.join();
  udp.join();
  ASSERT_TRUE(healthy);
  EXPECT_NE(prog_id(), first) << "the new agent should have replaced the program on the pinned link";
  EXPECT_NE(first, 0u);
  EXPECT_GT(tcp_ok.load(), 50);
  EXPECT_GT(udp_ok.load(), 50);
  EXPECT_EQ(tcp_fail.load(), 0) << last_tcp_error;
  EXPECT_EQ(udp_fail.load(), 0) << last_udp_error;
  std::string log = ReadAll(log_);
  EXPECT_NE(log.find("replaced program on pinned link"), std::string::npos);
  // Reconciled: the restarted agent found everything in place.
  EXPECT_NE(log.find("writes=0 deletes=0"), std::string::npos) << log;
}

TEST_F(AgentTest, RestartReconcilesChangesMadeWhileTheAgentWasDown) {
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  StopAgent(SIGKILL);
  // 10.0.0.12 leaves "web"; service "after" is deleted.
  std::string text = kServices;
  auto cut = [&](const std::string& what, const std::string& with) {
    auto p = text.find(what);
    ASSERT_NE(p, std::string::npos) << what;
    text.replace(p, what.size(), with);
  };
  cut("- addresses: [10.0.0.12]\n  conditions: {ready: true}\n  nodeName: node-b\n", "");
  cut("metadata: {name: after, namespace: default}", "metadata: {name: after, namespace: gone}");
  std::ofstream(file_) << text;
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(TcpRequest("10.96.0.10", 80), "10.0.0.11:8080");
  // "after" moved to namespace "gone" without endpoints: it now refuses.
  int err = 0;
  TcpRequest("10.96.0.13", 80, nullptr, &err);
  EXPECT_EQ(err, ECONNREFUSED);
}

const char* kHealthCheck = R"(
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.40
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  ports: [{name: http, port: 80, nodePort: 30090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lb-1, namespace: default, labels: {kubernetes.io/service-name: lb}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.11]
  nodeName: NODE
)";

TEST_F(AgentTest, HealthCheckNodePortAnswersWhetherThisNodeHasALocalEndpoint) {
  std::string text = kHealthCheck;
  text.replace(text.find("NODE"), 4, "node-a");
  std::ofstream(file_) << text;
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  int code = 0;
  std::string body;
  for (int i = 0; i < 50 && code != 200; ++i, usleep(20000)) body = HttpGet("/", &code, 32000);
  EXPECT_EQ(code, 200);
  EXPECT_NE(body.find("\"localEndpoints\":1"), std::string::npos) << body;
  text.replace(text.find("node-a"), 6, "node-b");
  std::ofstream(file_ + ".tmp") << text;
  ASSERT_EQ(rename((file_ + ".tmp").c_str(), file_.c_str()), 0);
  for (int i = 0; i < 100 && code != 503; ++i, usleep(20000)) body = HttpGet("/", &code, 32000);
  EXPECT_EQ(code, 503);
  EXPECT_NE(body.find("\"localEndpoints\":0"), std::string::npos) << body;
}

// kube-proxy's agent healthz on :10256, apart from the per-service health
// check node ports: 200 with lastUpdated/currentTime while programming keeps
// up, 503 once a change has waited longer than --healthz-timeout (here the
// services map is frozen, so every programming pass fails).
TEST_F(AgentTest, AgentHealthzOn10256TurnsUnhealthyWhenAChangeIsNotProgrammedInTime) {
  StartAgent({"--healthz-timeout", "1"});
  ASSERT_TRUE(WaitHealthy());
  int code = 0;
  std::string body;
  for (int i = 0; i < 100 && code != 200; ++i, usleep(20000)) body = HttpGet("/healthz", &code, 10256);
  ASSERT_EQ(code, 200) << body;
  EXPECT_EQ(body.find("{\"lastUpdated\": \""), 0u) << body;
  EXPECT_NE(body.find("\",\"currentTime\": \""), std::string::npos) << body;
  EXPECT_NE(body.find("\"nodeEligible\": true}"), std::string::npos) << body;
  body = HttpGet("/livez", &code, 10256);
  EXPECT_EQ(code, 200) << body;
  EXPECT_EQ(body.find("nodeEligible"), std::string::npos) << body;
  HttpGet("/metrics", &code, 10256);
  EXPECT_EQ(code, 404);
  // The default address is every IPv4 address of the node, not only loopback.
  UniqueFd probe(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(10256);
  inet_pton(AF_INET, "10.0.0.1", &any.sin_addr);  // the node's lab address
  EXPECT_EQ(connect(probe.get(), reinterpret_cast<sockaddr*>(&any), sizeof(any)), 0) << strerror(errno);

  UniqueFd services(bpf_obj_get((lab_->bpffs() + "/skiff_lb4_services_" SKIFF_LB_PIN_VERSION).c_str()));
  ASSERT_TRUE(services) << strerror(errno);
  ASSERT_EQ(bpf_map_freeze(services.get()), 0) << strerror(errno);
  std::string text = std::string(kServices) + R"(
---
apiVersion: v1
kind: Service
metadata: {name: late, namespace: default}
spec:
  clusterIP: 10.96.0.14
  ports: [{name: http, port: 80}]
)";
  std::ofstream(file_ + ".tmp") << text;
  ASSERT_EQ(rename((file_ + ".tmp").c_str(), file_.c_str()), 0);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 250 && code != 503; ++i, usleep(20000)) body = HttpGet("/healthz", &code, 10256);
  EXPECT_EQ(code, 503) << body;
  // Not before the timeout (plus the file poll of 0.5 s at most).
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
  // lastUpdated is the last successful pass, before now.
  auto field = [&](const std::string& name) {
    auto p = body.find("\"" + name + "\": \"");
    return p == std::string::npos ? std::string() : body.substr(p + name.size() + 5, 19);
  };
  EXPECT_FALSE(field("lastUpdated").empty()) << body;
  EXPECT_LT(field("lastUpdated"), field("currentTime")) << body;
  HttpGet("/livez", &code, 10256);
  EXPECT_EQ(code, 503);
  EXPECT_NE(ReadAll(log_).find("programming failed"), std::string::npos);
}

const char* kNodePort = R"(
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP, nodePort: 30053}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: np-1, namespace: default, labels: {kubernetes.io/service-name: np}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.0.0.11]
  nodeName: node-b
)";

TEST_F(AgentTest, NodePortFromOutsideTheNodeReachesARemoteBackendAndRepliesAreTranslated) {
  ASSERT_TRUE(lab_->AddOutside()) << lab_->error();
  std::ofstream(file_) << kNodePort;
  StartAgent({"--node-ip", "192.168.50.1", "--tc-interfaces",
              lab_->node_external_if() + "," + lab_->node_internal_if()});
  ASSERT_TRUE(WaitHealthy());
  std::string tcp, udp, peer, from;
  // The outside host is not in the node's cgroup: its packets meet tc, not
  // the socket LB.
  lab_->Leave();
  std::thread outside([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    tcp = TcpRequest("192.168.50.1", 30080, &peer);
    udp = UdpRequest("192.168.50.1", 30053, false, &from);
  });
  outside.join();
  ASSERT_TRUE(lab_->Enter());
  EXPECT_EQ(tcp, "10.0.0.11:8080");
  EXPECT_EQ(peer, "192.168.50.1:30080");
  EXPECT_EQ(udp, "10.0.0.11:5353");
  EXPECT_EQ(from, "192.168.50.1:30053");
  int code;
  std::string metrics = HttpGet("/metrics", &code);
  EXPECT_NE(metrics.find("skiff_service_connections_total{service_port=\"default/np:http/TCP\"} 1"),
            std::string::npos)
      << metrics;

  // --cleanup detaches the tc programs and removes the pins.
  StopAgent(SIGTERM);
  std::string ifs = lab_->node_external_if() + "," + lab_->node_internal_if();
  std::string ns = "nsenter --net=" + lab_->node_netns_path() + " ";
  ASSERT_EQ(system((ns + binary_ + " --cleanup --bpffs-dir " + lab_->bpffs() + " --tc-interfaces " + ifs).c_str()), 0);
  std::string out_file = log_ + ".tc";
  ASSERT_EQ(system((ns + "tc filter show dev " + lab_->node_external_if() + " ingress > " + out_file).c_str()), 0);
  EXPECT_EQ(ReadAll(out_file), "");
  unlink(out_file.c_str());
  EXPECT_NE(access((lab_->bpffs() + "/skiff_lb4_services_v1").c_str(), F_OK), 0);
}

// IPv6 from outside the node: an IPv6-only NodePort Service whose endpoint
// runs on another node. tc on the node's interfaces DNATs to the backend,
// SNATs to the node's IPv6 --node-ip and translates the replies back.
const char* kNodePort6 = R"(
apiVersion: v1
kind: Service
metadata: {name: np6, namespace: default}
spec:
  type: NodePort
  clusterIPs: ["fd00:96::30"]
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP, nodePort: 30053}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: np6-1, namespace: default, labels: {kubernetes.io/service-name: np6}}
addressType: IPv6
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: ["fd00:5::11"]
  nodeName: node-b
)";

TEST_F(AgentTest, Ipv6NodePortFromOutsideTheNodeReachesARemoteBackendAndRepliesAreTranslated) {
  ASSERT_TRUE(lab_->AddOutside()) << lab_->error();
  ASSERT_TRUE(lab_->AddPod6()) << lab_->error();
  std::ofstream(file_) << kNodePort6;
  StartAgent({"--node-ip", "192.168.50.1,fd00:50::1", "--tc-interfaces",
              lab_->node_external_if() + "," + lab_->node_internal_if()});
  ASSERT_TRUE(WaitHealthy());
  std::vector<std::string> tcp, peers;
  std::string udp, from;
  lab_->Leave();
  std::thread outside([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    for (int i = 0; i < 3; ++i) {
      std::string peer;
      tcp.push_back(TcpRequest("fd00:50::1", 30080, &peer));
      peers.push_back(peer);
    }
    udp = UdpRequest("fd00:50::1", 30053, false, &from);
  });
  outside.join();
  ASSERT_TRUE(lab_->Enter());
  ASSERT_EQ(tcp.size(), 3u);
  for (size_t i = 0; i < tcp.size(); ++i) {
    EXPECT_EQ(tcp[i], "[fd00:5::11]:8080");
    EXPECT_EQ(peers[i], "[fd00:50::1]:30080");
  }
  EXPECT_EQ(udp, "[fd00:5::11]:5353");
  EXPECT_EQ(from, "[fd00:50::1]:30053");
  int code;
  std::string metrics = HttpGet("/metrics", &code);
  EXPECT_NE(metrics.find("skiff_service_connections_total{service_port=\"default/np6:http/TCP\"} 3"),
            std::string::npos)
      << metrics;
}

const char* kNodePortLocal = R"(
apiVersion: v1
kind: Service
metadata: {name: npl, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.31
  externalTrafficPolicy: Local
  ports: [{name: peer, port: 70, nodePort: 30070}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: npl-1, namespace: default, labels: {kubernetes.io/service-name: npl}}
addressType: IPv4
ports: [{name: peer, port: 7070}]
endpoints:
- addresses: [10.0.0.12]
  nodeName: node-a
- addresses: [10.0.0.11]
  nodeName: node-b
---
apiVersion: v1
kind: Service
metadata: {name: npc, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.32
  ports: [{name: peer, port: 70, nodePort: 30071}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: npc-1, namespace: default, labels: {kubernetes.io/service-name: npc}}
addressType: IPv4
ports: [{name: peer, port: 7070}]
endpoints:
- addresses: [10.0.0.11]
  nodeName: node-b
)";

TEST_F(AgentTest, NodePortToALocalBackendWithExternalTrafficPolicyLocalKeepsTheClientAddress) {
  ASSERT_TRUE(lab_->AddOutside()) << lab_->error();
  std::ofstream(file_) << kNodePortLocal;
  StartAgent({"--node-ip", "192.168.50.1", "--tc-interfaces",
              lab_->node_external_if() + "," + lab_->node_internal_if()});
  ASSERT_TRUE(WaitHealthy());
  std::vector<std::string> local, remote;
  std::vector<std::string> local_peer;
  lab_->Leave();
  std::thread outside([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    for (int i = 0; i < 8; ++i) {
      std::string peer;
      local.push_back(TcpRequest("192.168.50.1", 30070, &peer));
      local_peer.push_back(peer);
      remote.push_back(TcpRequest("192.168.50.1", 30071));
    }
  });
  outside.join();
  ASSERT_TRUE(lab_->Enter());
  ASSERT_EQ(local.size(), 8u);
  for (size_t i = 0; i < local.size(); ++i) {
    // Only the local endpoint serves (eTP Local), it sees the outside
    // client's own address (no SNAT), and the reply is translated back.
    EXPECT_EQ(local[i].substr(0, local[i].find(':')), "192.168.50.2") << local[i];
    EXPECT_EQ(local_peer[i], "192.168.50.1:30070");
    // eTP Cluster with a remote backend: SNAT to the node address.
    EXPECT_EQ(remote[i].substr(0, remote[i].find(':')), "192.168.50.1") << remote[i];
  }
}

// IPv6 externalTrafficPolicy Local from outside: a NodePort and an external
// IP with a local endpoint; the backend sees the outside client's own
// address and the replies leave with the frontend as their source.
const char* kNodePortLocal6 = R"(
apiVersion: v1
kind: Service
metadata: {name: npl6, namespace: default}
spec:
  type: NodePort
  clusterIPs: ["fd00:96::31"]
  ipFamilies: [IPv6]
  externalIPs: ["2001:db8:10::11"]
  externalTrafficPolicy: Local
  ports: [{name: peer, port: 70, nodePort: 30070}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: npl6-1, namespace: default, labels: {kubernetes.io/service-name: npl6}}
addressType: IPv6
ports: [{name: peer, port: 7070}]
endpoints:
- addresses: ["fd00:5::11"]
  nodeName: node-a
)";

TEST_F(AgentTest, Ipv6ExternalIpAndNodePortWithExternalTrafficPolicyLocalKeepTheClientAddress) {
  ASSERT_TRUE(lab_->AddOutside()) << lab_->error();
  ASSERT_TRUE(lab_->AddPod6()) << lab_->error();
  std::ofstream(file_) << kNodePortLocal6;
  StartAgent({"--node-ip", "192.168.50.1,fd00:50::1", "--tc-interfaces",
              lab_->node_external_if() + "," + lab_->node_internal_if()});
  ASSERT_TRUE(WaitHealthy());
  std::string via_np, np_peer, via_ext, ext_peer;
  lab_->Leave();
  std::thread outside([&] {
    if (!lab_->EnterOutsideThisThread()) return;
    via_np = TcpRequest("fd00:50::1", 30070, &np_peer);
    via_ext = TcpRequest("2001:db8:10::11", 70, &ext_peer);
  });
  outside.join();
  ASSERT_TRUE(lab_->Enter());
  EXPECT_EQ(via_np.substr(0, via_np.rfind(':')), "[fd00:50::2]") << via_np;
  EXPECT_EQ(np_peer, "[fd00:50::1]:30070");
  EXPECT_EQ(via_ext.substr(0, via_ext.rfind(':')), "[fd00:50::2]") << via_ext;
  EXPECT_EQ(ext_peer, "[2001:db8:10::11]:70");
}

TEST_F(AgentTest, StartsOverAnOlderLayoutTakesOverTheHooksAndLosesNothing) {
  // An agent generation with layout "v0" left its pins and links behind.
  {
    DatapathOptions old_opts;
    old_opts.bpffs_dir = lab_->bpffs();
    old_opts.pin_version = "v0";
    auto old_dp = Datapath::Open(old_opts);
    ASSERT_TRUE(old_dp.ok()) << old_dp.status();
    ASSERT_TRUE((*old_dp)->AttachSocketLb(lab_->cgroup()).ok());
    auto state = ParseClusterStateYaml(kServices);
    ASSERT_TRUE(state.ok());
    DesiredBuilder b(NodeConfig{"node-a", {}});
    ServiceMap old_map((*old_dp)->maps());
    ASSERT_TRUE(old_map.ApplyDelta(b.Update(*state)).ok());
  }
  testing::ConnectLoop loop(*lab_, "10.96.0.10", 80);
  auto old_pins = [&] {
    int n = 0;
    for (const std::string& dir : {lab_->bpffs(), lab_->bpffs() + "/links"}) {
      DIR* d = opendir(dir.c_str());
      if (!d) continue;
      while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        n += name.size() > 3 && name.compare(name.size() - 3, 3, "_v0") == 0;
      }
      closedir(d);
    }
    return n;
  };
  EXPECT_GT(old_pins(), 0);
  StartAgent();
  ASSERT_TRUE(WaitHealthy());
  for (int i = 0; i < 200 && old_pins() > 0; ++i) usleep(20000);
  loop.WaitForProgress(20);
  loop.Stop();
  EXPECT_EQ(old_pins(), 0);
  EXPECT_GT(loop.ok(), 20);
  EXPECT_EQ(loop.failed(), 0) << loop.last_error();
  EXPECT_NE(ReadAll(log_).find("migration done"), std::string::npos);
  UniqueFd cg(open(lab_->cgroup().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  __u32 ids[4] = {}, count = 4;
  ASSERT_EQ(bpf_prog_query(cg.get(), BPF_CGROUP_INET4_CONNECT, 0, nullptr, ids, &count), 0);
  EXPECT_EQ(count, 1u);
}

}  // namespace
}  // namespace skiff::proxy
