// Real-kernel tests of skiff-runtime, side by side with runc on bundles made
// by `runc spec` around a busybox-static rootfs. Root only.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "bundle.h"
#include "skiff/runtime/cgroup.h"
#include "skiff/runtime/container.h"

namespace skiff::runtime {
namespace {

using testing::Bundle;
using testing::CmdResult;
using testing::RunCmd;
using testing::SkiffRuntime;
using testing::TestBase;
namespace fs = std::filesystem;

std::string SkiffRoot() { return TestBase() + "/skiff-root"; }
std::string RuncRoot() { return TestBase() + "/runc-root"; }
CmdResult Skiff(std::vector<std::string> args) {
  args.insert(args.begin(), {SkiffRuntime(), "--root", SkiffRoot()});
  return RunCmd(args);
}
CmdResult Runc(std::vector<std::string> args) {
  args.insert(args.begin(), {"runc", "--root", RuncRoot()});
  return RunCmd(args);
}
std::string Id(const std::string& what) { return "t" + std::to_string(getpid()) + "-" + what; }

std::string Cgroup2() {
  static std::string m = FindCgroup2Mount().value_or("/sys/fs/cgroup");
  return m;
}

int MountsUnder(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  int n = 0;
  for (std::string l; std::getline(in, l);)
    if (l.find(path) != std::string::npos) n++;
  return n;
}

// Running (not gone, not a zombie waiting for whoever inherited it).
bool Alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  auto p = line.rfind(')');
  return p != std::string::npos && p + 2 < line.size() && line[p + 2] != 'Z' && line[p + 2] != 'X';
}

class RuntimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    TestBase();
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
  }
  void TearDown() override {
    for (auto& id : ids_) {
      Skiff({"delete", "-f", id});
      Runc({"delete", "-f", id});
    }
  }
  std::string NewId(const std::string& what) {
    ids_.push_back(Id(what));
    return ids_.back();
  }
  std::vector<std::string> ids_;
};

// --- same output as runc ---------------------------------------------------

struct Case {
  const char* name;
  std::vector<std::string> args;
};

class SameAsRunc : public RuntimeTest, public ::testing::WithParamInterface<Case> {};

TEST_P(SameAsRunc, OutputAndExitCodeMatch) {
  Bundle b(std::string("cmp-") + GetParam().name);
  b.SetArgs(GetParam().args);
  std::string id = NewId(GetParam().name);
  CmdResult r = Runc({"run", "-b", b.dir(), id});
  CmdResult s = Skiff({"run", "-b", b.dir(), id});
  EXPECT_EQ(s.code, r.code) << "runc stderr: " << r.err << "\nskiff stderr: " << s.err;
  EXPECT_EQ(s.out, r.out);
}

