// skiff-kubelet's engine end to end against the in-memory API (FakeClient):
// real containers (skiff-monitor + skiff::runtime), a real pod network, real
// cgroups under a subtree the test owns. The whole test process first moves
// into its own network and mount namespaces, so nothing reaches the machine's.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "skiff/common/unique_fd.h"
#include "skiff/controllers/objects.h"
#include "skiff/fakeclient/fake_client.h"
#include "skiff/kubelet/container_record.h"
#include "skiff/kubelet/kubelet.h"
#include "skiff/kubelet/resources.h"
#include "skiff/kubelet/server.h"
#include "skiff/kubelet/stats.h"
#include "skiff/runtime/cgroup.h"

namespace skiff::kubelet {
namespace {
namespace fs = std::filesystem;
using api::v1::Pod;

bool g_isolated = false;
std::string g_base, g_cgroup_rel, g_cgroup_abs;

void BuildBusyboxRootfs(const std::string& dir) {
  fs::create_directories(dir + "/bin");
  for (const char* d : {"proc", "dev", "sys", "tmp", "etc", "data", "config", "secret", "work"}) fs::create_directories(dir + "/" + d);
  fs::copy_file("/bin/busybox", dir + "/bin/busybox", fs::copy_options::overwrite_existing);
  FILE* p = popen("/bin/busybox --list", "r");
  char name[128];
  while (p && fgets(name, sizeof(name), p)) {
    std::string n(name);
    while (!n.empty() && (n.back() == '\n')) n.pop_back();
    if (n.empty() || n == "busybox") continue;
    std::error_code ec;
    fs::create_symlink("busybox", dir + "/bin/" + n, ec);
  }
  if (p) pclose(p);
}

class KubeletTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) return;
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) return;
    // Stale leftovers of crashed runs (their mounts died with their namespaces).
    for (auto& e : fs::directory_iterator(fs::temp_directory_path())) {
      std::string n = e.path().filename();
      if (n.rfind("skiff-kubelet-test-", 0) != 0) continue;
      int pid = atoi(n.c_str() + strlen("skiff-kubelet-test-"));
      if (pid > 0 && kill(pid, 0) != 0) fs::remove_all(e.path());
    }
    auto cg = runtime::FindCgroup2Mount();
    if (!cg.ok()) return;
    for (auto& e : fs::directory_iterator(*cg)) {
      std::string n = e.path().filename();
      if (n.rfind("skiff-kubelet-test-", 0) != 0) continue;
      int pid = atoi(n.c_str() + strlen("skiff-kubelet-test-"));
      if (pid > 0 && kill(pid, 0) != 0) RemoveCgroupTree(e.path());
    }
    g_base = fs::temp_directory_path() / ("skiff-kubelet-test-" + std::to_string(getpid()));
    fs::remove_all(g_base);
    BuildBusyboxRootfs(g_base + "/images/busybox");
    g_cgroup_rel = "skiff-kubelet-test-" + std::to_string(getpid());
    g_cgroup_abs = *cg + "/" + g_cgroup_rel;
    // A node address, so the node has an InternalIP and a pod can reach it.
    // (loopback stays down: the node address used is 127.0.0.1 only for status)
    g_isolated = true;
  }
  static void TearDownTestSuite() {
    if (!g_base.empty()) fs::remove_all(g_base);
    if (!g_cgroup_abs.empty()) RemoveCgroupTree(g_cgroup_abs);
  }
  static void RemoveCgroupTree(const fs::path& p) {
    std::error_code ec;
    std::vector<fs::path> dirs;
    for (auto it = fs::recursive_directory_iterator(p, ec); it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory()) dirs.push_back(it->path());
    }
    std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) { return a.string().size() > b.string().size(); });
    for (auto& d : dirs) {
      std::ifstream procs(d / "cgroup.procs");
      int pid;
      while (procs >> pid) kill(pid, SIGKILL);
      rmdir(d.c_str());
    }
    rmdir(p.c_str());
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_TRUE(g_isolated) << "could not isolate the test (netns/mountns/cgroup2/rootfs)";
    const char* bd = getenv("SKIFF_BUILD_DIR");
    ASSERT_TRUE(bd) << "SKIFF_BUILD_DIR not set";
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = g_base + "/" + name;
    cfg_.node_name = "node-a";
    cfg_.root_dir = dir_ + "/root";
    cfg_.run_dir = dir_ + "/run";
    cfg_.log_dir = dir_ + "/log";
    cfg_.cgroup_root = g_cgroup_rel + "/" + name + "/kubepods";
    cfg_.pod_cidr = "10.244.1.0/24";
    cfg_.node_ip = "127.0.0.1";
    cfg_.rootfs_dir = g_base + "/images";
    cfg_.monitor_path = std::string(bd) + "/bin/skiff-monitor";
    cfg_.listen = "";
    cfg_.healthz_listen = "";
    cfg_.manifest_dir = dir_ + "/manifests";
    cfg_.manifest_poll_seconds = 1;
    cfg_.eviction_interval_seconds = 1;
    cfg_.eviction_memory_available_bytes = 0;  // tests raise thresholds on purpose only
    cfg_.eviction_nodefs_available_fraction = 0;
    api_ = std::make_shared<fakeclient::FakeClient>();
    for (const char* ns : {"default", "kube-node-lease"}) {
      api::v1::Namespace n;
      n.mutable_metadata()->set_name(ns);
      ASSERT_TRUE(api_->Create("namespaces", "", objects::Wrap(n)).ok());
    }
  }
  void TearDown() override {
    if (kubelet_) {
      // Delete every pod and let the kubelet clean up, then check nothing is left.
      auto pods = api_->List("pods", "");
      if (pods.ok()) {
        for (const auto& o : pods->items()) {
          client::DeleteOptions d;
          d.grace_period_seconds = 0;
          api_->Delete("pods", o.pod().metadata().namespace_(), o.pod().metadata().name(), d).IgnoreError();
        }
      }
      WaitFor([&] { return Empty(cfg_.run_dir + "/pods") && Empty(cfg_.run_dir + "/netns"); }, 20000);
      kubelet_->Stop();
      EXPECT_TRUE(Empty(cfg_.run_dir + "/pods")) << "pod state left behind";
      EXPECT_TRUE(Empty(cfg_.run_dir + "/netns")) << "netns left behind";
      kubelet_.reset();
    }
  }
  static bool Empty(const std::string& d) {
    std::error_code ec;
    return !fs::exists(d, ec) || fs::is_empty(d, ec);
  }
  void StartKubelet() {
    kubelet_ = std::make_unique<Kubelet>(cfg_, api_);
    absl::Status st = kubelet_->Start();
    ASSERT_TRUE(st.ok()) << st;
  }
  static bool WaitFor(const std::function<bool()>& f, int ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      if (f()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return f();
  }
  Pod MakePod(const std::string& name, std::vector<std::string> cmd) {
    Pod p;
    p.set_api_version("v1");
    p.set_kind("Pod");
    p.mutable_metadata()->set_name(name);
    p.mutable_metadata()->set_namespace_("default");
    p.mutable_spec()->set_node_name("node-a");
    p.mutable_spec()->set_termination_grace_period_seconds(5);
    auto* c = p.mutable_spec()->add_containers();
    c->set_name("main");
    c->set_image("local/busybox");
    for (auto& a : cmd) c->add_command(a);
    return p;
  }
  Pod Create(const Pod& p) {
    auto r = api_->Create("pods", "default", objects::Wrap(p));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->pod() : p;
  }
  std::optional<Pod> Get(const std::string& name) {
    auto r = api_->Get("pods", "default", name);
    if (!r.ok()) return std::nullopt;
    return r->pod();
  }
  bool WaitPhase(const std::string& name, const std::string& phase, int ms = 15000) {
    return WaitFor([&] { auto p = Get(name); return p && p->status().phase() == phase; }, ms);
  }
  std::string Logs(const std::string& name, const std::string& container = "main", bool previous = false) {
    auto loc = kubelet_->Locate("default", name, container);
    if (!loc.ok()) return "";
    std::string out;
    LogOptions o;
    StreamLog(previous ? loc->previous_log_path : loc->log_path, o, [&](const std::string& s) { out += s; return true; },
              [] { return false; }, [] { return false; })
        .IgnoreError();
    return out;
  }
  std::vector<std::string> EventReasons(const std::string& pod) {
    std::vector<std::string> out;
    auto evs = api_->List("events", "default");
    if (!evs.ok()) return out;
    for (const auto& o : evs->items()) {
      if (o.event().involved_object().name() == pod) out.push_back(o.event().reason() + ": " + o.event().message());
    }
    return out;
  }
  // The newest record the monitor of pod/container wrote.
  std::optional<ContainerRecord> Record(const std::string& name, const std::string& container = "main") {
    auto p = Get(name);
    auto loc = kubelet_->Locate("default", name, container);
    if (!p || !loc.ok()) return std::nullopt;
    std::string attempt = loc->container_id.substr(loc->container_id.rfind('-') + 1);
    auto r = ReadRecordFile(cfg_.run_dir + "/pods/" + p->metadata().uid() + "/" + container + "/" + attempt + ".state");
    if (!r.ok()) return std::nullopt;
    return *r;
  }
  static std::string ProcField(pid_t pid, const std::string& file, const std::string& key = "") {
    std::ifstream f("/proc/" + std::to_string(pid) + "/" + file);
    std::string line;
    while (std::getline(f, line)) {
      if (key.empty()) return line;
      if (line.rfind(key + ":", 0) == 0) {
        std::string v = line.substr(key.size() + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
    return "";
  }
  static std::string HttpGet(const std::string& ip, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    std::string out;
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      std::string req = "GET /index.html HTTP/1.0\r\n\r\n";
      if (write(fd, req.data(), req.size()) > 0) {
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
      }
    }
    close(fd);
    return out;
  }

  std::string dir_;
  Config cfg_;
  std::shared_ptr<fakeclient::FakeClient> api_;
  std::unique_ptr<Kubelet> kubelet_;
};

TEST_F(KubeletTest, RegistersTheNodeAndRenewsItsLease) {
  StartKubelet();
  auto n = api_->Get("nodes", "", "node-a");
  ASSERT_TRUE(n.ok()) << n.status();
  const auto& st = n->node().status();
  EXPECT_EQ(st.capacity().at("pods"), "110");
  EXPECT_TRUE(st.capacity().count("cpu") && st.capacity().count("memory") && st.capacity().count("ephemeral-storage"));
  EXPECT_TRUE(st.allocatable().count("memory"));
  EXPECT_EQ(n->node().spec().pod_cidr(), "10.244.1.0/24");
  bool ready = false;
  for (const auto& c : st.conditions()) ready |= c.type() == "Ready" && c.status() == "True";
  EXPECT_TRUE(ready);
  ASSERT_GE(st.addresses_size(), 1);
  EXPECT_EQ(st.addresses(0).type(), "InternalIP");
  EXPECT_FALSE(st.node_info().kernel_version().empty());
  ASSERT_TRUE(WaitFor([&] { return api_->Get("leases", "kube-node-lease", "node-a").ok(); }, 3000));
  auto lease = api_->Get("leases", "kube-node-lease", "node-a");
  EXPECT_EQ(lease->lease().spec().holder_identity(), "node-a");
  EXPECT_FALSE(lease->lease().spec().renew_time().empty());
}

TEST_F(KubeletTest, RunsAPodReachableByItsIpWithLogsAndExec) {
  StartKubelet();
  Pod p = MakePod("web", {"sh", "-c",
                          "echo hello-from-web; echo to-stderr >&2; mkdir -p /tmp/www; echo served > /tmp/www/index.html; "
                          "exec httpd -f -p 8080 -h /tmp/www"});
  Create(p);
  ASSERT_TRUE(WaitPhase("web", "Running")) << Get("web")->DebugString();
  auto got = *Get("web");
  ASSERT_FALSE(got.status().pod_ip().empty());
  EXPECT_EQ(got.status().host_ip(), "127.0.0.1");
  EXPECT_EQ(got.status().qos_class(), "BestEffort");
  ASSERT_TRUE(WaitFor([&] { return Get("web")->status().container_statuses(0).ready(); }, 5000));
  std::string body;
  ASSERT_TRUE(WaitFor([&] { body = HttpGet(got.status().pod_ip(), 8080); return body.find("served") != std::string::npos; }, 5000))
      << body << "\nlogs: " << Logs("web") << "\nstatus: " << Get("web")->status().DebugString();
  ASSERT_TRUE(WaitFor([&] { return Logs("web").find("hello-from-web\n") != std::string::npos; }, 3000)) << Logs("web");
  EXPECT_NE(Logs("web").find("to-stderr\n"), std::string::npos);
  // Log files are in the CRI format under <log-dir>/<ns>_<pod>_<uid>/<container>/0.log.
  std::string log_path = cfg_.log_dir + "/default_web_" + got.metadata().uid() + "/main/0.log";
  std::ifstream lf(log_path);
  std::string first;
  std::getline(lf, first);
  EXPECT_NE(first.find(" stdout F hello-from-web"), std::string::npos) << first;
  auto loc = kubelet_->Locate("default", "web", "main");
  ASSERT_TRUE(loc.ok());
  auto ex = kubelet_->engine().ExecSync(loc->container_id, {"cat", "/tmp/www/index.html"}, {}, 5000);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->exit_code, 0);
  EXPECT_EQ(ex->output, "served\n");
}

TEST_F(KubeletTest, ContainersGetTheOomScoreAdjOfTheirQosClass) {
  StartKubelet();
  Pod guaranteed = MakePod("oom-guaranteed", {"sh", "-c", "while true; do sleep 0.1; done"});
  auto& gl = *guaranteed.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_limits();
  gl["cpu"] = "100m";
  gl["memory"] = "64Mi";
  Pod burstable = MakePod("oom-burstable", {"sh", "-c", "while true; do sleep 0.1; done"});
  (*burstable.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_requests())["memory"] = "256Mi";
  Pod besteffort = MakePod("oom-besteffort", {"sh", "-c", "while true; do sleep 0.1; done"});
  for (const Pod* p : {&guaranteed, &burstable, &besteffort}) Create(*p);
  for (const char* n : {"oom-guaranteed", "oom-burstable", "oom-besteffort"}) {
    ASSERT_TRUE(WaitPhase(n, "Running")) << Get(n)->DebugString();
  }
  auto node = api_->Get("nodes", "", "node-a");
  ASSERT_TRUE(node.ok());
  auto capacity = objects::ParseValue(node->node().status().capacity().at("memory"));
  ASSERT_TRUE(capacity.ok());
  int want_burstable = OomScoreAdj(QosClass::kBurstable, burstable.spec().containers(0), *capacity);
  ASSERT_GT(want_burstable, 2);
  ASSERT_LT(want_burstable, 999);
  auto adj = [&](const std::string& pod) {
    auto r = Record(pod);
    return r ? ProcField(r->pid, "oom_score_adj") : "no record";
  };
  // Without CAP_SYS_RESOURCE (some build hosts) nothing can go below our own value.
  int floor = -1000;
  if (ProcField(getpid(), "status", "CapEff").empty() ||
      !(std::stoull(ProcField(getpid(), "status", "CapEff"), nullptr, 16) & (1ull << 24))) {
    floor = std::stoi(ProcField(getpid(), "oom_score_adj"));
  }
  EXPECT_EQ(adj("oom-guaranteed"), std::to_string(std::max(-997, floor)));
  EXPECT_EQ(adj("oom-burstable"), std::to_string(want_burstable));
  EXPECT_EQ(adj("oom-besteffort"), "1000");
  // Seen from inside the container too (its pid 1).
  auto r = Record("oom-besteffort");
  ASSERT_TRUE(r.has_value());
  auto ex = kubelet_->engine().ExecSync(r->id, {"cat", "/proc/1/oom_score_adj"}, {}, 5000);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->output, "1000\n");
}

