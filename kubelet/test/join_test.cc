// Node join against a real skiff-control-plane (embedded store, TLS, loopback):
// bootstrap token -> CA discovered by its pinned hash -> node certificate ->
// a client config that authenticates as system:node:<name>.
#include "skiff/kubelet/join.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "skiff/client/config.h"
#include "skiff/client/dial.h"

namespace skiff::kubelet {
namespace {

namespace fs = std::filesystem;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  return ntohs(sa.sin_port);
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class JoinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* build = getenv("SKIFF_BUILD_DIR");
    std::string bin = std::string(build ? build : "build") + "/bin/skiff-control-plane";
    ASSERT_TRUE(fs::exists(bin)) << bin;
    dir_ = fs::temp_directory_path() / ("skiff-join-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    server_ = "127.0.0.1:" + std::to_string(FreePort());
    std::string health = "127.0.0.1:" + std::to_string(FreePort());
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      std::string log = (dir_ / "control-plane.log").string();
      freopen(log.c_str(), "w", stdout);
      freopen(log.c_str(), "a", stderr);
      std::string data = (dir_ / "data").string();
      execl(bin.c_str(), bin.c_str(), "--data-dir", data.c_str(), "--listen", server_.c_str(), "--health-listen",
            health.c_str(), "--components", "apiserver", static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      auto cfg = client::LoadClientConfig((dir_ / "data" / "admin.conf").string());
      if (cfg.ok()) {
        auto c = client::Dial(cfg->credentials);
        if (c.ok() && (*c)->Version().ok()) {
          admin_ = std::move(*c);
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    FAIL() << "control plane did not come up: " << ReadAll(dir_ / "control-plane.log");
  }
  void TearDown() override {
    admin_.reset();
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    fs::remove_all(dir_);
  }

  JoinOptions Options(const std::string& token, const std::string& hash) {
    JoinOptions o;
    o.server = server_;
    o.token = token;
    o.ca_hash = hash;
    o.node_name = "node-j1";
    o.kubeconfig_path = (dir_ / "kubelet.conf").string();
    o.write_config = true;
    o.start_units = false;
    o.kubelet_config = (dir_ / "kubelet.yaml").string();
    o.proxy_config = (dir_ / "proxy.yaml").string();
    return o;
  }

  fs::path dir_;
  std::string server_;
  pid_t pid_ = -1;
  std::unique_ptr<client::GrpcClient> admin_;
};

TEST_F(JoinTest, BootstrapTokenGetsANodeCertificateAndWritesTheConfigs) {
  auto tok = admin_->CreateBootstrapToken(600, "join test");
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ofstream(dir_ / "kubelet.yaml") << "# kubelet\nroot-dir: /var/lib/skiff/kubelet\nserver: old:1\n";

  ASSERT_TRUE(Join(Options(tok->token(), tok->ca_cert_hash())).ok());

  auto cfg = client::LoadClientConfig((dir_ / "kubelet.conf").string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto node = client::Dial(cfg->credentials);
  ASSERT_TRUE(node.ok()) << node.status();
  auto who = (*node)->WhoAmI();
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->username(), "system:node:node-j1");
  EXPECT_NE(std::find(who->groups().begin(), who->groups().end(), "system:nodes"), who->groups().end());
  EXPECT_EQ(fs::status(dir_ / "kubelet.conf").permissions() & fs::perms::others_read, fs::perms::none);

  std::string kubelet_yaml = ReadAll(dir_ / "kubelet.yaml");
  EXPECT_NE(kubelet_yaml.find("root-dir: /var/lib/skiff/kubelet"), std::string::npos) << kubelet_yaml;
  EXPECT_NE(kubelet_yaml.find("server: " + server_), std::string::npos) << kubelet_yaml;
  EXPECT_EQ(kubelet_yaml.find("old:1"), std::string::npos) << kubelet_yaml;
  EXPECT_NE(ReadAll(dir_ / "proxy.yaml").find("node-name: node-j1"), std::string::npos);
}

TEST_F(JoinTest, AWrongCaHashIsRefusedBeforeTheTokenIsSent) {
  auto tok = admin_->CreateBootstrapToken(600, "");
  ASSERT_TRUE(tok.ok());
  std::string wrong = "sha256:" + std::string(64, '0');
  auto st = Join(Options(tok->token(), wrong));
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_NE(std::string(st.message()).find("matches --discovery-token-ca-cert-hash"), std::string::npos) << st;
  EXPECT_FALSE(fs::exists(dir_ / "kubelet.conf"));
  EXPECT_EQ(Join(Options(tok->token(), "md5:abc")).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JoinTest, AnUnknownTokenGetsNoCertificate) {
  auto tok = admin_->CreateBootstrapToken(600, "");
  ASSERT_TRUE(tok.ok());
  auto st = Join(Options("abcdef.0123456789abcdef", tok->ca_cert_hash()));
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(fs::exists(dir_ / "kubelet.conf"));
}

}  // namespace
}  // namespace skiff::kubelet
