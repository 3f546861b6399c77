// skiff-kubelet in the lab: skiff-control-plane on host 1, a skiff-kubelet
// on hosts 1 and 2 (each in its host's network namespace and cgroup subtree),
// skiffctl run inside host 1. Pods of a Deployment reach Running on both
// nodes, are reachable by pod IP across nodes, logs and exec go through the
// API server to the kubelet, and a SIGKILLed kubelet restarts without
// restarting any container.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "lab.h"
#include "node_cluster.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;

using skiff::labtest::BuildDir;
using skiff::labtest::Cgroup2Mount;
using skiff::labtest::Slurp;

class KubeletCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    auto lab = skiff::lab::Lab::Create(2);
    ASSERT_TRUE(lab.ok()) << lab.status();
    lab_ = std::move(*lab);
    images_ = lab_->host(1).dir + "/images";
    fs::create_directories(images_ + "/busybox/bin");
    for (const char* d : {"proc", "dev", "sys", "tmp", "etc"}) fs::create_directories(images_ + "/busybox/" + d);
    fs::copy_file("/bin/busybox", images_ + "/busybox/bin/busybox");
    for (const char* a : {"sh", "sleep", "echo", "cat", "httpd", "mkdir", "hostname", "wget"})
      fs::create_symlink("busybox", images_ + "/busybox/bin/" + a);
    const auto& h1 = lab_->host(1);
    data_ = h1.dir + "/cp";
    StartControlPlane();
    ASSERT_TRUE(WaitFor([&] { return fs::exists(data_ + "/admin.conf") && Ctl({"get", "namespaces"}).exit_code == 0; },
                        30000))
        << Slurp(h1.dir + "/cp.log");
    for (int i = 1; i <= 2; ++i) StartKubelet(i);
    ASSERT_TRUE(WaitFor([&] {
      auto r = Ctl({"get", "nodes", "-o", "json"});
      return r.exit_code == 0 && r.output.find("\"h2\"") != std::string::npos &&
             r.output.find("\"h1\"") != std::string::npos;
    }, 30000)) << Ctl({"get", "nodes"}).output << Slurp(lab_->host(1).dir + "/kubelet.log");
  }
  void TearDown() override {
    if (!lab_) return;
    Ctl({"delete", "deployment", "web"});
    Ctl({"delete", "pod", "hostport"});
    fs::remove(lab_->host(2).dir + "/manifests/echo.yaml");
    WaitFor([&] { return Ctl({"get", "pods", "-o", "json"}).output.find("\"static-echo-h2\"") == std::string::npos; }, 20000);
    // Give the kubelets a moment to remove pods, then stop everything; the lab removes the rest.
    WaitFor([&] { return Ctl({"get", "pods", "-o", "json"}).output.find("\"web-") == std::string::npos; }, 20000);
    for (auto& k : kubelets_) k.second.Signal(SIGTERM);
    for (auto& k : kubelets_) k.second.Wait();
    for (int i = 1; i <= 2; ++i) {
      const auto& h = lab_->host(i);
      EXPECT_TRUE(!fs::exists(h.dir + "/run/netns") || fs::is_empty(h.dir + "/run/netns")) << "netns left on h" << i;
    }
  }
  void StartControlPlane() {
    const auto& h1 = lab_->host(1);
    auto cp = lab_->Start(1, {BuildDir() + "/bin/skiff-control-plane", "--data-dir", data_, "--listen",
                              h1.address + ":6443", "--advertise-address", h1.address, "--health-listen",
                              "127.0.0.1:6444"},
                          h1.dir + "/cp.log");
    ASSERT_TRUE(cp.ok()) << cp.status();
    cp_ = std::move(*cp);
  }
  // Command lines of the processes that name `needle` (a node's pod run dir):
  // the containers' monitors.
  static std::vector<std::string> ProcessesNaming(const std::string& needle) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/proc", ec)) {
      std::string pid = e.path().filename();
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string cmd = Slurp("/proc/" + pid + "/cmdline");
      for (char& c : cmd) c = c ? c : ' ';
      if (cmd.find(needle) != std::string::npos) out.push_back(pid + " " + cmd.substr(0, 200));
    }
    return out;
  }
  void StartKubelet(int i) {
    const auto& h = lab_->host(i);
    fs::create_directories(h.dir + "/manifests");
    if (i == 2) {  // a static pod on h2 only
      std::ofstream f(h.dir + "/manifests/echo.yaml");
      f << "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-echo\nspec:\n  terminationGracePeriodSeconds: 1\n"
           "  containers:\n  - name: main\n    image: local/busybox\n"
           "    command: [\"sh\", \"-c\", \"echo static; while true; do sleep 1; done\"]\n";
    }
    std::string cg = h.cgroup.substr(Cgroup2Mount().size());
    auto k = lab_->Start(i, {BuildDir() + "/bin/skiff-kubelet", "--kubeconfig", data_ + "/admin.conf", "--node-name",
                             h.name, "--root-dir", h.dir + "/root", "--run-dir", h.dir + "/run", "--log-dir",
                             h.dir + "/log", "--cgroup-root", cg + "/kubepods", "--pod-cidr",
                             "10.244." + std::to_string(i) + ".0/24", "--node-ip", h.address, "--rootfs-dir", images_,
                             "--listen", h.address + ":10250", "--healthz-listen", "127.0.0.1:10248",
                             "--pod-manifest-path", h.dir + "/manifests", "--manifest-poll-seconds", "1"},
                         h.dir + "/kubelet.log");
    ASSERT_TRUE(k.ok()) << k.status();
    kubelets_[i] = std::move(*k);
  }
  skiff::lab::CommandResult Ctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {BuildDir() + "/bin/skiffctl", "--kubeconfig", data_ + "/admin.conf"};
    argv.insert(argv.end(), args.begin(), args.end());
    return lab_->Run(1, argv);
  }
  static bool WaitFor(const std::function<bool()>& f, int ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      if (f()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return f();
  }
  json Pods() {
    auto r = Ctl({"get", "pods", "-o", "json"});
    if (r.exit_code != 0) return json::array();
    auto j = json::parse(r.output, nullptr, false);
    if (j.is_discarded() || !j.contains("items")) return json::array();
    json out = json::array();  // the Deployment's pods, not the static one
    for (auto& p : j["items"])
      if (p["metadata"].value("name", "").rfind("web-", 0) == 0) out.push_back(p);
    return out;
  }

  std::unique_ptr<skiff::lab::Lab> lab_;
  skiff::lab::Process cp_;
  std::map<int, skiff::lab::Process> kubelets_;
  std::string data_, images_;
};