TEST_F(KubeletTest, EachContainerMonitorStaysUnderOneMegabyteResident) {
  StartKubelet();
  Create(MakePod("chatty", {"sh", "-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.05; done"}));
  ASSERT_TRUE(WaitPhase("chatty", "Running"));
  ASSERT_TRUE(WaitFor([&] { return Logs("chatty").find("line-20\n") != std::string::npos; }, 10000)) << Logs("chatty");
  auto r = Record("chatty");
  ASSERT_TRUE(r.has_value());
  // The long-lived stage is the static pump, in the monitor's own process.
  EXPECT_EQ(ProcField(r->monitor_pid, "comm"), "skiff-monitor-p");
  std::string rss = ProcField(r->monitor_pid, "status", "VmRSS");
  ASSERT_FALSE(rss.empty());
  EXPECT_LE(std::stol(rss), 1024) << "monitor VmRSS " << rss;
  // The container is still the monitor's child: its exit is recorded with the code.
  ASSERT_EQ(ProcField(r->pid, "status", "PPid"), std::to_string(r->monitor_pid));
  ASSERT_TRUE(kubelet_->engine().Kill(r->id, SIGKILL, false).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto g = Get("chatty");
    return g && g->status().container_statuses(0).restart_count() >= 1;
  }, 15000)) << Get("chatty")->DebugString();
  EXPECT_EQ(Get("chatty")->status().container_statuses(0).last_state().terminated().exit_code(), 137);
  EXPECT_NE(Logs("chatty", "main", /*previous=*/true).find("line-20\n"), std::string::npos);
}

