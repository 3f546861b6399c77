// The lab's promises, checked against the real kernel (root): hosts reach each
// other and nothing else, cut-off works, and nothing is left behind.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "lab.h"

namespace skiff::lab {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Ping(const Lab& lab, int from, const std::string& addr) {
  return lab.Run(from, {"busybox", "ping", "-c", "1", "-W", "1", addr}).exit_code == 0;
}

// Everything a lab named `name` could leave on the machine.
std::vector<std::string> Leftovers(const std::string& name) {
  std::vector<std::string> left;
  auto netns = Lab::RunOnMachine({"ip", "netns", "list"});
  std::istringstream in(netns.output);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "-", 0) == 0) left.push_back("netns " + line);
  }
  auto links = Lab::RunOnMachine({"ip", "-o", "link", "show"});
  if (links.output.find(name) != std::string::npos) left.push_back("link with the lab's name in the root netns");
  if (ReadFile("/proc/self/mountinfo").find("/skiff-lab/" + name + "/") != std::string::npos) {
    left.push_back("mount under /run/skiff-lab/" + name);
  }
  if (fs::exists("/run/skiff-lab/" + name)) left.push_back("state dir /run/skiff-lab/" + name);
  auto cg = Lab::RunOnMachine({"sh", "-c", "awk '$9==\"cgroup2\"{print $5; exit}' /proc/self/mountinfo"});
  std::string cg2 = cg.output.substr(0, cg.output.find('\n'));
  if (!cg2.empty() && fs::exists(cg2 + "/skiff-lab/" + name)) left.push_back("cgroup " + cg2 + "/skiff-lab/" + name);
  return left;
}

class LabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the lab needs root";
  }
};

TEST_F(LabTest, TwoHostsReachEachOther) {
  auto lab = Lab::Create(2);
  ASSERT_TRUE(lab.ok()) << lab.status();
  EXPECT_TRUE(Ping(**lab, 1, (*lab)->host(2).address));
  EXPECT_TRUE(Ping(**lab, 2, (*lab)->host(1).address));
}

TEST_F(LabTest, NoHostHasARouteOutOfTheLab) {
  auto lab = Lab::Create(2);
  ASSERT_TRUE(lab.ok()) << lab.status();
  for (int h = 1; h <= 2; ++h) {
    // `ip route get` asks the kernel's routing table and sends nothing.
    for (const char* outside : {"1.1.1.1", "8.8.8.8", "192.168.1.1", "10.0.0.1", "172.16.0.1"}) {
      auto r = (*lab)->Run(h, {"ip", "route", "get", outside});
      EXPECT_NE(r.exit_code, 0) << "h" << h << " has a route to " << outside << ": " << r.output;
      EXPECT_NE(r.output.find("unreachable"), std::string::npos) << r.output;
    }
    auto def = (*lab)->Run(h, {"ip", "route", "show", "default"});
    EXPECT_EQ(def.exit_code, 0);
    EXPECT_EQ(def.output, "") << "h" << h << " has a default route";
  }
}

TEST_F(LabTest, HostsHaveTheirOwnCgroupAndBpffs) {
  auto lab = Lab::Create(2);
  ASSERT_TRUE(lab.ok()) << lab.status();
  const Host& h1 = (*lab)->host(1);
  auto r = (*lab)->Run(1, {"cat", "/proc/self/cgroup"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("0::/skiff-lab/" + (*lab)->name() + "/h1"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_directory(h1.cgroup));
  EXPECT_NE(ReadFile("/proc/self/mountinfo").find(h1.bpffs + " "), std::string::npos) << "bpffs not mounted";
  EXPECT_NE(h1.bpffs, (*lab)->host(2).bpffs);
  for (const char* sub : {"root", "run", "log", "etc"}) EXPECT_TRUE(fs::is_directory(h1.dir + "/" + sub));
}

TEST_F(LabTest, CutOffAndRestore) {
  auto lab = Lab::Create(2);
  ASSERT_TRUE(lab.ok()) << lab.status();
  ASSERT_TRUE(Ping(**lab, 1, (*lab)->host(2).address));
  ASSERT_TRUE((*lab)->Cut(2).ok());
  EXPECT_FALSE(Ping(**lab, 1, (*lab)->host(2).address));
  ASSERT_TRUE((*lab)->Restore(2).ok());
  bool back = false;
  for (int i = 0; i < 20 && !back; ++i) back = Ping(**lab, 1, (*lab)->host(2).address);
  EXPECT_TRUE(back);
}

TEST_F(LabTest, DestroyLeavesNothingBehindEvenWithProcessesRunning) {
  std::string name;
  {
    auto lab = Lab::Create(2);
    ASSERT_TRUE(lab.ok()) << lab.status();
    name = (*lab)->name();
    auto sleeper = (*lab)->Start(1, {"sleep", "300"}, "/dev/null");
    ASSERT_TRUE(sleeper.ok());
    sleeper->running();
    // A process left running inside the host, and an extra mount under its dir.
    auto pid_file = (*lab)->host(2).dir + "/run/sleep.pid";
    ASSERT_EQ((*lab)->Run(2, {"sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $! > " + pid_file}).exit_code, 0);
    ASSERT_EQ(Lab::RunOnMachine({"mount", "-t", "tmpfs", "tmpfs", (*lab)->host(2).dir + "/root"}).exit_code, 0);
    EXPECT_FALSE(Leftovers(name).empty());
    ASSERT_TRUE((*lab)->Destroy().ok());
  }
  EXPECT_EQ(Leftovers(name), std::vector<std::string>{});
}

TEST_F(LabTest, StaleLabOfACrashedRunIsRemovedByTheNextRun) {
  // A lab whose owner has exited, as after a crash.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  std::string stale = "skstale" + std::to_string(getpid() % 1000);
  auto up = Lab::RunOnMachine({Lab::Script(), "up", stale, "1", "--owner", std::to_string(child)});
  ASSERT_EQ(up.exit_code, 0) << up.output;
  ASSERT_FALSE(Leftovers(stale).empty());

  auto lab = Lab::Create(1);  // runs gc first
  ASSERT_TRUE(lab.ok()) << lab.status();
  EXPECT_EQ(Leftovers(stale), std::vector<std::string>{});
  EXPECT_TRUE(fs::exists("/run/skiff-lab/" + (*lab)->name()));
}

TEST_F(LabTest, SignalToTheOwnerRemovesItsLab) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipefd[0]);
    auto lab = Lab::Create(1);
    std::string name = lab.ok() ? (*lab)->name() : "";
    name.push_back('\n');
    if (write(pipefd[1], name.data(), name.size()) < 0) _exit(2);
    pause();
    _exit(0);
  }
  close(pipefd[1]);
  char buf[64] = {};
  ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
  close(pipefd[0]);
  ASSERT_GT(n, 1);
  std::string name(buf, static_cast<size_t>(n - 1));
  ASSERT_FALSE(Leftovers(name).empty());
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(Leftovers(name), std::vector<std::string>{});
}

TEST_F(LabTest, BadArgumentsAreRefusedWithAClearError) {
  auto r = Lab::RunOnMachine({Lab::Script(), "up", "Bad_Name", "2"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("lab name 'Bad_Name'"), std::string::npos) << r.output;
  r = Lab::RunOnMachine({Lab::Script(), "up", "okname", "zero"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("HOSTS must be 1..50"), std::string::npos) << r.output;
  EXPECT_EQ(Leftovers("okname"), std::vector<std::string>{});
}

}  // namespace
}  // namespace skiff::lab