INSTANTIATE_TEST_SUITE_P(
    Commands, SameAsRunc,
    ::testing::Values(
        Case{"id", {"id"}}, Case{"hostname", {"hostname"}},
        Case{"caps", {"sh", "-c", "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status"}},
        Case{"proc_entries", {"sh", "-c", "ls /proc | grep -v '^[0-9]'"}},
        Case{"pid1", {"sh", "-c", "echo $$; ls /proc/1/ns"}},
        // cgroup mounts differ by design (runc gives v1 hierarchies on a hybrid host).
        Case{"mounts", {"sh", "-c", "mount | grep -v cgroup"}},
        Case{"ulimit", {"sh", "-c", "ulimit -a"}},
        Case{"dev", {"sh", "-c", "ls -l /dev | awk '{print $1, $3, $4, $5, $6, $NF}'"}},
        Case{"exit_code", {"sh", "-c", "exit 7"}}, Case{"false", {"false"}},
        Case{"child_signal", {"sh", "-c", "sh -c 'kill -9 $$'; echo $?"}},
        Case{"env_cwd", {"sh", "-c", "env | sort; pwd"}},
        Case{"readonly_root", {"sh", "-c", "touch /x; echo $?"}},
        Case{"masked", {"sh", "-c", "cat /proc/kcore | wc -c; ls /proc/acpi | wc -l; cat /proc/keys | wc -c"}},
        Case{"readonly_proc_sys", {"sh", "-c", "echo x > /proc/sys/kernel/domainname; echo $?"}},
        Case{"no_exec", {"/bin/does-not-exist"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(RuntimeTest, UserNamespaceIdsSysctlOomScoreAndRlimitsMatchRunc) {
  Bundle b("userns");
  auto& c = b.config();
  c["process"]["args"] = {"sh", "-c",
                          "id; cat /proc/self/uid_map /proc/self/gid_map; cat /proc/sys/net/ipv4/ip_forward; "
                          "cat /proc/self/oom_score_adj; ulimit -n; ulimit -Hn; ls -ln /bin/busybox; pwd; touch /dev/x"};
  c["process"]["user"] = {{"uid", 1000}, {"gid", 1000}, {"additionalGids", {5, 6}}};
  c["process"]["oomScoreAdj"] = 100;
  c["process"]["cwd"] = "/tmp";
  c["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"hard", 2048}, {"soft", 512}}};
  c["linux"]["namespaces"].push_back({{"type", "user"}});
  c["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
  c["linux"]["gidMappings"] = {{{"containerID", 0}, {"hostID", 200000}, {"size", 65536}}};
  c["linux"]["sysctl"] = {{"net.ipv4.ip_forward", "1"}};
  b.Save();
  ASSERT_EQ(RunCmd({"chown", "-R", "100000:200000", b.dir() + "/rootfs"}).code, 0);
  std::string id = NewId("userns");
  CmdResult r = Runc({"run", "-b", b.dir(), id});
  CmdResult s = Skiff({"run", "-b", b.dir(), id});
  EXPECT_EQ(s.code, r.code) << "runc: " << r.err << "\nskiff: " << s.err;
  EXPECT_EQ(s.out, r.out);
  EXPECT_NE(s.out.find("uid=1000 gid=1000 groups=5,6"), std::string::npos);
  EXPECT_NE(s.out.find("\n100\n512\n2048\n"), std::string::npos) << s.out;
}

TEST_F(RuntimeTest, RunsEveryHookKindWithStateOnStdin) {
  Bundle b("hooks");
  b.SetArgs({"sleep", "30"});
  std::string log = b.dir() + "/hooks.log";
  auto hook = [&](const std::string& name, const std::string& file) {
    // Reads the state JSON from stdin and appends "<name> <id field present>".
    return nlohmann::json{{"path", "/bin/sh"},
                          {"args", {"sh", "-c", "read -r s; case \"$s\" in *'\"id\"'*) echo " + name + " ok;; *) echo " + name + " nostate;; esac >> " + file}}};
  };
  auto& h = b.config()["hooks"];
  h["createRuntime"] = {hook("createRuntime", log)};
  h["createContainer"] = {hook("createContainer", log)};
  h["poststart"] = {hook("poststart", log)};
  h["poststop"] = {hook("poststop", log)};
  // startContainer runs inside the container: paths resolve in its rootfs.
  h["startContainer"] = {{{"path", "/bin/sh"}, {"args", {"sh", "-c", "read -r s; case \"$s\" in *'\"pid\":'[1-9]*) echo started;; *) echo \"$s\";; esac > /dev/shm/hook"}}}};
  b.Save();
  std::string id = NewId("hooks");
  ASSERT_EQ(Skiff({"create", "-b", b.dir(), id}).code, 0);
  ASSERT_EQ(Skiff({"start", id}).code, 0);
  CmdResult e = Skiff({"exec", id, "cat", "/dev/shm/hook"});
  EXPECT_EQ(e.out, "started\n") << e.err;
  ASSERT_EQ(Skiff({"delete", "-f", id}).code, 0);
  std::ifstream in(log);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "createRuntime ok\ncreateContainer ok\npoststart ok\npoststop ok\n");
}

TEST_F(RuntimeTest, DeviceCgroupProgramDeniesWhatTheSpecDeniesLikeRunc) {
  Bundle b("devices");
  b.SetArgs({"sh", "-c",
             "mknod /dev/sda b 8 0 && echo mknod-ok; head -c1 /dev/sda >/dev/null 2>&1; echo read=$?; "
             "head -c1 /dev/zero | wc -c; echo x > /dev/null; echo null=$?"});
  for (const char* set : {"bounding", "effective", "permitted"}) b.config()["process"]["capabilities"][set].push_back("CAP_MKNOD");
  b.Save();
  RunCmd({"ln", "-sf", "busybox", b.dir() + "/rootfs/bin/mknod"});
  std::string id = NewId("devices");
  CmdResult r = Runc({"run", "-b", b.dir(), id});
  CmdResult s = Skiff({"run", "-b", b.dir(), id});
  EXPECT_EQ(s.out, r.out);
  EXPECT_EQ(s.out, "mknod-ok\nread=1\n1\nnull=0\n");
  EXPECT_EQ(s.err.find("not applied"), std::string::npos) << s.err;
}

TEST_F(RuntimeTest, MountDestinationsResolveSymlinksInsideTheRootfs) {
  Bundle b("symlinks");
  const std::string tag = "skiff-escape-" + std::to_string(getpid());
  const std::string host_file = "/etc/" + tag, host_dir = "/etc/" + tag + "-dir";
  auto clean_host = [&] {
    umount2(host_file.c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove(host_file, ec);
    fs::remove(host_dir, ec);
  };
  clean_host();
  // An absolute link and a relative one climbing far above "/": both point at
  // the host's /etc if followed outside the rootfs.
  fs::create_symlink("/etc", b.dir() + "/rootfs/abs");
  fs::create_symlink("../../../../../../../../etc", b.dir() + "/rootfs/rel");
  std::ofstream(b.dir() + "/marker") << "inside\n";
  auto& m = b.config()["mounts"];
  m.push_back({{"destination", "/abs/" + tag}, {"type", "bind"}, {"source", b.dir() + "/marker"}, {"options", {"bind", "ro"}}});
  m.push_back({{"destination", "/rel/" + tag + "-dir"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"size=1m"}}});
  b.SetArgs({"sh", "-c", "cat /etc/" + tag + "; ls -d /etc/" + tag + "-dir; grep -c " + tag + " /proc/self/mounts"});
  std::string id = NewId("symlinks");
  CmdResult s = Skiff({"run", "-b", b.dir(), id});
  bool escaped = fs::exists(host_file) || fs::exists(host_dir);
  clean_host();
  EXPECT_FALSE(escaped) << "a mount point was created on the host's /etc";
  EXPECT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(s.out, "inside\n/etc/" + tag + "-dir\n2\n");
  // Both landed in the rootfs' own etc.
  EXPECT_TRUE(fs::exists(b.dir() + "/rootfs/etc/" + tag));
  EXPECT_TRUE(fs::is_directory(b.dir() + "/rootfs/etc/" + tag + "-dir"));
}

TEST_F(RuntimeTest, JoinsAnotherContainersPidNamespaceByPath) {
  Bundle a("pidns-a");
  a.SetArgs({"sleep", "30"});
  std::string ida = NewId("pidns-a");
  CmdResult ra = Skiff({"run", "-d", "-b", a.dir(), ida});
  ASSERT_EQ(ra.code, 0) << ra.err;
  int apid = nlohmann::json::parse(Skiff({"state", ida}).out)["pid"];
  std::string nspath = "/proc/" + std::to_string(apid) + "/ns/pid";
  std::string a_ns = fs::read_symlink(nspath).string();

  Bundle b("pidns-b");
  for (auto& ns : b.config()["linux"]["namespaces"])
    if (ns["type"] == "pid") ns["path"] = nspath;
  // B sees A's init as pid 1, itself among A's pids, and shares its namespace.
  b.SetArgs({"sh", "-c", "cat /proc/1/comm; readlink /proc/self/ns/pid; ls -d /proc/[0-9]* | wc -l"});
  std::string idb = NewId("pidns-b");
  CmdResult s = Skiff({"run", "-b", b.dir(), idb});
  EXPECT_EQ(s.code, 0) << s.err;
  // sleep (A's init), sh, and the `ls` of the pipeline (and wc/subshell forks).
  std::istringstream in(s.out);
  std::string comm, ns, count;
  std::getline(in, comm);
  std::getline(in, ns);
  std::getline(in, count);
  EXPECT_EQ(comm, "sleep") << s.out;
  EXPECT_EQ(ns, a_ns);
  EXPECT_GE(std::atoi(count.c_str()), 3) << s.out;
  // The runtime itself is back in its own pid namespace: a later container
  // gets a namespace of its own again.
  Bundle c("pidns-c");
  c.SetArgs({"sh", "-c", "echo $$; readlink /proc/self/ns/pid"});
  CmdResult sc = Skiff({"run", "-b", c.dir(), NewId("pidns-c")});
  EXPECT_EQ(sc.code, 0) << sc.err;
  EXPECT_EQ(sc.out.substr(0, 2), "1\n");
  EXPECT_EQ(sc.out.find(a_ns), std::string::npos);
}

TEST_F(RuntimeTest, LibraryJoinsAPidNamespaceAndReturnsToItsOwn) {
  // In-process: the calling thread must come back to its own pid namespace.
  Bundle a("pidns-lib-a");
  a.SetArgs({"sleep", "30"});
  std::string ida = NewId("pidns-lib-a");
  ASSERT_EQ(Skiff({"run", "-d", "-b", a.dir(), ida}).code, 0);
  int apid = nlohmann::json::parse(Skiff({"state", ida}).out)["pid"];
  std::string before = fs::read_symlink("/proc/thread-self/ns/pid_for_children").string();
  Bundle b("pidns-lib-b");
  auto spec = ParseSpec(b.config().dump());
  ASSERT_TRUE(spec.ok()) << spec.status();
  for (auto& ns : spec->linux->namespaces)
    if (ns.type == "pid") ns.path = "/proc/" + std::to_string(apid) + "/ns/pid";
  spec->process->args = {"true"};
  Runtime rt({.root_dir = SkiffRoot()});
  CreateOptions o;
  o.id = NewId("pidns-lib-b");
  o.bundle_dir = b.dir();
  o.spec = *spec;
  o.start_immediately = true;
  auto st = rt.Create(o);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(fs::read_symlink("/proc/thread-self/ns/pid_for_children").string(), before);
  auto ex = rt.Wait(o.id, 10000);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->exit_code, 0);
  EXPECT_TRUE(rt.Delete(o.id, false).ok());
}

// Like runc's recvtty: listen on the console socket, receive the pty master
// over SCM_RIGHTS, drive a shell through it.
struct TtySession {
  int code = -1;
  std::string output;
  std::string error;
};
// runtime_argv is `create` (then start_argv starts it) or our `run`.
TtySession RunOnConsoleSocket(const std::vector<std::string>& runtime_argv, const std::vector<std::string>& start_argv,
                              const std::string& sock_path, const std::string& input) {
  TtySession t;
  unlink(sock_path.c_str());
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path.c_str());
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(lfd, 1) != 0) {
    t.error = std::string("listen: ") + strerror(errno);
    if (lfd >= 0) close(lfd);
    return t;
  }
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    std::vector<char*> a;
    for (auto& x : runtime_argv) a.push_back(const_cast<char*>(x.c_str()));
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  int master = -1;
  struct pollfd lp = {lfd, POLLIN, 0};
  if (poll(&lp, 1, 10000) == 1) {
    int conn = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    char name[256];
    struct iovec iov = {name, sizeof(name)};
    char cbuf[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof(cbuf);
    if (conn >= 0 && recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) > 0) {
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&master, CMSG_DATA(c), sizeof(int));
    }
    if (conn >= 0) close(conn);
  }
  close(lfd);
  if (master < 0) {
    t.error = "no pty master received";
    kill(pid, SIGKILL);
  } else {
    if (!start_argv.empty()) {
      int status = 0;
      waitpid(pid, &status, 0);
      pid = -1;
      CmdResult st = RunCmd(start_argv);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || st.code != 0) t.error = "create/start failed: " + st.err;
    }
    if (write(master, input.data(), input.size()) != static_cast<ssize_t>(input.size())) t.error = "write to pty";
    // Until the shell exits and the slave side closes (EIO), 10 s at most.
    for (;;) {
      struct pollfd p = {master, POLLIN, 0};
      if (poll(&p, 1, 10000) != 1) {
        t.error = "pty read timed out";
        break;
      }
      char buf[4096];
      ssize_t n = read(master, buf, sizeof(buf));
      if (n <= 0) break;
      t.output.append(buf, n);
    }
    close(master);
  }
  if (pid > 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    t.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  unlink(sock_path.c_str());
  return t;
}

TEST_F(RuntimeTest, ConsoleSocketReceivesThePtyMasterLikeRunc) {
  Bundle b("console");
  b.config()["process"]["terminal"] = true;
  b.SetArgs({"sh"});
  const std::string input = "echo marker-$((6*7)); tty; exit 3\n";
  // runc takes a console socket only from create (or run -d): create, start,
  // and the shell's output through the pty, for both runtimes.
  for (bool use_runc : {true, false}) {
    SCOPED_TRACE(use_runc ? "runc" : "skiff-runtime");
    std::string id = NewId(use_runc ? "console-runc" : "console-skiff");
    std::string sock = TestBase() + "/" + id + ".sock";
    std::vector<std::string> rt = {use_runc ? "runc" : SkiffRuntime(), "--root", use_runc ? RuncRoot() : SkiffRoot()};
    std::vector<std::string> create = rt, start = rt;
    create.insert(create.end(), {"create", "--console-socket", sock, "-b", b.dir(), id});
    start.insert(start.end(), {"start", id});
    TtySession t = RunOnConsoleSocket(create, start, sock, input);
    EXPECT_EQ(t.error, "");
    // The pty echoes the input line; the shell's output follows with CRLF.
    EXPECT_NE(t.output.find("marker-42\r\n"), std::string::npos) << t.output;
    EXPECT_NE(t.output.find("/dev/pts/0\r\n"), std::string::npos) << t.output;
  }
  // skiff-runtime's `run` also takes one (runc's needs -d) and returns the exit code.
  std::string id = NewId("console-run");
  std::string sock = TestBase() + "/" + id + ".sock";
  TtySession t = RunOnConsoleSocket({SkiffRuntime(), "--root", SkiffRoot(), "run", "--console-socket", sock, "-b", b.dir(), id},
                                    {}, sock, input);
  EXPECT_EQ(t.error, "");
  EXPECT_EQ(t.code, 3) << t.output;
  EXPECT_NE(t.output.find("marker-42\r\n"), std::string::npos) << t.output;
}

// Starts `argv` with stdout on a pipe; returns the pid, *out_fd the read end.
// before_exec runs in the child (e.g. to hand the runtime an odd signal state).
pid_t SpawnWithStdout(const std::vector<std::string>& argv, int* out_fd, void (*before_exec)() = nullptr) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    if (before_exec) before_exec();
    dup2(p[1], 1);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 2);
    std::vector<char*> a;
    for (auto& x : argv) a.push_back(const_cast<char*>(x.c_str()));
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  close(p[1]);
  *out_fd = p[0];
  return pid;
}