TEST_F(KubeletCluster, DeploymentPodsRunOnBothNodesAndAreReachableAcrossNodes) {
  std::string yaml = lab_->host(1).dir + "/web.yaml";
  std::ofstream(yaml) << R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: local/busybox
        command: ["sh", "-c", "echo hello-from-$(hostname); mkdir -p /tmp/w; hostname > /tmp/w/index.html; exec httpd -f -p 8080 -h /tmp/w"]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
)";
  auto r = Ctl({"apply", "-f", yaml});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::set<std::string> nodes;
  json pods;
  ASSERT_TRUE(WaitFor([&] {
    pods = Pods();
    int ready = 0;
    nodes.clear();
    for (auto& p : pods) {
      if (p["status"].value("phase", "") != "Running") continue;
      for (auto& c : p["status"]["conditions"])
        if (c["type"] == "Ready" && c["status"] == "True") ++ready;
      nodes.insert(p["spec"].value("nodeName", ""));
    }
    return ready == 4 && nodes.size() == 2;
  }, 60000)) << pods.dump(1) << "\n" << Slurp(lab_->host(2).dir + "/kubelet.log").substr(0, 4000);
  // The static pod from h2's manifest directory, mirrored to the API.
  json mirror;
  ASSERT_TRUE(WaitFor([&] {
    auto r = Ctl({"get", "pod", "static-echo-h2", "-o", "json"});
    mirror = json::parse(r.output, nullptr, false);
    return r.exit_code == 0 && !mirror.is_discarded() && mirror["status"].value("phase", "") == "Running";
  }, 30000)) << mirror.dump(1);
  EXPECT_EQ(mirror["spec"].value("nodeName", ""), "h2");
  EXPECT_TRUE(mirror["metadata"]["annotations"].contains("kubernetes.io/config.mirror")) << mirror.dump(1);
  // Every pod answers on its pod IP from both hosts (same node and across nodes).
  for (auto& p : pods) {
    std::string ip = p["status"]["podIP"];
    std::string name = p["metadata"]["name"];
    for (int h = 1; h <= 2; ++h) {
      auto w = lab_->Run(h, {"curl", "-s", "-m", "3", "http://" + ip + ":8080/"});
      EXPECT_EQ(w.exit_code, 0) << "host " << h << " -> " << ip << ": " << w.output;
      EXPECT_EQ(w.output, name + "\n");
    }
  }
  // hostPort: a pod on h1 with hostPort 30080 answers on h1's node address from h2 (another lab
  // host); deleting it removes the mapping (the port refuses at once afterwards).
  std::string hp = lab_->host(1).dir + "/hostport.yaml";
  std::ofstream(hp) << R"(apiVersion: v1
kind: Pod
metadata:
  name: hostport
  namespace: default