TEST_F(KubeletTest, ExecWithATerminalGetsAPtyInTheContainerAndResizes) {
  StartKubelet();
  Create(MakePod("tty", {"sh", "-c", "while true; do sleep 0.1; done"}));
  ASSERT_TRUE(WaitPhase("tty", "Running"));
  auto loc = kubelet_->Locate("default", "tty", "main");
  ASSERT_TRUE(loc.ok());
  int master = -1;
  auto pid = kubelet_->engine().ExecStartTty(loc->container_id, {"sh"}, {}, &master);
  ASSERT_TRUE(pid.ok()) << pid.status();
  UniqueFd term(master);
  winsize ws{};
  ws.ws_row = 33;
  ws.ws_col = 111;
  ASSERT_EQ(ioctl(term.get(), TIOCSWINSZ, &ws), 0);
  std::string cmd = "tty; stty size; test -t 0 && echo stdin-is-a-tty-$((40+2)); exit 5\n";
  ASSERT_EQ(write(term.get(), cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{term.get(), POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) break;
    ssize_t n = read(term.get(), buf, sizeof(buf));
    if (n <= 0) break;  // EIO: the last slave fd closed
    out.append(buf, n);
  }
  auto code = ContainerEngine::WaitExec(*pid);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 5);
  // The pty is the container's own (its devpts instance), in the right size.
  EXPECT_NE(out.find("/dev/pts/0"), std::string::npos) << out;
  EXPECT_NE(out.find("33 111"), std::string::npos) << out;
  EXPECT_NE(out.find("stdin-is-a-tty-42"), std::string::npos) << out;  // not the echo of the input
}