// Reads until `want` has arrived (or EOF / 10 s).
std::string ReadUntil(int fd, const std::string& want) {
  std::string got;
  while (got.find(want) == std::string::npos) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) break;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, n);
  }
  return got;
}

// The container's process starts with no signal blocked or ignored, even
// when the runtime was started with some (both survive execve): a pod's
// SIGTERM must not wait for the SIGKILL.
TEST_F(RuntimeTest, TheContainerStartsWithNoSignalBlockedOrIgnoredLikeRunc) {
  Bundle b("sigstate");
  b.SetArgs({"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"});
  for (bool use_runc : {true, false}) {
    SCOPED_TRACE(use_runc ? "runc" : "skiff-runtime");
    std::vector<std::string> argv = {use_runc ? "runc" : SkiffRuntime(), "--root", use_runc ? RuncRoot() : SkiffRoot(),
                                     "run", "-b", b.dir(), NewId(use_runc ? "sigstate-runc" : "sigstate-skiff")};
    int out = -1;
    pid_t pid = SpawnWithStdout(argv, &out, [] {
      // Exactly this state, whatever the test's own caller left ignored.
      const unsigned long dfl[4] = {};
      for (int sig = 1; sig < NSIG; ++sig) syscall(SYS_rt_sigaction, sig, dfl, nullptr, sizeof(unsigned long));
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGTERM);
      sigaddset(&set, SIGHUP);
      sigprocmask(SIG_BLOCK, &set, nullptr);
      signal(SIGUSR1, SIG_IGN);
      signal(SIGINT, SIG_IGN);
      // Also the two signals glibc reserves (32, 33), as some callers' have.
      const unsigned long ign[4] = {reinterpret_cast<unsigned long>(SIG_IGN), 0, 0, 0};
      for (int sig : {32, 33}) syscall(SYS_rt_sigaction, sig, ign, nullptr, sizeof(unsigned long));
    });
    ASSERT_GT(pid, 0);
    std::string text = ReadUntil(out, "SigIgn");
    text += ReadUntil(out, "\n");
    close(out);
    int status = 0;
    waitpid(pid, &status, 0);
    // runc resets what it can through Go (signal 32 stays ignored); ours
    // resets everything.
    EXPECT_EQ(text, use_runc ? "SigBlk:\t0000000000000000\nSigIgn:\t0000000080000000\n"
                             : "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
}

TEST_F(RuntimeTest, SignalsReachTheContainerLikeRunc) {
  Bundle b("signals");
  // pid 1 gets only signals it handles; `wait` returns as soon as one arrives.
  b.SetArgs({"sh", "-c", "trap 'echo got-term; exit 4' TERM; trap 'echo got-hup; exit 5' HUP; sleep 30 & echo ready; wait"});
  for (bool use_runc : {true, false}) {
    SCOPED_TRACE(use_runc ? "runc" : "skiff-runtime");
    std::vector<std::string> rt = {use_runc ? "runc" : SkiffRuntime(), "--root", use_runc ? RuncRoot() : SkiffRoot()};
    // 1. A signal to the foreground `run` is forwarded to the container.
    {
      std::string id = NewId(use_runc ? "sig-fwd-runc" : "sig-fwd-skiff");
      std::vector<std::string> argv = rt;
      argv.insert(argv.end(), {"run", "-b", b.dir(), id});
      int out = -1;
      pid_t pid = SpawnWithStdout(argv, &out);
      ASSERT_GT(pid, 0);
      std::string text = ReadUntil(out, "ready\n");
      EXPECT_EQ(text, "ready\n");
      kill(pid, SIGTERM);
      text += ReadUntil(out, "\n");
      close(out);
      int status = 0;
      waitpid(pid, &status, 0);
      EXPECT_EQ(text, "ready\ngot-term\n");
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 4) << status;
    }
    // 2. `kill ID HUP` reaches the init; `run` reports its exit code.
    {
      std::string id = NewId(use_runc ? "sig-kill-runc" : "sig-kill-skiff");
      std::vector<std::string> argv = rt;
      argv.insert(argv.end(), {"run", "-b", b.dir(), id});
      int out = -1;
      pid_t pid = SpawnWithStdout(argv, &out);
      ASSERT_GT(pid, 0);
      std::string text = ReadUntil(out, "ready\n");
      std::vector<std::string> k = rt;
      k.insert(k.end(), {"kill", id, "HUP"});
      EXPECT_EQ(RunCmd(k).code, 0);
      text += ReadUntil(out, "got-hup\n");
      close(out);
      int status = 0;
      waitpid(pid, &status, 0);
      EXPECT_EQ(text, "ready\ngot-hup\n");
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 5) << status;
    }
  }
}