spec:
  nodeName: h1
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: local/busybox
    command: ["sh", "-c", "mkdir -p /tmp/w; echo via-hostport > /tmp/w/index.html; exec httpd -f -p 8080 -h /tmp/w"]
    ports:
    - {containerPort: 8080, hostPort: 30080}
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
)";
  r = Ctl({"apply", "-f", hp});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string hp_url = "http://" + lab_->host(1).address + ":30080/";
  skiff::lab::CommandResult via;
  EXPECT_TRUE(WaitFor([&] {
    via = lab_->Run(2, {"curl", "-s", "-m", "2", hp_url});
    return via.exit_code == 0 && via.output == "via-hostport\n";
  }, 30000)) << via.output << Ctl({"get", "pod", "hostport", "-o", "json"}).output;
  r = Ctl({"delete", "pod", "hostport"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(WaitFor([&] { return Ctl({"get", "pod", "hostport"}).exit_code != 0; }, 20000));
  via = lab_->Run(2, {"curl", "-s", "-m", "2", hp_url});
  EXPECT_NE(via.exit_code, 0) << "hostPort still mapped after the pod was deleted: " << via.output;

  // Logs and exec through the API server.
  std::string first = pods[0]["metadata"]["name"];
  auto logs = Ctl({"logs", first});
  EXPECT_EQ(logs.exit_code, 0) << logs.output;
  EXPECT_NE(logs.output.find("hello-from-" + first), std::string::npos) << logs.output;
  auto ex = Ctl({"exec", first, "--", "cat", "/tmp/w/index.html"});
  EXPECT_EQ(ex.exit_code, 0) << ex.output;
  EXPECT_NE(ex.output.find(first), std::string::npos) << ex.output;
  // The service account token volume, from the API server's TokenRequest.
  auto sa = Ctl({"exec", first, "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                 "/var/run/secrets/kubernetes.io/serviceaccount/token"});
  EXPECT_EQ(sa.exit_code, 0) << sa.output;
  EXPECT_EQ(sa.output.rfind("defaulteyJ", 0), 0u) << "namespace then a JWT expected: " << sa.output;

  // SIGKILL both kubelets and start them again: nothing restarts.
  std::map<std::string, std::string> ids;
  for (auto& p : pods) ids[p["metadata"]["name"]] = p["status"]["containerStatuses"][0].value("containerID", "");
  auto untouched = [&](const char* when) {
    auto after = Pods();
    ASSERT_EQ(after.size(), pods.size()) << when;
    for (auto& p : after) {
      std::string name = p["metadata"]["name"];
      EXPECT_EQ(p["status"].value("phase", ""), "Running") << when << ": " << name;
      EXPECT_EQ(p["status"]["containerStatuses"][0].value("restartCount", 0), 0) << when << ": " << name;
      EXPECT_EQ(p["status"]["containerStatuses"][0].value("containerID", ""), ids[name]) << when << ": " << name;
    }
  };
  for (auto& k : kubelets_) {
    k.second.Signal(SIGKILL);
    k.second.Wait();
  }
  for (int i = 1; i <= 2; ++i) StartKubelet(i);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  untouched("after a kubelet SIGKILL");

  // A package upgrade restarts the control plane and the kubelets together:
  // the kubelets come back while the API server is still starting.
  cp_.Signal(SIGTERM);
  for (auto& k : kubelets_) k.second.Signal(SIGTERM);
  cp_.Wait();
  for (auto& k : kubelets_) k.second.Wait();
  for (int i = 1; i <= 2; ++i) StartKubelet(i);
  StartControlPlane();
  ASSERT_TRUE(WaitFor([&] { return Ctl({"get", "namespaces"}).exit_code == 0; }, 30000));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  untouched("after a control plane + kubelet restart");

  // A package upgrade restarts the control plane under running kubelets
  // (their units are not restarted): they re-list and keep their pods.
  cp_.Signal(SIGTERM);
  cp_.Wait();
  StartControlPlane();
  ASSERT_TRUE(WaitFor([&] { return Ctl({"get", "namespaces"}).exit_code == 0; }, 30000));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  untouched("after a control plane restart under running kubelets");

  // Re-adopted containers are torn down when their pods are deleted:
  // no monitor and no container process of either node is left.
  ASSERT_EQ(Ctl({"delete", "deployment", "web"}).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return Pods().empty(); }, 30000)) << Pods().dump(1);
  std::string left;
  EXPECT_TRUE(WaitFor([&] {
    left.clear();
    for (int i = 1; i <= 2; ++i) {
      for (const std::string& cmd : ProcessesNaming(lab_->host(i).dir + "/log/default_web-")) left += cmd + "\n";
    }
    return left.empty();
  }, 20000)) << "monitors left after their pods were deleted:\n" << left;
}

}  // namespace
