// skiffctl against real pods: skiff-control-plane and one skiff-kubelet on
// host 1 of a lab (tests/lab), skiffctl run inside that host as a user would.
// Shows port-forward, logs (--tail, -c, -p after a restart, -f seeing a new
// line), exec (output, stdin, exit code, -it with a real pty: tty, size,
// typed input) and top nodes/pods, end to end through the API server to
// the kubelet.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <vector>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lab.h"

namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string BuildDir() {
  const char* b = getenv("SKIFF_BUILD_DIR");
  return b ? b : "build";
}

// A cgroup's path below its cgroup2 mount ("/skiff-lab/NAME/h1"): every
// cgroup but the root has a cgroup.type file.
std::string BelowCgroupRoot(const std::string& cgroup) {
  std::vector<std::string> parts;
  for (fs::path p = cgroup; fs::exists(p / "cgroup.type"); p = p.parent_path()) parts.push_back(p.filename());
  std::string rel;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) rel += "/" + *it;
  return rel;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitFor(const std::function<bool()>& f, int ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return f();
}

// Single-quotes a word for sh.
std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Two pods on the lab's node: "web" serves a page on 8080; "talker" prints
// three lines, then one more once /tmp/go exists, and has a second container
// "crash" that fails its first run and prints "second-run" after the restart.
constexpr char kPods[] = R"(apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: local/busybox
    command: ["sh", "-c", "mkdir -p /tmp/w; echo pf-reply > /tmp/w/index.html; exec httpd -f -p 8080 -h /tmp/w"]
---
apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: main
    image: local/busybox
    command: ["sh", "-c", "echo line-1; echo line-2; echo line-3; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo after-go; exec sleep 3600"]
  - name: crash
    image: local/busybox
    volumeMounts:
    - name: data
      mountPath: /data
    command: ["sh", "-c", "if [ -f /data/ran ]; then echo second-run; exec sleep 3600; fi; touch /data/ran; echo first-run; exit 3"]
)";