TEST_F(KubeletTest, GracefulDeletionDeliversSigtermThenRemovesThePod) {
  StartKubelet();
  Pod p = MakePod("graceful", {"sh", "-c", "trap 'echo got-sigterm; exit 0' TERM; echo up; while true; do sleep 0.1; done"});
  Create(p);
  ASSERT_TRUE(WaitPhase("graceful", "Running"));
  ASSERT_TRUE(WaitFor([&] { return Logs("graceful").find("up") != std::string::npos; }, 3000));
  std::string uid = Get("graceful")->metadata().uid();
  std::string log_dir = cfg_.log_dir + "/default_graceful_" + uid + "/main";
  // Read the log from a copy taken while the kubelet terminates the pod.
  std::string seen;
  std::thread watcher([&] {
    for (int i = 0; i < 200 && seen.find("got-sigterm") == std::string::npos; ++i) {
      std::ifstream f(log_dir + "/0.log");
      std::stringstream ss;
      ss << f.rdbuf();
      if (!ss.str().empty()) seen = ss.str();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  client::DeleteOptions d;
  d.grace_period_seconds = 5;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(api_->Delete("pods", "default", "graceful", d).ok());
  ASSERT_TRUE(WaitFor([&] { return !Get("graceful").has_value(); }, 10000)) << "pod object not removed";
  watcher.join();
  EXPECT_NE(seen.find("got-sigterm"), std::string::npos) << seen;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "waited for the grace period although the container exited";
}

TEST_F(KubeletTest, ForcesSigkillAfterTheGracePeriod) {
  StartKubelet();
  Pod p = MakePod("stubborn", {"sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"});
  Create(p);
  ASSERT_TRUE(WaitPhase("stubborn", "Running"));
  client::DeleteOptions d;
  d.grace_period_seconds = 1;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(api_->Delete("pods", "default", "stubborn", d).ok());
  ASSERT_TRUE(WaitFor([&] { return !Get("stubborn").has_value(); }, 10000));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(900));
}

TEST_F(KubeletTest, RestartsCrashingContainersWithBackOff) {
  StartKubelet();
  Pod p = MakePod("crash", {"sh", "-c", "echo run; exit 3"});
  Create(p);
  ASSERT_TRUE(WaitFor([&] {
    auto g = Get("crash");
    return g && g->status().container_statuses_size() == 1 &&
           g->status().container_statuses(0).state().waiting().reason() == "CrashLoopBackOff";
  }, 15000)) << Get("crash")->DebugString();
  auto g = *Get("crash");
  const auto& cs = g.status().container_statuses(0);
  EXPECT_GE(cs.restart_count(), 1);
  EXPECT_EQ(cs.last_state().terminated().exit_code(), 3);
  EXPECT_EQ(cs.last_state().terminated().reason(), "Error");
  EXPECT_NE(cs.state().waiting().message().find("back-off 10s"), std::string::npos) << cs.DebugString();
  EXPECT_EQ(g.status().phase(), "Running");
  EXPECT_NE(Logs("crash", "main", /*previous=*/true).find("run"), std::string::npos);
}

TEST_F(KubeletTest, RestartPolicyNeverEndsInSucceededOrFailed) {
  StartKubelet();
  Pod ok = MakePod("job-ok", {"sh", "-c", "echo done"});
  ok.mutable_spec()->set_restart_policy("Never");
  Pod bad = MakePod("job-bad", {"sh", "-c", "exit 7"});
  bad.mutable_spec()->set_restart_policy("Never");
  Create(ok);
  Create(bad);
  ASSERT_TRUE(WaitPhase("job-ok", "Succeeded"));
  ASSERT_TRUE(WaitPhase("job-bad", "Failed"));
  auto b = *Get("job-bad");
  EXPECT_EQ(b.status().container_statuses(0).state().terminated().exit_code(), 7);
  EXPECT_EQ(b.status().container_statuses(0).state().terminated().reason(), "Error");
  EXPECT_EQ(Get("job-ok")->status().container_statuses(0).state().terminated().reason(), "Completed");
}

TEST_F(KubeletTest, InitContainersRunInOrderBeforeTheMainContainer) {
  StartKubelet();
  Pod p = MakePod("inits", {"sh", "-c", "cat /work/order; sleep 1000"});
  auto* v = p.mutable_spec()->add_volumes();
  v->set_name("work");
  v->mutable_empty_dir();
  p.mutable_spec()->mutable_containers(0)->add_volume_mounts()->set_name("work");
  p.mutable_spec()->mutable_containers(0)->mutable_volume_mounts(0)->set_mount_path("/work");
  for (int i = 1; i <= 2; ++i) {
    auto* c = p.mutable_spec()->add_init_containers();
    c->set_name("init" + std::to_string(i));
    c->set_image("local/busybox");
    c->add_command("sh");
    c->add_command("-c");
    c->add_command("sleep 0.2; echo init" + std::to_string(i) + " >> /work/order");
    auto* m = c->add_volume_mounts();
    m->set_name("work");
    m->set_mount_path("/work");
  }
  Create(p);
  ASSERT_TRUE(WaitPhase("inits", "Running", 20000)) << Get("inits")->DebugString();
  ASSERT_TRUE(WaitFor([&] { return Logs("inits").find("init1\ninit2\n") != std::string::npos; }, 3000)) << Logs("inits");
  auto g = *Get("inits");
  ASSERT_EQ(g.status().init_container_statuses_size(), 2);
  EXPECT_EQ(g.status().init_container_statuses(0).state().terminated().reason(), "Completed");
  for (const auto& c : g.status().conditions()) {
    if (c.type() == "Initialized") { EXPECT_EQ(c.status(), "True"); }
  }
}

TEST_F(KubeletTest, ConfigMapAndSecretVolumesAppearAndUpdateAndEnvResolves) {
  StartKubelet();
  api::v1::ConfigMap cm;
  cm.mutable_metadata()->set_name("cfg");
  cm.mutable_metadata()->set_namespace_("default");
  (*cm.mutable_data())["greeting"] = "v1";
  ASSERT_TRUE(api_->Create("configmaps", "default", objects::Wrap(cm)).ok());
  api::v1::Secret sec;
  sec.mutable_metadata()->set_name("sec");
  sec.mutable_metadata()->set_namespace_("default");
  (*sec.mutable_data())["password"] = "hunter2";
  ASSERT_TRUE(api_->Create("secrets", "default", objects::Wrap(sec)).ok());
  Pod p = MakePod("cfgpod", {"sh", "-c", "echo env=$GREETING; while true; do sleep 0.2; done"});
  auto* c = p.mutable_spec()->mutable_containers(0);
  auto* e = c->add_env();
  e->set_name("GREETING");
  e->mutable_value_from()->mutable_config_map_key_ref()->set_name("cfg");
  e->mutable_value_from()->mutable_config_map_key_ref()->set_key("greeting");
  auto* v1 = p.mutable_spec()->add_volumes();
  v1->set_name("cfgvol");
  v1->mutable_config_map()->set_name("cfg");
  auto* v2 = p.mutable_spec()->add_volumes();
  v2->set_name("secvol");
  v2->mutable_secret()->set_secret_name("sec");
  auto* m1 = c->add_volume_mounts();
  m1->set_name("cfgvol");
  m1->set_mount_path("/config");
  auto* m2 = c->add_volume_mounts();
  m2->set_name("secvol");
  m2->set_mount_path("/secret");
  Create(p);
  ASSERT_TRUE(WaitPhase("cfgpod", "Running")) << Get("cfgpod")->DebugString();
  ASSERT_TRUE(WaitFor([&] { return Logs("cfgpod").find("env=v1") != std::string::npos; }, 3000)) << Logs("cfgpod");
  auto id = kubelet_->Locate("default", "cfgpod", "main")->container_id;
  auto r = kubelet_->engine().ExecSync(id, {"cat", "/config/greeting", "/secret/password"}, {}, 5000);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "v1hunter2");
  (*cm.mutable_data())["greeting"] = "v2";
  auto cur = api_->Get("configmaps", "default", "cfg");
  cm.mutable_metadata()->set_resource_version(cur->config_map().metadata().resource_version());
  ASSERT_TRUE(api_->Update("configmaps", "default", objects::Wrap(cm)).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto r2 = kubelet_->engine().ExecSync(id, {"cat", "/config/greeting"}, {}, 5000);
    return r2.ok() && r2->output == "v2";
  }, 20000)) << "configMap update not projected";
}