// --- isolation --------------------------------------------------------------

TEST_F(RuntimeTest, IsolatesUnderTheDefaultSeccompProfile) {
  Bundle b("iso");
  b.SetArgs({"sh", "-c",
             "ls -d /proc/[0-9]* | wc -l; for op in mount unshare keyctl ptrace init_module; do probe $op; done; "
             "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; touch /proc/sysrq-trigger; echo ro=$?"});
  std::string id = NewId("iso");
  CmdResult s = Skiff({"run", "--seccomp-default", "-b", b.dir(), id});
  ASSERT_EQ(s.code, 0) << s.err;
  std::istringstream in(s.out);
  std::string line;
  std::getline(in, line);
  EXPECT_LE(std::stoi(line), 4) << "container must see only its own pids";
  for (const char* op : {"mount", "unshare", "keyctl", "ptrace", "init_module"}) {
    std::getline(in, line);
    EXPECT_EQ(line, std::string(op) + " errno=1") << "expected EPERM";
  }
  std::getline(in, line);
  EXPECT_EQ(line, "CapEff:\t0000000020000420");  // AUDIT_WRITE, KILL, NET_BIND_SERVICE only
  std::getline(in, line);
  EXPECT_EQ(line, "CapBnd:\t0000000020000420");
  std::getline(in, line);
  EXPECT_EQ(line, "NoNewPrivs:\t1");
  std::getline(in, line);
  EXPECT_EQ(line, "Seccomp:\t2");
  std::getline(in, line);
  EXPECT_NE(line, "ro=0");
}

