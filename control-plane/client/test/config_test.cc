#include "skiff/client/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

namespace skiff::client {
namespace {

TEST(ClientConfig, RoundTripsThroughTheKubeconfigShape) {
  Credentials c;
  c.server = "127.0.0.1:6443";
  c.ca_cert_pem = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
  c.client_cert_pem = "CERT";
  c.client_key_pem = "KEY";
  std::string yaml = RenderClientConfig(c, "skiff", "admin", "prod");
  EXPECT_NE(yaml.find("server: https://127.0.0.1:6443"), std::string::npos);
  EXPECT_NE(yaml.find("certificate-authority-data:"), std::string::npos);
  EXPECT_NE(yaml.find("current-context: admin@skiff"), std::string::npos);
  auto cfg = ParseClientConfig(yaml);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->credentials.server, "127.0.0.1:6443");
  EXPECT_EQ(cfg->credentials.ca_cert_pem, c.ca_cert_pem);
  EXPECT_EQ(cfg->credentials.client_cert_pem, "CERT");
  EXPECT_EQ(cfg->credentials.client_key_pem, "KEY");
  EXPECT_FALSE(cfg->credentials.insecure);
  EXPECT_EQ(cfg->ns, "prod");
  EXPECT_EQ(cfg->context, "admin@skiff");
}

TEST(ClientConfig, PicksTheNamedContextAndReadsFilesAndTokens) {
  std::string dir = "/tmp/skiff-client-config-test-" + std::to_string(getpid());
  ASSERT_EQ(system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  std::ofstream(dir + "/ca.crt") << "CAFILE";
  std::ofstream(dir + "/config") << R"(apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://10.0.0.1:6443"}
- name: b
  cluster:
    server: http://127.0.0.1:8080/
    certificate-authority: ca.crt
users:
- name: u
  user: {token: s3cret}
contexts:
- name: first
  context: {cluster: a, user: u}
- name: second
  context: {cluster: b, user: u, namespace: kube-system}
current-context: first
)";
  auto cur = LoadClientConfig(dir + "/config");
  ASSERT_TRUE(cur.ok()) << cur.status();
  EXPECT_EQ(cur->credentials.server, "10.0.0.1:6443");
  EXPECT_EQ(cur->credentials.token, "s3cret");
  EXPECT_EQ(cur->ns, "default");
  auto second = LoadClientConfig(dir + "/config", "second");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->credentials.server, "127.0.0.1:8080");
  EXPECT_TRUE(second->credentials.insecure);
  EXPECT_EQ(second->credentials.ca_cert_pem, "CAFILE");
  EXPECT_EQ(second->ns, "kube-system");
  EXPECT_EQ(LoadClientConfig(dir + "/config", "third").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadClientConfig(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(system(("rm -rf " + dir).c_str()), 0);
}

TEST(ClientConfig, WritesOwnerOnlyFiles) {
  std::string path = "/tmp/skiff-client-config-write-" + std::to_string(getpid());
  Credentials c;
  c.server = "127.0.0.1:1";
  c.token = "t";
  ASSERT_TRUE(WriteClientConfig(path, c).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto cfg = LoadClientConfig(path);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->credentials.token, "t");
  unlink(path.c_str());
}

TEST(ClientConfig, RejectsBrokenYaml) {
  EXPECT_EQ(ParseClientConfig("clusters: [").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseClientConfig("clusters: []\n").ok());
}

}  // namespace
}  // namespace skiff::client