TEST_F(KubeletTest, BadInputsGiveKubernetesReasons) {
  StartKubelet();
  Pod missing_key = MakePod("missing-key", {"sh", "-c", "sleep 1000"});
  auto* e = missing_key.mutable_spec()->mutable_containers(0)->add_env();
  e->set_name("X");
  e->mutable_value_from()->mutable_config_map_key_ref()->set_name("nope");
  e->mutable_value_from()->mutable_config_map_key_ref()->set_key("k");
  Create(missing_key);
  Pod huge = MakePod("huge", {"sh", "-c", "sleep 1000"});
  (*huge.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_requests())["cpu"] = "100000";
  Create(huge);
  ASSERT_TRUE(WaitFor([&] {
    auto g = Get("missing-key");
    return g && g->status().container_statuses_size() == 1 &&
           g->status().container_statuses(0).state().waiting().reason() == "CreateContainerConfigError";
  }, 10000)) << Get("missing-key")->DebugString();
  EXPECT_EQ(Get("missing-key")->status().container_statuses(0).state().waiting().message(), "configmap \"nope\" not found");
  ASSERT_TRUE(WaitPhase("huge", "Failed"));
  EXPECT_EQ(Get("huge")->status().reason(), "OutOfcpu");
  auto reasons = EventReasons("huge");
  ASSERT_FALSE(reasons.empty());
  EXPECT_EQ(reasons[0].rfind("OutOfcpu", 0), 0u) << reasons[0];
}