TEST_F(RuntimeTest, MaskedPathsAreEmptyAndReadonlyPathsAreReadOnly) {
  // On the host these are not empty (checked, so the test can fail).
  {
    std::ifstream in("/proc/timer_list");
    std::string line;
    ASSERT_TRUE(std::getline(in, line) && !line.empty());
  }
  Bundle b("masked");
  b.SetArgs({"sh", "-c",
             "cat /proc/timer_list /proc/keys | wc -c; ls -A /sys/firmware | wc -l; "
             "echo 1 > /proc/sys/kernel/domainname 2>/dev/null; echo sys=$?; echo h > /proc/sysrq-trigger 2>/dev/null; "
             "echo sysrq=$?; grep -E ' /proc/(sys|bus|irq|fs) ' /proc/self/mounts | grep -vc ' ro,'"});
  std::string id = NewId("masked");
  CmdResult s = Skiff({"run", "-b", b.dir(), id});
  EXPECT_EQ(s.code, 1) << "grep -vc finds no read-write line: " << s.err;
  EXPECT_EQ(s.out, "0\n0\nsys=1\nsysrq=1\n0\n");
}

TEST_F(RuntimeTest, DroppedCapabilitiesAreEnforcedWithoutSeccomp) {
  Bundle b("caps");
  b.SetArgs({"sh", "-c", "probe mount; probe chown"});  // chown of /dev (a writable tmpfs)
  std::string id = NewId("caps");
  CmdResult s = Skiff({"run", "-b", b.dir(), id});
  EXPECT_EQ(s.out, "mount errno=1\nchown errno=1\n") << s.err;
}