class SkiffctlLab : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;  // each test skips
    auto lab = skiff::lab::Lab::Create(1);
    ASSERT_TRUE(lab.ok()) << lab.status();
    lab_ = lab->release();
    const auto& h = lab_->host(1);
    std::string images = h.dir + "/images";
    fs::create_directories(images + "/busybox/bin");
    for (const char* d : {"proc", "dev", "sys", "tmp", "etc"}) fs::create_directories(images + "/busybox/" + d);
    fs::copy_file("/bin/busybox", images + "/busybox/bin/busybox");
    for (const char* a :
         {"sh", "sleep", "echo", "cat", "httpd", "mkdir", "touch", "tty", "wc", "true", "stty", "timeout"})
      fs::create_symlink("busybox", images + "/busybox/bin/" + a);
    data_ = new std::string(h.dir + "/cp");
    auto cp = lab_->Start(1, {BuildDir() + "/bin/skiff-control-plane", "--data-dir", *data_, "--listen",
                              h.address + ":6443", "--advertise-address", h.address, "--health-listen",
                              "127.0.0.1:6444"},
                          h.dir + "/cp.log");
    ASSERT_TRUE(cp.ok()) << cp.status();
    cp_ = new skiff::lab::Process(std::move(*cp));
    ASSERT_TRUE(WaitFor([] { return fs::exists(*data_ + "/admin.conf") && Ctl({"get", "ns"}).exit_code == 0; },
                        30000))
        << Slurp(h.dir + "/cp.log");
    std::string cg = BelowCgroupRoot(h.cgroup);
    auto k = lab_->Start(1, {BuildDir() + "/bin/skiff-kubelet", "--kubeconfig", *data_ + "/admin.conf",
                             "--node-name", h.name, "--root-dir", h.dir + "/root", "--run-dir", h.dir + "/run",
                             "--log-dir", h.dir + "/log", "--cgroup-root", cg + "/kubepods", "--pod-cidr",
                             "10.244.1.0/24", "--node-ip", h.address, "--rootfs-dir", images, "--listen",
                             h.address + ":10250", "--healthz-listen", "127.0.0.1:10248"},
                         h.dir + "/kubelet.log");
    ASSERT_TRUE(k.ok()) << k.status();
    kubelet_ = new skiff::lab::Process(std::move(*k));
    std::ofstream(h.dir + "/pods.yaml") << kPods;
    auto r = Ctl({"apply", "-f", h.dir + "/pods.yaml"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_TRUE(WaitFor(
        [] {
          return Ctl({"get", "pods", "-o", "jsonpath={.items[*].status.phase}"}).output == "Running Running";
        },
        60000))
        << Ctl({"get", "pods", "-o", "yaml"}).output << Slurp(h.dir + "/kubelet.log").substr(0, 6000);
  }
  static void TearDownTestSuite() {
    if (lab_ == nullptr) return;
    Ctl({"delete", "pods", "--all", "--grace-period=0", "--force"});
    if (kubelet_ != nullptr) {
      // Let the kubelet tear its pods down before it goes; the lab removes the rest.
      WaitFor([] { return !fs::exists(lab_->host(1).dir + "/run/netns") ||
                          fs::is_empty(lab_->host(1).dir + "/run/netns"); }, 20000);
      kubelet_->Signal(SIGTERM);
      kubelet_->Wait();
    }
    delete kubelet_;
    delete cp_;
    delete lab_;  // removes namespaces, cgroups, mounts and state
    delete data_;
    kubelet_ = cp_ = nullptr;
    lab_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_NE(lab_, nullptr);
  }

  static std::vector<std::string> Argv(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {BuildDir() + "/bin/skiffctl", "--kubeconfig", *data_ + "/admin.conf"};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  // skiffctl inside host 1; stdout and stderr together.
  static skiff::lab::CommandResult Ctl(const std::vector<std::string>& args) { return lab_->Run(1, Argv(args)); }
  // skiffctl through sh, for pipes and terminals.
  static skiff::lab::CommandResult Sh(const std::string& script) { return lab_->Run(1, {"sh", "-c", script}); }
  static std::string CtlWords(const std::vector<std::string>& args) {
    std::string s;
    for (const auto& a : Argv(args)) s += Quote(a) + " ";
    return s;
  }
  std::string Jsonpath(const std::string& pod, const std::string& path) {
    return Ctl({"get", "pod", pod, "-o", "jsonpath=" + path}).output;
  }

  static skiff::lab::Lab* lab_;
  static skiff::lab::Process* cp_;
  static skiff::lab::Process* kubelet_;
  static std::string* data_;
};

skiff::lab::Lab* SkiffctlLab::lab_ = nullptr;
skiff::lab::Process* SkiffctlLab::cp_ = nullptr;
skiff::lab::Process* SkiffctlLab::kubelet_ = nullptr;
std::string* SkiffctlLab::data_ = nullptr;

TEST_F(SkiffctlLab, PortForwardReachesThePod) {
  std::string log = lab_->host(1).dir + "/pf.log";
  auto pf = lab_->Start(1, Argv({"port-forward", "pod/web", "18080:8080", "18081:9999"}), log);
  ASSERT_TRUE(pf.ok()) << pf.status();
  ASSERT_TRUE(WaitFor([&] { return Slurp(log).find("Forwarding from 127.0.0.1:18080 -> 8080") != std::string::npos; },
                      15000))
      << Slurp(log);
  // Two connections one after the other: each is forwarded on its own.
  for (int i = 0; i < 2; ++i) {
    auto r = lab_->Run(1, {"curl", "-s", "-m", "5", "http://127.0.0.1:18080/"});
    EXPECT_EQ(r.exit_code, 0) << r.output << Slurp(log);
    EXPECT_EQ(r.output, "pf-reply\n") << Slurp(log);
  }
  EXPECT_THAT(Slurp(log), HasSubstr("Handling connection for 18080\n"));
  // A pod port nobody listens on fails that connection only; the forwarder
  // keeps serving the other port.
  auto bad = lab_->Run(1, {"curl", "-s", "-m", "5", "http://127.0.0.1:18081/"});
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  auto again = lab_->Run(1, {"curl", "-s", "-m", "5", "http://127.0.0.1:18080/"});
  EXPECT_EQ(again.output, "pf-reply\n") << Slurp(log);
  pf->Signal(SIGTERM);
  pf->Wait();
}

TEST_F(SkiffctlLab, LogsTailContainerPreviousAndFollow) {
  ASSERT_TRUE(WaitFor([&] { return Ctl({"logs", "talker", "-c", "main"}).output == "line-1\nline-2\nline-3\n"; },
                      15000))
      << Ctl({"logs", "talker", "-c", "main"}).output;
  auto r = Ctl({"logs", "talker", "-c", "main", "--tail=2"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "line-2\nline-3\n");
  r = Ctl({"logs", "talker", "-c", "main", "--tail", "0"});
  EXPECT_EQ(r.output, "");
  // --since: everything was written within the last hour.
  r = Ctl({"logs", "talker", "-c", "main", "--since=1h"});
  EXPECT_EQ(r.output, "line-1\nline-2\nline-3\n");
  // Without -c a two-container pod defaults to the first and says so.
  r = Ctl({"logs", "talker", "--tail=1"});
  EXPECT_EQ(r.output, "Defaulted container \"main\" out of: main, crash\nline-3\n");

  // The "crash" container failed once and was restarted: -p shows the first run.
  ASSERT_TRUE(WaitFor([&] { return Ctl({"logs", "talker", "-c", "crash"}).output == "second-run\n"; }, 30000))
      << Ctl({"logs", "talker", "-c", "crash"}).output << Ctl({"get", "pod", "talker", "-o", "yaml"}).output;
  EXPECT_EQ(Jsonpath("talker", "{.status.containerStatuses[?(@.name==\"crash\")].restartCount}"), "1");
  r = Ctl({"logs", "talker", "-c", "crash", "-p"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "first-run\n");
  // "main" never restarted: kubelet's error, exit 1.
  r = Ctl({"logs", "talker", "-c", "main", "--previous"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, ::testing::StartsWith("Error from server"));

  // -f prints what is there, then a line written later.
  std::string log = lab_->host(1).dir + "/follow.log";
  auto follow = lab_->Start(1, Argv({"logs", "-f", "talker", "-c", "main"}), log);
  ASSERT_TRUE(follow.ok()) << follow.status();
  ASSERT_TRUE(WaitFor([&] { return Slurp(log) == "line-1\nline-2\nline-3\n"; }, 15000)) << Slurp(log);
  r = Ctl({"exec", "talker", "-c", "main", "--", "touch", "/tmp/go"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(WaitFor([&] { return Slurp(log) == "line-1\nline-2\nline-3\nafter-go\n"; }, 15000)) << Slurp(log);
  // Still following: the process has not exited.
  EXPECT_EQ(::kill(follow->pid(), 0), 0);
  follow->Signal(SIGTERM);
  follow->Wait();

  // Missing pod: kubectl's message and exit 1.
  r = Ctl({"logs", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "Error from server (NotFound): pods \"nope\" not found\n");
}

TEST_F(SkiffctlLab, ExecOutputStdinAndExitCode) {
  auto r = Ctl({"exec", "web", "--", "cat", "/tmp/w/index.html"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "pf-reply\n");
  // Separate streams: stdout to stdout, stderr to stderr, the exit code propagates.
  std::string o = lab_->host(1).dir + "/exec-out", e = lab_->host(1).dir + "/exec-err";
  r = Sh(CtlWords({"exec", "web", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"}) + " >" + o + " 2>" + e +
         "; echo rc=$?; cat " + o + "; echo ---; cat " + e);
  EXPECT_EQ(r.output, "rc=7\nto-out\n---\nto-err\ncommand terminated with exit code 7\n");
  // -i copies stdin to the command.
  r = Sh("printf 'one\\ntwo\\n' | " + CtlWords({"exec", "-i", "web", "--", "sh", "-c", "cat | wc -l"}));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::MatchesRegex(" *2\n"));
  // -c picks the container; a missing container is the server's error.
  // ("crash" runs for good only after its restart, about 10 s in.)
  ASSERT_TRUE(WaitFor([&] { return Ctl({"logs", "talker", "-c", "crash"}).output == "second-run\n"; }, 30000))
      << Ctl({"get", "pod", "talker", "-o", "yaml"}).output;
  r = Ctl({"exec", "talker", "-c", "crash", "--", "cat", "/data/ran"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Ctl({"exec", "talker", "-c", "nosuch", "--", "true"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output, "Error from server (BadRequest): container nosuch is not valid for pod talker\n");
  // -it on a terminal (script(1) gives skiffctl one): the command runs, its
  // output and exit code come back.
  r = Sh("script -qec " + Quote(CtlWords({"exec", "-it", "web", "--", "sh", "-c", "echo in-tty; exit 3"})) +
         " /dev/null");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_THAT(r.output, HasSubstr("in-tty"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("Unable to use a TTY")));
}

TEST_F(SkiffctlLab, ExecTtyHasAPtyTheTerminalSizeAndTypedInput) {
  // script(1) runs skiffctl on a pseudo-terminal whose size stty sets; what
  // is piped into script is typed on that terminal. The kubelet's exec gets
  // a pty of its own (runc console socket), sized from skiffctl's first
  // message. The shell reads the typed line first, so the size is asked for
  // only after the kubelet has surely applied it.
  std::string inner = "stty rows 33 cols 101 && " +
                      CtlWords({"exec", "-it", "web", "--", "sh", "-c",
                                "read w; tty; stty size; echo \"got-$w\"; exit 4"});
  auto r = Sh("printf 'typed-word\\n' | script -qec " + Quote(inner) + " /dev/null");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_THAT(r.output, ::testing::ContainsRegex("/dev/pts/[0-9]+\r?\n")) << r.output;
  EXPECT_THAT(r.output, ::testing::ContainsRegex("(^|\n)33 101\r?\n")) << r.output;
  EXPECT_THAT(r.output, HasSubstr("got-typed-word")) << r.output;
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("Unable to use a TTY")));
  // The remote terminal follows the local one: script's pty is resized
  // between two typed lines (input from a fifo the test writes).
  std::string dir = lab_->host(1).dir;
  std::string fifo = dir + "/tty-in", pty = dir + "/tty-path", log = dir + "/tty.log";
  fs::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::string session = "stty rows 33 cols 101 && tty > " + pty + " && " +
                        CtlWords({"exec", "-it", "web", "--", "sh", "-c",
                                  "read a; stty size; read b; stty size; echo \"done-$b\""});
  auto p = lab_->Start(1, {"sh", "-c", "script -qec " + Quote(session) + " /dev/null < " + fifo}, log);
  ASSERT_TRUE(p.ok()) << p.status();
  {
    std::ofstream in(fifo);
    in << "first\n" << std::flush;
    EXPECT_TRUE(WaitFor([&] { return Slurp(log).find("\n33 101") != std::string::npos; }, 15000)) << Slurp(log);
    std::string path = Slurp(pty);
    while (!path.empty() && path.back() == '\n') path.pop_back();
    auto st = lab_->Run(1, {"stty", "-F", path, "rows", "20", "cols", "90"});
    EXPECT_EQ(st.exit_code, 0) << st.output;
    in << "second\n" << std::flush;
    EXPECT_TRUE(WaitFor([&] { return Slurp(log).find("done-second") != std::string::npos; }, 15000)) << Slurp(log);
  }
  EXPECT_EQ(p->Wait(), 0) << Slurp(log);
  EXPECT_THAT(Slurp(log), ::testing::ContainsRegex("\n20 90\r?\n")) << Slurp(log);
  fs::remove(fifo);
  // The same command without -t has no terminal at all.
  r = Sh("printf 'x\\n' | " + CtlWords({"exec", "-i", "web", "--", "sh", "-c", "read w; tty"}));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("not a tty"));
}

TEST_F(SkiffctlLab, TopNodesFromTheKubelet) {
  // The kubelet's Stats through the API server (Api.NodeStats).
  auto r = Ctl({"top", "nodes"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::MatchesRegex("NAME +CPU\\(cores\\) +CPU% +MEMORY\\(bytes\\) +MEMORY%\n"
                                                "h1 +[0-9]+m +[0-9]+% +[1-9][0-9]*Mi +[0-9]+%\n"))
      << r.output;
  r = Ctl({"top", "node", "nosuch"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "Error from server (NotFound): nodes \"nosuch\" not found\n");
}

TEST_F(SkiffctlLab, TopPodsFromTheKubelet) {
  // Memory is measurable only where the pods' cgroup2 has the memory
  // controller; on the hybrid build host it has not, the kubelet names it
  // unavailable and skiffctl prints <unknown> (docs/skiffctl.md).
  std::string controllers = Slurp(lab_->host(1).cgroup + "/cgroup.controllers");
  bool memory = (" " + controllers).find(" memory") != std::string::npos;
  std::string mem = memory ? "[0-9]+Mi" : "<unknown>";
  // talker's "crash" container is in its second, lasting run.
  ASSERT_TRUE(WaitFor([&] { return Ctl({"logs", "talker", "-c", "crash"}).output == "second-run\n"; }, 30000));
  // A busy loop inside "web" (bounded by timeout, and killed with the exec).
  std::string log = lab_->host(1).dir + "/burn.log";
  auto burn = lab_->Start(1, Argv({"exec", "web", "--", "timeout", "30", "sh", "-c", "while :; do :; done"}), log);
  ASSERT_TRUE(burn.ok()) << burn.status();
  auto web_cpu = [&](const std::string& out) -> long {
    auto at = out.find("\nweb ");
    if (at == std::string::npos) return -1;
    size_t pos = out.find_first_of("0123456789", at + 5);
    return pos == std::string::npos ? -1 : std::strtol(out.c_str() + pos, nullptr, 10);
  };
  // Every running container's CPU is a rate from two samples; a container
  // just (re)started may be <unknown> for a moment ("crash" restarts once),
  // so wait for the settled table, with the loop's CPU on "web".
  auto pods_table = ::testing::MatchesRegex("NAME +CPU\\(cores\\) +MEMORY\\(bytes\\)\n"
                                            "talker +[0-9]+m +" + mem + "\n"
                                            "web +[0-9]+m +" + mem + "\n");
  skiff::lab::CommandResult r;
  EXPECT_TRUE(WaitFor(
      [&] {
        r = Ctl({"top", "pods"});
        return ::testing::Matches(pods_table)(r.output) && web_cpu(r.output) >= 200;
      },
      30000))
      << r.output << Slurp(log);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, pods_table);
  r = Ctl({"top", "pod", "web", "--containers"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::MatchesRegex("POD +NAME +CPU\\(cores\\) +MEMORY\\(bytes\\)\n"
                                                "web +web +[1-9][0-9]*m +" + mem + "\n"))
      << r.output;
  // Both of talker's containers, each with its own figures.
  r = Ctl({"top", "pod", "talker", "--containers", "--no-headers"});
  EXPECT_THAT(r.output, ::testing::MatchesRegex("talker +(main|crash) +[0-9]+m +" + mem + "\n"
                                                "talker +(main|crash) +[0-9]+m +" + mem + "\n"))
      << r.output;
  EXPECT_THAT(r.output, HasSubstr(" main "));
  EXPECT_THAT(r.output, HasSubstr(" crash "));
  r = Ctl({"top", "pods", "-A", "--sort-by=cpu", "--no-headers"});
  EXPECT_THAT(r.output, ::testing::StartsWith("default   web ")) << r.output;
  burn->Signal(SIGTERM);
  burn->Wait();
}

}  // namespace