// Issue 7/8 bad input: an image nobody serves (a loopback port where nothing listens), a missing
// key in an existing configMap, a probe on a port nothing listens on and on an unknown named port.
TEST_F(KubeletTest, BadImagesKeysAndProbePortsGiveKubernetesReasonsAndEvents) {
  StartKubelet();
  api::v1::ConfigMap cm;
  cm.mutable_metadata()->set_name("has-other-key");
  cm.mutable_metadata()->set_namespace_("default");
  (*cm.mutable_data())["present"] = "v";
  ASSERT_TRUE(api_->Create("configmaps", "default", objects::Wrap(cm)).ok());
  Pod nokey = MakePod("missing-key2", {"sh", "-c", "sleep 1000"});
  auto* e = nokey.mutable_spec()->mutable_containers(0)->add_env();
  e->set_name("X");
  e->mutable_value_from()->mutable_config_map_key_ref()->set_name("has-other-key");
  e->mutable_value_from()->mutable_config_map_key_ref()->set_key("absent");
  Create(nokey);
  // 127.0.0.1:1: nothing listens there, so the pull fails at once (connection refused).
  Pod noimage = MakePod("no-image", {"sh", "-c", "sleep 1000"});
  noimage.mutable_spec()->mutable_containers(0)->set_image("127.0.0.1:1/skiff-test/nope:1");
  noimage.mutable_spec()->mutable_containers(0)->set_image_pull_policy("Always");
  Create(noimage);
  Pod probes = MakePod("bad-probes", {"sh", "-c", "while true; do sleep 0.1; done"});
  auto* c = probes.mutable_spec()->mutable_containers(0);
  c->mutable_readiness_probe()->mutable_http_get()->set_port("9");  // nothing listens on 9 in the pod
  c->mutable_readiness_probe()->mutable_http_get()->set_path("/healthz");
  c->mutable_readiness_probe()->set_period_seconds(1);
  c->mutable_liveness_probe()->mutable_tcp_socket()->set_port("no-such-port");
  c->mutable_liveness_probe()->set_period_seconds(1);
  c->mutable_liveness_probe()->set_failure_threshold(1000);
  Create(probes);

  ASSERT_TRUE(WaitFor([&] {
    auto g = Get("missing-key2");
    return g && g->status().container_statuses_size() == 1 &&
           g->status().container_statuses(0).state().waiting().reason() == "CreateContainerConfigError";
  }, 10000)) << Get("missing-key2")->DebugString();
  EXPECT_EQ(Get("missing-key2")->status().container_statuses(0).state().waiting().message(),
            "couldn't find key absent in ConfigMap default/has-other-key");

  // ErrImagePull first, then ImagePullBackOff while the back-off (10 s) runs.
  std::set<std::string> seen;
  ASSERT_TRUE(WaitFor([&] {
    auto g = Get("no-image");
    if (g && g->status().container_statuses_size() == 1)
      seen.insert(g->status().container_statuses(0).state().waiting().reason());
    return seen.count("ImagePullBackOff") == 1;
  }, 15000)) << Get("no-image")->DebugString();
  // The ErrImagePull status lasts one sync; its events come before the back-off's.
  auto evs = EventReasons("no-image");
  auto pos = [&](const std::string& r) { return std::find(evs.begin(), evs.end(), r) - evs.begin(); };
  EXPECT_LT(pos("Failed: Error: ErrImagePull"), pos("Failed: Error: ImagePullBackOff")) << testing::PrintToString(evs);
  EXPECT_EQ(Get("no-image")->status().container_statuses(0).state().waiting().message(),
            "Back-off pulling image \"127.0.0.1:1/skiff-test/nope:1\"");
  EXPECT_EQ(Get("no-image")->status().phase(), "Pending");
  bool failed_pull = false, err_pull = false, backoff = false, err_backoff = false;
  for (const auto& r : EventReasons("no-image")) {
    failed_pull |= r.rfind("Failed: Failed to pull image \"127.0.0.1:1/skiff-test/nope:1\": ", 0) == 0;
    err_pull |= r == "Failed: Error: ErrImagePull";
    backoff |= r == "BackOff: Back-off pulling image \"127.0.0.1:1/skiff-test/nope:1\"";
    err_backoff |= r == "Failed: Error: ImagePullBackOff";
  }
  EXPECT_TRUE(failed_pull && err_pull && backoff && err_backoff) << testing::PrintToString(EventReasons("no-image"));

  // Probes: Kubernetes' Unhealthy texts, the pod stays not Ready, nothing crashes.
  ASSERT_TRUE(WaitPhase("bad-probes", "Running"));
  std::string ip = Get("bad-probes")->status().pod_ip();
  bool refused = false, errored = false;
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& r : EventReasons("bad-probes")) {
      refused |= r == "Unhealthy: Readiness probe failed: Get \"http://" + ip + ":9/healthz\": dial tcp " + ip +
                          ":9: connect: connection refused";
      errored |= r == "Unhealthy: Liveness probe errored: port no-such-port not found";
    }
    return refused && errored;
  }, 10000)) << testing::PrintToString(EventReasons("bad-probes"));
  Pod probed = *Get("bad-probes");  // not a temporary: the loop keeps references into it
  for (const auto& cd : probed.status().conditions()) {
    if (cd.type() == "Ready") {
      EXPECT_EQ(cd.status(), "False");
    }
  }
}

TEST_F(KubeletTest, LivenessFailureRestartsAndReadinessFlipsReady) {
  StartKubelet();
  Pod p = MakePod("probed", {"sh", "-c", "touch /tmp/alive; while true; do sleep 0.1; done"});
  auto* c = p.mutable_spec()->mutable_containers(0);
  auto* rp = c->mutable_readiness_probe();
  rp->mutable_exec()->add_command("test");
  rp->mutable_exec()->add_command("-f");
  rp->mutable_exec()->add_command("/tmp/ready");
  rp->set_period_seconds(1);
  rp->set_failure_threshold(1);
  auto* lp = c->mutable_liveness_probe();
  lp->mutable_exec()->add_command("test");
  lp->mutable_exec()->add_command("-f");
  lp->mutable_exec()->add_command("/tmp/alive");
  lp->set_period_seconds(1);
  lp->set_failure_threshold(2);
  p.mutable_spec()->set_termination_grace_period_seconds(1);
  Create(p);
  ASSERT_TRUE(WaitPhase("probed", "Running"));
  auto ready = [&] {
    auto g = Get("probed");
    for (const auto& cd : g->status().conditions()) {
      if (cd.type() == "Ready") return cd.status() == "True";
    }
    return false;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(ready());
  auto id = kubelet_->Locate("default", "probed", "main")->container_id;
  ASSERT_TRUE(kubelet_->engine().ExecSync(id, {"touch", "/tmp/ready"}, {}, 3000).ok());
  ASSERT_TRUE(WaitFor(ready, 5000)) << "readiness did not flip to True";
  ASSERT_TRUE(kubelet_->engine().ExecSync(id, {"rm", "/tmp/ready"}, {}, 3000).ok());
  ASSERT_TRUE(WaitFor([&] { return !ready(); }, 5000)) << "readiness did not flip back";
  ASSERT_TRUE(kubelet_->engine().ExecSync(id, {"rm", "/tmp/alive"}, {}, 3000).ok());
  ASSERT_TRUE(WaitFor([&] { return Get("probed")->status().container_statuses(0).restart_count() >= 1; }, 15000))
      << Get("probed")->DebugString();
  bool unhealthy = false;
  for (const auto& r : EventReasons("probed")) unhealthy |= r.rfind("Unhealthy", 0) == 0;
  EXPECT_TRUE(unhealthy);
}

TEST_F(KubeletTest, KubeletRestartReadoptsWithoutRestartingContainers) {
  StartKubelet();
  Pod p = MakePod("survivor", {"sh", "-c", "echo started-once; while true; do sleep 0.1; done"});
  Create(p);
  ASSERT_TRUE(WaitPhase("survivor", "Running"));
  auto before = *kubelet_->Locate("default", "survivor", "main");
  std::string ip = Get("survivor")->status().pod_ip();
  kubelet_->Stop();
  kubelet_.reset();  // like a SIGKILL: the monitors and containers are left alone
  StartKubelet();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto after = kubelet_->Locate("default", "survivor", "main");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->container_id, before.container_id);
  EXPECT_TRUE(after->running);
  auto g = *Get("survivor");
  EXPECT_EQ(g.status().phase(), "Running");
  EXPECT_EQ(g.status().container_statuses(0).restart_count(), 0);
  EXPECT_EQ(g.status().pod_ip(), ip);
  std::string logs = Logs("survivor");
  EXPECT_EQ(logs.find("started-once"), logs.rfind("started-once")) << "container ran twice";
}

