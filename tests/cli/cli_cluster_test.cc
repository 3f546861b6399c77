// skiffctl end to end: a fresh skiff-control-plane (embedded store) on free
// loopback ports, its admin.conf, and skiffctl run as a subprocess.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string BuildDir() {
  const char* d = getenv("SKIFF_BUILD_DIR");
  return d ? d : "build";
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

// A child process that is killed and reaped when this goes away.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& stdin_text, const std::vector<std::string>& env = {},
        const std::string& log_file = "") {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::dup2(in[0], 0);
      if (log_file.empty()) {
        ::dup2(out[1], 1);
        ::dup2(err[1], 2);
      } else {
        int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      _exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
    // Small inputs fit in the pipe buffer.
    if (!stdin_text.empty()) (void)!::write(in[1], stdin_text.data(), stdin_text.size());
    ::close(in[1]);
  }
  ~Child() {
    Kill();
    ::close(out_fd_);
    ::close(err_fd_);
  }
  void Kill() {
    if (pid_ <= 0 || exited_) return;
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
    exited_ = true;
  }
  // Reads whatever is available for up to `ms`.
  void Pump(int ms) {
    pollfd p[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    if (::poll(p, 2, ms) <= 0) return;
    char buf[65536];
    if (p[0].revents) {
      ssize_t n = ::read(out_fd_, buf, sizeof buf);
      if (n > 0) out.append(buf, static_cast<size_t>(n));
    }
    if (p[1].revents) {
      ssize_t n = ::read(err_fd_, buf, sizeof buf);
      if (n > 0) err.append(buf, static_cast<size_t>(n));
    }
  }
  // Waits for exit (reading output); returns the exit code, or -1 on timeout.
  int Wait(int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      Pump(50);
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        for (int i = 0; i < 100; ++i) {
          size_t before = out.size() + err.size();
          Pump(0);
          if (out.size() + err.size() == before) break;
        }
        return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
      }
    }
    return -1;
  }
  pid_t pid() const { return pid_; }

  std::string out, err;

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  int status_ = 0;
  bool exited_ = false;
};

struct Result {
  int rc;
  std::string out, err;
};

class SkiffctlCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Leftovers of a crashed run: its control plane (pid file) and data dir.
    for (const auto& e : fs::directory_iterator(fs::temp_directory_path())) {
      std::string name = e.path().filename().string();
      if (name.rfind("skiffctl-cluster-", 0) != 0) continue;
      // Owned by a test process that still runs (ctest runs tests in
      // parallel, each in its own process): not a leftover.
      pid_t owner = static_cast<pid_t>(std::atol(name.c_str() + std::strlen("skiffctl-cluster-")));
      if (owner > 0 && ::kill(owner, 0) == 0) continue;
      std::ifstream pidf(e.path() / "pid");
      pid_t pid = 0;
      if (pidf >> pid && pid > 0 && ::kill(pid, 0) == 0) {
        std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
        std::string c;
        std::getline(cmd, c);
        if (c.find("skiff-control-plane") != std::string::npos) ::kill(-pid, SIGKILL);
      }
      std::error_code ec;
      fs::remove_all(e.path(), ec);
    }
    dir_ = new fs::path(fs::temp_directory_path() / ("skiffctl-cluster-" + std::to_string(::getpid())));
    fs::create_directories(*dir_ / "data");
    port_ = FreePort();
    std::string bin = BuildDir() + "/bin/skiff-control-plane";
    cp_ = new Child({bin, "--data-dir", (*dir_ / "data").string(), "--listen", "127.0.0.1:" + std::to_string(port_),
                     "--health-listen", "127.0.0.1:" + std::to_string(FreePort()), "--advertise-address", "127.0.0.1"},
                    "", {}, (*dir_ / "control-plane.log").string());
    std::ofstream(*dir_ / "pid") << cp_->pid();
    config_ = new std::string((*dir_ / "data" / "admin.conf").string());
    // 60 s: on a loaded 2-core CI machine (VM tier running) a start took over 30 s once.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (fs::exists(*config_)) {
        Result r = Skiffctl({"get", "namespaces"});
        if (r.rc == 0) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::ifstream log(*dir_ / "control-plane.log");
    std::stringstream ss;
    ss << log.rdbuf();
    FAIL() << "skiff-control-plane did not come up; log:\n" << ss.str();
  }
  static void TearDownTestSuite() {
    delete cp_;
    cp_ = nullptr;
    std::error_code ec;
    if (dir_) fs::remove_all(*dir_, ec);
    delete dir_;
    delete config_;
  }
  void SetUp() override {
    ASSERT_NE(cp_, nullptr);
    ns_ = "t" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    Result r = Skiffctl({"create", "namespace", ns_});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  void TearDown() override { Skiffctl({"delete", "namespace", ns_, "--wait=false"}); }

  static Result Skiffctl(std::vector<std::string> args, const std::string& stdin_text = "",
                         const std::vector<std::string>& env = {}) {
    args.insert(args.begin(), {BuildDir() + "/bin/skiffctl", "--config", *config_});
    Child c(args, stdin_text, env);
    int rc = c.Wait(60000);
    return {rc, c.out, c.err};
  }
  Result InNs(std::vector<std::string> args, const std::string& stdin_text = "",
              const std::vector<std::string>& env = {}) {
    args.insert(args.begin(), {"-n", ns_});
    return Skiffctl(args, stdin_text, env);
  }
  std::string Write(const std::string& name, const std::string& text) {
    fs::path p = *dir_ / (ns_ + "-" + name);
    std::ofstream(p) << text;
    return p.string();
  }
  // Polls a jsonpath until it equals `want`.
  bool WaitFor(const std::vector<std::string>& get_args, const std::string& want, int seconds = 30) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      Result r = InNs(get_args);
      if (r.rc == 0 && r.out == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

  static Child* cp_;
  static fs::path* dir_;
  static std::string* config_;
  static int port_;
  static int counter_;
  std::string ns_;
};

Child* SkiffctlCluster::cp_ = nullptr;
fs::path* SkiffctlCluster::dir_ = nullptr;
std::string* SkiffctlCluster::config_ = nullptr;
int SkiffctlCluster::port_ = 0;
int SkiffctlCluster::counter_ = 0;

// Modelled on Kubernetes' documentation examples (ConfigMap "game-demo",
// Deployment "nginx-deployment", Service "my-service").
constexpr char kManifests[] = R"(apiVersion: v1
kind: ConfigMap
metadata:
  name: game-demo
data:
  player_initial_lives: "3"
  ui_properties_file_name: "user-interface.properties"
  game.properties: |
    enemy.types=aliens,monsters
    player.maximum-lives=5
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
        env:
        - name: PLAYER_INITIAL_LIVES
          valueFrom:
            configMapKeyRef:
              name: game-demo
              key: player_initial_lives
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
)";