// --- lifecycle ---------------------------------------------------------------

TEST_F(RuntimeTest, LifecycleTransitionsAndErrorsMatchRunc) {
  Bundle b("life");
  b.SetArgs({"sleep", "30"});
  for (bool use_runc : {true, false}) {
    std::string id = NewId(use_runc ? "life-runc" : "life-skiff");
    auto rt = [&](std::vector<std::string> a) { return use_runc ? Runc(a) : Skiff(a); };
    SCOPED_TRACE(use_runc ? "runc" : "skiff-runtime");
    std::string pid_file = b.dir() + "/" + id + ".pid";
    CmdResult c = rt({"create", "--pid-file", pid_file, "--bundle", b.dir(), id});
    ASSERT_EQ(c.code, 0) << c.err;
    CmdResult st = rt({"state", id});
    EXPECT_EQ(st.code, 0);
    auto j = nlohmann::json::parse(st.out);
    EXPECT_EQ(j["status"], "created");
    EXPECT_GT(j["pid"].get<int>(), 0);
    std::ifstream pf(pid_file);
    std::string pid_text((std::istreambuf_iterator<char>(pf)), std::istreambuf_iterator<char>());
    EXPECT_EQ(pid_text, std::to_string(j["pid"].get<int>())) << "--pid-file";
    EXPECT_EQ(j["id"], id);
    EXPECT_EQ(rt({"start", id}).code, 0);
    EXPECT_EQ(nlohmann::json::parse(rt({"state", id}).out)["status"], "running");
    CmdResult again = rt({"start", id});
    EXPECT_EQ(again.code, 1);
    EXPECT_NE(again.err.find("cannot start an already running container"), std::string::npos) << again.err;
    CmdResult del = rt({"delete", id});
    EXPECT_EQ(del.code, 1);
    EXPECT_NE(del.err.find("is not stopped"), std::string::npos) << del.err;
    CmdResult ex = rt({"exec", id, "sh", "-c", "exit 5"});
    EXPECT_EQ(ex.code, 5) << ex.err;
    EXPECT_EQ(rt({"kill", id, "KILL"}).code, 0);
    for (int i = 0; i < 100; i++) {
      if (nlohmann::json::parse(rt({"state", id}).out)["status"] == "stopped") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(nlohmann::json::parse(rt({"state", id}).out)["status"], "stopped");
    CmdResult stopped_start = rt({"start", id});
    EXPECT_EQ(stopped_start.code, 1);
    EXPECT_NE(stopped_start.err.find("cannot start a container that has stopped"), std::string::npos) << stopped_start.err;
    EXPECT_EQ(rt({"delete", id}).code, 0);
    for (const char* verb : {"state", "start", "delete", "kill"}) {
      CmdResult u = rt({verb, id});
      EXPECT_EQ(u.code, 1) << verb;
      EXPECT_NE(u.err.find("container does not exist"), std::string::npos) << verb << ": " << u.err;
    }
  }
}

TEST_F(RuntimeTest, LeavesNoMountsCgroupsOrProcessesAfterDelete) {
  Bundle b("leak");
  b.SetArgs({"sleep", "30"});
  std::string id = NewId("leak");
  ASSERT_EQ(Skiff({"run", "-d", "-b", b.dir(), id}).code, 0);
  auto st = nlohmann::json::parse(Skiff({"state", id}).out);
  int pid = st["pid"];
  std::string cg = Cgroup2() + "/skiff/" + id;
  EXPECT_TRUE(fs::exists(cg));
  CmdResult ps = Skiff({"ps", "--format", "json", id});
  EXPECT_EQ(nlohmann::json::parse(ps.out), nlohmann::json::array({pid}));
  EXPECT_EQ(Skiff({"list", "-q"}).out.find(id) != std::string::npos, true);
  EXPECT_EQ(Skiff({"delete", "--force", id}).code, 0);
  EXPECT_FALSE(fs::exists(cg));
  EXPECT_FALSE(fs::exists(SkiffRoot() + "/" + id));
  EXPECT_FALSE(Alive(pid)) << "init still alive";
  EXPECT_EQ(MountsUnder(b.dir()), 0);
}

TEST_F(RuntimeTest, KillNineOfTheRuntimeMidCreateLeavesNothingAfterDelete) {
  Bundle b("crash");
  b.SetArgs({"sleep", "30"});
  std::string pidfile = b.dir() + "/hook.pid";
  // A createRuntime hook that hangs, so the runtime is killed mid-create.
  b.config()["hooks"]["createRuntime"] = {{{"path", "/bin/sh"}, {"args", {"sh", "-c", "echo $$ > " + pidfile + "; exec sleep 30"}}}};
  b.Save();
  std::string id = NewId("crash");
  pid_t rt = fork();
  if (rt == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(SkiffRuntime().c_str(), "skiff-runtime", "--root", SkiffRoot().c_str(), "create", "-b", b.dir().c_str(),
          id.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 500 && !fs::exists(pidfile); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(pidfile)) << "hook never ran";
  std::string cg = Cgroup2() + "/skiff/" + id;
  EXPECT_TRUE(fs::exists(cg));
  kill(rt, SIGKILL);
  waitpid(rt, nullptr, 0);
  int hook_pid = 0;
  std::ifstream(pidfile) >> hook_pid;
  if (hook_pid > 0) kill(hook_pid, SIGKILL);
  // The init dies with the runtime (parent-death signal).
  std::vector<pid_t> left;
  for (int i = 0; i < 100; i++) {
    left = CgroupPids(cg).value_or(std::vector<pid_t>{});
    if (left.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(left.empty()) << "container init outlived the runtime";
  auto st = nlohmann::json::parse(Skiff({"state", id}).out);
  EXPECT_EQ(st["status"], "stopped");
  CmdResult d = Skiff({"delete", id});
  EXPECT_EQ(d.code, 0) << d.err;
  EXPECT_FALSE(fs::exists(cg));
  EXPECT_FALSE(fs::exists(SkiffRoot() + "/" + id));
  EXPECT_EQ(MountsUnder(b.dir()), 0);
}

// --- bad input ---------------------------------------------------------------

TEST_F(RuntimeTest, BadConfigNamesTheFieldExitsOneAndCreatesNothing) {
  struct Bad {
    std::string name, field;
    std::function<void(nlohmann::json&)> edit;
  };
  std::vector<Bad> cases = {
      {"ns", "linux.namespaces[", [](auto& c) { c["linux"]["namespaces"].push_back({{"type", "bogus"}}); }},
      {"rootfs", "root.path", [](auto& c) { c["root"]["path"] = "no-such-rootfs"; }},
      {"uidmap", "linux.uidMappings", [](auto& c) { c["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 1000}, {"size", 1}}}; }},
      {"type", "process.args", [](auto& c) { c["process"]["args"] = 5; }},
  };
  for (auto& bad : cases) {
    Bundle b("bad-" + bad.name);
    bad.edit(b.config());
    b.Save();
    std::string id = NewId("bad-" + bad.name);
    CmdResult r = Skiff({"create", "-b", b.dir(), id});
    EXPECT_EQ(r.code, 1) << bad.name;
    EXPECT_NE(r.err.find(bad.field), std::string::npos) << bad.name << ": " << r.err;
    EXPECT_FALSE(fs::exists(SkiffRoot() + "/" + id)) << bad.name;
    EXPECT_FALSE(fs::exists(Cgroup2() + "/skiff/" + id)) << bad.name;
  }
  Bundle m("bad-json");
  std::ofstream(m.dir() + "/config.json") << "{ \"ociVersion\": ";
  CmdResult r = Skiff({"create", "-b", m.dir(), NewId("bad-json")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("malformed"), std::string::npos) << r.err;
}

// --- the library API, in-process ----------------------------------------------

TEST_F(RuntimeTest, LibraryCreatesWithStdioNetnsAndReportsExitStatus) {
  Bundle b("lib");
  std::string netns = "skiffrt" + std::to_string(getpid());
  RunCmd({"ip", "netns", "del", netns});
  ASSERT_EQ(RunCmd({"ip", "netns", "add", netns}).code, 0);
  std::string nspath = "/run/netns/" + netns;
  struct stat nst;
  ASSERT_EQ(stat(nspath.c_str(), &nst), 0);
  auto spec = ParseSpec(b.config().dump());
  ASSERT_TRUE(spec.ok()) << spec.status();
  spec->process->args = {"sh", "-c", "stat -L -c %i /proc/self/ns/net; read x; echo got $x; exit 3"};
  int in[2], out[2];
  ASSERT_EQ(pipe2(in, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  Runtime rt({.root_dir = SkiffRoot()});
  CreateOptions o;
  o.id = NewId("lib");
  o.bundle_dir = b.dir();
  o.spec = *spec;
  o.stdio = {in[0], out[1], out[1]};
  o.netns_path = nspath;
  o.default_seccomp = true;
  auto st = rt.Create(o);
  close(in[0]);
  close(out[1]);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->status, ContainerStatus::kCreated);
  EXPECT_EQ(rt.State(o.id)->status, ContainerStatus::kCreated);
  ASSERT_TRUE(rt.Start(o.id).ok());
  ASSERT_EQ(write(in[1], "hello\n", 6), 6);
  close(in[1]);
  auto ex = rt.Wait(o.id, 10000);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_TRUE(ex->known);
  EXPECT_EQ(ex->exit_code, 3);
  std::string text;
  char buf[256];
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(out[0]);
  EXPECT_EQ(text, std::to_string(nst.st_ino) + "\ngot hello\n");
  EXPECT_EQ(rt.State(o.id)->status, ContainerStatus::kStopped);
  EXPECT_TRUE(rt.Delete(o.id, false).ok());
  RunCmd({"ip", "netns", "del", netns});
}

TEST_F(RuntimeTest, LibraryExecRunsInTheContainerAndIsWaitable) {
  Bundle b("libexec");
  auto spec = ParseSpec(b.config().dump());
  ASSERT_TRUE(spec.ok());
  spec->process->args = {"sleep", "30"};
  Runtime rt({.root_dir = SkiffRoot()});
  CreateOptions o;
  o.id = NewId("libexec");
  o.bundle_dir = b.dir();
  o.spec = *spec;
  o.start_immediately = true;
  auto st = rt.Create(o);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(rt.State(o.id)->status, ContainerStatus::kRunning);
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  ExecOptions e;
  e.process = *spec->process;
  e.process.args = {"sh", "-c", "hostname; echo $$; exit 9"};
  e.stdio = {-1, out[1], out[1]};
  auto pid = rt.Exec(o.id, e);
  close(out[1]);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto ex = Runtime::WaitPid(*pid);
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->exit_code, 9);
  std::string text;
  char buf[256];
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(out[0]);
  EXPECT_EQ(text, "runc\n2\n") << "exec'd process is pid 2 in the container's pid namespace";
  auto pids = rt.Pids(o.id);
  ASSERT_TRUE(pids.ok());
  EXPECT_EQ(pids->size(), 1u);
  ASSERT_TRUE(rt.Kill(o.id, SIGKILL).ok());
  auto w = rt.Wait(o.id, 10000);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->signal, SIGKILL);
  EXPECT_EQ(w->exit_code, 137);
  EXPECT_TRUE(rt.Delete(o.id, false).ok());
}

TEST_F(RuntimeTest, HybridHostWarnsAboutLimitsAndStrictModeFails) {
  Bundle b("limits");
  b.SetArgs({"true"});
  b.config()["linux"]["resources"] = {{"memory", {{"limit", 64 << 20}}}, {"pids", {{"limit", 50}}}};
  b.Save();
  std::set<std::string> avail;
  {
    std::ifstream in(Cgroup2() + "/cgroup.controllers");
    for (std::string c; in >> c;) avail.insert(c);
  }
  if (avail.count("memory") && avail.count("pids")) GTEST_SKIP() << "host cgroup2 has memory and pids";
  CmdResult r = Skiff({"run", "-b", b.dir(), NewId("limits")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("memory.max"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pids.max"), std::string::npos) << r.err;
  std::string id = NewId("limits-strict");
  CmdResult s = RunCmd({SkiffRuntime(), "--root", SkiffRoot(), "--strict-cgroups", "run", "-b", b.dir(), id});
  EXPECT_EQ(s.code, 1);
  EXPECT_NE(s.err.find("memory.max"), std::string::npos) << s.err;
  EXPECT_FALSE(fs::exists(Cgroup2() + "/skiff/" + id));
  EXPECT_FALSE(fs::exists(SkiffRoot() + "/" + id));
}

}  // namespace
}  // namespace skiff::runtime

// Removes this run's directory when all tests are done.
class CleanupEnv : public ::testing::Environment {
 public:
  void TearDown() override {
    if (geteuid() == 0) {
      std::error_code ec;
      std::filesystem::remove_all(skiff::runtime::testing::TestBase(), ec);
      // The default parent of our containers' cgroups; rmdir only succeeds
      // when no other run still has containers under it.
      auto cg = skiff::runtime::FindCgroup2Mount();
      if (cg.ok()) rmdir((*cg + "/skiff").c_str());
    }
  }
};
static auto* const kEnv = ::testing::AddGlobalTestEnvironment(new CleanupEnv);