TEST_F(KubeletTest, StaticPodsFromTheManifestDirectoryRunAsMirrorPods) {
  fs::create_directories(cfg_.manifest_dir);
  {
    std::ofstream f(cfg_.manifest_dir + "/web.yaml");
    f << "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  labels:\n    tier: static\n"
         "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: local/busybox\n"
         "    command: [\"sh\", \"-c\", \"echo static-v1; while true; do sleep 0.1; done\"]\n";
  }
  // Not a manifest: ignored.
  std::ofstream(cfg_.manifest_dir + "/README").flush();
  StartKubelet();
  ASSERT_TRUE(WaitPhase("static-web-node-a", "Running")) << "no mirror pod";
  auto mirror = *Get("static-web-node-a");
  EXPECT_FALSE(mirror.metadata().annotations().at("kubernetes.io/config.mirror").empty());
  EXPECT_EQ(mirror.metadata().annotations().at("kubernetes.io/config.source"), "file");
  EXPECT_EQ(mirror.spec().node_name(), "node-a");
  EXPECT_EQ(mirror.metadata().labels().at("tier"), "static");
  ASSERT_TRUE(WaitFor([&] { return Logs("static-web-node-a").find("static-v1") != std::string::npos; }, 5000));
  // A changed manifest replaces the pod.
  {
    std::ofstream f(cfg_.manifest_dir + "/web.yaml");
    f << "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n"
         "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: local/busybox\n"
         "    command: [\"sh\", \"-c\", \"echo static-v2; while true; do sleep 0.1; done\"]\n";
  }
  ASSERT_TRUE(WaitFor([&] {
    auto g = Get("static-web-node-a");
    return g && g->metadata().uid() != mirror.metadata().uid() && g->status().phase() == "Running";
  }, 20000)) << "changed manifest not applied";
  ASSERT_TRUE(WaitFor([&] { return Logs("static-web-node-a").find("static-v2") != std::string::npos; }, 5000));
  // A removed manifest removes the pod.
  fs::remove(cfg_.manifest_dir + "/web.yaml");
  ASSERT_TRUE(WaitFor([&] { return !Get("static-web-node-a").has_value(); }, 20000)) << "mirror pod not removed";
}

TEST_F(KubeletTest, EvictionUnderDiskPressureTakesBestEffortPodsFirst) {
  cfg_.eviction_interval_seconds = 3600;  // rounds run by the test, one at a time
  StartKubelet();
  Pod be = MakePod("evict-besteffort", {"sh", "-c", "while true; do sleep 0.1; done"});
  Pod bu = MakePod("evict-burstable", {"sh", "-c", "while true; do sleep 0.1; done"});
  (*bu.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_requests())["memory"] = "16Mi";
  Create(be);
  Create(bu);
  ASSERT_TRUE(WaitPhase("evict-besteffort", "Running"));
  ASSERT_TRUE(WaitPhase("evict-burstable", "Running"));
  // nodefs.available below 100% of the disk: always met.
  kubelet_->SetEvictionThresholds(0, 1.0);
  kubelet_->EvictOnce();
  EXPECT_TRUE(kubelet_->disk_pressure());
  ASSERT_TRUE(WaitPhase("evict-besteffort", "Failed", 10000)) << Get("evict-besteffort")->DebugString();
  // One pod per round: the BestEffort one went first, the Burstable one still runs.
  EXPECT_EQ(Get("evict-burstable")->status().phase(), "Running");
  ASSERT_TRUE(WaitFor([&] {
    auto n = api_->Get("nodes", "", "node-a");
    for (const auto& c : n->node().status().conditions()) {
      if (c.type() == "DiskPressure") return c.status() == "True";
    }
    return false;
  }, 5000)) << "node does not report DiskPressure";
  kubelet_->EvictOnce();
  ASSERT_TRUE(WaitPhase("evict-burstable", "Failed", 10000));
  EXPECT_EQ(Get("evict-burstable")->status().reason(), "Evicted");
  kubelet_->SetEvictionThresholds(0, 0);
  kubelet_->EvictOnce();
  auto g = *Get("evict-besteffort");
  EXPECT_EQ(g.status().reason(), "Evicted");
  EXPECT_NE(g.status().message().find("ephemeral-storage"), std::string::npos) << g.status().message();
  bool event = false;
  for (const auto& r : EventReasons("evict-besteffort")) event |= r.rfind("Evicted: The node was low on resource", 0) == 0;
  EXPECT_TRUE(event);
  // Its containers are gone, the pod object stays (Failed) until deleted.
  auto uid = g.metadata().uid();
  EXPECT_TRUE(WaitFor([&] { return !fs::exists(cfg_.run_dir + "/pods/" + uid); }, 5000));
  EXPECT_FALSE(kubelet_->disk_pressure());
}

TEST_F(KubeletTest, EvictionUnderMemoryPressureTakesBestEffortPodsFirst) {
  cfg_.eviction_interval_seconds = 3600;  // rounds run by the test, one at a time
  StartKubelet();
  Pod be = MakePod("mem-besteffort", {"sh", "-c", "while true; do sleep 0.1; done"});
  Pod gu = MakePod("mem-guaranteed", {"sh", "-c", "while true; do sleep 0.1; done"});
  for (const char* r : {"cpu", "memory"}) {
    const char* q = std::string(r) == "cpu" ? "100m" : "32Mi";
    (*gu.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_requests())[r] = q;
    (*gu.mutable_spec()->mutable_containers(0)->mutable_resources()->mutable_limits())[r] = q;
  }
  Create(gu);
  Create(be);
  ASSERT_TRUE(WaitPhase("mem-besteffort", "Running"));
  ASSERT_TRUE(WaitPhase("mem-guaranteed", "Running"));
  // memory.available below 1 EiB: always met (MemAvailable of /proc/meminfo).
  kubelet_->SetEvictionThresholds(int64_t{1} << 60, 0);
  kubelet_->EvictOnce();
  EXPECT_TRUE(kubelet_->memory_pressure());
  EXPECT_FALSE(kubelet_->disk_pressure());
  ASSERT_TRUE(WaitPhase("mem-besteffort", "Failed", 10000)) << Get("mem-besteffort")->DebugString();
  EXPECT_EQ(Get("mem-guaranteed")->status().phase(), "Running");  // BestEffort first, one per round
  auto g = *Get("mem-besteffort");
  EXPECT_EQ(g.status().reason(), "Evicted");
  EXPECT_EQ(g.status().message().rfind("The node was low on resource: memory. Threshold quantity: ", 0), 0u)
      << g.status().message();
  ASSERT_TRUE(WaitFor([&] {
    auto n = api_->Get("nodes", "", "node-a");
    for (const auto& c : n->node().status().conditions()) {
      if (c.type() == "MemoryPressure") return c.status() == "True";
    }
    return false;
  }, 5000)) << "node does not report MemoryPressure";
  kubelet_->SetEvictionThresholds(0, 0);
  kubelet_->EvictOnce();
  EXPECT_FALSE(kubelet_->memory_pressure());
  EXPECT_EQ(Get("mem-guaranteed")->status().phase(), "Running");
}