TEST_F(SkiffctlCluster, ApplyGetReapplyWithFieldRemovedDelete) {
  std::string f = Write("app.yaml", kManifests);
  Result r = InNs({"apply", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "configmap/game-demo created\ndeployment.apps/nginx-deployment created\nservice/my-service created\n");

  r = InNs({"get", "deploy", "nginx-deployment", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env[0].name}"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "3 PLAYER_INITIAL_LIVES");
  r = InNs({"get", "svc", "my-service"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("NAME         TYPE        CLUSTER-IP"));
  EXPECT_THAT(r.out, HasSubstr("80/TCP"));
  r = InNs({"get", "cm", "game-demo", "-o", "yaml"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  game.properties: |\n    enemy.types=aliens,monsters\n    player.maximum-lives=5\n"));

  // Re-applying the same files changes nothing.
  r = InNs({"apply", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("configmap/game-demo unchanged\n"));
  EXPECT_THAT(r.out, HasSubstr("service/my-service unchanged\n"));

  // Edit by apply: env removed, replicas changed, a ConfigMap key removed.
  std::string edited = kManifests;
  size_t env = edited.find("        env:\n");
  size_t env_end = edited.find("---", env);
  edited.erase(env, env_end - env);
  edited.replace(edited.find("replicas: 3"), 11, "replicas: 2");
  edited.erase(edited.find("  player_initial_lives: \"3\"\n"), std::string("  player_initial_lives: \"3\"\n").size());
  Write("app.yaml", edited);
  r = InNs({"apply", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("deployment.apps/nginx-deployment configured\n"));
  EXPECT_THAT(r.out, HasSubstr("configmap/game-demo configured\n"));
  r = InNs({"get", "deploy", "nginx-deployment", "-o", "jsonpath={.spec.replicas}/{.spec.template.spec.containers[0].env}"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "2/");
  r = InNs({"get", "cm", "game-demo", "-o", "jsonpath={.data.player_initial_lives}|{.data.ui_properties_file_name}"});
  EXPECT_EQ(r.out, "|user-interface.properties");

  r = InNs({"delete", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("configmap \"game-demo\" deleted\n"));
  EXPECT_THAT(r.out, HasSubstr("service \"my-service\" deleted\n"));
  r = InNs({"get", "svc", "my-service"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "Error from server (NotFound): services \"my-service\" not found\n");
}

TEST_F(SkiffctlCluster, BadInputChangesNothingOnTheServer) {
  const char* bad[] = {
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [oops\n",
      "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n",
      "apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n",
      "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - name: x\n    imagee: nginx\n",
      "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n",
  };
  for (const char* b : bad) {
    std::string f = Write("bad.yaml", std::string("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\n") + b);
    Result r = InNs({"apply", "-f", f});
    EXPECT_EQ(r.rc, 1) << b;
    EXPECT_THAT(r.err, ::testing::StartsWith("error: ")) << b;
  }
  Result r = InNs({"get", "cm,pods", "-o", "name"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(SkiffctlCluster, UnreachableServerIsAClearMessage) {
  int port = FreePort();
  Result r = Skiffctl({"--server", "https://127.0.0.1:" + std::to_string(port), "get", "pods"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "error: cannot reach the API server at 127.0.0.1:" + std::to_string(port) + ": connection refused\n");
}

TEST_F(SkiffctlCluster, RunScaleEditRolloutUndo) {
  Result r = InNs({"run", "box", "--image=busybox", "--restart=Never", "--", "sleep", "3600"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "pod/box created\n");
  r = InNs({"get", "pod", "box", "-o", "jsonpath={.metadata.labels.run} {.spec.containers[0].args}"});
  EXPECT_EQ(r.out, "box [\"sleep\",\"3600\"]");

  r = InNs({"create", "deployment", "web", "--image=nginx:1.24"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = InNs({"scale", "deployment/web", "--replicas=3"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "deployment.apps/web scaled\n");
  EXPECT_TRUE(WaitFor({"get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"}, "3"));
  // The deployment controller creates revision 1's ReplicaSet.
  ASSERT_TRUE(WaitFor({"get", "rs", "-o", "jsonpath={.items[*].metadata.annotations.deployment\\.kubernetes\\.io/revision}"}, "1"))
      << InNs({"get", "rs", "-o", "yaml"}).out;

  // A new image through $EDITOR makes revision 2.
  std::string editor = Write("editor.sh", "#!/bin/sh\nsed -i 's/nginx:1.24/nginx:1.25/' \"$1\"\n");
  fs::permissions(editor, fs::perms::owner_all);
  r = InNs({"edit", "deployment", "web"}, "", {"EDITOR=" + editor});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "deployment.apps/web edited\n");
  r = InNs({"rollout", "history", "deploy/web"});
  for (int i = 0; i < 100 && r.out.find("\n2 ") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    r = InNs({"rollout", "history", "deploy/web"});
  }
  EXPECT_EQ(r.out, "deployment.apps/web \nREVISION   CHANGE-CAUSE\n1          <none>\n2          <none>\n\n");
  r = InNs({"rollout", "undo", "deployment/web"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "deployment.apps/web rolled back\n");
  r = InNs({"get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"});
  EXPECT_EQ(r.out, "nginx:1.24");
  // describe shows the deployment controller's events.
  r = InNs({"describe", "deployment", "web"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex("Name: +web\n(.|\n)*\nEvents:\n  Type +Reason +Age +From +Message\n"
                                             "(.|\n)*  Normal +ScalingReplicaSet +[0-9]+s +[a-z-]+ +"
                                             "Scaled up replica set web-[a-z0-9]+ (to|from) (.|\n)*"))
      << r.out;
}

TEST_F(SkiffctlCluster, DrainHollowNode) {
  std::string node = "hollow-" + ns_;
  std::string f = Write("node.yaml", "apiVersion: v1\nkind: Node\nmetadata:\n  name: " + node +
                                         "\n  labels:\n    kubernetes.io/hostname: " + node + "\n");
  Result r = Skiffctl({"apply", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string pod = Write("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\nspec:\n  nodeName: " + node +
                                          "\n  containers:\n  - name: c\n    image: busybox\n");
  r = InNs({"apply", "-f", pod});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = Skiffctl({"drain", node, "--timeout=20s"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot delete Pods that declare no controller"));
  r = Skiffctl({"drain", node, "--force", "--grace-period=0", "--timeout=30s"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("evicting pod " + ns_ + "/stray\n"));
  EXPECT_THAT(r.out, HasSubstr("node/" + node + " drained\n"));
  r = Skiffctl({"get", "node", node, "-o", "jsonpath={.spec.unschedulable}"});
  EXPECT_EQ(r.out, "true");
  r = Skiffctl({"uncordon", node});
  EXPECT_EQ(r.out, "node/" + node + " uncordoned\n");
  Skiffctl({"delete", "node", node});
}

TEST_F(SkiffctlCluster, GetSelectorsNamesAndServerInfo) {
  for (const char* n : {"a", "b", "c"}) ASSERT_EQ(InNs({"create", "configmap", n, "--from-literal=k=v"}).rc, 0);
  ASSERT_EQ(InNs({"label", "cm", "a", "tier=front"}).rc, 0);
  ASSERT_EQ(InNs({"label", "cm", "b", "tier=back"}).rc, 0);
  Result r = InNs({"get", "cm", "a", "b", "-o", "name"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "configmap/a\nconfigmap/b\n");
  r = InNs({"get", "cm", "-l", "tier=front", "-o", "name"});
  EXPECT_EQ(r.out, "configmap/a\n") << r.err;
  r = InNs({"get", "cm", "-l", "tier in (front,back)", "-o", "name"});
  EXPECT_EQ(r.out, "configmap/a\nconfigmap/b\n") << r.err;
  r = InNs({"get", "cm", "-l", "!tier", "-o", "name"});
  EXPECT_EQ(r.out, "configmap/c\n") << r.err;
  r = InNs({"get", "cm", "--field-selector", "metadata.name=b", "-o", "name"});
  EXPECT_EQ(r.out, "configmap/b\n") << r.err;
  r = InNs({"get", "cm", "--field-selector", "metadata.name!=b", "-l", "tier", "-o", "name"});
  EXPECT_EQ(r.out, "configmap/a\n") << r.err;
  r = InNs({"get", "cm", "-l", "tier=none"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "No resources found in " + ns_ + " namespace.\n");
  r = InNs({"get", "cm", "a", "--show-labels", "--no-headers"});
  EXPECT_THAT(r.out, ::testing::MatchesRegex("a +1 +[0-9]+s +tier=front\n")) << r.out;
  // -A lists this namespace's objects with a NAMESPACE column.
  r = Skiffctl({"get", "cm", "-A", "-l", "tier=back"});
  EXPECT_THAT(r.out, ::testing::MatchesRegex("NAMESPACE +NAME +DATA +AGE\n" + ns_ + " +b +1 +[0-9]+s\n")) << r.out;

  std::string addr = "127.0.0.1:" + std::to_string(port_);
  r = Skiffctl({"cluster-info"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Skiff control plane is running at https://" + addr + "\n"));
  r = Skiffctl({"version"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex("Client Version: v[0-9.]+\nServer Version: v[0-9.]+.*\n"));
  r = Skiffctl({"api-resources"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("NAME "));
  EXPECT_THAT(r.out, HasSubstr("\nleases "));
  r = Skiffctl({"token", "create"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex("skiff-kubelet --server " + addr +
                                             " --bootstrap-token [a-z0-9]{6}\\.[a-z0-9]{16} "
                                             "--discovery-token-ca-cert-hash sha256:[0-9a-f]{64}\n"));
}

TEST_F(SkiffctlCluster, DeleteWaitsGracePeriodAndForce) {
  // A pod bound to a node without a kubelet stays Terminating for its grace period.
  std::string pod = Write("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lingering\nspec:\n"
                                      "  nodeName: no-such-node\n  terminationGracePeriodSeconds: 600\n"
                                      "  containers:\n  - name: c\n    image: busybox\n");
  ASSERT_EQ(InNs({"apply", "-f", pod}).rc, 0);
  auto start = std::chrono::steady_clock::now();
  Result r = InNs({"delete", "pod", "lingering", "--timeout=1s"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.out, "pod \"lingering\" deleted\n");
  EXPECT_EQ(r.err, "error: timed out waiting for the condition on pods/lingering\n");
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  r = InNs({"get", "pod", "lingering", "-o", "jsonpath={.metadata.deletionGracePeriodSeconds}"});
  EXPECT_EQ(r.out, "600");
  // --grace-period shortens it; --wait=false returns at once.
  r = InNs({"delete", "pod", "lingering", "--grace-period=300", "--wait=false"});
  EXPECT_EQ(r.rc, 0) << r.err;
  r = InNs({"get", "pod", "lingering", "-o", "jsonpath={.metadata.deletionGracePeriodSeconds}"});
  EXPECT_EQ(r.out, "300");
  // --force --grace-period=0 removes it now, and --wait sees it gone.
  r = InNs({"delete", "-f", pod, "--force", "--grace-period=0"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "pod \"lingering\" force deleted\n");
  r = InNs({"get", "pod", "lingering"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "Error from server (NotFound): pods \"lingering\" not found\n");
}

TEST_F(SkiffctlCluster, CreateFromFileIsCreateOnly) {
  std::string f = Write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: once\ndata:\n  k: v\n");
  Result r = InNs({"create", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "configmap/once created\n");
  r = InNs({"create", "-f", f});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "Error from server (AlreadyExists): error when creating \"" + f +
                       "\": configmaps \"once\" already exists\n");
  // JSON on stdin, and describe of what is there.
  r = InNs({"create", "-f", "-"}, R"({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                       "stringData": {"password": "hunter2"}})");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "secret/s created\n");
  r = InNs({"get", "secret", "s", "-o", "jsonpath={.data.password}"});
  EXPECT_EQ(r.out, "aHVudGVyMg==");
  r = InNs({"describe", "cm", "once"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex("Name: +once\nNamespace: +" + ns_ + "\n(.|\n)*Events: +<none>\n"));
}

TEST_F(SkiffctlCluster, TopWithoutAnyKubeletSaysSo) {
  // A node with no kubelet behind it (no address): the API server's NodeStats fails for it.
  std::string node = "statless-" + ns_;
  std::string f = Write("node.yaml", "apiVersion: v1\nkind: Node\nmetadata:\n  name: " + node + "\n");
  ASSERT_EQ(Skiffctl({"apply", "-f", f}).rc, 0);
  Result r = Skiffctl({"top", "node", node});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "error: metrics not available yet\n");
  r = InNs({"top", "pods"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "No resources found in " + ns_ + " namespace.\n");
  std::string pod = Write("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: quiet\nspec:\n  nodeName: " + node +
                                          "\n  containers:\n  - name: c\n    image: busybox\n");
  ASSERT_EQ(InNs({"apply", "-f", pod}).rc, 0);
  r = InNs({"top", "pods"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, ::testing::MatchesRegex("error: Metrics not available for pod " + ns_ + "/quiet, age: [0-9]+s\n"));
  InNs({"delete", "pod", "quiet", "--force", "--grace-period=0"});
  Skiffctl({"delete", "node", node});
}

// Every API group the issue names, in the shape Kubernetes writes them.
constexpr char kGroups[] = R"(apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: my-lease
spec:
  holderIdentity: node-1
  leaseDurationSeconds: 40
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: example-abc
  labels:
    kubernetes.io/service-name: example
addressType: IPv4
ports:
  - name: http
    protocol: TCP
    port: 80
endpoints:
  - addresses:
      - "10.1.2.3"
    conditions:
      ready: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "watch", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: read-pods
subjects:
- kind: User
  name: jane
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: pod-reader
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: build-robot
)";

TEST_F(SkiffctlCluster, EveryApiGroupRoundTrips) {
  std::string f = Write("groups.yaml", kGroups);
  Result r = InNs({"apply", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out,
            "lease.coordination.k8s.io/my-lease created\n"
            "endpointslice.discovery.k8s.io/example-abc created\n"
            "role.rbac.authorization.k8s.io/pod-reader created\n"
            "rolebinding.rbac.authorization.k8s.io/read-pods created\n"
            "serviceaccount/build-robot created\n");
  r = InNs({"apply", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("role.rbac.authorization.k8s.io/pod-reader unchanged\n"));
  r = InNs({"get", "lease", "my-lease", "-o", "jsonpath={.apiVersion} {.spec.holderIdentity}"});
  EXPECT_EQ(r.out, "coordination.k8s.io/v1 node-1");
  r = InNs({"get", "endpointslices", "-o", "jsonpath={.items[0].endpoints[0].addresses[0]}"});
  EXPECT_EQ(r.out, "10.1.2.3");
  r = InNs({"get", "rolebinding", "read-pods", "-o", "jsonpath={.roleRef.name}/{.subjects[0].name}"});
  EXPECT_EQ(r.out, "pod-reader/jane");
  r = InNs({"delete", "-f", f});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = InNs({"get", "leases,roles,rolebindings,endpointslices", "-o", "name"});
  EXPECT_EQ(r.out, "");
}

TEST_F(SkiffctlCluster, GetWatchSeesChanges) {
  std::vector<std::string> args = {BuildDir() + "/bin/skiffctl", "--config", *config_, "-n", ns_, "get", "cm", "-w"};
  Child watch(args, "");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Result r = InNs({"create", "configmap", "watched", "--from-literal=a=1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = InNs({"delete", "configmap", "watched"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    watch.Pump(100);
    size_t first = watch.out.find("watched");
    if (first != std::string::npos && watch.out.find("watched", first + 1) != std::string::npos) break;
  }
  watch.Kill();
  size_t first = watch.out.find("watched");
  ASSERT_NE(first, std::string::npos) << watch.out << watch.err;
  EXPECT_NE(watch.out.find("watched", first + 1), std::string::npos) << watch.out;  // ADDED then DELETED
}

}  // namespace