TEST_F(KubeletTest, StatsReportPerContainerUsageAndMarkWhatIsUnavailable) {
  StartKubelet();
  Create(MakePod("busy", {"sh", "-c", "while true; do :; done"}));
  ASSERT_TRUE(WaitPhase("busy", "Running"));
  CpuRate rate;
  api::v1::StatsResponse resp;
  FillStats(kubelet_.get(), &rate, &resp);
  EXPECT_EQ(resp.node_name(), "node-a");
  EXPECT_GT(resp.memory_working_set_bytes(), 0u);
  ASSERT_EQ(resp.pods_size(), 1);
  EXPECT_EQ(resp.pods(0).name(), "busy");
  ASSERT_EQ(resp.pods(0).containers_size(), 1);
  const auto& c = resp.pods(0).containers(0);
  EXPECT_EQ(c.name(), "main");
  // cpu.stat is there in every cgroup2 group: a busy loop uses a good part of a core.
  EXPECT_GT(c.cpu_usage_nano_cores(), 50'000'000u) << c.DebugString();
  auto cg = runtime::FindCgroup2Mount();
  ASSERT_TRUE(cg.ok());
  std::ifstream controllers(*cg + "/cgroup.controllers");
  std::string all((std::istreambuf_iterator<char>(controllers)), std::istreambuf_iterator<char>());
  const auto* f = c.GetDescriptor()->FindFieldByName("unavailable");
  if (all.find("memory") == std::string::npos) {
    // Hybrid host: no memory controller in cgroup2, so no working set; said so, not 0 pretending.
    EXPECT_EQ(c.memory_working_set_bytes(), 0u);
    if (f) {
      ASSERT_EQ(c.GetReflection()->FieldSize(c, f), 1);
      EXPECT_EQ(c.GetReflection()->GetRepeatedString(c, f, 0), "memory");
    }
  } else {
    EXPECT_GT(c.memory_working_set_bytes(), 0u);
  }
}

TEST_F(KubeletTest, PodsGetAServiceAccountTokenVolumeUnlessOptedOut) {
  int calls = 0;
  std::string bound;
  kubelet_ = nullptr;
  auto source = [&](const std::string& ns, const std::string& sa, const std::string& pod,
                    const std::string& uid) -> absl::StatusOr<ServiceAccountToken> {
    ++calls;
    bound = ns + "/" + sa + "/" + pod;
    ServiceAccountToken t;
    t.token = "tok-" + sa + "-" + uid.substr(0, 8);
    t.expiration_unix = absl::ToUnixSeconds(absl::Now()) + 3600;
    t.ca_crt = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n";
    return t;
  };
  kubelet_ = std::make_unique<Kubelet>(cfg_, api_);
  kubelet_->SetTokenSource(source);
  ASSERT_TRUE(kubelet_->Start().ok());
  Pod p = MakePod("sa", {"sh", "-c", "while true; do sleep 0.1; done"});
  p.mutable_spec()->set_service_account_name("builder");
  Pod off = MakePod("sa-off", {"sh", "-c", "while true; do sleep 0.1; done"});
  off.mutable_spec()->set_automount_service_account_token(false);
  std::string uid = Create(p).metadata().uid();
  Create(off);
  ASSERT_TRUE(WaitPhase("sa", "Running")) << Get("sa")->DebugString();
  ASSERT_TRUE(WaitPhase("sa-off", "Running"));
  EXPECT_EQ(bound, "default/builder/sa");
  auto id = kubelet_->Locate("default", "sa", "main")->container_id;
  auto r = kubelet_->engine().ExecSync(
      id, {"cat", "/var/run/secrets/kubernetes.io/serviceaccount/token", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"},
      {}, 5000);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "tok-builder-" + uid.substr(0, 8) + "default");
  r = kubelet_->engine().ExecSync(id, {"grep", "-c", "BEGIN CERTIFICATE", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"}, {}, 5000);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "1\n");
  // Read-only for the container.
  r = kubelet_->engine().ExecSync(id, {"sh", "-c", "echo x > /var/run/secrets/kubernetes.io/serviceaccount/token"}, {}, 5000);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0);
  auto off_id = kubelet_->Locate("default", "sa-off", "main")->container_id;
  r = kubelet_->engine().ExecSync(off_id, {"ls", "/var/run/secrets/kubernetes.io/serviceaccount/token"}, {}, 5000);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0) << "automountServiceAccountToken: false still got a token";
  EXPECT_EQ(calls, 1);
}

TEST_F(KubeletTest, PodsDeletedWhileTheKubeletWasDownAreCleanedUp) {
  StartKubelet();
  Create(MakePod("ghost", {"sh", "-c", "while true; do sleep 0.1; done"}));
  ASSERT_TRUE(WaitPhase("ghost", "Running"));
  kubelet_->Stop();
  kubelet_.reset();
  client::DeleteOptions d;
  d.grace_period_seconds = 0;
  ASSERT_TRUE(api_->Delete("pods", "default", "ghost", d).ok());
  StartKubelet();
  ASSERT_TRUE(WaitFor([&] { return Empty(cfg_.run_dir + "/pods") && Empty(cfg_.run_dir + "/netns"); }, 15000));
}

}  // namespace
}  // namespace skiff::kubelet
